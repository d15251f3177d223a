"""Everything the command line does, as Python functions: each ``lesiondet`` command calls one of these.

>>> from lesiondet import api
>>> run = api.train(["annotations/train"], val="annotations/val", epochs=1)   # doctest: +SKIP
>>> api.detect(["fundus.jpg"], run["out_dir"] + "/best.pt", grade=True).grades             # doctest: +SKIP

The functions return their results (summaries, records, metrics) and write the
same files as the commands; printing tables is left to the caller.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lesiondet.errors import LesiondetError
from lesiondet.fileio import next_run_dir

Log = Callable[[str], None]


def _quiet(msg: str) -> None:
    pass


def collect_images(inputs: Sequence[str | Path], lists: bool = False) -> list[Path]:
    """Image files named directly or found in the folders named; a folder without images is an error.

    With ``lists``, a ``.csv``/``.txt``/``.lst`` file is a list of photographs (``read_image_list``), and a
    path it names that does not exist stays in, to become a failed row of the run, not an error here.
    """
    from lesiondet.images import list_images
    from lesiondet.io.lists import LIST_SUFFIXES, read_image_list

    paths: list[Path] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            paths += list_images(p)
        elif lists and p.suffix.lower() in LIST_SUFFIXES and p.is_file():
            paths += read_image_list(p)
        elif p.exists():
            paths.append(p)
        else:
            raise LesiondetError(p, "image not found", "check the path")
    return paths


def _readable(paths: Sequence[Path], read: Callable[[Path], Any], failures: list[str]):
    """``(path, image)`` for each file ``read`` can decode; the others' one-line errors go to ``failures``."""
    for p in paths:
        try:
            yield p, read(p)
        except LesiondetError as e:
            failures.append(str(e))


@dataclass
class _Data:
    """How one trainer's items are told apart: who they belong to (the split unit) and what they show."""

    what: str                        # "OCT", "grader", ... (the log line's first word)
    items: str                       # "scans", "photographs"
    unit: str                        # "patient", "subject"
    group: Callable[[Any], str]      # item -> patient or subject
    label: Callable[[Any], Any]      # item -> class or grade (balanced in the split), or None
    split: Callable[[Sequence[Any], float, int], tuple[list, list]]  # the task's grouped split
    disjoint: Callable[[Sequence[Any], Sequence[Any], Any], None]     # the task's overlap check


def _training_run(data: _Data, items: Sequence[Any], val_items: Sequence[Any] | None, val_where: str | Path | None,
                  val_split: float, seed: int, out: str | Path, resume: str | Path | None, log: Log,
                  decode: Callable[[Any], Any] | None = None,
                  run_dir: Callable[[Path], Path] | None = None) -> tuple[list, list, Path, dict]:
    """The recipe every trainer follows up to the engine, which then writes the config, best/last and plots:

    1. split: ``val_items`` (refused when they share a patient or subject with ``items``), or a grouped
       split of ``items`` (``val_split`` 0: none held out);
    2. every item decoded now (``decode``), so a bad file fails before a run folder exists;
    3. the run folder: the resumed run's, or a fresh numbered one;
    4. one line saying what trains on what.
    Returns the training and validation items, the run folder and ``{item: decoded}``.
    """
    if val_items is not None:
        data.disjoint(items, val_items, val_where)
        train, val = list(items), list(val_items)
    elif val_split > 0:
        train, val = data.split(items, val_split, seed)
    else:
        train, val = list(items), []
    decoded = {i: decode(i) for i in train + val} if decode else {}
    folder = Path(resume).parent if resume else (run_dir or (lambda o: next_run_dir(o.parent, o.name)))(Path(out))
    counts = Counter(data.label(i) for i in train)
    held = (f"validating on {len(val)} {data.items} of {len({data.group(i) for i in val})} other {data.unit}s"
            if val else f"no {data.unit}s held out (--val-split 0): validation figures are on the training "
                        f"{data.items}")
    log(f"{data.what}: training on {len(train)} {data.items} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items(), key=lambda kv: str(kv[0])))}) "
        f"from {len({data.group(i) for i in train})} {data.unit}s, {held}; run folder {folder}")
    return train, val, folder, decoded


def _resumable(resume: str | Path, trust_legacy: bool = False) -> dict[str, Any]:
    """A ``last.pt`` to continue from; ``best.pt`` has no optimizer state and cannot be resumed."""
    from lesiondet.engine.checkpoint import load_checkpoint

    ck = load_checkpoint(resume, trust_legacy=trust_legacy)
    if "optimizer" not in ck:
        raise LesiondetError(resume, "this checkpoint cannot be resumed (no optimizer state)",
                             "resume from last.pt, not best.pt")
    return ck


