"""``Predictor``: a trained checkpoint turned into detections for image files or arrays."""
from __future__ import annotations

import contextlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from .data import fit_to, to_tensor
from .device import resolve_device
from .errors import LesiondetError
from .images import read_rgb
from .model import detector_from_checkpoint, load_checkpoint
from .progress import progress as progress_bar
from .tiling import (big_enough, drop_cut_boxes, fov_share, low_res_fov, merge_detections, resolve_tiling,
                     should_slice, slice_windows, window_size)
from .voc import VocObject, VocRecord


def detections_from_output(out: dict, classes: Sequence[str], score: float) -> list[VocObject]:
    """Torchvision's output dict → ``VocObject`` list above ``score``, best first."""
    keep = out["scores"] >= score
    boxes = out["boxes"][keep].detach().cpu().tolist()
    scores = out["scores"][keep].detach().cpu().tolist()
    labels = out["labels"][keep].detach().cpu().tolist()
    return [VocObject(classes[lab - 1], tuple(b), False, s) for b, s, lab in zip(boxes, scores, labels)]


@contextlib.contextmanager
def input_size(model: torch.nn.Module, min_size: int, max_size: int) -> Iterator[None]:
    """Temporarily change the size torchvision's transform resizes inputs to."""
    t = model.transform
    old = t.min_size, t.max_size
    t.min_size, t.max_size = (int(min_size),), int(max_size)
    try:
        yield
    finally:
        t.min_size, t.max_size = old


@contextlib.contextmanager
def score_threshold(model: torch.nn.Module, score: float) -> Iterator[None]:
    """Let the model return detections down to ``score``, whatever threshold it was built with.

    NMS, the NMS merge across tiles and nested-box suppression are greedy by
    score, so boxes below ``score`` never change the boxes above it: cutting
    them inside the model is exact, and saves work. Weighted box fusion then
    fuses only boxes above ``score`` (its "skip threshold").
    """
    heads = model.roi_heads
    old = heads.score_thresh
    heads.score_thresh = float(score)
    try:
        yield
    finally:
        heads.score_thresh = old


@torch.inference_mode()
def predict_tiles(model: torch.nn.Module, tiles: Sequence[tuple[np.ndarray, VocRecord]], classes: Sequence[str],
                  device: torch.device, score: float, tiling: Mapping[str, Any]) -> list[VocRecord]:
    """Detections for ready-cut tiles, each fed at the tile size; records in tile coordinates."""
    model.eval()
    out: list[VocRecord] = []
    b = int(tiling["batch"])
    with input_size(model, tiling["tile"], tiling["tile"]), score_threshold(model, score):
        for i in range(0, len(tiles), b):
            chunk = tiles[i:i + b]
            for (_, rec), o in zip(chunk, forward(model, [to_tensor(img).to(device) for img, _ in chunk],
                                                  tiling["tta"])):
                if tiling["tta"]:  # the two views of a tile overlap entirely: merge them as a sliced image would be
                    o = merge_passes(o["boxes"], o["scores"], o["labels"], tiling)
                out.append(rec.with_objects(detections_from_output(o, classes, score)))
    return out


def forward(model: torch.nn.Module, images: Sequence[torch.Tensor], flip: bool = False) -> list[dict]:
    """``model(images)``; with ``flip``, each image's detections on its mirror image are added, mapped back.

    Both sets then go through the class-wise merge with everything else, so a
    lesion missed in one orientation can still be found in the other.
    """
    outs = model(list(images))
    if not flip:
        return outs
    for o, m, im in zip(outs, model([im.flip(-1) for im in images]), images):
        w = im.shape[-1]
        back = torch.stack([w - m["boxes"][:, 2], m["boxes"][:, 1], w - m["boxes"][:, 0], m["boxes"][:, 3]], 1)
        o["boxes"] = torch.cat([o["boxes"], back])
        o["scores"] = torch.cat([o["scores"], m["scores"]])
        o["labels"] = torch.cat([o["labels"], m["labels"]])
    return outs


def merge_passes(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, tiling: Mapping[str, Any],
                 max_det: int = 1000) -> dict[str, torch.Tensor]:
    """Detections from several passes over one image merged per class the way ``tiling`` says."""
    b, s, lab = merge_detections(boxes, scores, labels, tiling["merge"], float(tiling["merge_iou"]), max_det,
                                 float(tiling.get("nested_ios", 0.0)))
    return {"boxes": b, "scores": s, "labels": lab}


