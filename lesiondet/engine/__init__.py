"""The one training loop every model uses, and the checkpoints it writes.

A task supplies its network, data, loss and validation metric (``Task``); ``Trainer`` does the rest.
"""
from lesiondet.engine.trainer import LoopConfig, Phase, Task, Trainer

__all__ = ["LoopConfig", "Phase", "Task", "Trainer"]