# --------------------------------------------------------------------------- detection
def train(voc: Sequence[str | Path] | None = None, *, val: str | Path | None = None, val_split: float = 0.2,
          labels: str | Path | None = None, images: str | Path | None = None, config: str | Path | None = None,
          epochs: int | None = None, batch: int | None = None, lr: float | None = None, workers: int | None = None,
          pretrained: str | None = None, tile: int | None = None, overlap: float | None = None,
          device: str = "auto", time_limit: float | None = None, resume: str | Path | None = None,
          out: str | Path = "runs/train", trust_legacy: bool = False, start: str | Path | None = "auto",
          log: Log = _quiet) -> dict[str, Any]:
    """Train a detector on labelImg folders or dataset YAMLs (``voc``); returns the run summary.

    ``resume`` continues a run from its ``last.pt`` with the data and settings it stored. ``start``
    says where a new run starts (``detection.start``): ``"auto"`` (the shipped detector when it knows
    one of the classes and the network is its own, else ImageNet), ``"shipped"``, ``"imagenet"`` (or
    None), or a detector checkpoint. From a checkpoint, the run reads photographs at its tiling and
    retinal scale, keeps its classes, trains with the fine-tuning schedule (``train.finetune_*``) and,
    at the end, re-chooses the operating points on the validation photographs where they are enough
    (``detection.operating.recalibrated``).
    """
    from lesiondet.config import merge
    from lesiondet.detection.data import check_images, check_photographs_disjoint, photograph_of, split_records
    from lesiondet.detection.preset import load_config
    from lesiondet.detection.train import train as train_detector
    from lesiondet.device import resolve_device
    from lesiondet.io.sources import parse_source

    if str(start) in ("torchvision", "none"):  # a fresh detector, its backbone from there (--from torchvision|none)
        pretrained, start = pretrained or str(start), "imagenet"
    resume_ck = None
    if resume:
        resume_ck = _resumable(resume, trust_legacy)
        cfg = resume_ck["config"]
        if epochs:
            cfg["train"]["epochs"] = epochs
    else:
        if not voc:
            raise LesiondetError(None, "no training data given",
                                 "pass --voc DIR (a labelImg folder) or --voc configs/datasets/NAME.yaml")
        voc, val, test = _hand_split(voc, val, log)
        cfg = load_config(config)
        given = {"train": {"epochs": epochs, "batch": batch, "lr": lr, "workers": workers},
                 "model": {"pretrained": pretrained}, "tiling": {"tile": tile, "overlap": overlap}}
        cfg = merge(cfg, {s: {k: v for k, v in d.items() if v is not None} for s, d in given.items()})
        sources = [parse_source(v, labels) for v in voc]
        cfg["data"] = {"sources": [src.to_dict() for src in sources], "val": val and str(val),
                       "val_split": val_split, "images": images and str(images),
                       "heldout": str(test or val) if (test or val) else None}
    records, val_records, label_map, annotated, n_sources = _training_data(cfg, resume_ck and resume_ck["label_map"],
                                                                           resume)
    if resume_ck is None:
        label_map = _start(cfg, start, label_map, {"tile": tile, "overlap": overlap, "lr": lr, "epochs": epochs}, log)
    check_images(records + (val_records or []))
    dev = resolve_device(device)
    # labelImg folders carry no patient ids: each photograph is its own group
    train_records, val_records, run_dir, _ = _training_run(
        _Data("detector", "images", "photograph", photograph_of, lambda r: r.source or "images", split_records,
              check_photographs_disjoint),
        records, val_records, cfg["data"]["val"], cfg["data"]["val_split"], int(cfg["train"]["seed"]), out, resume,
        log, run_dir=lambda o: _shared_run_dir(o, dev))
    if not cfg["data"].get("heldout") and val_records:  # a split of --voc: 'eval --map' scores these photographs
        cfg["data"]["heldout"] = [str(r.xml_path) for r in val_records]
    counts = Counter(o.label for r in train_records for o in r.objects)
    log(f"objects: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}; classes {list(label_map.classes)}; "
        f"device {dev}")
    # a class no source boxes (one the start checkpoint brought) is masked out of every loss, not background
    masked = n_sources > 1 or bool(set(label_map.classes) - {c for v in annotated.values() for c in v})
    if masked:
        log("classes each source annotates (others are masked out of its loss): "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in annotated.items()))
    from lesiondet.reporting.plots import plot_best_pr

    summary = train_detector(train_records, val_records, label_map, cfg, run_dir, dev, resume=resume,
                             time_limit_min=time_limit, log=log, annotated=annotated if masked else None,
                             trust_legacy=trust_legacy, on_best=plot_best_pr)
    best = Path(summary["out_dir"]) / "best.pt"
    # under torchrun the first process alone re-chooses them, once the others are done with best.pt
    if os.environ.get("RANK", "0") == "0" and cfg.get("start") and val_records and best.is_file():
        summary["operating_point"] = _recalibrate(best, Path(cfg["start"]), val_records, label_map, dev, log)
    return summary


def _hand_split(voc: Sequence[str | Path], val: str | Path | None, log: Log
                ) -> tuple[list[str | Path], str | Path | None, Path | None]:
    """One ``--voc`` folder holding ``train/`` and ``val/`` (and ``test/``): those are its splits, as a
    labelImg user who split by hand means them. Returns the training sources, the validation folder and
    the test folder that ``eval --map`` scores (None without one)."""
    from lesiondet.io.voc import split_folders

    parts = split_folders(voc[0]) if len(voc) == 1 else None
    if parts is None:
        return list(voc), val, None
    log(f"{voc[0]}: split by its folders: training on {parts['train']}, validating on {val or parts['val']}"
        + (f", {parts['test']} kept for 'lesiondet eval --map'" if "test" in parts else ""))
    return [parts["train"]], val or parts["val"], parts.get("test")


def _start(cfg: dict[str, Any], start: str | Path | None, label_map: Any, given: dict[str, Any], log: Log) -> Any:
    """Settle where a new run starts (``detection.start``) and what that brings into ``cfg``; returns the
    run's label map (the start's classes join it)."""
    from lesiondet.config import defaults
    from lesiondet.detection.start import choose_start, with_start_classes

    st = choose_start(start, cfg["model"], label_map)
    log(f"starting from {st.why}")
    if st.path is None:
        return label_map
    t = cfg["train"]
    cfg["start"] = str(st.path)
    cfg["model"] = {**st.model, "trainable_from": int(t["finetune_trainable_from"])}
    cfg["model"].pop("min_size", None), cfg["model"].pop("max_size", None)
    cfg["tiling_resolved"] = {**st.tiling, **{k: v for k, v in given.items() if k in ("tile", "overlap") and v}}
    if given.get("lr") is None:
        t["lr"] = float(t["finetune_lr"])
    if given.get("epochs") is None and int(t["epochs"]) == int(defaults("train")["epochs"]):
        t["epochs"] = int(t["finetune_epochs"])
    t["warmup_iters"] = min(int(t["warmup_iters"]), int(t["finetune_warmup_iters"]))
    log(f"fine-tuning: {t['epochs']} epochs, lr {t['lr']:g}, warm-up {t['warmup_iters']} steps, backbone blocks before "
        f"{cfg['model']['trainable_from']} frozen; tiling and retinal scale "
        f"(retina_px {cfg['tiling_resolved'].get('retina_px')}) from the start")
    return with_start_classes(label_map, st)


def _recalibrate(best: Path, start: Path, val_records: Sequence[Any], label_map: Any, device: Any,
                 log: Log) -> dict[str, Any]:
    """The fine-tuned ``best.pt``'s operating points, re-chosen on the validation photographs where they
    are enough, the start's elsewhere (``detection.operating.recalibrated``); written into ``best.pt``."""
    from lesiondet.detection.model import CHECKPOINT_FORMAT
    from lesiondet.detection.operating import OperatingPoint, recalibrated, with_operating_point
    from lesiondet.detection.predict import Predictor
    from lesiondet.engine.checkpoint import load_kind

    ck = load_kind(start, CHECKPOINT_FORMAT, "detector", "pass a best.pt written by 'lesiondet train'")
    counted = OperatingPoint.from_checkpoint(ck, str(start))
    shown = OperatingPoint.from_dict(ck.get("display_point"), str(start)) if ck.get("display_point") else counted
    predictor = Predictor(best, str(device), 0.001)
    preds = predictor.predict_records(list(val_records))
    op, display, notes = recalibrated(list(val_records), preds, predictor.classes, label_map.partial, counted, shown,
                                      f"the {len(val_records)} validation photographs")
    with_operating_point(best, op, best, display)
    for c, note in notes.items():
        log(f"operating point {c}: {note}")
    return {"counted": op.to_dict(), "drawn": display.to_dict(), "notes": notes}


def _training_data(cfg: dict[str, Any], resumed_label_map: dict | None, resume: str | Path | None):
    """The records of the sources ``cfg["data"]`` names, the ``--val`` records (None: split them off), the
    label map, and what each source annotates; a resumed run keeps the label map it was trained with."""
    from lesiondet.io.labels import LabelMap
    from lesiondet.io.sources import Source, read_sources
    from lesiondet.io.voc import read_voc_dir

    data = cfg["data"]
    sources = [Source.from_dict(d) for d in data["sources"]]
    records, label_map, annotated = read_sources(sources, data["images"])
    if resumed_label_map is not None:
        label_map = LabelMap.from_dict({**resumed_label_map, "default_aliases": False}, str(resume))
    if data["val"]:
        return records, read_voc_dir(data["val"], label_map, data["images"]), label_map, annotated, len(sources)
    if len(records) < 2:
        raise LesiondetError(sources[0].voc, "only one annotated image; cannot hold some back for validation",
                             "add images or pass --val DIR")
    return records, None, label_map, annotated, len(sources)