def tile_windows(img: np.ndarray, tiling: Mapping[str, Any]) -> list[tuple[int, int, int, int]]:
    """The ``(x0, y0, x1, y1)`` tiles sliced inference runs on ``img``: those with enough field of view."""
    h, w = img.shape[:2]
    fov = low_res_fov(img)
    return [wd for wd in slice_windows(w, h, window_size(tiling), float(tiling["overlap"]))
            if fov_share(fov[0], fov[1], wd) >= tiling["fov_min"]]


def _tile_passes(model, img, t, device, add) -> None:
    h, w = img.shape[:2]
    windows = tile_windows(img, t)
    full = to_tensor(img)
    for i in range(0, len(windows), int(t["batch"])):
        chunk = windows[i:i + int(t["batch"])]
        outs = forward(model, [full[:, y0:y1, x0:x1].to(device) for x0, y0, x1, y1 in chunk], t["tta"])
        for (x0, y0, x1, y1), o in zip(chunk, outs):
            keep = drop_cut_boxes(o["boxes"].cpu(), (x0, y0, x1, y1), w, h) if t["full_pass"] else None
            add(o, 1.0, x0, y0, keep)


@torch.inference_mode()
def sliced_predict(model: torch.nn.Module, img: np.ndarray, tiling: Mapping[str, Any], device: torch.device,
                   max_det: int = 1000) -> dict[str, torch.Tensor]:
    """Detections for one image, in its pixel coordinates, the way ``tiling`` says.

    Sliced: overlapping tiles of ``tile / zoom`` source pixels, batched, plus a
    whole-image pass shrunk to the tile for large objects; pieces of objects cut
    by a tile edge are dropped when the whole-image pass is on, then everything
    (with ``tta``, the mirrored passes too) is merged per class. Not sliced:
    one pass, either the whole image shrunk to the tile (``slice: auto``, as in
    training) or at native size times zoom (``slice: false``).
    """
    model.eval()
    h, w = img.shape[:2]
    t = tiling
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def add(out: dict, scale: float = 1.0, dx: int = 0, dy: int = 0, keep: torch.Tensor | None = None) -> None:
        b, s, lab = out["boxes"].cpu(), out["scores"].cpu(), out["labels"].cpu()
        if keep is not None:
            b, s, lab = b[keep], s[keep], lab[keep]
        b = b / scale + torch.tensor([dx, dy, dx, dy], dtype=b.dtype)
        parts.append((b, s, lab))

    sliced = should_slice(w, h, t)
    if t["slice"] is False:
        z = float(t["zoom"])
        with input_size(model, round(min(h, w) * z), round(max(h, w) * z)):
            add(forward(model, [to_tensor(img).to(device)], t["tta"])[0])
    else:
        with input_size(model, t["tile"], t["tile"]):  # a --tile override must reach the model too
            if sliced:
                _tile_passes(model, img, t, device, add)
            if t["full_pass"] or not sliced:
                small, s = fit_to(img, t["tile"])
                o = forward(model, [to_tensor(small).to(device)], t["tta"])[0]
                # When sliced, small objects are the tiles' job; in this view they are a few blurred pixels.
                keep = torch.from_numpy(big_enough(o["boxes"].cpu().numpy(), t["full_min_px"])) if sliced else None
                add(o, s, keep=keep)
    boxes = torch.cat([p[0] for p in parts]) if parts else torch.zeros(0, 4)
    scores = torch.cat([p[1] for p in parts]) if parts else torch.zeros(0)
    labels = torch.cat([p[2] for p in parts]) if parts else torch.zeros(0, dtype=torch.int64)
    if parts:
        # A single pass comes out of torchvision's own NMS (IoU 0.4), so merging it changes nothing
        # but the nested-box suppression: one path for one pass and for many.
        m = merge_passes(boxes, scores, labels, t, max_det)
        boxes, scores, labels = m["boxes"], m["scores"], m["labels"]
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    return {"boxes": boxes, "scores": scores, "labels": labels}


