"""`fbcnn restore --ray [ADDRESS]`: the same job on a Ray cluster, with Ray Data.

The planned targets (input -> output, checked before any compute as for one machine)
become a dataset of one row each; `map_batches` sends them to a pool of actors, each
with one engine for its whole life (the model is loaded by its first input and kept),
each writing its results through the same atomic writer and returning the report's
records. This process (the driver) alone writes the report, draws the progress and
prints the summary, as `--jobs` does.

Faults: Ray restarts an actor whose process or node dies and retries the input it
was on. Ray's own bound on those retries (max_task_retries) also counts the calls
made while a dead node is not yet known dead, and a node's death spent three of them
in a second (Ray 2.60), so Ray retries without bound and a small actor beside the
driver (Tries) counts the times each input was really started: the TRIES+1th start of
an input that killed its worker TRIES times (too big for a node's memory) answers
"failed" at once, and the job goes on. An input that fails by itself (a corrupt JPEG)
is a "failed" record on its first try, like anywhere else: jobs.attempt catches it,
so Ray never sees an error to retry.

Ray is imported here only, and only under --ray: the rest of the project runs without it.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import replace
from typing import Optional

from core import archive, jobs, outputs, storage

INSTALL = ('--ray needs Ray, which is not installed: pip install ".[cluster]" in the '
           'project\'s folder (on every node of the cluster)')
TRIES = 3
DIED = (f"its Ray worker died each of the {TRIES} times it was started "
        f"(killed by the system: out of memory?)")
LOST = "no result came back from the cluster (Ray's log on the nodes may say why)"
# What --ray takes as its ADDRESS rather than as the first input: `auto`, `local`,
# ray://HOST:PORT or HOST:PORT (an existing file of that name is an input).
ADDRESS = re.compile(r"^(auto|local|ray://\S+|[A-Za-z0-9._-]+:\d+|\[[0-9A-Fa-f:]+\]:\d+)$")


class RayMissing(Exception):
    pass


class ClusterFailed(Exception):
    """The cluster cannot be reached, or the job failed as a whole: one line to say."""


def split_address(argv: list) -> list:
    """`--ray IN...` as `--ray= IN...`: argparse would take the first input for the
    optional ADDRESS. A word after --ray is its address only if it looks like one."""
    out = list(argv)
    for i, word in enumerate(out):
        if word == "--":
            break
        if word == "--ray":
            following = out[i + 1] if i + 1 < len(out) else None
            if following is None or following.startswith("-") or not ADDRESS.match(following) \
                    or os.path.exists(following):
                out[i] = "--ray="
    return out


def require_ray():
    """Ray, or RayMissing with how to install it (before anything is planned or computed)."""
    try:
        import ray
        import ray.data  # noqa: F401 - the [data] part of the extra
    except ImportError:
        raise RayMissing(INSTALL) from None
    return ray


def pool_shape(nodes: list, jobs_wanted: Optional[int]) -> tuple:
    """(actors, resources of each, its CPU threads or None) from the alive nodes'
    resources. GPUs: one actor per GPU. CPUs: one actor per node by default, each
    reserving the smallest node's cores, so every node can take one and an actor's
    threads never fight another's; --jobs N asks for N actors sharing the cores."""
    gpus = sum(int(n.get("GPU", 0)) for n in nodes)
    if gpus:
        return (jobs_wanted or gpus), {"num_gpus": 1}, None
    cpus = [max(1, int(n.get("CPU", 1))) for n in nodes] or [1]
    actors = jobs_wanted or len(cpus)
    each = max(1, min(min(cpus), sum(cpus) // actors))
    return actors, {"num_cpus": each}, each


class Tries:
    """A Ray actor on the driver's node: how many times each input has been started."""

    def __init__(self):
        self.counts: dict = {}

    def start(self, src: str) -> int:
        self.counts[src] = self.counts.get(src, 0) + 1
        return self.counts[src]


class Restorer:
    """A Ray Data actor: one engine for its life, one record per input it is given."""

    def __init__(self, opts: jobs.Options, overwrite: bool, tries):
        from core.engine import Engine
        self.opts, self.overwrite, self.tries = opts, overwrite, tries
        self.engine = Engine(device=opts.device, runtime=opts.runtime, threads=opts.threads)

    def __call__(self, batch: dict) -> dict:
        records, warnings = [], []
        for src, dst in zip(batch["src"], batch["dst"]):
            rec, said = self.one(outputs.Target(storage.as_path(str(src)), storage.as_path(str(dst))))
            records.append(json.dumps(rec))
            warnings.append(json.dumps(said))
        return {"record": records, "warnings": warnings}

    def one(self, target):
        if not self.overwrite and target.dst.exists():
            # Planning found no such output, so a try of this job wrote it whole before
            # its result was lost (its node died between the rename and the reply):
            # writing it again would make two writes of one input.
            return archive.record(target.src, target.dst, "done"), []
        import ray
        if ray.get(self.tries.start.remote(str(target.src))) > TRIES:
            return archive.record(target.src, target.dst, "failed", error=DIED), []
        try:
            return jobs.attempt(self.engine, target, self.opts)
        except jobs.ModelFailed as err:   # the driver stops the job: every input would fail
            return {**archive.record(target.src, target.dst, "not-done", error=str(err)),
                    "model_failed": True}, []


def run(todo, opts: jobs.Options, report, address: str, jobs_wanted: Optional[int],
        overwrite: bool) -> None:
    """Every target on the cluster at `address` ('' = RAY_ADDRESS, this machine's
    cluster, or a new local one). KeyboardInterrupt, jobs.ModelFailed and ClusterFailed
    propagate once the targets not done are reported."""
    ray = require_ray()
    try:
        _listening(address)
        ray.init(address=address or None, logging_level=logging.ERROR, log_to_driver=False)
    except Exception as err:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError...
        jobs.not_done(todo, report, "the Ray cluster could not be reached")
        raise ClusterFailed(f"cannot reach the Ray cluster at {address or 'auto'}: "
                            f"{jobs.one_line(err)}") from None
    try:
        alive = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        actors, resources, threads = pool_shape(alive, jobs_wanted)
        opts = replace(opts, threads=opts.threads or threads)
        rows = _results(ray, todo, opts, overwrite, min(actors, len(todo)), resources, _tries(ray))
        _collect(rows, todo, report)
    finally:
        ray.shutdown()
        for folder in {t.dst.parent for t in todo}:
            # Temporary files of workers killed on this host (their node died).
            outputs.remove_stale_temporaries(folder)


def _listening(address: str, seconds: float = 10) -> None:
    """ConnectionError now when nothing listens at HOST:PORT: ray.init would retry for
    minutes (Ray 2.60 was still trying after 5)."""
    import socket
    if address.count(":") != 1 or address.startswith("ray://"):
        return   # '', auto, local, ray://...: Ray finds (or starts) the cluster itself
    host, port = address.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as err:
        raise ConnectionError(f"nothing answers at {address} ({err.strerror or err}); is "
                              f"`ray start --head` running there?") from None


def _tries(ray):
    """The Tries actor, pinned to this node: the one node whose loss ends the job anyway."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0, scheduling_strategy=here)(Tries).remote()


def _results(ray, todo, opts, overwrite, actors: int, resources: dict, tries):
    logging.getLogger("ray.data").setLevel(logging.ERROR)   # its notes would break our display
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False        # one progress display: ours
    ctx.print_on_execution_start = False
    ctx.max_errored_blocks = -1             # an input that died TRIES times: reported, job goes on
    items = [{"src": str(t.src), "dst": str(t.dst)} for t in todo]
    # One block per input: a block that errors is then exactly one failed input, and
    # a slow picture holds up nothing queued behind it.
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    # Ray Data's actors are restarted without bound and the input a dead one was on is
    # sent again without bound (its defaults; naming them is deprecated in 2.60): Tries
    # bounds the starts (see the docstring).
    ds = ds.map_batches(Restorer, fn_constructor_kwargs={"opts": opts, "overwrite": overwrite,
                                                         "tries": tries},
                        batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors), **resources)
    return ds.iter_rows()


def _collect(rows, todo, report) -> None:
    shown = jobs.Progress(len(todo))
    seen = set()
    try:
        for row in rows:
            rec = json.loads(row["record"])
            if rec["path"] in seen:   # a result computed again after its first was lost
                continue
            seen.add(rec["path"])
            if rec.pop("model_failed", False):
                _left(todo, seen, report, rec["error"], rec)
                raise jobs.ModelFailed(rec["error"])
            report.add(rec)
            shown.finished(rec, json.loads(row["warnings"]))
        for target in todo:   # rows that never came: their block errored
            if str(target.src) not in seen:
                rec = archive.record(target.src, target.dst, "failed", error=LOST)
                report.add(rec)
                shown.finished(rec, [])
    except (KeyboardInterrupt, jobs.ModelFailed) as err:
        if isinstance(err, KeyboardInterrupt):
            _left(todo, seen, report, "interrupted")
        raise
    except Exception as err:  # noqa: BLE001 - the cluster failed: say what was not done
        _left(todo, seen, report, jobs.one_line(err))
        raise ClusterFailed(f"the Ray job failed: {jobs.one_line(err)}") from None
    finally:
        shown.close()


def _left(todo, seen, report, why: str, first: Optional[dict] = None) -> None:
    if first is not None:
        report.add(first)
    jobs.not_done([t for t in todo if str(t.src) not in seen], report, why)