def _shared_run_dir(out: str | Path, device) -> Path:
    """A fresh numbered run folder; under torchrun, rank 0 makes it and tells the others."""
    from lesiondet.device import distributed, init_distributed

    out = Path(out)
    if not distributed():
        return next_run_dir(out.parent, out.name)
    import torch.distributed as dist

    rank, _, _ = init_distributed(device)
    holder = [str(next_run_dir(out.parent, out.name)) if rank == 0 else None]
    dist.broadcast_object_list(holder, src=0)
    return Path(holder[0])


def detect(images: Sequence[str | Path], weights: str | Path | None = None, *, score: float | None = None,
           out: str | Path = "runs/detect", exist_ok: bool = False, grade: bool = False,
           grading: str | Path | None = None, grader: str | Path | None = None, report: bool = False,
           device: str = "auto", trust_legacy: bool = False, resume: bool = False, backend: str = "auto",
           engine: str = "serial", address: str | None = None, workers: int | None = None,
           threads: int | None = None, **tiling: Any):
    """Detect lesions in image files, folders and list files; returns the ``DetectRun`` (records, grades, finals,
    failures).

    ``weights`` defaults to the shipped detector; ``score`` None reports each class at the checkpoint's operating
    point (``detection.operating``), a number at that score for all. With ``grade``, each photograph is checked for imageability
    and graded by the image model (``grader``: a grading-CNN best.pt, default the shipped one, ``"none"`` for
    the lesion rules alone) together with the lesion evidence (``grading.combined``).
    ``tiling`` overrides the checkpoint's slicing (``tile=``, ``overlap=``, ``merge=``, ``slice=``, ``tta=`` ...).
    Every run writes the worklist ``out/summary.csv``; ``resume`` continues a killed run in ``out`` itself.
    ``backend`` says what runs both networks (``export.runtime``: ``auto`` is onnxruntime on the CPU).
    ``engine="ray"`` spreads the photographs over Ray workers (``pipeline.distributed``: ``address`` an existing
    cluster, else a local instance; ``workers`` of ``threads`` CPUs each) and writes the same outputs.
    """
    from lesiondet.grading.rules import GradingConfig
    from lesiondet.pipeline.screening import Models, detect_files
    from lesiondet.weights import default_detector

    if engine not in ("serial", "ray"):
        raise LesiondetError(None, f"unknown engine '{engine}'", "use serial or ray")
    paths = collect_images(images, lists=True)
    image_model = None
    if grade and not (isinstance(grader, str) and grader.lower() == "none"):
        from lesiondet.weights import default_grader

        image_model = str(grader or default_grader())
    models = Models(str(weights or default_detector()), device, score, trust_legacy, backend,
                    tuple(sorted(tiling.items())), image_model)
    grading_cfg = GradingConfig.load(grading) if (grade or report) else None

    def make_out() -> Path:  # only once the models have loaded: a bad checkpoint leaves no output folder
        if exist_ok or resume:
            Path(out).mkdir(parents=True, exist_ok=True)
            return Path(out)
        return next_run_dir(Path(out).parent, Path(out).name)

    if engine == "ray":
        from lesiondet.pipeline.distributed import WorkerPool

        with WorkerPool(models, grading_cfg, address, workers, threads) as pool:
            predictor, _ = models.driver_copy().load()  # while the workers load theirs
            pool.wait_ready()
            run = pool.detect_files(predictor, paths, make_out(), report=report, resume=resume)
    else:
        predictor, grader_cnn = models.load(threads)
        run = detect_files(predictor, paths, make_out(), grading=grading_cfg, grader=grader_cnn, report=report,
                           resume=resume)
    run.classes, run.n_images = predictor.classes, len(paths)
    return run


def evaluate(voc: str | Path | None = None, *, weights: str | Path | None = None, pred: str | Path | None = None,
             labels: str | Path | None = None, images: str | Path | None = None, score: float = 0.001,
             grade_score: float | None = None, out: str | Path = "runs/eval", json: str | Path | None = None,
             device: str = "auto", trust_legacy: bool = False, progress: bool = False, runs: str | Path = "runs",
             log: Log = _quiet, **tiling: Any) -> dict:
    """COCO mAP, AP50, FROC and AP by size of a checkpoint (``weights``) or of VOC predictions (``pred``).

    With neither, the newest ``best.pt`` under ``runs`` is scored, as ``yolo val`` does; without
    ``voc``, a checkpoint is scored on the photographs its training run held out (its test folder, else
    its validation photographs: ``data.heldout`` in its configuration). Writes ``pr_curves.png``,
    ``froc.png`` and ``grade_confusion.png`` to a numbered ``out`` folder (its path is
    ``result["figures"]``) and, with ``json``, the figures as JSON; ``result["scored"]`` says what was
    scored on what.
    """
    from lesiondet.detection.metrics import evaluate_detections, json_safe
    from lesiondet.fileio import latest_run, write_json
    from lesiondet.grading.learned import grade_agreement, plot_confusion
    from lesiondet.io.labels import LabelMap, load_label_map
    from lesiondet.io.voc import parse_voc, present_labels, read_voc_dir
    from lesiondet.reporting.plots import plot_froc, plot_pr_curves

    if weights is not None and pred is not None:
        raise LesiondetError(None, "score either a model or predictions", "pass --weights or --pred, not both")
    if weights is None and pred is None:
        weights = latest_run(runs)
        if weights is None:
            raise LesiondetError(runs, "no training run with a best.pt here to score",
                                 "train one first (lesiondet train --voc annotations/) or pass --weights")
    if pred is not None and voc is None:
        raise LesiondetError(pred, "predictions need the ground truth they are scored on", "pass --voc DIR")
    if weights is not None:
        from lesiondet.detection.predict import Predictor

        predictor = Predictor(weights, device, score, trust_legacy=trust_legacy, **tiling)
        classes = predictor.classes
        label_map = (load_label_map(labels) if labels
                     else LabelMap.from_dict({**predictor.label_map, "default_aliases": True}, str(weights)))
        where: Any = voc if voc is not None else _heldout(predictor.config, weights)
        if isinstance(where, (str, Path)):
            gt, on = read_voc_dir(where, label_map, images), str(where)
        else:  # the validation photographs of a split, listed by their XML files
            gt = [parse_voc(x, label_map, images) for x in where]
            on = f"{len(gt)} held-out photographs of the run"
        log(f"scoring {weights} on {on}" + ("" if voc is not None else " (the split its training run held out)"))
        preds = predictor.predict_records(gt, progress=progress)
    else:
        label_map = load_label_map(labels)
        gt, on = read_voc_dir(voc, label_map, images), str(voc)
        preds = read_voc_dir(pred, label_map, need_image=False)
        # Predictions that use a partial label (an older model's HE_MA) are scored as they are; predictions of
        # its members are merged into it by evaluate_detections.
        used = present_labels(preds)
        classes = [c for c in label_map.labels if c in used or (
            c in label_map.classes and (labels is not None or c in present_labels(gt)))]
    result = evaluate_detections(gt, preds, classes, label_map.partial)
    # The grade of the detections is what detect would report: the checkpoint's operating point unless a score is given.
    keep: Any = (predictor.stored_operating_point.keep if grade_score is None and weights is not None
                 else 0.3 if grade_score is None else grade_score)
    result["grade_agreement"] = ga = grade_agreement(gt, preds, keep)
    result["n_images"] = len(gt)
    result["scored"] = {"weights": weights and str(weights), "pred": pred and str(pred), "on": on}
    figs = next_run_dir(Path(out).parent, Path(out).name)
    plot_pr_curves(figs / "pr_curves.png", result)
    plot_froc(figs / "froc.png", result)
    plot_confusion(figs / "grade_confusion.png", ga["reference"], ga["predicted"],
                   f"grade from detections vs ground-truth boxes (kappa {ga['qwk']:.3f})")
    if json:
        write_json(json, json_safe(result))
    result["figures"] = str(figs)
    return result


