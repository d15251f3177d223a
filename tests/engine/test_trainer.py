"""The one training loop, driven by a toy task: phases, schedule, early stopping, time budget, exact resume."""
import csv
import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lesiondet.engine.trainer import LoopConfig, Phase, Schedule, Trainer


class LineTask:
    """Fit y = 2x + 1 with a linear layer; 'fitness' is minus the validation MSE."""

    def __init__(self, epochs=(2, 3), patience_friendly=True):
        torch.manual_seed(0)
        self.model = nn.Linear(1, 1)
        x = torch.linspace(-1, 1, 32).unsqueeze(1)
        self.data = TensorDataset(x, 2 * x + 1)
        self.epochs = epochs
        self.val_calls = 0

    def phases(self):
        def freeze_bias(m):
            m.bias.requires_grad_(False)

        def all_(m):
            m.bias.requires_grad_(True)

        return [Phase("weight", self.epochs[0], 0.1, freeze_bias), Phase("all", self.epochs[1], 0.05, all_, "adamw")]

    def train_dataset(self):
        return self.data

    def loss(self, model, batch, device):
        x, y = batch
        return {"loss": nn.functional.mse_loss(model(x), y)}

    def validate(self, model, device):
        self.val_calls += 1
        x, y = self.data.tensors
        with torch.no_grad():
            return {"val_mse": float(nn.functional.mse_loss(model(x), y))}

    def fitness(self, m):
        return -m["val_mse"]

    def history_row(self, m):
        return {"val_mse": m["val_mse"]}

    def meta(self):
        return {"format": "toy/1"}


def _fit(tmp_path, task=None, resume=None, **loop):
    task = task or LineTask()
    return task, Trainer(task, LoopConfig(batch=8, **loop), tmp_path, torch.device("cpu"), log=lambda m: None,
                         config={"toy": {"a": 1}}).fit(resume)


def test_phases_run_in_order_and_each_trains_what_it_unfreezes(tmp_path):
    task, out = _fit(tmp_path)
    assert [r["phase"] for r in out["history"]] == ["weight"] * 2 + ["all"] * 3
    assert out["epochs_done"] == 5 and out["history"][-1]["val_mse"] < out["history"][0]["val_mse"]
    for name in ("best.pt", "last.pt", "metrics.csv", "curves.png", "config.yaml"):
        assert (tmp_path / name).is_file(), name
    assert "toy:" in (tmp_path / "config.yaml").read_text()
    with open(tmp_path / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5]
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["format"] == "toy/1" and best["best_fitness"] == pytest.approx(max(-r["val_mse"] for r in out["history"]))


def test_patience_stops_training_when_validation_stops_improving(tmp_path):
    class Flat(LineTask):
        def validate(self, model, device):
            self.val_calls += 1
            return {"val_mse": 1.0}  # never improves after the first epoch

    task, out = _fit(tmp_path, Flat(epochs=(1, 20)), patience=2)
    assert out["epochs_done"] == 3 and task.val_calls == 3


def test_a_time_budget_ends_the_run_cleanly(tmp_path):
    task = LineTask(epochs=(1, 1000))
    out = Trainer(task, LoopConfig(batch=8), tmp_path, torch.device("cpu"), time_limit_min=0.02,
                  log=lambda m: None).fit()
    assert out["stopped_early"] and out["epochs_done"] < 1001
    assert torch.load(tmp_path / "last.pt", weights_only=True)["stopped_early"] is True


def test_resume_across_a_phase_boundary_matches_an_uninterrupted_run(tmp_path):
    _, ref = _fit(tmp_path / "ref")
    # the same run stopped after epoch 3 (inside the second phase), then resumed to the end
    _fit(tmp_path / "cut", LineTask(epochs=(2, 1)))
    last = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert last["phase"] == 1 and last["epoch"] == 2
    # pretend the run was meant to be 2 + 3 epochs long: the resumed phase continues its own schedule
    task = LineTask(epochs=(2, 3))
    _, done = _fit(tmp_path / "cut", task, resume=tmp_path / "cut" / "last.pt")
    assert [r["epoch"] for r in done["history"]] == [1, 2, 3, 4, 5]
    assert [r["phase"] for r in done["history"]] == [r["phase"] for r in ref["history"]]


def test_schedule_warms_up_then_decays_by_iterations_or_by_the_clock():
    s = Schedule(warmup=10, total=110)
    assert s(0) == pytest.approx(0.001) and s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)) * 0.99 + 0.01)
    assert s(110) == pytest.approx(0.01)
    s.time_progress = 1.0  # the time budget is spent: the rate is at its floor whatever the iteration
    assert s(20) == pytest.approx(0.01)


class DtypeSpy(LineTask):
    """Records the dtype the model's output had inside the loop's autocast."""

    def __init__(self):
        super().__init__(epochs=(1, 1))
        self.dtypes = set()

    def loss(self, model, batch, device):
        x, y = batch
        out = model(x)
        self.dtypes.add(out.dtype)
        return {"loss": nn.functional.mse_loss(out.float(), y)}


@pytest.mark.parametrize("native", [True, False])
def test_cpu_bf16_autocasts_only_where_the_cpu_has_bf16_natively(tmp_path, monkeypatch, native):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    task, result = _fit(tmp_path, DtypeSpy(), cpu_bf16=True)
    assert task.dtypes == ({torch.bfloat16} if native else {torch.float32})
    assert all(math.isfinite(r["val_mse"]) for r in result["history"])


def test_without_cpu_bf16_the_cpu_trains_in_float32(tmp_path):
    task, _ = _fit(tmp_path, DtypeSpy())
    assert task.dtypes == {torch.float32}
