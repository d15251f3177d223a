"""The screening run on Ray: the serial run's outputs, from a pool of workers on one machine or a cluster.

Each worker is a Ray actor that loads the models once (``screening.Models.load``), with onnxruntime's
and PyTorch's threads set to the CPUs Ray gives it, and screens chunks of photographs with the serial
run's own code (``screening.screen_paths``), writing each photograph's PNG, JSON and XML atomically
into ``out``. ``out`` must be a folder every worker can write: on a cluster, a shared filesystem.

The driver keeps the worklist. A chunk's rows are appended as it returns, so ``resume`` continues a
killed job; at the end ``summary.csv`` is rewritten in input order, and ``report.html`` and
``failures.txt`` are written as the serial run writes them.

Nothing lost, nothing twice: a worker that dies is restarted by Ray and its chunk run again
(``max_task_retries``); a chunk that still fails is split into single photographs, and a photograph
that kills its worker every time becomes a failed row. A row is written only when its chunk returns,
so each input gets exactly one.
"""
from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lesiondet.detection.predict import Predictor
from lesiondet.errors import LesiondetError
from lesiondet.grading.rules import GradingConfig
from lesiondet.pipeline.screening import DetectRun, Models, finish, prepare, screen_paths
from lesiondet.progress import progress

INSTALL = "pip install -e '.[ray]' (in your lesiondet clone)"
RETRIES = 2        # a chunk whose worker dies runs again this many times before it is split
QUEUED = 2         # chunks waiting on each worker, so it never idles between them


def _ray():
    try:
        import ray
    except ImportError:
        raise LesiondetError(None, "--engine ray needs Ray, which is not installed", INSTALL) from None
    return ray