def _heldout(config: dict[str, Any], weights: str | Path) -> str | list[str]:
    """What a checkpoint's training run held out (``data.heldout`` of its ``config``): a folder, or its
    validation XML files."""
    held = ((config or {}).get("data") or {}).get("heldout")
    if not held:
        raise LesiondetError(weights, "this checkpoint does not record photographs its training held out",
                             "pass --voc with the ground truth to score it on")
    return held


def calibrate(weights: str | Path, voc: str | Path, *, out: str | Path, labels: str | Path | None = None,
              images: str | Path | None = None, fp_per_image: float = 1.0,
              per_class: dict[str, float] | None = None, display_precision: float | None = None,
              device: str = "auto", trust_legacy: bool = False, progress: bool = False) -> dict:
    """Choose a score threshold per class on annotated validation photographs and store them in a checkpoint copy.

    Each class's threshold is where it makes ``fp_per_image`` false positives per image on ``voc``
    (``per_class`` overrides the rate for named classes), read off its FROC curve
    (``detection.operating.calibrated``). With ``display_precision``, each class also gets a display
    threshold: the lowest score whose drawn boxes are that share right (``detection.operating.displayed``).
    Writes ``out`` (a ``.pt`` that ``detect`` then uses by default); returns ``{"out", "operating_point",
    "display_point"}``.
    """
    from lesiondet.detection.operating import calibrated, displayed, with_operating_point
    from lesiondet.detection.predict import Predictor
    from lesiondet.io.labels import LabelMap, load_label_map
    from lesiondet.io.voc import read_voc_dir

    if Path(weights).suffix.lower() == ".onnx":
        raise LesiondetError(weights, "an exported network cannot store an operating point",
                             "calibrate the .pt, then export it again")
    predictor = Predictor(weights, device, 0.001, trust_legacy=trust_legacy)
    label_map = (load_label_map(labels) if labels
                 else LabelMap.from_dict({**predictor.label_map, "default_aliases": True}, str(weights)))
    gt = read_voc_dir(voc, label_map, images)
    if not gt:
        raise LesiondetError(voc, "no annotated photographs to calibrate on", "pass a labelImg validation folder")
    preds = predictor.predict_records(gt, progress=progress)
    op = calibrated(gt, preds, predictor.classes, label_map.partial, {"*": fp_per_image, **(per_class or {})},
                    str(voc))
    shown = None if display_precision is None else displayed(gt, preds, predictor.classes, display_precision,
                                                             str(voc), keep=op)
    return {"out": str(with_operating_point(weights, op, out, shown)), "operating_point": op.to_dict(),
            "display_point": shown and shown.to_dict()}


def export(weights: str | Path, format: str = "onnx", out: str | Path | None = None,
           trust_legacy: bool = False) -> Path:
    """The per-tile network of a detector checkpoint as ONNX or TorchScript; returns the file written."""
    from lesiondet.detection.export import export as export_network

    return export_network(weights, format, out, trust_legacy=trust_legacy)


# --------------------------------------------------------------------------- grading
@dataclass
class GradeRun:
    """``grade_voc``'s result: one rule grade per image, the learned grader's if one was used, and scores."""

    names: list[str]
    grades: list[Any]
    predicted: list[int]
    doc: Any
    fitted: dict[str, Any] | None = None
    scores: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def grade_voc(voc: str | Path, *, labels: str | Path | None = None, images: str | Path | None = None,
              grading: str | Path | None = None, fit: str | Path | None = None, model: str | Path | None = None,
              eval: str | Path | None = None, out: str | Path = "runs/grade", json: str | Path | None = None,
              trust_legacy: bool = False) -> GradeRun:
    """ICDR grades of a labelImg folder (annotations or ``detect`` output) by the rules or a learned grader.

    ``fit`` (a ``image,grade`` CSV) fits the ordinal grader and saves it to ``model`` (JSON); ``eval``
    scores the grades against a CSV (QWK, accuracy, ``grade_confusion.png`` in ``out``).
    """
    import numpy as np

    from lesiondet.fileio import write_json
    from lesiondet.grading.learned import (
        OrdinalGrader,
        features,
        plot_confusion,
        quadratic_weighted_kappa,
        read_labels_csv,
    )
    from lesiondet.grading.rules import GRADE_NAMES, GradingConfig, grade_record
    from lesiondet.io.labels import load_label_map
    from lesiondet.io.voc import read_voc_dir
    from lesiondet.progress import progress

    cfg = GradingConfig.load(grading)
    records = read_voc_dir(voc, load_label_map(labels), images)
    grades = [grade_record(r, cfg) for r in progress(records, desc="grade", enabled=len(records) >= 20)]
    names = [r.stem for r in records]
    learned, fitted = None, None
    if fit:
        ref = read_labels_csv(fit)
        pairs = [(features(g, cfg.merged_as_he), ref[n]) for n, g in zip(names, grades) if n in ref]
        if len(pairs) < 2:
            raise LesiondetError(fit, "fewer than two of its images are in --voc", "check the image names")
        X, y = np.stack([p[0] for p in pairs]), [p[1] for p in pairs]
        learned = OrdinalGrader().fit(X, y)
        path = learned.save(model or "grader.json")
        fitted = {"n": len(y), "training_qwk": quadratic_weighted_kappa(y, learned.predict(X)), "path": str(path)}
    elif model:
        learned = OrdinalGrader.load(model, trust_legacy)
    predicted = [int(g.grade) for g in grades]
    if learned is not None:
        predicted = [int(v) for v in learned.predict(np.stack([features(g, cfg.merged_as_he) for g in grades]))]
    doc: Any = []
    for n, g, p in zip(names, grades, predicted):
        d = g.to_dict()
        d["image"] = n if not g.image else Path(g.image).name
        if learned is not None:
            d["rule_grade"], d["grade"] = d["grade"], p
            d["grade_name"] = GRADE_NAMES[p]
        doc.append(d)
    scores = None
    if eval:
        ref = read_labels_csv(eval)
        pairs = [(ref[n], p) for n, p in zip(names, predicted) if n in ref]
        if not pairs:
            raise LesiondetError(eval, "none of its images are in --voc", "check the image names")
        y, yp = [t for t, _ in pairs], [p for _, p in pairs]
        qwk, acc = quadratic_weighted_kappa(y, yp), float(np.mean(np.equal(y, yp)))
        Path(out).mkdir(parents=True, exist_ok=True)
        png = plot_confusion(Path(out) / "grade_confusion.png", y, yp,
                             f"{'learned' if learned is not None else 'rule'} grader: QWK {qwk:.3f}, "
                             f"accuracy {acc:.3f}")
        scores = {"qwk": qwk, "accuracy": acc, "n": len(y), "confusion_png": str(png)}
        doc = {"images": doc, "qwk": qwk, "accuracy": acc, "n": len(y)}
    if json:
        write_json(json, doc)
    return GradeRun(names, grades, predicted, doc, fitted, scores)


