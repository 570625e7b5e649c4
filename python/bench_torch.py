#!/usr/bin/env python3
"""PyTorch timings of the Grad-CAM-in-the-loss training step, the authors' way (double
backprop, `create_graph=True`) and the closed form faithful uses, for comparison with
`faithful bench` on the same machine.

The network is the reference fixture's (`../shared/reference/README.md`): conv3x3 (no bias) -
BatchNorm - ReLU blocks 32-64-128-256 on 3x64x64 input, max-pool 2 after blocks 1-3; A = block 4
(256x8x8); head = max-pool 2 -> flatten -> fc 256 -> ReLU -> fc 20. Batch 32, SGD with momentum.
Loss: BCE + 50 * mean(cam * mask), cam = ReLU(sum_c alpha_c A_c), alpha = spatial mean of
d logit_3 / dA.

Usage: bench_torch.py [--device cpu|cuda] [--threads N] [--iters N]
Prints one JSON object: median ms per step of each variant.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn


class FixtureNet(nn.Module):
    def __init__(self, classes=20):
        super().__init__()
        chans = [3, 32, 64, 128, 256]
        self.convs = nn.ModuleList(
            nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False) for i in range(4))
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in chans[1:])
        self.fc1 = nn.Linear(256 * 4 * 4, 256)
        self.fc2 = nn.Linear(256, classes)

    def features(self, x):
        for i in range(4):
            x = F.relu(self.bns[i](self.convs[i](x)))
            if i < 3:
                x = F.max_pool2d(x, 2)
        return x

    def head(self, a):
        return self.fc2(F.relu(self.fc1(F.max_pool2d(a, 2).flatten(1))))


def cam_double_backprop(model, a, logits, t):
    g, = torch.autograd.grad(logits[:, t].sum(), a, create_graph=True)
    return F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))


def cam_closed_form(model, a, logits, t):
    """d logit_t / dA through the piecewise-linear head with ordinary tracked ops: fc2 row t,
    the ReLU mask of fc1, fc1's weights, then the max-pool's routing back to A's positions."""
    z, idx = F.max_pool2d(a, 2, return_indices=True)
    h = model.fc1(z.flatten(1))
    gh = model.fc2.weight[t].unsqueeze(0) * (h > 0).to(a.dtype)
    gz = (gh @ model.fc1.weight).view_as(z)
    g = F.max_unpool2d(gz, idx, 2, output_size=a.shape[-2:])
    return F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = FixtureNet().to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(32, 3, 64, 64, device=dev)
    y = (torch.rand(32, 20, device=dev) > 0.5).float()
    mask = torch.rand(32, 8, 8, device=dev)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step(cam):
        opt.zero_grad(set_to_none=True)
        a = model.features(x)
        logits = model.head(a)
        loss = F.binary_cross_entropy_with_logits(logits, y)
        if cam is not None:
            loss = loss + 50 * (cam(model, a, logits, 3) * mask).mean()
        loss.backward()
        opt.step()

    # same gradients either way (the closed form is exact for this head)
    a = model.features(x)
    logits = model.head(a)
    c1 = cam_double_backprop(model, a, logits, 3)
    c2 = cam_closed_form(model, a, logits, 3)
    cam_diff = float(((c1 - c2).abs().max() / c1.abs().max().clamp_min(1e-12)).detach())

    res = {"torch": torch.__version__, "device": str(dev),
           "threads": torch.get_num_threads(), "cam_max_rel_diff": cam_diff}
    for name, cam in [("plain", None), ("double_backprop", cam_double_backprop),
                      ("closed_form", cam_closed_form)]:
        for _ in range(3):
            step(cam)
        sync()
        times = []
        for _ in range(args.iters):
            t0 = time.perf_counter()
            step(cam)
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
        res[f"{name}_ms"] = statistics.median(times)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
