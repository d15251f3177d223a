"""Crash safety: a training run killed with SIGKILL mid-epoch resumes from last.pt and ends exactly
where an uninterrupted run ends: same weights, optimizer, scheduler, epoch count and RNG streams."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lesiondet.cli import main

pytestmark = pytest.mark.e2e  # through the CLI, with trained models

# Two epochs of ~20 iterations each, augmentation on, data loading in the main process:
# enough time to kill the run inside epoch 2 (the last, so the resume has something left to do).
CONFIG = """
tiling:
  tile: 128
  zoom: 1
  tiles_per_image: 7
model:
  fpn_channels: 64
  anchor_sizes: [[4, 8], [16, 32], [48, 64], [96, 128]]
train:
  epochs: 2
  batch: 2
  workers: 0
  warmup_iters: 2
"""


def _rows(metrics: Path) -> int:
    if not metrics.is_file():
        return 0
    with open(metrics) as f:
        return sum(1 for _ in csv.DictReader(f))


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tiny_sample, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG)
    common = ["train", "--voc", str(tiny_sample / "train"), "--val", str(tiny_sample / "val"),
              "--config", str(cfg), "--device", "cpu"]

    # 1. the reference: two epochs without interruption
    assert main(common + ["--out", str(tmp_path / "ref")]) == 0
    ref = torch.load(tmp_path / "ref" / "last.pt", weights_only=False)

    # 2. the same run in a child process, killed while epoch 2 is under way
    run = tmp_path / "killed"
    env = {**os.environ, "LESIONDET_PROGRESS": "0"}
    child = subprocess.Popen([sys.executable, "-m", "lesiondet", *common, "--out", str(run)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 300
    while _rows(run / "metrics.csv") < 1 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into epoch 2 (an epoch takes several seconds)
    assert child.poll() is None, "the run ended before it could be killed: " + child.stderr.read().decode()[-500:]
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    killed = torch.load(run / "last.pt", weights_only=False)
    assert killed["epoch"] == 0 and _rows(run / "metrics.csv") == 1  # epoch 1 saved, epoch 2 lost
    assert not list(run.glob(".*.tmp"))  # atomic writes: no half-written checkpoint lying around

    # 3. resume and finish
    assert main(["train", "--resume", str(run / "last.pt")]) == 0
    done = torch.load(run / "last.pt", weights_only=False)
    assert done["epoch"] == ref["epoch"] == 1
    assert [r["epoch"] for r in done["history"]] == [1, 2]
    assert done["scheduler"]["last_epoch"] == ref["scheduler"]["last_epoch"]
    for k, v in ref["model"].items():
        assert torch.allclose(done["model"][k], v, atol=1e-5, rtol=1e-4), k
    # momentum buffers of SGD
    for a, b in zip(ref["optimizer"]["state"].values(), done["optimizer"]["state"].values()):
        assert torch.allclose(a["momentum_buffer"], b["momentum_buffer"], atol=1e-5, rtol=1e-4)
    for key in ("val_mAP50", "loss"):
        assert [r[key] for r in done["history"]] == pytest.approx([r[key] for r in ref["history"]], abs=1e-4)
    assert torch.equal(done["rng"]["torch"], ref["rng"]["torch"])
    assert done["augment_rng"]["numpy"] == ref["augment_rng"]["numpy"]