# --------------------------------------------------------------------------- OCT
def oct_train(data: str | Path | Sequence[str | Path], *, val: str | Path | None = None, val_split: float = 0.2, head: str = "both",
              arch: str | None = None, pretrained: str | None = None, config: str | Path | None = None,
              epochs: int | None = None, batch: int | None = None, time_limit: float | None = None,
              device: str = "auto", out: str | Path = "runs/oct", resume: str | Path | None = None,
              log: Log = _quiet) -> dict[str, Any]:
    """Train the OCT B-scan classifier (fine-tuned and/or linear head) with a patient-grouped split.

    ``data``: one class-per-folder tree or CSV, or several (their scans are pooled). ``resume`` continues from a ``last.pt`` with the settings it stored (pass the same ``data``).
    """
    from lesiondet.config import load_section
    from lesiondet.device import resolve_device
    from lesiondet.oct.classify import check_disjoint, patient_split, read_oct_data, read_scan, train_oct

    cfg = load_section("oct", config, "OCT config", "pass a YAML such as configs/models/oct.yaml")
    if resume:
        ck = _resumable(resume)
        cfg, head = dict(ck["config"]), "both" if "linear" in ck["heads"] else "finetune"
        if epochs:
            cfg["epochs"] = epochs
    else:
        cfg.update({k: v for k, v in {"epochs": epochs, "batch": batch, "arch": arch,
                                      "pretrained": pretrained}.items() if v is not None})
    sources = [data] if isinstance(data, (str, Path)) else list(data)
    samples = [s for src in sources for s in read_oct_data(src)]
    val_samples = read_oct_data(val) if val else None
    classes = sorted({s.label for s in samples + (val_samples or [])})
    if len(classes) < 2:
        raise LesiondetError(sources[0], f"only one class ({classes[0]})", "add scans of at least one other class")
    # every scan is read now (and let go): a bad file fails before the run folder, not in epoch five
    train_s, val_s, run_dir, _ = _training_run(
        _Data("OCT", "scans", "patient", lambda s: s.patient, lambda s: s.label, patient_split, check_disjoint),
        samples, val_samples, val, val_split, int(cfg["seed"]), out, resume, log,
        decode=lambda s: read_scan(s.path) is None)
    return train_oct(train_s, val_s, classes, cfg, run_dir, resolve_device(device), head, time_limit, log, resume)


def _oct_weights(weights: str | Path | None) -> Path:
    from lesiondet.weights import default_oct

    return Path(weights) if weights is not None else default_oct()


def _fluid_weights(weights: str | Path | bool | None) -> Path:
    from lesiondet.weights import default_fluid

    return default_fluid() if weights is None or weights is True else Path(weights)


def oct_predict(images: Sequence[str | Path], weights: str | Path | None = None, *, head: str | None = None,
                json: str | Path | None = None, out: str | Path = "runs/oct-predict", device: str = "auto",
                trust_legacy: bool = False, seg: str | Path | bool | None = None) -> dict[str, Any]:
    """Class probabilities for OCT scans, a picture per scan; returns ``{"predictions", "failures", "out"}``.

    ``weights``: an ``oct train`` checkpoint; the shipped classifier when None. With ``seg`` (a fluid
    U-Net's checkpoint, or True for the shipped one), each scan also gets its fluid area, and a flag
    when the class and the fluid disagree (DME without visible fluid, or fluid in a scan called NORMAL).
    """
    from lesiondet.fileio import write_json
    from lesiondet.oct.classify import OctClassifier, plot_prediction, read_scan

    paths = collect_images(images)
    clf = OctClassifier(_oct_weights(weights), head, device, trust_legacy)
    segmenter = None
    if seg is not None and seg is not False:
        from lesiondet.oct.segment import FluidSegmenter

        segmenter = FluidSegmenter(_fluid_weights(seg), device, trust_legacy)
    run_dir = next_run_dir(Path(out).parent, Path(out).name)
    docs, failures = [], []
    for p, img in _readable(paths, read_scan, failures):
        probs = dict(zip(clf.classes, map(float, clf.predict_proba_arrays([img])[0])))
        best, answer = max(probs, key=probs.get), clf.answer(probs)
        plot_prediction(run_dir / f"{p.stem}.png", img, probs, f"{p.name}: {answer} ({best} {probs[best]:.2f})")
        # "class" stays the most probable one; "answer" is what to report ("uncertain" under the stored cut)
        doc = {"image": str(p), "class": best, "answer": answer, "uncertain": answer == "uncertain",
               "uncertain_below": clf.uncertain_below, "probabilities": probs, "head": clf.head}
        if segmenter is not None:
            from lesiondet.oct.segment import fluid_flag, fluid_summary

            doc["fluid"] = fluid_summary(segmenter.mask(img))
            doc["flag"] = fluid_flag(best, doc["fluid"])
        docs.append(doc)
    if json:
        write_json(json, docs if len(paths) > 1 else (docs[0] if docs else []))
    return {"predictions": docs, "failures": failures, "out": run_dir}


def oct_evaluate(data: str | Path, weights: str | Path | None = None, *, head: str | None = None,
                 json: str | Path | None = None, out: str | Path = "runs/oct-eval", device: str = "auto",
                 trust_legacy: bool = False) -> dict:
    """Accuracy, per-class sensitivity, specificity and ROC AUC, and ``oct_confusion.png`` in ``out``
    (the shipped classifier when ``weights`` is None)."""
    import numpy as np

    from lesiondet.fileio import write_json
    from lesiondet.oct.classify import OctClassifier, classification_metrics, read_oct_data
    from lesiondet.reporting.plots import plot_confusion_matrix

    clf = OctClassifier(_oct_weights(weights), head, device, trust_legacy)
    samples = read_oct_data(data, clf.classes)
    proba = clf.predict_proba([s.path for s in samples], progress=len(samples) > 16)
    m = classification_metrics([clf.classes.index(s.label) for s in samples], proba, clf.classes)
    Path(out).mkdir(parents=True, exist_ok=True)
    m["confusion_png"] = str(plot_confusion_matrix(
        Path(out) / "oct_confusion.png", np.array(m["confusion"]), clf.classes,
        f"OCT {clf.head} head: accuracy {m['accuracy']:.3f} (n={m['n']})"))
    m["head"] = clf.head
    if json:
        write_json(json, {k: v for k, v in m.items() if k != "confusion_png"})
    return m


