#!/usr/bin/env python3
"""onnxruntime latency of a float ONNX network against its int8 (QDQ) export, side by side.

Usage: bench_onnx_int8.py FP32.onnx INT8.onnx [--threads 2] [--rounds 7] [--batches 1,32]

Interleaved rounds (fp32, int8, fp32, int8, ...) so that machine noise hits both alike; each
round times a few runs after a warm-up. Prints a Markdown table (median ms per batch, the
spread as min-max over rounds, int8 speed-up) and the file sizes, then one JSON line.
"""
import argparse
import json
import os
import statistics
import time

import numpy as np
import onnxruntime as ort


def session(path, threads):
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def timed(sess, x, runs):
    sess.run(["logits"], {"input": x})
    start = time.perf_counter()
    for _ in range(runs):
        sess.run(["logits"], {"input": x})
    return (time.perf_counter() - start) / runs * 1000.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("fp32")
    p.add_argument("int8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--batches", default="1,32")
    a = p.parse_args()
    sessions = {"fp32": session(a.fp32, a.threads), "int8": session(a.int8, a.threads)}
    shape = sessions["fp32"].get_inputs()[0].shape
    side = int(shape[2])
    results = {}
    for batch in [int(b) for b in a.batches.split(",")]:
        x = np.random.default_rng(0).standard_normal((batch, 3, side, side)).astype(np.float32)
        probe = timed(sessions["fp32"], x, 1)
        runs = max(1, int(200.0 / max(probe, 1e-3)))
        times = {"fp32": [], "int8": []}
        for _ in range(a.rounds):
            for name, sess in sessions.items():
                times[name].append(timed(sess, x, runs))
        results[batch] = {k: (statistics.median(v), min(v), max(v)) for k, v in times.items()}
    sizes = {k: os.path.getsize(getattr(a, k)) for k in ("fp32", "int8")}
    print(f"onnxruntime {ort.__version__}, {a.threads} threads, {a.rounds} interleaved rounds\n")
    print("| batch | fp32 ms (min-max) | int8 ms (min-max) | int8 speed-up |")
    print("|---:|---:|---:|---:|")
    for batch, r in results.items():
        f, i = r["fp32"], r["int8"]
        print(f"| {batch} | {f[0]:.2f} ({f[1]:.2f}-{f[2]:.2f}) | {i[0]:.2f} ({i[1]:.2f}-{i[2]:.2f}) "
              f"| {f[0] / i[0]:.2f}x |")
    print(f"\nfile sizes: fp32 {sizes['fp32']} bytes, int8 {sizes['int8']} bytes "
          f"({100.0 * sizes['int8'] / sizes['fp32']:.1f}%)")
    print(json.dumps({"threads": a.threads, "results": {str(k): v for k, v in results.items()},
                      "sizes": sizes}))


if __name__ == "__main__":
    main()
