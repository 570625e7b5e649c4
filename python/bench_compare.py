#!/usr/bin/env python3
"""The PyTorch and onnxruntime side of `faithful bench --compare`.

faithful starts this script once, with the networks it exported for the benchmark (its own
PyTorch export of the teacher and the student, loaded with `faithful_torch.load`, and its own
ONNX export of both), then alternates: a round of its own stages, then the line `round` on this
script's standard input, to which the script answers with one JSON line holding the same stages
timed in PyTorch and in onnxruntime. So machine noise hits both frameworks alike.

Stages (names as faithful's, milliseconds per step or per call, median of `--iters` calls after a
warm-up; `peak_mb`: the process's peak resident memory during the stage, reset before it):
- `teacher train step`, `student KD step`, `student KD + SWA step` (the student's Grad-CAM at
  pool5 by double backprop, `create_graph=True`, as the authors' code), `fixture train step`,
  `fixture Grad-CAM-loss step` (double backprop): SGD with momentum, batch `--batch`;
- `teacher Grad-CAM maps` (one batch of `--eval-batch` (image, class) pairs at the last conv
  layer by autograd);
- `<net> inference, N images` for N in 1 and `--batch`: PyTorch eager under `no_grad` and
  onnxruntime on faithful's ONNX file.

Usage: bench_compare.py --teacher STEM --student STEM --onnx-teacher F --onnx-student F
           [--extra NAME=STEM ...] [--threads 2] [--batch 32] [--eval-batch 64] [--iters 5]
(an extra network's ONNX file is STEM.onnx)
"""
import argparse
import json
import os

# PyTorch's OpenMP workers must sleep, not spin, between this script's rounds (faithful's round
# runs on the same cores meanwhile); set before torch is imported
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_torch import FixtureNet, cam_double_backprop  # noqa: E402
from faithful_torch import load  # noqa: E402