# --------------------------------------------------------------------------- OCT fluid segmentation
def oct_segment_train(data: str | Path, *, val: str | Path | None = None, val_split: float = 0.2,
                      config: str | Path | None = None, epochs: int | None = None, time_limit: float | None = None,
                      device: str = "auto", out: str | Path = "runs/oct-segment", resume: str | Path | None = None,
                      log: Log = _quiet) -> dict[str, Any]:
    """Train the fluid U-Net on scans and masks, split by subject (``val`` must hold other subjects)."""
    from lesiondet.config import load_section
    from lesiondet.device import resolve_device
    from lesiondet.oct.segment import (
        check_disjoint,
        check_recipe,
        read_fluid_data,
        read_pair,
        subject_split,
        train_segmenter,
    )

    cfg = load_section("segment", config, "segmentation config", "pass a YAML with a segment: section")
    if resume:
        ck = _resumable(resume)
        cfg = dict(ck["config"])
    if epochs:
        cfg["epochs"] = epochs
    check_recipe(cfg)
    train_s, val_s, run_dir, decoded = _training_run(  # a bad or mismatched file fails before any run folder
        _Data("fluid U-Net", "scans", "subject", lambda s: s.subject, lambda s: "B-scans", subject_split,
              check_disjoint),
        read_fluid_data(data), read_fluid_data(val) if val else None, val, val_split, int(cfg["seed"]), out,
        resume, log, decode=read_pair)
    if not val_s:
        log("fluid U-Net: with no subjects held out, keep last.pt (best.pt is chosen on the training scans)")
    return train_segmenter(train_s, val_s, cfg, run_dir, resolve_device(device), time_limit_min=time_limit,
                           log=log, resume=resume, decoded=decoded)


def oct_segment_predict(images: Sequence[str | Path], weights: str | Path | None = None, *,
                        out: str | Path = "runs/oct-seg", json: str | Path | None = None, device: str = "auto",
                        spacing: Sequence[float] | None = None) -> dict[str, Any]:
    """Per scan: mask PNG, overlay PNG and a JSON (fluid area, fraction, regions; mm² with ``spacing``,
    µm per pixel across and in depth) in a numbered ``out``. The shipped U-Net when ``weights`` is None."""
    from lesiondet.fileio import write_json
    from lesiondet.oct.classify import read_scan
    from lesiondet.oct.segment import FluidSegmenter, fluid_summary, overlay
    from lesiondet.reporting.draw import write_png

    paths = collect_images(images)
    seg = FluidSegmenter(_fluid_weights(weights), device)
    run_dir = next_run_dir(Path(out).parent, Path(out).name)
    docs, failures = [], []
    for p, img in _readable(paths, read_scan, failures):
        m = seg.mask(img)
        doc = {"image": str(p), **fluid_summary(m, spacing)}
        write_png(run_dir / f"{p.stem}_mask.png", (m * 255).astype("uint8"))
        write_png(run_dir / f"{p.stem}_overlay.png", overlay(img, m))
        write_json(run_dir / f"{p.stem}.json", doc)
        docs.append(doc)
    if json:
        write_json(json, docs if len(paths) > 1 else (docs[0] if docs else []))
    return {"predictions": docs, "failures": failures, "out": run_dir}


def oct_segment_evaluate(data: str | Path, weights: str | Path | None = None, *, json: str | Path | None = None,
                         out: str | Path = "runs/oct-seg-eval", device: str = "auto",
                         spacing: Sequence[float] | None = None) -> dict[str, Any]:
    """Pooled Dice, IoU, pixel accuracy and per-scan Dice at each scan's own size; overlay grid and area scatter.

    ``spacing`` (µm per pixel across and in depth, e.g. ``(11.3, 3.9)`` for Duke's Spectralis scans) adds
    each scan's fluid area in mm² and its absolute error (``oct.segment.segmentation_metrics``)."""
    import numpy as np

    from lesiondet.fileio import write_json
    from lesiondet.oct.segment import (
        FluidSegmenter,
        dice_of,
        overlap_counts,
        overlay,
        plot_areas,
        plot_grid,
        read_fluid_data,
        read_pair,
        segmentation_metrics,
    )
    from lesiondet.progress import progress

    scans = read_fluid_data(data)
    pairs = [read_pair(s) for s in scans]  # every file is checked before anything is written
    seg = FluidSegmenter(_fluid_weights(weights), device)
    rows, sums, panels = [], np.zeros(4, np.int64), []
    for s, (img, truth) in progress(list(zip(scans, pairs)), desc="segment eval", enabled=len(scans) > 8):
        pred = seg.mask(img)
        c = overlap_counts(pred, truth)
        sums += c
        rows.append({"image": str(s.image), "subject": s.subject, "dice": dice_of(*c[:3]),
                     "fluid_px_true": int(truth.sum()), "fluid_px_pred": int(pred.sum())})
        panels.append((f"{s.image.name}: Dice {rows[-1]['dice']:.2f}", overlay(img, pred, truth)))
    m = segmentation_metrics(rows, sums, spacing)
    run_dir = next_run_dir(Path(out).parent, Path(out).name)
    order = sorted(range(len(panels)), key=lambda i: rows[i]["dice"])
    pick = [order[int(round(q * (len(order) - 1)))] for q in np.linspace(0, 1, min(9, len(order)))]
    m["grid_png"] = str(plot_grid(run_dir / "overlay_grid.png", [panels[i] for i in pick]))
    m["scatter_png"] = str(plot_areas(run_dir / "area_scatter.png", rows))
    if json:
        write_json(json, {k: v for k, v in m.items() if not k.endswith("_png")})
    return m


# --------------------------------------------------------------------------- image-level grading CNN
def grader_train(data: str | Path, *, val: str | Path | None = None, val_split: float = 0.2,
                 config: str | Path | None = None, init: str | Path | None = None, preprocessed: bool = False,
                 epochs: int | None = None, size: int | None = None, time_limit: float | None = None,
                 device: str = "auto", out: str | Path = "runs/grader", resume: str | Path | None = None,
                 log: Log = _quiet) -> dict[str, Any]:
    """Train the grading CNN on ``image,dr_grade[,maculopathy][,patient]`` CSVs, split by patient.

    ``init`` starts from another grader (e.g. one trained on APTOS with ``preprocessed=True``).
    """
    from lesiondet.config import load_section
    from lesiondet.device import resolve_device
    from lesiondet.grading.cnn import check_disjoint, load_input, patient_split, read_grading_csv, train_grader

    cfg = load_section("grader", config, "grader config", "pass a YAML with a grader: section")
    if resume:
        ck = _resumable(resume)
        cfg, preprocessed = dict(ck["config"]), bool(ck["preprocessed"])
        if epochs:
            cfg["epochs"] = epochs
    else:
        cfg.update({k: v for k, v in {"epochs": epochs, "size": size}.items() if v is not None})
    size = int(cfg["size"])
    # every photograph is decoded and preprocessed now, once: a bad file fails before any run folder
    train_i, val_i, run_dir, decoded = _training_run(
        _Data("grader", "photographs", "patient", lambda i: i.patient, lambda i: f"grade {i.grade}", patient_split,
              check_disjoint),
        read_grading_csv(data), read_grading_csv(val) if val else None, val, val_split, int(cfg["seed"]), out, resume,
        log, decode=lambda i: load_input(i.path, size, preprocessed))
    return train_grader(train_i, val_i, cfg, run_dir, resolve_device(device), preprocessed=preprocessed, init=init,
                        time_limit_min=time_limit, log=log, resume=resume,
                        decoded={i.path: im for i, im in decoded.items()})