@torch.inference_mode()
def predict_records(model: torch.nn.Module, records: Iterable[VocRecord], classes: Sequence[str],
                    device: torch.device, score: float = 0.001, batch: int = 2,
                    tiling: Mapping[str, Any] | None = None, progress: bool = False) -> list[VocRecord]:
    """Run ``model`` on each record's image; returns the records with predicted objects.

    With ``tiling`` (what a lesiondet checkpoint stores) each image goes through
    ``sliced_predict``; without it, whole images are batched as torchvision does.
    """
    model.eval()
    records = list(records)
    out: list[VocRecord] = []
    with score_threshold(model, score), progress_bar(total=len(records), desc="predict", enabled=progress) as bar:
        if tiling is not None:
            # decode the next image while this one is predicted, as detect does
            for r, (_, img) in zip(records, read_ahead(r.image_path for r in records)):
                if isinstance(img, LesiondetError):
                    raise img
                o = sliced_predict(model, img, tiling, device)
                out.append(r.with_objects(detections_from_output(o, classes, score)))
                bar.update()
            return out
        for i in range(0, len(records), batch):
            chunk = records[i:i + batch]
            imgs = [to_tensor(read_rgb(r.image_path)).to(device) for r in chunk]
            for r, o in zip(chunk, model(imgs)):
                out.append(r.with_objects(detections_from_output(o, classes, score)))
            bar.update(len(chunk))
    return out


def read_ahead(paths: Iterable[str | Path], read=read_rgb, depth: int = 2
               ) -> Iterator[tuple[Path, np.ndarray | LesiondetError]]:
    """``(path, image)`` pairs, decoded on a background thread ``depth`` files ahead.

    Pillow and OpenCV release the GIL while decoding, so the next JPEG is
    decoded on the other core while the model runs on this one. An unreadable
    file yields its ``LesiondetError`` in place of the image, so a folder run
    can report it and go on. ``depth=0`` decodes in line, on the caller's thread.
    """
    def load(p: Path) -> np.ndarray | LesiondetError:
        try:
            return read(p)
        except LesiondetError as e:
            return e

    if depth <= 0:
        for p in map(Path, paths):
            yield p, load(p)
        return
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        for p in map(Path, paths):
            pending.append((p, pool.submit(load, p)))
            if len(pending) > depth:
                q, fut = pending.popleft()
                yield q, fut.result()
        while pending:
            q, fut = pending.popleft()
            yield q, fut.result()


def checkpoint_tiling(ckpt: Mapping[str, Any], **overrides: Any) -> dict[str, Any] | None:
    """The tiling a checkpoint was trained with, with CLI overrides; None for untiled checkpoints."""
    if ckpt.get("tiling") is None:
        return None
    return resolve_tiling({**ckpt["tiling"], **{k: v for k, v in overrides.items() if v is not None}})


class Predictor:
    """Load a checkpoint once, then detect lesions in images.

    >>> p = Predictor("runs/train/best.pt")           # doctest: +SKIP
    >>> rec = p.predict("fundus.jpg")                 # doctest: +SKIP
    >>> [(o.label, o.score) for o in rec.objects]     # doctest: +SKIP
    """

    def __init__(self, weights: str | Path, device: str = "auto", score: float = 0.3,
                 **tiling: Any) -> None:
        self.weights = Path(weights)
        self.device = resolve_device(device)
        ckpt = load_checkpoint(str(self.weights))
        self.model, self.classes = detector_from_checkpoint(ckpt, str(self.weights))
        self.model.to(self.device).eval()
        self.score = score
        self.config = ckpt.get("config", {})
        #: Slicing settings from training, overridable (``tile=``, ``overlap=``, ``slice=``, ``merge=`` ...).
        self.tiling = checkpoint_tiling(ckpt, **tiling)

    @torch.inference_mode()
    def predict_array(self, img: np.ndarray, image_path: str | Path = "image") -> VocRecord:
        with score_threshold(self.model, self.score):
            if self.tiling is not None:
                out = sliced_predict(self.model, img, self.tiling, self.device)
            else:
                out = self.model([to_tensor(img).to(self.device)])[0]
        h, w = img.shape[:2]
        return VocRecord(Path(image_path), w, h, tuple(detections_from_output(out, self.classes, self.score)))

    def predict(self, path: str | Path) -> VocRecord:
        return self.predict_array(read_rgb(path), path)

    def predict_paths(self, paths: Iterable[str | Path], depth: int = 2
                      ) -> Iterator[tuple[Path, np.ndarray | None, VocRecord | LesiondetError]]:
        """``(path, image, record)`` for each file, decoding ahead while the model runs.

        A file that cannot be read gives ``(path, None, error)`` and the run goes on.
        """
        for p, img in read_ahead(paths, depth=depth):
            if isinstance(img, LesiondetError):
                yield p, None, img
            else:
                yield p, img, self.predict_array(img, p)
