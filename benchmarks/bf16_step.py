"""Seconds per training step of the fluid U-Net on the CPU: fp32, bf16 autocast, channels-last.

    python benchmarks/bf16_step.py [--threads 2]

One U-Net (512x320, batch 2, Dice + BCE, AdamW), one warm-up step, then the mean of 3 steps each.
bf16 pays only on a CPU with native bf16 (AVX512-BF16 or AMX); ``LoopConfig.cpu_bf16`` checks that.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    from lesiondet.oct.segment import build_unet, dice_bce

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = build_unet("none")
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x, y = torch.randn(2, 3, 320, 512), (torch.rand(2, 1, 320, 512) > 0.97).float()
    print(f"native bf16: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}")

    def step(bf16: bool, channels_last: bool) -> None:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        m = net.to(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = m(x.to(memory_format=fmt))
        loss = dice_bce(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for bf16, cl in ((False, False), (False, True), (True, False), (True, True)):
        step(bf16, cl)
        t = time.perf_counter()
        for _ in range(3):
            step(bf16, cl)
        print(f"{'bf16' if bf16 else 'fp32'}{' + channels-last' if cl else '':<17} {(time.perf_counter() - t) / 3:.2f} s/step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
