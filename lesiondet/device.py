"""Device choice and torchrun/DDP set-up."""
from __future__ import annotations

import os

import torch

from lesiondet.errors import LesiondetError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LesiondetError(None, f"--device {name} asked for, but no CUDA GPU is visible",
                             "use --device cpu or auto")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise LesiondetError(None, f"unknown device '{name}'", "use auto, cpu, cuda or cuda:N")
    return torch.device(name)


def distributed() -> bool:
    """True under ``torchrun`` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """Initialise the process group from torchrun's environment; returns (rank, world, device)."""
    if not distributed():
        return 0, 1, device
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device
