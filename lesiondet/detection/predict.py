"""``Predictor``: a trained checkpoint turned into detections for image files or arrays."""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from lesiondet.detection.data import to_tensor
from lesiondet.detection.merging import drop_cut_boxes, merge_detections
from lesiondet.detection.model import CHECKPOINT_FORMAT, detector_from_checkpoint
from lesiondet.detection.operating import DiscCheck, OperatingPoint, apply_anatomy, flag_boxes
from lesiondet.detection.scale import factor_for, reads_below, retina_factor, to_working, working_tiling
from lesiondet.detection.slicing import (
    big_enough,
    fov_share,
    low_res_fov,
    resolve_tiling,
    should_slice,
    slice_windows,
    window_size,
)
from lesiondet.device import resolve_device
from lesiondet.engine.checkpoint import load_checkpoint
from lesiondet.errors import LesiondetError
from lesiondet.images import fov_diameter, read_rgb, shrink
from lesiondet.io.voc import VocObject, VocRecord
from lesiondet.progress import progress as progress_bar


def detections_from_output(out: dict, classes: Sequence[str], score: float) -> list[VocObject]:
    """Torchvision's output dict → ``VocObject`` list at or above ``score``, best first."""
    keep = out["scores"] >= score
    boxes = out["boxes"][keep].detach().cpu().tolist()
    scores = out["scores"][keep].detach().cpu().tolist()
    labels = out["labels"][keep].detach().cpu().tolist()
    return [VocObject(classes[lab - 1], tuple(b), False, s) for b, s, lab in zip(boxes, scores, labels)]


def to_model_scale(image: torch.Tensor, side: float | None = None, zoom: float | None = None
                   ) -> tuple[torch.Tensor, float, float]:
    """``image`` (C, H, W) scaled as torchvision's detection transform scales it; returns it and the x, y ratios.

    With ``side`` the image is scaled so it fits a ``side`` square (a tile of
    ``tile / zoom`` source pixels becomes ``tile``); with ``zoom``, by that
    factor. Done here rather than inside the network, so the network (and its
    ONNX export) takes inputs at model scale and has no size switch to patch.
    """
    h, w = image.shape[-2:]
    scale = float(zoom) if zoom is not None else min(float(side) / min(h, w), float(side) / max(h, w))
    if scale == 1.0:
        return image, 1.0, 1.0
    out = torch.nn.functional.interpolate(image[None], size=None, scale_factor=scale, mode="bilinear",
                                          recompute_scale_factor=True, align_corners=False)[0]
    return out, out.shape[-1] / w, out.shape[-2] / h


class AtModelScale:
    """A network behind the resize step: each input is scaled (``to_model_scale``), the boxes mapped back.

    The network itself (PyTorch or an exported ONNX file) takes images at model
    scale and has no size switch; this wrapper is built once per prediction set-up
    with the tile side (sliced inference) or the zoom (one pass, ``slice: false``).
    """

    def __init__(self, network: Any, side: int | None = None, zoom: float | None = None) -> None:
        self.network, self.side, self.zoom = network, side, zoom

    def eval(self) -> "AtModelScale":
        self.network.eval()
        return self

    def __call__(self, images: Sequence[torch.Tensor]) -> list[dict]:
        scaled = [to_model_scale(im, self.side, self.zoom) for im in images]
        outs = self.network([x for x, _, _ in scaled])
        return [_unscale(o, rx, ry) for o, (_, rx, ry) in zip(outs, scaled)]


def _unscale(out: dict, rx: float, ry: float) -> dict:
    if rx != 1.0 or ry != 1.0:
        r = torch.tensor([rx, ry, rx, ry], dtype=out["boxes"].dtype, device=out["boxes"].device)
        out = {**out, "boxes": out["boxes"] / r}
    return out