def grader_fit(data: str | Path, weights: str | Path, *, lesions: str | Path | None = None,
               preprocessed: bool = False, config: str | Path | None = None, grading: str | Path | None = None,
               out: str | Path = "runs/grader-fit", device: str = "auto", log: Log = _quiet,
               features_cache: str | Path | None = None) -> dict[str, Any]:
    """Fit the grade readout of a trained grading CNN on graded photographs (``grading.readout``).

    ``lesions``: a folder of ``detect --grade`` JSONs of the same photographs; the readout then also
    weighs the lesion evidence when ``detect --grade`` runs with it. Writes ``grader.pt`` (the network
    with its readout), ``fit.json`` (patient-grouped out-of-fold figures of each variant) and
    ``grade_confusion.png``. ``preprocessed``: the photographs of ``data`` are already Ben
    Graham-processed; the written grader then expects such photographs too. ``features_cache``: an
    ``.npz`` that keeps the network's features between fits (refitting on a new detector's lesions
    reads the photographs once); it is reused only for the same network, photographs and sizes.
    """
    from lesiondet.config import load_section
    from lesiondet.engine.checkpoint import TRAINING_STATE, load_checkpoint, save_checkpoint
    from lesiondet.fileio import write_json
    from lesiondet.grading.cnn import GraderCNN, cached_views, embed_photographs, read_grading_csv
    from lesiondet.grading.learned import plot_confusion, read_lesion_features
    from lesiondet.grading.metrics import grading_metrics
    from lesiondet.grading.readout import cached_features, fit_readout
    from lesiondet.grading.rules import GradingConfig

    cfg = load_section("grader", config, "grader config", "pass a YAML with a grader: section")
    items = read_grading_csv(data)
    L = (read_lesion_features(lesions, [i.path for i in items], GradingConfig.load(grading).merged_as_he)
         if lesions else None)
    g = GraderCNN(weights, device)
    sizes, tta = [int(s) for s in cfg["readout_sizes"]], bool(cfg["readout_mirrors"])
    log(f"grader fit: features of {len(items)} photographs from {len({i.patient for i in items})} patients at "
        f"{', '.join(map(str, sizes))} px" + (" and their mirrors" if tta else "")
        + (", with the lesion evidence" if L is not None else ""))
    paths = [i.path for i in items]
    E = cached_features(features_cache, weights, paths, sizes, preprocessed,
                         lambda: embed_photographs(g, paths, sizes, preprocessed, progress=True, tta=tta), tta)
    # camera-shifted copies of raw photographs (a source-processed set is one camera's already)
    k = 0 if preprocessed else int(cfg["readout_views"])
    if k:
        log(f"grader fit: {k} camera-shifted views of each photograph (smaller fields of view, JPEG, crops, colour)")
    views = cached_views(features_cache, weights, g, paths, sizes, k, int(cfg["seed"]), preprocessed, tta)
    readout, oof = fit_readout(E, L, [i.grade for i in items], [i.referable for i in items],
                               [i.maculopathy for i in items], [i.patient for i in items], sizes, cfg, tta, views)
    y = [i.grade for i in items]
    report: dict[str, Any] = {"n": len(items), "patients": len({i.patient for i in items}), "sizes": sizes,
                              "mirrors": tta, "lesions": L is not None, "views": k, "out_of_fold": {}}
    for v, o in oof.items():
        many = len(o["grade"]) // len(items)  # the views' rows: each photograph's copies in turn
        rep = (lambda a, many=many: [x for x in a for _ in range(many)])
        report["out_of_fold"][v] = grading_metrics(
            rep(y), o["grade"], referable_true=rep([i.referable for i in items]), referable_called=o["referable"],
            referable_score=o["p_referable"], maculopathy_true=rep([i.maculopathy for i in items]),
            maculopathy_score=o["p_maculopathy"], patients=rep([i.patient for i in items]))
    report["cuts"], report["referable_thresholds"] = readout.cuts, readout.thresholds
    report["fusion"] = readout.fusion  # the CNN block's share of each fused output (stacked readouts)
    run_dir = next_run_dir(Path(out).parent, Path(out).name)
    best = "cnn+lesions" if "cnn+lesions" in oof else "cnn"
    m = report["out_of_fold"][best]
    report["confusion_png"] = str(plot_confusion(
        run_dir / "grade_confusion.png", y, oof[best]["grade"],
        f"grade readout ({best}), out of fold: QWK {m['qwk']:.3f} (n={m['n']})"))
    ck = {k: v for k, v in load_checkpoint(weights).items() if k not in TRAINING_STATE}  # GraderCNN checked it
    ck["readout"] = readout.to_dict()
    ck["preprocessed"] = preprocessed  # what the readout was fitted on is what it must be given
    ck["readout_config"] = {k: cfg[k] for k in cfg if k.startswith(("readout_", "lesion_"))}
    write_json(run_dir / "fit.json", report)
    save_checkpoint(run_dir / "grader.pt", ck)
    report["weights"] = str(run_dir / "grader.pt")
    return report


def grader_evaluate(data: str | Path, weights: str | Path | None = None, *, json: str | Path | None = None,
                    out: str | Path = "runs/grader-eval", device: str = "auto") -> dict[str, Any]:
    """QWK, accuracy, confusion, referable and maculopathy figures (bootstrap CIs over patients);
    ``grade_confusion.png`` and ``embedding_tsne.png`` in ``out``. ``weights`` defaults to the shipped grader."""
    import numpy as np

    from lesiondet.fileio import write_json
    from lesiondet.grading.cnn import GraderCNN, read_grading_csv
    from lesiondet.grading.learned import plot_confusion
    from lesiondet.grading.metrics import grading_metrics
    from lesiondet.reporting.plots import plot_embedding
    from lesiondet.weights import default_grader

    items = read_grading_csv(data)
    g = GraderCNN(weights or default_grader(), device)
    preds = g.predict([i.path for i in items], progress=len(items) > 16)
    y = [i.grade for i in items]
    m = grading_metrics(y, [p["grade"] for p in preds], referable_true=[i.referable for i in items],
                        referable_called=[p["referable"] for p in preds],
                        referable_score=[p["p_referable"] for p in preds],
                        maculopathy_true=[i.maculopathy for i in items],
                        maculopathy_score=[p["p_maculopathy"] for p in preds], patients=[i.patient for i in items])
    run_dir = next_run_dir(Path(out).parent, Path(out).name)
    title = f"grading CNN: QWK {m['qwk']:.3f}, accuracy {m['accuracy']:.3f} (n={m['n']})"
    m["confusion_png"] = str(plot_confusion(run_dir / "grade_confusion.png", y, [p["grade"] for p in preds], title))
    m["embedding_png"] = str(plot_embedding(run_dir / "embedding_tsne.png", np.stack([p["embedding"] for p in preds]),
                                            y, "grading CNN features (t-SNE), coloured by reference grade"))
    m["per_image"] = [{"image": str(i.path), "grade": i.grade, "predicted": p["grade"], "score": p["score"],
                       "p_referable": p["p_referable"]} for i, p in zip(items, preds)]
    if json:
        write_json(json, {k: v for k, v in m.items() if not k.endswith("_png")})
    return m


