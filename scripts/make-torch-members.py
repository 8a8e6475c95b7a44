#!/usr/bin/env python3
"""Makes three fine-tuned members of a torchvision or timm architecture as
`torch.onnx` exports (TorchScript exporter, opset 17, static batch 1 or
`--batch B`), for
benchmarks of families beyond the reference set: random init, BatchNorm
statistics from a few train-mode passes on random images, then each member
its weights perturbed (2% of each tensor's spread) and its own classifier
(2, 5 and 9 classes).

    python3 scripts/make-torch-members.py resnet18 members/
    fusec bench members/resnet18/m2.onnx members/resnet18/m5.onnx members/resnet18/m9.onnx --threads 2

Families: resnet18, resnet50, mobilenet_v3_small, deeplabv3_mobilenet_v3_large
(torchvision); efficientnet_b0, vit_tiny_patch16_224, convnext_tiny (timm);
and any other classifier by name: torchvision's first (`mobilenet_v2`,
`regnet_y_400mf`), else timm's (`deit_tiny_patch16_224`), at 224x224 (a timm
model at its own default size: `maxvit_nano_rw_256` at 256x256).
`--dynamo` exports with torch's newer exporter (`torch.onnx.export(...,
dynamo=True)`) instead of the TorchScript one. `--batch 8` exports a
static batch of 8 into `FAMILY-b8/`.
Needs torch, torchvision and timm (PyPI; onnxscript for --dynamo); CI does
not use it.
"""
import argparse
import copy
import os
import sys

import torch

FAMILIES = {
    "resnet18": ("torchvision", 224),
    "resnet50": ("torchvision", 224),
    "mobilenet_v3_small": ("torchvision", 224),
    "deeplabv3_mobilenet_v3_large": ("torchvision-seg", 224),
    "efficientnet_b0": ("timm", 224),
    "vit_tiny_patch16_224": ("timm", 224),
    "convnext_tiny": ("timm", 224),
    "inception_v3": ("torchvision", 299),
}


def kind_of(family):
    if family in FAMILIES:
        return FAMILIES[family][0]
    import torchvision
    if family in torchvision.models.list_models(module=torchvision.models):
        return "torchvision"
    import timm
    if timm.is_model(family):
        return "timm"
    sys.exit(f"unknown family {family!r}: neither a torchvision classifier nor a timm model")


def build(family, classes):
    kind = kind_of(family)
    if kind == "torchvision":
        import torchvision
        return getattr(torchvision.models, family)(weights=None, num_classes=classes)
    if kind == "torchvision-seg":
        import torchvision
        return torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=classes, aux_loss=False)
    import timm
    return timm.create_model(family, pretrained=False, num_classes=classes)


class Logits(torch.nn.Module):
    """Segmentation models return a dict; export its `out`."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        y = self.inner(x)
        return y["out"] if isinstance(y, dict) else y


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("family", help="one of " + ", ".join(sorted(FAMILIES)) + ", or another torchvision or timm classifier")
    ap.add_argument("out")
    ap.add_argument("--dynamo", action="store_true", help="export with torch.onnx's dynamo exporter")
    ap.add_argument("--batch", type=int, default=1, help="static batch size of the exports (a folder FAMILY-bB when not 1)")
    args = ap.parse_args()
    if args.batch < 1:
        sys.exit("--batch must be at least 1")
    torch.manual_seed(0)
    base = build(args.family, 2)
    # The families above say their size; a timm model its own default
    # (maxvit_nano_rw_256: 256), else 224.
    cfg = getattr(base, "pretrained_cfg", None) or {}
    size = FAMILIES[args.family][1] if args.family in FAMILIES else cfg.get("input_size", (3, 224, 224))[-1]
    base.train()
    with torch.no_grad():
        for _ in range(3):
            base(torch.randn(2, 3, size, size))
    out = os.path.join(args.out, args.family + ("-dynamo" if args.dynamo else "") + (f"-b{args.batch}" if args.batch != 1 else ""))
    os.makedirs(out, exist_ok=True)
    for k, classes in enumerate((2, 5, 9)):
        m = build(args.family, classes)
        state = copy.deepcopy(base.state_dict())
        own = m.state_dict()
        g = torch.Generator().manual_seed(100 + k)
        for name, t in state.items():
            if own[name].shape != t.shape:
                state[name] = own[name]  # the member's own classifier
            elif t.is_floating_point():
                spread = t.abs().max().clamp(min=1e-3)
                state[name] = t + 0.02 * spread * (torch.rand(t.shape, generator=g) * 2 - 1)
        m.load_state_dict(state)
        m = Logits(m).eval()
        path = os.path.join(out, f"m{classes}.onnx")
        torch.onnx.export(m, (torch.randn(args.batch, 3, size, size),), path, input_names=["image"],
                          output_names=["logits"], opset_version=17 if not args.dynamo else 18, dynamo=args.dynamo)
        print(path)


if __name__ == "__main__":
    sys.exit(main())