@torch.inference_mode()
def predict_tiles(model: torch.nn.Module, tiles: Sequence[tuple[np.ndarray, VocRecord]], classes: Sequence[str],
                  device: torch.device, score: float, tiling: Mapping[str, Any]) -> list[VocRecord]:
    """Detections for ready-cut tiles, each fed at the tile size; records in tile coordinates."""
    model.eval()
    out: list[VocRecord] = []
    b = int(tiling["batch"])
    for i in range(0, len(tiles), b):
        chunk = tiles[i:i + b]
        for (_, rec), o in zip(chunk, forward(model, [to_tensor(img).to(device) for img, _ in chunk], tiling["tta"])):
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
    """Detections from several passes over one image merged per class the way ``tiling`` says.

    ``merge_pad`` is in the model's pixels; tiles show the image at ``zoom``, so it is ``pad / zoom`` here.
    """
    zoom = working_tiling(tiling)["zoom"]  # 1 on a working image
    zoom = float(zoom) if isinstance(zoom, (int, float)) else 1.0
    b, s, lab = merge_detections(boxes, scores, labels, tiling["merge"], float(tiling["merge_iou"]), max_det,
                                 float(tiling.get("nested_ios", 0.0)), float(tiling.get("merge_pad", 0.0)) / zoom)
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
                   max_det: int = 1000, diameter: float | None = None) -> dict[str, torch.Tensor]:
    """Detections for one image, in its pixel coordinates, the way ``tiling`` says.

    With ``retina_px``, ``img`` is first resized to its working size (``detection.scale``).
    Sliced: overlapping tiles of ``tile / zoom`` source pixels, batched, plus a
    whole-image pass shrunk to the tile for large objects; pieces of objects cut
    by a tile edge are dropped when the whole-image pass is on, then everything
    (with ``tta``, the mirrored passes too) is merged per class. Not sliced:
    one pass, either the whole image shrunk to the tile (``slice: auto``, as in
    training) or at native size times zoom (``slice: false``). ``diameter``: the field of view's, when the
    caller has measured it already.
    """
    factor = (factor_for(diameter, tiling) if diameter is not None and tiling.get("retina_px")
              else retina_factor(img, tiling))
    if factor is not None:  # the same steps on the working image, its boxes mapped back at the end
        work, sx, sy = to_working(img, factor)
        out = sliced_predict(model, work, working_tiling(tiling), device, max_det)
        out["boxes"] = out["boxes"] / torch.tensor([sx, sy, sx, sy], dtype=out["boxes"].dtype)
        return out
    h, w = img.shape[:2]
    return merge_in_image(*sliced_passes(model, img, tiling, device), tiling, w, h, max_det)


