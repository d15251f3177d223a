"""Where a detector's training starts: the shipped detector, another lesiondet checkpoint, or ImageNet.

A clinic boxes a few dozen photographs of its own camera. Starting from the shipped detector keeps
what hours of training on three sets taught it; starting from ImageNet throws that away (issue #34).
So ``--from auto`` (the default) starts from the shipped detector whenever the user's classes
overlap its classes and the run's network is the shipped one, and says why when it does not.

Starting from a checkpoint also means reading photographs the way it was trained: its tiling and
retinal scale (``tiling_resolved``) come with it, and its classes join the run's, so a class the
user does not box keeps its weights and is masked out of the loss (the partial-label machinery:
``annotated``), not trained as background.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from lesiondet.errors import LesiondetError
from lesiondet.io.labels import LabelMap

CHOICES = ("auto", "shipped", "imagenet")
#: keys of the model section that may differ from the start checkpoint's: they do not change the network
FREE_KEYS = ("pretrained", "trainable_from", "box_score_thresh", "box_nms_thresh", "box_detections_per_img",
             "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test")


@dataclass(frozen=True)
class Start:
    """The start a run uses: a checkpoint (``path`` and what it holds) or none (ImageNet), and why."""

    path: Path | None
    why: str
    classes: tuple[str, ...] = ()
    tiling: Mapping[str, Any] | None = None
    model: Mapping[str, Any] | None = None


def same_network(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two model sections build the same network (weights can be copied from one to the other)."""
    from lesiondet.detection.model import resolve_arch

    ra, rb = resolve_arch(a), resolve_arch({k: v for k, v in b.items() if k not in ("min_size", "max_size")})
    return all(ra[k] == rb[k] for k in ra if k not in FREE_KEYS)


def choose_start(start: str | Path | None, model: Mapping[str, Any], label_map: LabelMap) -> Start:
    """The start for a run with this model section and these classes.

    ``start``: ``auto`` (the shipped detector when it shares a class and the network, else ImageNet),
    ``shipped``, ``imagenet`` (or None) or the path of a lesiondet detector checkpoint.
    """
    if start in (None, "imagenet"):
        return Start(None, "ImageNet backbone (--from imagenet)")
    from lesiondet.detection.model import CHECKPOINT_FORMAT
    from lesiondet.engine.checkpoint import load_kind

    auto = start == "auto"
    if start in ("auto", "shipped"):
        from lesiondet.weights import DETECTOR, HERE, default_detector

        if auto and not (HERE / DETECTOR).is_file():
            return Start(None, "ImageNet backbone: this installation has no shipped detector")
        path, name = default_detector(), "the shipped detector"
    else:
        path, name = Path(start), str(start)
        if not path.is_file():
            raise LesiondetError(path, "start checkpoint not found",
                                 "pass --from shipped, imagenet, or a best.pt written by 'lesiondet train'")
    ck = load_kind(path, CHECKPOINT_FORMAT, "detector", "pass --from shipped, imagenet, or a best.pt from "
                                                        "'lesiondet train'")
    classes = tuple(ck["classes"])
    shared = [c for c in label_map.classes if c in classes]
    ck_model = dict(ck.get("config", {}).get("model") or ck["arch"])
    if not same_network(model, ck_model):
        if auto:
            return Start(None, f"ImageNet backbone: this run's model section builds another network than {name}'s "
                               "(pass --from shipped with its model section to start from it)")
        raise LesiondetError(path, "its network is not the one this run's model section builds",
                             "drop --config's model section (the start's network is used), or pass --from imagenet")
    if auto and not shared:
        return Start(None, f"ImageNet backbone: none of your classes ({', '.join(label_map.classes)}) is one "
                           f"{name} knows ({', '.join(classes)})")
    new = [c for c in label_map.classes if c not in classes]
    why = (f"{name} ({path}): it knows {', '.join(shared) or 'none'} of your classes"
           + (f"; new: {', '.join(new)}" if new else "")
           + "; its tiling and retinal scale are used, and its classes you do not box keep their weights")
    return Start(path, why, classes, dict(ck.get("tiling") or {}), ck_model)


def with_start_classes(label_map: LabelMap, start: Start) -> LabelMap:
    """The run's classes followed by the start's classes it lacks (those are trained by no one: masked)."""
    extra = tuple(c for c in start.classes if c not in label_map.classes)
    if not extra:
        return label_map
    return LabelMap(label_map.classes + extra, dict(label_map.aliases), label_map.ignore, label_map.source,
                    dict(label_map.partial))
