"""A run is repeatable: on one machine and thread count, the same command trains the same weights.

This is what lets the README state what ``make demo`` prints from a fresh clone.
"""
import torch

from lesiondet.cli import main


def test_the_same_training_command_twice_gives_identical_weights(trained_run, tiny_sample, tiny_config, tmp_path):
    out = tmp_path / "again"
    assert main(["train", "--voc", str(tiny_sample / "train"), "--val", str(tiny_sample / "val"),
                 "--config", str(tiny_config), "--out", str(out), "--device", "cpu"]) == 0
    first = torch.load(trained_run / "last.pt", weights_only=True)["model"]
    second = torch.load(out / "last.pt", weights_only=True)["model"]
    assert first.keys() == second.keys()
    differ = [k for k in first if not torch.equal(first[k], second[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
