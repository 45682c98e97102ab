"""Running the restores of one command: here, one after another, or in N worker
processes (`--jobs N`) fed from one queue, each with its own engine and its share of
the CPU threads. The parent alone prints, draws the one progress bar and writes the
report; a worker only computes and writes its result atomically.

Stopping: Ctrl-C reaches the parent, which stops the workers with SIGTERM; a worker
that is writing a result lets the exception run through the atomic writer (its
temporary file goes) and exits. A worker whose parent dies (SIGKILL) gets SIGTERM
from the kernel (Linux's parent-death signal) and does the same.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from typing import Optional

from tqdm import tqdm

from core import archive, images, outputs, storage, weights

MODEL_ERRORS = (weights.ModelMissing, weights.VerificationError, weights.InvalidModel)


@dataclass(frozen=True)
class Options:
    """What every restore of one command shares (picklable: it goes to the workers)."""
    model: str = "auto"
    qf: Optional[int] = None
    tile: Optional[int] = None
    max_megapixels: float = images.MAX_MEGAPIXELS
    device: str = "auto"
    runtime: str = "auto"
    threads: Optional[int] = None


class ModelFailed(Exception):
    """The model cannot run at all: every input would fail the same way."""


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))   # what this process may use (containers, taskset)
    except AttributeError:
        return os.cpu_count() or 1


def default_jobs(device: str) -> int:
    """How many processes `--jobs` starts when not told.

    A GPU: one process per GPU (each process is pinned to its own). The CPU: one process
    per 4 cores, and 1 up to 4 cores. Why: a picture's decode, QF search and PNG encode
    run on one core while the network has all of them, so a second process fills those
    gaps; but each process holds a model and a whole picture (about 1 GB at 24 MP), and
    OpenVINO's latency mode on one picture still scales well at 4 threads. On 2 cores
    bench/batch.py measured +3-13% from a second process on a quiet machine and a loss
    beside another job (see README): not worth a second model in memory, hence 1 there.
    """
    if device == "cuda":
        import torch
        return max(1, torch.cuda.device_count())
    if device != "cpu":
        return 1   # MPS, an Intel GPU or NPU: one device, one engine
    cores = cpu_count()
    return 1 if cores <= 4 else cores // 4


def restore_file(engine, src, dst, opts: Options, progress=None):
    """Read, restore and write one picture; the engine's Result. src and dst may be
    URIs (core.storage): the input is read from a local copy."""
    with storage.local_copy(src) as local:
        pic = images.read(local, opts.max_megapixels)
        icc, exif, pixels = pic.icc, pic.exif, pic.pixels
        del pic
        result = engine.restore(pixels, model=opts.model, qf=opts.qf, tile=opts.tile,
                                source_path=str(local), progress=progress)
    # The input goes before the output is encoded: Pillow copies an RGB picture into
    # 4 bytes a pixel to save it, and with the input still held a 400 MP TIFF peaked
    # within 1% of the memory bound.
    del pixels
    outputs.write_atomically(dst, lambda tmp: images.write(tmp, result.pixels, icc, exif))
    return result


def one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())


def attempt(engine, target, opts: Options, progress=None):
    """(record, warnings) for one target; ModelFailed when the model cannot run."""
    start = time.perf_counter()
    try:
        result = restore_file(engine, target.src, target.dst, opts, progress)
    except MODEL_ERRORS as err:
        raise ModelFailed(one_line(err)) from None
    except Exception as err:  # noqa: BLE001 - one bad file must not stop the batch
        return archive.record(target.src, target.dst, "failed", None,
                              time.perf_counter() - start, one_line(err)), []
    return (archive.record(target.src, target.dst, "done", result, time.perf_counter() - start),
            list(result.warnings))


# ---------------------------------------------------------------- the parent's side

class Progress:
    """One tqdm bar over all inputs; where tqdm draws nothing (a pipe, a log) a line per
    file as it starts instead, and a line per file as it ends on stdout."""

    def __init__(self, total: int):
        self.total, self.started = total, 0
        self.bar = tqdm(total=total, unit="img", desc="restore", file=sys.stderr, disable=None)
        self.plain = not (sys.stderr.isatty() if hasattr(sys.stderr, "isatty") else False)

    def starting(self, src) -> None:
        self.started += 1
        if self.plain:
            print(f"fbcnn: restoring {self.started}/{self.total}: {src}", file=sys.stderr, flush=True)

    def tile(self, src):
        def progress(done, total):
            self.bar.set_postfix_str(f"{src.name}: tile {done}/{total}", refresh=True)
        return progress

    def finished(self, rec: dict, warnings) -> None:
        self.bar.update(1)
        if rec["status"] == "done":
            tqdm.write(f"{rec['path']} -> {rec['output']}  QF {rec['qf']} ({rec['qf_source']}), "
                       f"model {rec['model']} on {rec['device']} ({rec['runtime']})", file=sys.stdout)
        else:
            tqdm.write(f"fbcnn: {rec['path']}: {rec['error']}", file=sys.stderr)
        for warning in warnings:
            tqdm.write(f"fbcnn: warning: {rec['path']}: {warning}", file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def not_done(targets, report, why: str) -> None:
    for t in targets:
        report.add(archive.record(t.src, t.dst, "not-done", error=why))


def run_here(todo, opts: Options, report, engine) -> None:
    """Every target in this process. KeyboardInterrupt and ModelFailed propagate after
    the targets not done are reported."""
    shown = Progress(len(todo))
    try:
        for number, target in enumerate(todo):
            shown.starting(target.src)
            try:
                rec, warnings = attempt(engine, target, opts, shown.tile(target.src))
            except ModelFailed as err:
                not_done(todo[number:], report, str(err))
                raise
            except BaseException:
                not_done(todo[number:], report, "interrupted")
                raise
            report.add(rec)
            shown.finished(rec, warnings)
    finally:
        shown.close()


# ---------------------------------------------------------------- the pool (--jobs N)

WORKER_DIED = "its worker process died (killed by the system: out of memory?)"
_worker: dict = {}   # in a worker process: its options, its engine, whether it is writing


class _Stop(BaseException):
    """SIGTERM in a busy worker: unwinds through the atomic writer (its temporary file
    goes), past every `except Exception`."""


def _on_term(signum, frame):
    if _worker.get("busy"):
        raise _Stop()
    os._exit(128 + signum)


def _die_with(parent: int) -> None:
    """SIGTERM to this worker when its parent dies, even by SIGKILL (Linux); otherwise
    an orphan would go on restoring what the next run is told to do."""
    if sys.platform.startswith("linux"):
        import ctypes
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.getppid() != parent:   # it died before prctl could watch it
        os._exit(1)


def _init_worker(opts: Options, parent: int, gpu_counter, gpus: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, _on_term)
    _die_with(parent)
    if opts.threads:   # read by torch when it is imported (OpenVINO gets it from the engine)
        os.environ["OMP_NUM_THREADS"] = str(opts.threads)
    if gpus:           # one GPU a worker, before torch (imported later) sees them all
        with gpu_counter.get_lock():
            index, gpu_counter.value = gpu_counter.value, gpu_counter.value + 1
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    _worker.update(opts=opts, engine=None, busy=False)


def _task(target):
    opts = _worker["opts"]
    if _worker["engine"] is None:
        from core.engine import Engine
        _worker["engine"] = Engine(device=opts.device, runtime=opts.runtime, threads=opts.threads)
    _worker["busy"] = True
    try:
        return attempt(_worker["engine"], target, opts)
    except _Stop:
        os._exit(128 + signal.SIGTERM)
    finally:
        _worker["busy"] = False


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """SIGTERM each worker and wait for it: a busy one removes its temporary file first."""
    processes = list(getattr(pool, "_processes", {}).values())   # no public handle before 3.14
    for proc in processes:
        proc.terminate()
    for proc in processes:
        proc.join(60)
        if proc.is_alive():
            proc.kill()


def _outcome(future, target):
    try:
        return future.result()
    except BrokenProcessPool:
        return archive.record(target.src, target.dst, "failed", error=WORKER_DIED), []


def run_pool(todo, opts: Options, report, jobs: int, gpus: int = 0) -> None:
    """Every target in `jobs` worker processes, each with cpu_count() // jobs threads
    (or one GPU each). KeyboardInterrupt and ModelFailed propagate once the workers are
    stopped and the targets not done are reported."""
    opts = replace(opts, threads=opts.threads or max(1, cpu_count() // jobs))
    # spawn, not fork: a fork of a process that has started threads (tqdm's, torch's,
    # OpenVINO's) may deadlock; the parent-death signal also needs the worker to be a
    # direct child of this process, which rules out forkserver.
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                               initargs=(opts, os.getpid(), ctx.Value("i", 0), gpus))
    shown = Progress(len(todo))
    pending = {}
    try:
        pending = {pool.submit(_task, t): t for t in todo}
        for future in as_completed(list(pending)):
            rec, warnings = _outcome(future, pending.pop(future))
            report.add(rec)
            shown.finished(rec, warnings)
    except BaseException as err:
        _stop_workers(pool)
        why = str(err) if isinstance(err, ModelFailed) else "interrupted"
        for future, target in pending.items():
            finished = future.done() and not future.cancelled() and future.exception() is None
            if finished:   # done between the interrupt and the stop: its file is whole
                rec, warnings = future.result()
                report.add(rec)
            else:
                not_done([target], report, why)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        shown.close()
