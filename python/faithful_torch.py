#!/usr/bin/env python3
"""Load a network exported by faithful (`export_torch`) as a plain PyTorch `nn.Module`.

Requires `torch` and `safetensors` (pip install torch safetensors). Not exercised by faithful's
own tests, which run without torch: the same JSON + safetensors pair is checked there by a
numpy re-implementation (tests/fixtures/check_torch_export.py) that follows this file's layout.

    from faithful_torch import load
    model = load("exports/student")        # reads student.json and student.safetensors
    logits = model(x)                       # x: float tensor [N, 3, H, W], already normalised
    model.normalization                     # {"mean": [...], "std": [...]} or None
    model.class_names                       # list of names or None

Command line: `python faithful_torch.py STEM` prints the module and a forward pass on zeros.

Layer names are torchvision's vgg*_bn names: `features.{i}` (Conv2d, BatchNorm2d, ReLU,
MaxPool2d, and last the head pool) and `classifier.{j}` (Linear, ReLU, Dropout, ..., Linear).
"""
import json
import sys

import torch
from safetensors.torch import load_file
from torch import nn


def _feature_layer(layer):
    kind = layer["type"]
    if kind == "conv":
        return nn.Conv2d(layer["in"], layer["out"], layer["kernel"], stride=layer.get("stride", 1),
                         padding=layer["padding"], bias=layer["bias"])
    if kind == "bn":
        return nn.BatchNorm2d(layer["channels"], eps=layer["eps"], momentum=layer["momentum"])
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "maxpool":
        return nn.MaxPool2d(layer["kernel"], layer["stride"])
    if kind == "global_maxpool":
        return nn.AdaptiveMaxPool2d(1)
    raise ValueError(f"unknown feature layer type {kind!r}")


def _classifier_layer(layer):
    kind = layer["type"]
    if kind == "linear":
        return nn.Linear(layer["in"], layer["out"], bias=layer.get("bias", True))
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "dropout":
        return nn.Dropout(layer["p"])
    raise ValueError(f"unknown classifier layer type {kind!r}")


class FaithfulVgg(nn.Module):
    """features -> flatten (channel-major, torch.flatten(x, 1)) -> classifier; returns logits."""

    def __init__(self, desc):
        super().__init__()
        for section in ("features", "classifier"):
            for pos, layer in enumerate(desc[section]):
                if layer.get("index", pos) != pos:
                    raise ValueError(f"{section}[{pos}] has index {layer['index']}")
        self.features = nn.Sequential(*[_feature_layer(l) for l in desc["features"]])
        self.classifier = nn.Sequential(*[_classifier_layer(l) for l in desc["classifier"]])
        self.normalization = desc["input"].get("normalization")
        self.class_names = desc.get("class_names")
        self.input_size = (desc["input"]["height"], desc["input"]["width"])

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def load(stem):
    """Builds the module described by STEM.json, loads STEM.safetensors strictly, sets eval()."""
    for ext in (".json", ".safetensors"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    with open(stem + ".json") as f:
        desc = json.load(f)
    if desc.get("format") != "faithful-torch-export":
        raise ValueError(f"{stem}.json is not a faithful PyTorch export description")
    model = FaithfulVgg(desc)
    model.load_state_dict(load_file(stem + ".safetensors"), strict=True)
    return model.eval()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: faithful_torch.py STEM")
    m = load(sys.argv[1])
    print(m)
    h, w = m.input_size
    with torch.no_grad():
        print("logits on zeros:", m(torch.zeros(1, 3, h, w)))