def grader_predict(images: Sequence[str | Path], weights: str | Path | None = None, *,
                   json: str | Path | None = None, device: str = "auto") -> dict[str, Any]:
    """Grade, probabilities, referability and imageability per photograph; ``status`` is ``graded``,
    ``ungradable`` (no grade) or ``unfamiliar`` (no grade, referred: outside what the model has seen)."""
    from lesiondet.fileio import write_json
    from lesiondet.grading.cnn import GraderCNN
    from lesiondet.grading.combined import UNFAMILIAR, image_model_call
    from lesiondet.images import read_rgb
    from lesiondet.weights import default_grader

    paths = collect_images(images)
    g = GraderCNN(weights or default_grader(), device)
    docs, failures = [], []
    for p, img in _readable(paths, read_rgb, failures):
        q, r, _ = image_model_call(g, img)
        doc: dict[str, Any] = {"image": str(p), "gradable": q.gradable, "quality": q.to_dict()}
        if r is None:
            doc.update(status="ungradable", grade=None, referable=None)
        elif not r.get("familiar", True):
            doc.update(r, status="unfamiliar", provisional_grade=r["grade"], grade=None, referable=True,
                       reasons=[UNFAMILIAR])
        else:
            doc.update(r, status="graded")
        docs.append(doc)
    if json:
        write_json(json, docs if len(paths) > 1 else (docs[0] if docs else []))
    return {"predictions": docs, "failures": failures}


# --------------------------------------------------------------------------- sample data
def synth(out: str | Path, *, n_train: int = 24, n_val: int = 6, n_test: int = 6, size: int = 512, seed: int = 0,
          oct: bool = False) -> Path:
    """Write the synthetic labelImg sample (or, with ``oct``, a synthetic OCT class-per-folder set)."""
    from lesiondet.synth import write_oct_sample, write_sample

    if oct:
        return write_oct_sample(out, per_class=n_train, seed=seed)
    return write_sample(out, n_train, n_val, n_test, size, seed)


# --------------------------------------------------------------------------- bring your own data
def convert(out: str | Path, *, source: str | None = None, to: str | None = None, voc: str | Path | None = None,
            label_map: str | Path | None = None, masks: str | Path | None = None, images: str | Path | None = None,
            colours: str | Path | None = None, class_dirs: bool = False, min_area: int = 0,
            merge_distance: float = 0, keep_masks: bool = False, json: str | Path | None = None,
            labels: str | Path | None = None, names: str | Path | None = None,
            unknown_colours: str = "error") -> dict[str, Any]:
    """Masks, COCO or YOLO (``source``) into a labelImg folder, or a VOC folder into COCO or YOLO (``to``).

    Returns ``{"out", "images", "objects", "classes", "notes"}``.
    """
    from lesiondet.io import convert as cv
    from lesiondet.io.labels import default_label_map, load_label_map
    from lesiondet.io.voc import present_labels, read_voc_dir

    if (source is None) == (to is None):
        raise LesiondetError(None, "say which way to convert", "pass --from masks|coco|yolo, or --voc DIR --to coco|yolo")
    extra: dict[str, Path] = {}
    notes: list[str] = []
    if to is not None:
        if voc is None:
            raise LesiondetError(None, "--to needs a VOC folder", "pass --voc DIR")
        lm = load_label_map(label_map) if label_map else default_label_map()
        records = read_voc_dir(voc, lm, images)
        present = present_labels(records)
        # Annotation formats keep a partial label (HE_MA) as a category of its own: it is what was annotated.
        classes = [c for c in lm.labels if c in present] if not label_map else list(lm.labels)
        written = (cv.write_coco if to == "coco" else cv.write_yolo)(records, classes, out)
    else:
        need = {"masks": (masks, images), "coco": (json, images), "yolo": (labels, names, images)}[source]
        if any(v is None for v in need):
            raise LesiondetError(None, f"--from {source} needs " + {"masks": "--masks and --images",
                                 "coco": "--json and --images", "yolo": "--yolo, --names and --images"}[source],
                                 "see lesiondet convert --help")
        if source == "masks":
            records = cv.masks_to_records(masks, images, colours, class_dirs, min_area, merge_distance,
                                          unknown_colours, notes)
            given = list(cv.load_colours(colours)) if colours is not None else []
            classes = given or sorted({o.label for r in records for o in r.objects})
            if keep_masks:
                from lesiondet.fileio import list_dir

                for folder in ([p for p in list_dir(masks) if p.is_dir()] if class_dirs else [Path(masks)]):
                    index = cv.mask_index(folder)
                    for r in records:
                        m = index.get(r.image_path.stem)
                        if m is not None:
                            extra[f"masks/{folder.name + '/' if class_dirs else ''}{m.name}"] = m
        elif source == "coco":
            records, classes = cv.coco_to_records(json, images)
        else:
            records, classes = cv.yolo_to_records(labels, names, images)
        written = cv.write_labelimg_folder(records, classes, out, extra)
    return {"out": str(written), "images": len(records), "objects": sum(len(r.objects) for r in records),
            "classes": list(classes), "notes": notes}


def data_stats(voc: str | Path, *, labels: str | Path | None = None, images: str | Path | None = None,
               against: str | Path | None = None, out: str | Path = "runs/stats") -> dict[str, Any]:
    """Counts, lesion sizes, empty images, border boxes, warnings and near-duplicates of a VOC folder.

    Writes ``stats.json``, ``sizes.png`` and a one-page ``stats.html`` to a numbered ``out`` folder.
    """
    import base64

    from lesiondet.fileio import write_json, write_text
    from lesiondet.io.labels import default_label_map, load_label_map
    from lesiondet.io.stats import dataset_stats
    from lesiondet.io.voc import read_voc_dir
    from lesiondet.reporting.stats import plot_sizes, stats_html

    lm = load_label_map(labels) if labels else default_label_map()
    records = read_voc_dir(voc, lm, images)
    other = read_voc_dir(against, lm, images) if against else None
    stats = dataset_stats(records, other)
    run = next_run_dir(Path(out).parent, Path(out).name)
    png = plot_sizes(run / "sizes.png", records, f"{voc}: object sizes")
    page = stats_html(stats, "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode(), f"{voc}")
    write_text(run / "stats.html", page)
    write_json(run / "stats.json", stats)
    stats["out"] = str(run)
    return stats