def reset_peak():
    """Resets the kernel's peak-RSS counter (VmHWM) of this process; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def timed(fn, iters):
    """Median milliseconds of `iters` calls after one warm-up, and the peak memory meanwhile."""
    reset_peak()
    fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"ms": statistics.median(times), "peak_mb": peak_mb()}


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)


def pool5_cam(model, x, t, create_graph):
    """Grad-CAM of class t at the head pool's output (faithful's `matching.layer = pool5`)."""
    a = model.features(x)
    logits = model.classifier(torch.flatten(a, 1))
    cam = cam_double_backprop(model, a, logits, t) if create_graph else None
    if not create_graph:
        g, = torch.autograd.grad(logits[:, t].sum(), a)
        cam = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))
    return logits, cam


def normalised(m):
    return m.flatten(1) / m.flatten(1).norm(dim=1, keepdim=True).clamp_min(1e-12)


class Stages:
    def __init__(self, a):
        torch.manual_seed(0)
        self.a = a
        self.teacher = load(a.teacher)
        self.student = load(a.student)
        side = self.teacher.input_size[0]
        classes = self.teacher.classifier[-1].out_features
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(a.batch, 3, side, side, generator=g)
        self.y = (torch.rand(a.batch, classes, generator=g) > 0.8).float()
        self.fixture = FixtureNet().train()
        self.fx = torch.randn(32, 3, 64, 64, generator=g)
        self.fy = (torch.rand(32, 20, generator=g) > 0.5).float()
        self.fmask = torch.rand(32, 8, 8, generator=g)
        self.xe = torch.randn(a.eval_batch, 3, side, side, generator=g)
        self.ce = torch.arange(a.eval_batch) % classes
        self.opt = {id(m): sgd(m) for m in (self.teacher, self.student, self.fixture)}
        self.nets = {"teacher": self.teacher, "student": self.student}
        onnx = {"teacher": a.onnx_teacher, "student": a.onnx_student}
        for spec in a.extra:
            name, stem = spec.split("=", 1)
            self.nets[name] = load(stem)
            onnx[name] = stem + ".onnx"
        self.ort = {name: self.session(path) for name, path in onnx.items()}

    def session(self, path):
        o = ort.SessionOptions()
        o.intra_op_num_threads = self.a.threads
        o.inter_op_num_threads = 1
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle worker threads must not spin while faithful's round runs on the same cores
        o.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])

    def step(self, model, loss_fn):
        model.train()
        opt = self.opt[id(model)]
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()

    def teacher_step(self):
        self.step(self.teacher, lambda: F.binary_cross_entropy_with_logits(
            self.teacher(self.x), self.y))

    def kd_loss(self, logits):
        with torch.no_grad():
            soft = torch.sigmoid(self.teacher.eval()(self.x) / 4.0)
        return 0.9 * 16.0 * F.binary_cross_entropy_with_logits(logits / 4.0, soft) + \
            0.1 * F.binary_cross_entropy_with_logits(logits, self.y)

    def student_kd_step(self):
        self.step(self.student, lambda: self.kd_loss(self.student(self.x)))

    def student_swa_step(self):
        def loss():
            self.teacher.eval()
            _, cam_t = pool5_cam(self.teacher, self.x, 0, create_graph=False)
            logits, cam_s = pool5_cam(self.student, self.x, 0, create_graph=True)
            match = ((normalised(cam_s) - normalised(cam_t.detach())) ** 2).mean()
            return self.kd_loss(logits) + 50.0 * match
        self.step(self.student, loss)

    def fixture_step(self, with_cam):
        def loss():
            a = self.fixture.features(self.fx)
            logits = self.fixture.head(a)
            out = F.binary_cross_entropy_with_logits(logits, self.fy)
            if with_cam:
                out = out + 50 * (cam_double_backprop(self.fixture, a, logits, 3) *
                                  self.fmask).mean()
            return out
        self.step(self.fixture, loss)

    def gradcam_maps(self):
        """Grad-CAM at the last conv layer (before the head pool), as faithful evaluates."""
        m = self.teacher.eval()
        a = m.features[:-1](self.xe).detach().requires_grad_(True)
        logits = m.classifier(torch.flatten(m.features[-1](a), 1))
        g, = torch.autograd.grad(logits.gather(1, self.ce[:, None]).sum(), a)
        return F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))

    def round(self):
        a = self.a
        torch_stages = {
            "teacher train step": self.teacher_step,
            "student KD step": self.student_kd_step,
            "student KD + SWA step": self.student_swa_step,
            "fixture train step": lambda: self.fixture_step(False),
            "fixture Grad-CAM-loss step": lambda: self.fixture_step(True),
            "teacher Grad-CAM maps": self.gradcam_maps,
        }
        out = {"pytorch": {}, "onnxruntime": {}}
        for name, fn in torch_stages.items():
            out["pytorch"][name] = timed(fn, a.iters)
        for net, model in self.nets.items():
            model = model.eval()
            for n in (1, a.batch):
                x = self.x[:1] if n == 1 else self.x
                xn = x.numpy()
                stage = f"{net} inference, {n} image{'' if n == 1 else 's'}"
                with torch.no_grad():
                    out["pytorch"][stage] = timed(lambda: model(x), 4 * a.iters)
                sess = self.ort[net]
                out["onnxruntime"][stage] = timed(
                    lambda: sess.run(["logits"], {"input": xn}), 4 * a.iters)
        return out


def main():
    p = argparse.ArgumentParser()
    for name in ("--teacher", "--student", "--onnx-teacher", "--onnx-student"):
        p.add_argument(name, required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--eval-batch", type=int, default=64)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--extra", action="append", default=[],
                   help="NAME=STEM: another network, timed at inference only")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    stages = Stages(a)
    print(json.dumps({"ready": True, "torch": torch.__version__,
                      "onnxruntime": ort.__version__, "threads": torch.get_num_threads(),
                      "peak_reset": reset_peak()}), flush=True)
    for line in sys.stdin:
        if line.strip() == "round":
            print(json.dumps(stages.round()), flush=True)
        elif line.strip() == "quit":
            break


if __name__ == "__main__":
    main()