@torch.inference_mode()
def sliced_passes(model: torch.nn.Module, img: np.ndarray, tiling: Mapping[str, Any], device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(boxes, scores, labels)`` of every pass ``sliced_predict`` runs on ``img``, in its pixels, before the merge."""
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
    if t["slice"] is False:  # one pass: the network must be the one Predictor builds for slice=False
        add(forward(model, [to_tensor(img).to(device)], t["tta"])[0])
    else:
        if sliced:
            _tile_passes(model, img, t, device, add)
        if t["full_pass"] or not sliced:
            small, s = shrink(img, t["tile"])
            o = forward(model, [to_tensor(small).to(device)], t["tta"])[0]
            # When sliced, small objects are the tiles' job; in this view they are a few blurred pixels.
            keep = torch.from_numpy(big_enough(o["boxes"].cpu().numpy(), t["full_min_px"])) if sliced else None
            add(o, s, keep=keep)
    if not parts:
        return torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64)
    return tuple(torch.cat(x) for x in zip(*parts))  # type: ignore[return-value]


def merge_in_image(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, tiling: Mapping[str, Any],
                   width: int, height: int, max_det: int = 1000) -> dict[str, torch.Tensor]:
    """``sliced_passes``'s detections merged per class (``merge_passes``) and clamped to the image.

    A single pass comes out of torchvision's own NMS (IoU 0.4), so merging it changes nothing but the
    nested-box suppression: one path for one pass and for many.
    """
    m = merge_passes(boxes, scores, labels, tiling, max_det)
    m["boxes"][:, 0::2] = m["boxes"][:, 0::2].clamp(0, width)
    m["boxes"][:, 1::2] = m["boxes"][:, 1::2].clamp(0, height)
    return m


@torch.inference_mode()
def predict_records(model: torch.nn.Module, records: Iterable[VocRecord], classes: Sequence[str],
                    device: torch.device, score: float = 0.001, tiling: Mapping[str, Any] | None = None,
                    progress: bool = False, post: Callable[[list[VocObject]], list[VocObject]] | None = None
                    ) -> list[VocRecord]:
    """Run ``model`` on each record's image through ``sliced_predict``; returns the records with predictions.

    ``tiling`` is what the checkpoint stores (``slicing.DEFAULT_TILING`` when None); ``post`` turns
    each image's detections into what is reported (``Predictor.report``).
    """
    model.eval()
    tiling = tiling if tiling is not None else resolve_tiling(None)
    records = list(records)
    out: list[VocRecord] = []
    with progress_bar(total=len(records), desc="predict", enabled=progress) as bar:
        # decode the next image while this one is predicted, as detect does
        for r, (_, img) in zip(records, read_ahead(r.image_path for r in records)):
            if isinstance(img, LesiondetError):
                raise img
            objs = detections_from_output(sliced_predict(model, img, tiling, device), classes, score)
            out.append(r.with_objects(post(objs) if post else objs))
            bar.update()
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


def checkpoint_tiling(ckpt: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """The tiling a checkpoint was trained with, with overrides (None: keep the checkpoint's)."""
    return resolve_tiling({**(ckpt.get("tiling") or {}), **{k: v for k, v in overrides.items() if v is not None}})


class Predictor:
    """Load a checkpoint (``.pt``) or an exported network (``.onnx``) once, then detect lesions in images.

    ``backend`` runs a ``.pt`` checkpoint on PyTorch (``"torch"``), on onnxruntime from an ONNX copy
    cached on first use (``"onnx"``), or on onnxruntime whenever the device is the CPU and it is
    installed (``"auto"``, what ``lesiondet detect`` uses; ``export.runtime``).

    Every test-time switch is an argument here: ``score``, and slicing overrides
    (``tile=``, ``overlap=``, ``slice=``, ``merge=``, ``merge_pad=``, ``nested_ios=``, ``tta=``). The
    network is built for them once; nothing is changed on it afterwards.

    ``score=None`` reports each class at the checkpoint's operating point (per-class thresholds,
    ``detection.operating``; 0.3 for every class when it stores none), and shows boxes down to its
    display thresholds when it stores them (flagged ``counted=False``); a number applies to every
    class, for both. Either way the anatomy rules apply: at most one optic disc, no lesion centred on it.

    >>> p = Predictor("runs/train/best.pt")           # doctest: +SKIP
    >>> rec = p.predict("fundus.jpg")                 # doctest: +SKIP
    >>> [(o.label, o.score) for o in rec.objects]     # doctest: +SKIP
    """

    def __init__(self, weights: str | Path, device: str = "auto", score: float | None = None, *,
                 trust_legacy: bool = False, threads: int | None = None, backend: str = "torch",
                 **tiling: Any) -> None:
        self.weights = Path(weights)
        #: What runs the network: "torch", or "onnx" (onnxruntime on the CPU; ``export.runtime``).
        self.backend = "onnx"
        if self.weights.suffix.lower() == ".onnx":
            from lesiondet.detection.export import EXPORT_SCORE, OnnxDetector

            self.device = torch.device("cpu")
            self.network = OnnxDetector(self.weights, EXPORT_SCORE, threads)  # threads: onnxruntime's (default: all)
            ckpt = self.network.meta
            self.classes = list(ckpt["classes"])
        else:
            from lesiondet.export.runtime import choose_backend

            self.device = resolve_device(device)
            ckpt = load_checkpoint(self.weights, trust_legacy=trust_legacy)
            if not isinstance(ckpt, Mapping) or ckpt.get("format") != CHECKPOINT_FORMAT:
                detector_from_checkpoint(ckpt, str(self.weights))  # raises the one-line error
            self.network, self.classes = None, list(ckpt["classes"])
            if choose_backend(backend, self.device) == "onnx":
                self.network = self._onnx_copy(backend, trust_legacy, threads)
            if self.network is None:
                self.backend = "torch"
                self.network, self.classes = detector_from_checkpoint(ckpt, str(self.weights), input_size=None)
                self.network.to(self.device).eval()
        #: The operating point the checkpoint stores (per-class thresholds and why; ``detection.operating``) ...
        self.stored_operating_point = OperatingPoint.from_checkpoint(ckpt, str(self.weights))
        #: ... and the one detections are reported at: that one, or ``score`` for every class.
        self.operating_point = self.stored_operating_point if score is None else OperatingPoint.uniform(score)
        #: The display thresholds the checkpoint stores (what the drawing shows a reader), or None ...
        self.display_point = (OperatingPoint.from_dict(ckpt["display_point"], str(self.weights))
                              if ckpt.get("display_point") else None)
        #: ... and the ones boxes are shown at: those, or the counted ones (none stored, or ``score`` given).
        self.shown_point = self.display_point if score is None and self.display_point else self.operating_point
        #: The lowest of them: candidates below it are never reported.
        self.score = min(self.operating_point.lowest, self.shown_point.lowest)
        self.network_score = min(self.score, 0.001)  # the one-disc rule picks from every disc candidate
        self.config = ckpt.get("config", {})
        self.label_map = dict(ckpt["label_map"])
        #: Slicing settings from training, with the overrides given here.
        self.tiling = checkpoint_tiling(ckpt, **tiling)
        #: The network behind the resize step these settings call for: tiles and the whole-image view are
        #: scaled to the tile, a single pass (slice: false) by the zoom.
        self.model = (AtModelScale(self.network, zoom=float(working_tiling(self.tiling)["zoom"]))
                      if self.tiling["slice"] is False else AtModelScale(self.network, side=int(self.tiling["tile"])))

    def _onnx_copy(self, backend: str, trust_legacy: bool, threads: int | None) -> Any:
        """The network from the checkpoint's cached ONNX copy (made on first use), or None to run PyTorch."""
        from lesiondet.detection.export import EXPORT_SCORE, OnnxDetector, export
        from lesiondet.export.runtime import load_or_fall_back

        return load_or_fall_back(self.weights, "detector",
                                 lambda p: export(self.weights, "onnx", p, trust_legacy=trust_legacy),
                                 lambda p: OnnxDetector(p, EXPORT_SCORE, threads), backend)

    def report(self, objects: list[VocObject], small: bool = False) -> tuple[list[VocObject], DiscCheck]:
        """Raw detections → what is reported, and the disc decision.

        The anatomy rules, then each box flagged ``counted`` (at or above the operating point: the
        grading rules read it) and ``shown`` (at or above the display threshold, the one for small
        photographs when ``small``: drawn); a box that is neither is dropped.
        """
        kept, disc = apply_anatomy(objects, self.operating_point, self.tiling["disc_core"])
        return flag_boxes(kept, self.operating_point, self.shown_point, small), disc

    @torch.inference_mode()
    def detect(self, img: np.ndarray, image_path: str | Path = "image") -> tuple[VocRecord, DiscCheck]:
        """The reported detections for one image, and what the one-disc rule decided."""
        # the field of view, measured once: it sets the working scale and which display thresholds apply
        d = fov_diameter(img) if self.tiling.get("retina_px") else None
        out = sliced_predict(self.model, img, self.tiling, self.device, diameter=d)
        h, w = img.shape[:2]
        small = d is not None and reads_below(d, self.tiling)
        objs, disc = self.report(detections_from_output(out, self.classes, self.network_score), small)
        return VocRecord(Path(image_path), w, h, tuple(objs)), disc

    def predict_array(self, img: np.ndarray, image_path: str | Path = "image") -> VocRecord:
        return self.detect(img, image_path)[0]

    def predict(self, path: str | Path) -> VocRecord:
        return self.predict_array(read_rgb(path), path)

    def predict_records(self, records: Iterable[VocRecord], progress: bool = False) -> list[VocRecord]:
        """Predictions for the images of ``records`` (e.g. ground truth to score), decoded ahead."""
        return predict_records(self.model, records, self.classes, self.device, self.network_score, self.tiling,
                               progress, lambda objs: self.report(objs)[0])

    def predict_paths(self, paths: Iterable[str | Path], depth: int = 2
                      ) -> Iterator[tuple[Path, np.ndarray | None, VocRecord | LesiondetError, DiscCheck | None]]:
        """``(path, image, record, disc decision)`` for each file, decoding ahead while the model runs.

        A file that cannot be read gives ``(path, None, error, None)`` and the run goes on.
        """
        for p, img in read_ahead(paths, depth=depth):
            if isinstance(img, LesiondetError):
                yield p, None, img, None
            else:
                yield p, img, *self.detect(img, p)
