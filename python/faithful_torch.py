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

Layer names are torchvision's: for a VGG its vgg*_bn names, `features.{i}` (Conv2d,
BatchNorm2d, ReLU, MaxPool2d, and last the head pool) and `classifier.{j}` (Linear, ReLU,
Dropout, ..., Linear); for a ResNet (`"family": "resnet"`) its resnet names, `conv1`, `bn1`,
`layer{s}.{b}.conv{k}` / `bn{k}` / `downsample`, `fc`. A ResNet export whose JSON names a
`torchvision` constructor also loads into `torchvision.models.<that>(num_classes=K)`.
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


class _Block(nn.Module):
    """A residual block under torchvision's names: conv1/bn1 ... convK/bnK, downsample."""

    def __init__(self, desc):
        super().__init__()
        self.depth = len(desc["chain"])
        for k, layer in enumerate(desc["chain"], start=1):
            setattr(self, f"conv{k}", _conv(layer["conv"]))
            setattr(self, f"bn{k}", _bn(layer["bn"]))
        d = desc["downsample"]
        self.downsample = None if d is None else nn.Sequential(_conv(d["conv"]), _bn(d["bn"]))
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x):
        y = x
        for k in range(1, self.depth + 1):
            y = getattr(self, f"bn{k}")(getattr(self, f"conv{k}")(y))
            if k < self.depth:
                y = self.relu(y)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(y + shortcut)


def _conv(c):
    return nn.Conv2d(c["in"], c["out"], c["kernel"], stride=c["stride"], padding=c["padding"],
                     bias=False)


def _bn(b):
    return nn.BatchNorm2d(b["channels"], eps=b["eps"], momentum=b["momentum"])


class FaithfulResNet(nn.Module):
    """torchvision's ResNet structure for any widths and stems; returns logits."""

    def __init__(self, desc):
        super().__init__()
        stem = desc["stem"]
        self.conv1, self.bn1 = _conv(stem["conv"]), _bn(stem["bn"])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem["maxpool"] else nn.Identity()
        for s, stage in enumerate(desc["layers"], start=1):
            setattr(self, f"layer{s}", nn.Sequential(*[_Block(b) for b in stage]))
        self.stages = len(desc["layers"])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(desc["fc"]["in"], desc["fc"]["out"])
        self.normalization = desc["input"].get("normalization")
        self.class_names = desc.get("class_names")
        self.input_size = (desc["input"]["height"], desc["input"]["width"])

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for s in range(1, self.stages + 1):
            x = getattr(self, f"layer{s}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def load(stem):
    """Builds the module described by STEM.json, loads STEM.safetensors strictly, sets eval()."""
    for ext in (".json", ".safetensors"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    with open(stem + ".json") as f:
        desc = json.load(f)
    if desc.get("format") != "faithful-torch-export":
        raise ValueError(f"{stem}.json is not a faithful PyTorch export description")
    model = FaithfulResNet(desc) if desc.get("family") == "resnet" else FaithfulVgg(desc)
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
