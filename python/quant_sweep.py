#!/usr/bin/env python3
"""Tables and a plot of a quantization bit-width sweep: one faithful run per (weight bits,
activation bits, seed), each with `compressions = ["quantize"]` and every regularizer.

Usage: quant_sweep.py OUT_DIR RUN_DIR [RUN_DIR ...]

Reads each run's config.toml ([quantize] weight_bits / act_bits) and results.json (rows of
the run's main attribution method), and writes OUT_DIR/quant-sweep.md (mean ± sample std over
seeds; the paper's protocol and the present-pairs protocol), quant-sweep.csv (one line per
run and network) and quant-sweep.png (AUC, point accuracy, cos and l2 against the bit widths,
one line per regularizer, the teacher dashed). Needs numpy and matplotlib.
"""
import csv
import json
import os
import re
import statistics
import sys

METRICS = [("map", "mAP"), ("auc", "AUC"), ("point_acc", "point acc"), ("cos", "cos"),
           ("l2", "l2")]


def bits(run):
    text = open(os.path.join(run, "config.toml")).read()
    section = text.split("[quantize]", 1)[1]
    w = int(re.search(r"weight_bits = (\d+)", section).group(1))
    a = int(re.search(r"act_bits = (\d+)", section).group(1))
    attribution = re.search(r'attributions = \["([^"]+)"', text)
    return w, a, attribution.group(1) if attribution else "gradcam"


def value(row, key, protocol):
    if protocol == "paper" or key in ("map", "f1"):
        v = row[key]
    else:
        v = row["protocols"]["present"][key]
    return float("nan") if v is None else float(v)


def fmt(values):
    values = [v for v in values if v == v]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.2f}" if abs(values[0]) > 2 else f"{values[0]:.3f}"
    m, s = statistics.mean(values), statistics.stdev(values)
    return f"{m:.2f} ± {s:.2f}" if abs(m) > 2 else f"{m:.3f} ± {s:.3f}"


def main():
    out, runs = sys.argv[1], sys.argv[2:]
    os.makedirs(out, exist_ok=True)
    cells = {}  # (w, a) -> network label -> metric -> protocol -> [values]
    lines = []
    for run in runs:
        w, a, method = bits(run)
        rows = json.load(open(os.path.join(run, "results.json")))
        for r in rows:
            if r.get("attribution", "gradcam") != method:
                continue
            label = "teacher" if r["compression"] == "none" else r["regularizer"]
            d = cells.setdefault((w, a), {}).setdefault(label, {})
            for key, _ in METRICS:
                for protocol in ("paper", "present"):
                    d.setdefault(key, {}).setdefault(protocol, []).append(value(r, key, protocol))
            lines.append([w, a, r["seed"], label] + [value(r, k, "paper") for k, _ in METRICS])
    order = sorted(cells, key=lambda c: (-c[0] - c[1], -c[0]))
    labels = ["teacher", "none", "ewa", "swa", "sswa", "e2kd"]
    md = ["# Quantization bit-width sweep\n",
          "Mean ± sample std over seeds; mAP in %, AUC and point accuracy in %, cos / l2 "
          "against the float teacher's maps. `none` is naive quantization-aware fine-tuning.\n"]
    for protocol, title in (("paper", "the paper's protocol (pairs each network predicts)"),
                            ("present", "every present pair")):
        md.append(f"\n## AUC / point accuracy under {title}\n")
        md.append("| bits | network | seeds | mAP | AUC | point acc | cos | l2 |")
        md.append("|---|---|---:|---:|---:|---:|---:|---:|")
        for c in order:
            for label in labels:
                if label not in cells[c]:
                    continue
                d = cells[c][label]
                n = len(d["map"]["paper"])
                md.append(f"| W{c[0]}A{c[1]} | {label} | {n} | "
                          + " | ".join(fmt(d[k][protocol]) for k, _ in METRICS) + " |")
    open(os.path.join(out, "quant-sweep.md"), "w").write("\n".join(md) + "\n")
    with open(os.path.join(out, "quant-sweep.csv"), "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["weight_bits", "act_bits", "seed", "network"] + [k for k, _ in METRICS])
        wr.writerows(lines)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    xs = list(range(len(order)))
    for ax, (key, name) in zip(axes, METRICS[1:]):
        for label in labels:
            ys, es = [], []
            for c in order:
                v = [x for x in cells[c].get(label, {}).get(key, {}).get("paper", []) if x == x]
                ys.append(statistics.mean(v) if v else float("nan"))
                es.append(statistics.stdev(v) if len(v) > 1 else 0.0)
            if all(y != y for y in ys):
                continue
            style = "--" if label == "teacher" else "-"
            ax.errorbar(xs, ys, yerr=es, fmt=style + "o", capsize=3, label=label, markersize=4)
        ax.set_xticks(xs, [f"W{c[0]}A{c[1]}" for c in order])
        ax.set_title(name + " (paper's protocol)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "quant-sweep.png"), dpi=110)
    print("\n".join(md))


if __name__ == "__main__":
    main()