class ScreeningWorker:
    """One Ray actor: the models, loaded once, and ``screen`` for a chunk of photographs."""

    def __init__(self, models: Models, threads: int, grading: GradingConfig | None, cwd: str) -> None:
        os.environ.setdefault("LESIONDET_PROGRESS", "0")
        if os.path.isdir(cwd):  # the driver's folder, so relative paths name the same files (and the JSON the same)
            os.chdir(cwd)
        import ray

        given = ray.get_runtime_context().get_assigned_resources().get("CPU")
        self.threads = max(1, int(given)) if given else threads  # the CPUs Ray gives this worker
        self.predictor, self.grader = models.load(self.threads)
        self.grading = grading

    def info(self) -> tuple[int, int]:
        return os.getpid(), self.threads

    def screen(self, paths: Sequence[str], out: str) -> list[dict[str, Any]]:
        """Each photograph's document, or its error as ``(path, problem, fix)``; its files are on disk."""
        done = []
        for s in screen_paths(self.predictor, [Path(p) for p in paths], Path(out), grading=self.grading,
                              grader=self.grader):
            e = s.error
            done.append({"image": str(s.path), "doc": s.doc,
                         "error": None if e is None else (e.path, e.problem, e.fix)})
        return done


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Join the cluster at ``address`` (``auto``, ``ray://HOST:PORT``), or start a local instance.

    Returns whether this call started Ray (and so should shut it down). A Ray already initialised in
    this process (a notebook, a test) is used as it is.
    """
    ray = _ray()
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = address or "a local instance"
        raise LesiondetError(None, f"cannot start or join Ray at {where} ({' '.join(str(e).split())[:200]})",
                             "start the head with 'ray start --head' and pass --address auto, "
                             "or leave --address out for a local instance") from None
    return True


def plan(cpus: int, workers: int | None, threads: int | None) -> tuple[int, int]:
    """``(workers, threads per worker)`` for ``cpus`` CPUs: one thread each by default (measured fastest on
    2 cores, CHANGELOG.md's benchmark log "Ray"), as many workers as fit."""
    threads = max(1, threads or 1)
    return max(1, workers or cpus // threads), threads


class WorkerPool:
    """Ray actors that have loaded the models, and ``detect_files`` on them.

    >>> with WorkerPool(models, grading) as pool:                       # doctest: +SKIP
    ...     pool.wait_ready()                                            # models loaded, or a one-line error
    ...     run = pool.detect_files(predictor, paths, out)

    Entering connects (``connect``) and starts the actors, which load their models in the background;
    leaving kills them, and shuts Ray down if entering started it.
    """

    def __init__(self, models: Models, grading: GradingConfig | None = None, address: str | None = None,
                 workers: int | None = None, threads: int | None = None) -> None:
        self.models, self.grading, self.address = models, grading, address
        self.workers, self.threads = workers, threads
        self.actors: list = []
        self.started = False

    def __enter__(self) -> WorkerPool:
        ray = self.ray = _ray()
        self.started = connect(self.address)
        try:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            n, t = plan(cpus, self.workers, self.threads)
            if n * t > cpus:
                raise LesiondetError(None, f"{n} worker(s) of {t} thread(s) need {n * t} CPUs and Ray has {cpus}",
                                     f"ask for at most {max(1, cpus // t)} workers")
            actor = ray.remote(num_cpus=t, max_restarts=-1, max_task_retries=RETRIES)(ScreeningWorker)
            self.actors = [actor.remote(self.models, t, self.grading, os.getcwd()) for _ in range(n)]
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        if self.started:
            self.ray.shutdown()

    def wait_ready(self) -> list[tuple[int, int]]:
        """Each worker's (pid, threads) once it has loaded its models; a worker that cannot is a one-line error."""
        ray = self.ray
        try:
            return ray.get([a.info.remote() for a in self.actors])
        except ray.exceptions.RayError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if "Error:" in ln]
            raise LesiondetError(None, f"a Ray worker could not load the models ({(lines or [str(e)])[-1][:240]})",
                                 "check --weights and --grader, and that every node has lesiondet and the files"
                                 ) from None

    def detect_files(self, predictor: Predictor, paths: Sequence[Path], out: Path, *, report: bool = False,
                     resume: bool = False, chunk: int | None = None, show_progress: bool = True) -> DetectRun:
        """``screening.detect_files`` on the workers: the same files, worklist, report and failures.

        ``predictor`` is the driver's own copy, for the worklist's columns and the report's header (the
        workers detect); ``chunk``: photographs per task (default: about 4 tasks per worker, at most 8).
        """
        paths = list(paths)
        prep = prepare(predictor, paths, out, grading=self.grading, graded_by_model=self.models.grader is not None,
                       report=report, resume=resume)
        ok = False
        try:
            _run(self.ray, self.actors, prep, out, chunk, show_progress)
            ok = True
        finally:
            finish(prep, paths, ok)
        return prep.collect.run


def _run(ray, pool: list, prep, out: Path, chunk: int | None, show_progress: bool) -> None:
    """Feed chunks to the actors, ``QUEUED`` each, and collect what they return as it comes."""
    todo = [str(p) for p in prep.todo]
    size = chunk or max(1, min(8, math.ceil(len(todo) / (4 * len(pool)))))
    waiting = deque(todo[k:k + size] for k in range(0, len(todo), size))
    running: dict = {}  # object ref -> (actor index, chunk)
    load = [0] * len(pool)
    bar = progress(total=len(todo), desc="detect", enabled=show_progress and len(todo) > 1)
    where = str(out.resolve())  # absolute: a worker's folder need not be the driver's

    def feed() -> None:
        while waiting:
            k = min(range(len(pool)), key=load.__getitem__)
            if load[k] >= QUEUED:
                return
            part = waiting.popleft()
            running[pool[k].screen.remote(part, where)] = (k, part)
            load[k] += 1

    try:
        feed()
        while running:
            (ref,), _ = ray.wait(list(running), num_returns=1)
            k, part = running.pop(ref)
            load[k] -= 1
            try:
                results = ray.get(ref)
            except (ray.exceptions.RayError, LesiondetError) as e:  # died RETRIES + 1 times, or raised
                if len(part) > 1:
                    waiting.extend([p] for p in part)  # find the photograph that does it
                    feed()
                    continue
                why = " ".join(str(e).split())[:160]
                results = [{"image": part[0], "doc": None,
                            "error": (part[0], f"its worker failed on it ({why})",
                                      "check that the file opens in an image viewer")}]
            for image, r in zip(part, results):  # named as the input named them, as the serial run does
                err = None if r["error"] is None else LesiondetError(image, *r["error"][1:])
                prep.collect.finished(Path(image), r["doc"], err)
            bar.update(len(results))
            feed()
        bar.refresh()
    finally:
        bar.close()
