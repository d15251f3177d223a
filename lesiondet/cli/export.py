"""``lesiondet export``: the per-tile detector network as ONNX or TorchScript."""
from __future__ import annotations

import argparse

from lesiondet.cli.common import add_trust_legacy, say


def add(sub) -> None:
    x = sub.add_parser("export", help="export a detector's per-tile network to ONNX or TorchScript")
    x.add_argument("--weights", required=True, help="best.pt from 'lesiondet train'")
    x.add_argument("--format", choices=("onnx", "torchscript"), default="onnx",
                   help="onnx (onnxruntime, any platform) or torchscript")
    x.add_argument("--out", help="output file (default: the weights' name with .onnx or .torchscript)")
    add_trust_legacy(x)
    x.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from lesiondet import api

    out = api.export(a.weights, a.format, a.out, trust_legacy=a.trust_legacy)
    use = f"lesiondet detect IMG --weights {out}" if a.format == "onnx" else "torch.jit.load"
    say(f"wrote {out}: the per-tile network, images at model scale in, boxes out; slicing and merging stay "
        f"in lesiondet ({use})")
    return 0
