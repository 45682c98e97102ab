"""The `fbcnn` command (also `python -m core`): restore, estimate, models, download.

Exit codes: 0 all went well (inputs whose output exists are skipped, and said so,
unless --overwrite); 1 at least one input failed (the others were still processed);
2 nothing could run (bad arguments, a model that is missing or invalid, a download
that failed, an output folder that cannot be created or written, outputs that clash);
130 interrupted (Ctrl-C: finished files stay, the report lists what was not done).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys

from tqdm import tqdm

from core import archive, images, jobs, outputs, ray_job, storage, weights
from core.frontend.protocol import plain

OK, SOME_FAILED, FATAL = 0, 1, 2

STATE_LABELS = {"bundled": "bundled", "downloaded": "downloaded, verified",
                "missing": "missing", "corrupt": "corrupt (fails its sha256)"}


class Fatal(Exception):
    """Stops the whole command: every input would fail the same way."""


def _qf_arg(value: str):
    if value.lower() == "auto":
        return None
    try:
        qf = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"QF must be an integer 1..100 or 'auto', not {value!r}") from None
    if not 1 <= qf <= 100:
        raise argparse.ArgumentTypeError(f"QF must be between 1 and 100, not {qf}")
    return qf


def _tile_arg(value: str) -> int:
    try:
        tile = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"tile must be an integer number of pixels, not {value!r}") from None
    if tile < 128 or tile % 8:
        raise argparse.ArgumentTypeError(f"tile must be a multiple of 8 and at least 128, not {tile}")
    return tile


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fbcnn", description="Remove JPEG artifacts with FBCNN.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("restore", help="restore images (writes lossless PNG by default)")
    r.add_argument("inputs", nargs="+", metavar="IN", type=storage.as_path,
                   help="files or folders, or URIs that pyarrow reads (s3://bucket/folder)")
    out = r.add_mutually_exclusive_group()
    out.add_argument("-o", "--output", type=pathlib.Path, metavar="OUT",
                     help="output file (one input only; .png, or .tif/.tiff)")
    out.add_argument("--out-dir", type=storage.as_path, metavar="DIR",
                     help="write DIR/<input stem>.png; a folder's files go to DIR/<their path "
                          "under it>.png")
    r.add_argument("-r", "--recursive", action="store_true",
                   help="descend into the folders given (default: a folder's own files only)")
    r.add_argument("-j", "--jobs", type=_jobs_arg, default=None, metavar="N|auto",
                   help="restore in N worker processes, each with its share of the CPU threads "
                        "(default auto: one per GPU; on the CPU 1 up to 4 cores, else one per 4)")
    r.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster (HOST:PORT; default: RAY_ADDRESS, the cluster "
                        "started on this machine, or a new local one); --jobs is then the "
                        "number of actors (default: one per GPU, else one per node)")
    r.add_argument("--report", type=pathlib.Path, metavar="FILE.jsonl",
                   help="write one JSON line per input: path, output, status (done, skipped, "
                        "failed, not-done), qf, qf_source, model, device, runtime, seconds, error")
    r.add_argument("--qf", type=_qf_arg, default=None, metavar="N|auto",
                   help="JPEG quality 1..100 to remove, or auto (default: detect per image)")
    _model_device(r)
    r.add_argument("--tile", type=_tile_arg, default=None, metavar="N",
                   help="tile size in pixels (default: chosen for the device)")
    r.add_argument("--overwrite", action="store_true",
                   help="replace outputs that exist (default: skip them, and say so)")
    r.add_argument("--max-megapixels", type=float, default=images.MAX_MEGAPIXELS, metavar="MP",
                   help=f"open pictures up to this size (default {images.MAX_MEGAPIXELS}; a guard "
                        "against decompression bombs)")

    e = sub.add_parser("estimate", help="estimate the JPEG quality of images")
    e.add_argument("inputs", nargs="+", metavar="IN", type=pathlib.Path)
    e.add_argument("--json", action="store_true", help="one JSON object per input per line")
    _model_device(e)

    m = sub.add_parser("models", help="list the models, their state and path")
    m.add_argument("--json", action="store_true",
                   help="one JSON object: this Python, core, torch and the GPU it sees, the models")

    d = sub.add_parser("download", help="download and verify an official model")
    d.add_argument("name", choices=[n for n, e in weights.REGISTRY.items() if not e.bundled])
    d.add_argument("--url-base", metavar="URL",
                   help="download URL/<file> instead of the official release (a mirror)")
    return p


def _model_device(p):
    p.add_argument("--model", default="auto", metavar="NAME|PATH",
                   help=f"auto, {', '.join(weights.REGISTRY)}, or a path to an FBCNN .pth")
    p.add_argument("--device", default="auto",
                   choices=["auto", "cpu", "gpu", "cuda", "mps", "intel-gpu", "npu"],
                   help="where the network runs; intel-gpu and npu through OpenVINO "
                        "(untested on real hardware)")
    p.add_argument("--runtime", default="auto", choices=["auto", "torch", "openvino"],
                   help="what runs the network: auto is OpenVINO on the CPU where it is "
                        "installed, torch on GPUs")


def main(argv=None) -> int:
    args = parser().parse_args(ray_job.split_address(sys.argv[1:] if argv is None else argv))
    try:
        return COMMANDS[args.command](args)
    except Fatal as err:
        print(f"fbcnn: error: {err}", file=sys.stderr)
        return FATAL
    except KeyboardInterrupt:
        print("fbcnn: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------- models

def check_model(model: str) -> None:
    """Fail once, before any input is touched, when the chosen model cannot be loaded."""
    if model == "auto":
        return  # the engine picks; if its choice is missing, that surfaces as ModelMissing
    try:
        # A registry name is verified here; a file path is only resolved, and the engine's
        # load (which reads its shapes) refuses anything that is not FBCNN.
        weights.resolve(model)
    except (weights.ModelMissing, weights.VerificationError, ValueError) as err:
        raise Fatal(jobs.one_line(err)) from None


def _engine(device: str, runtime: str = "auto"):
    from core.engine import Engine  # torch-heavy; `fbcnn models` and `--help` do not need it
    try:
        return Engine(device=device, runtime=runtime)
    except ValueError as err:
        raise Fatal(jobs.one_line(err)) from None


# ---------------------------------------------------------------- restore

def _jobs_arg(value: str):
    if value == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"jobs must be a number of processes (1 or more) or auto, "
                                         f"not {value!r}")
    return n


def _device(args) -> str:
    from core.devices import pick_device
    try:
        return pick_device(args.device)[0]
    except ValueError as err:
        raise Fatal(jobs.one_line(err)) from None


def _workers(args, device: str, todo: int) -> int:
    """Processes to start: --jobs, or the machine's default (core/jobs.default_jobs);
    never more than there are inputs."""
    wanted = args.jobs or jobs.default_jobs(device)
    return max(1, min(wanted, todo))


def output_path(item, args) -> pathlib.Path:
    if args.output is not None:
        return args.output
    if args.out_dir is not None:
        return archive.mirrored(args.out_dir, item)
    return item.src.with_name(item.src.stem + ".fbcnn.png")


SHOWN_SKIPS = 20  # beyond this, one line: a re-run over an archive skips thousands


def plan_restore(args):
    """(targets to restore, the Walk, the Report): everything that can fail before any
    compute (arguments, the walk, every output folder, clashes, the report file)."""
    if args.output is not None and (len(args.inputs) > 1 or args.inputs[0].is_dir()):
        raise Fatal("-o/--output takes one input file; use --out-dir DIR for several or a folder")
    if args.output is not None and args.output.suffix.lower() not in images.WRITABLE:
        raise Fatal(f"cannot write {args.output}: use a .png name (writing JPEG again would bring "
                    f"the artifacts back)")
    try:
        storage.check_available([*args.inputs, args.out_dir])
    except OSError as err:
        raise Fatal(str(err)) from None
    found = archive.walk(args.inputs, args.recursive, exclude=args.out_dir)
    if found.folders and args.out_dir is None:
        raise Fatal("a folder as input needs --out-dir OUT (its tree is mirrored there)")
    for line in found.problems:
        archive.say(line)
    by_src = {item.src: item for item in found.items}
    try:
        targets = outputs.plan(list(by_src), lambda src: output_path(by_src[src], args),
                               args.overwrite)
        report = archive.open_report(args.report)
    except (outputs.OutputError, OSError) as err:
        raise Fatal(str(err)) from None
    skipped = [t for t in targets if t.skip]
    for target in skipped[:SHOWN_SKIPS]:
        archive.say(f"{target.src}: skipped: {target.skip}")
    if len(skipped) > SHOWN_SKIPS:
        archive.say(f"... and {len(skipped) - SHOWN_SKIPS} more outputs exist and are skipped "
                    f"(--overwrite to redo them)")
    for target in skipped:
        report.add(archive.record(target.src, target.dst, "skipped", error=None))
    return [t for t in targets if not t.skip], found, report


def run_all(todo, opts, report, args) -> None:
    """On the Ray cluster, in worker processes, or here."""
    if not todo:
        return
    if args.ray is not None:
        ray_job.run(todo, opts, report, args.ray, args.jobs, args.overwrite)
        return
    device = _device(args)
    workers = _workers(args, device, len(todo))
    if workers > 1:
        jobs.run_pool(todo, opts, report, workers, gpus=workers if device == "cuda" else 0)
    else:
        jobs.run_here(todo, opts, report, _engine(args.device, args.runtime))


def cmd_restore(args) -> int:
    # Every output is checked before the model loads: a folder that can't take the
    # results fails now, not after an hour of compute.
    if args.ray is not None:
        try:
            ray_job.require_ray()   # before the outputs are planned (folders made)
        except ray_job.RayMissing as err:
            raise Fatal(str(err)) from None
    todo, found, report = plan_restore(args)
    opts = jobs.Options(model=args.model, qf=args.qf, tile=args.tile,
                        max_megapixels=args.max_megapixels, device=args.device,
                        runtime=args.runtime)
    try:
        check_model(args.model)
        run_all(todo, opts, report, args)
    except (jobs.ModelFailed, ray_job.ClusterFailed) as err:
        raise Fatal(str(err)) from None
    except KeyboardInterrupt:
        archive.say(report.summary(found.not_images))
        raise
    finally:
        report.close()
    c = report.counts
    if c["skipped"] or c["failed"] or found.folders or found.not_images:
        archive.say(report.summary(found.not_images))
    return SOME_FAILED if report.counts["failed"] else OK


# ---------------------------------------------------------------- estimate

def cmd_estimate(args) -> int:
    check_model(args.model)
    engine = _engine(args.device, args.runtime)
    failed = 0
    for src in args.inputs:
        try:
            pic = images.read(src)
            est = engine.estimate(pic.pixels, model=args.model, source_path=str(src))
        except jobs.MODEL_ERRORS as err:
            raise Fatal(jobs.one_line(err)) from None
        except Exception as err:  # noqa: BLE001 - report and go on with the next file
            failed += 1
            print(f"fbcnn: {src}: {jobs.one_line(err)}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({"path": str(src), "qf": int(est.qf), "source": est.source,
                              "details": est.details}, default=plain), flush=True)
        else:
            extra = ", ".join(f"{k}={plain(v)}" for k, v in est.details.items())
            print(f"{src}: QF {int(est.qf)} ({est.source})" + (f"  [{extra}]" if extra else ""), flush=True)
    return SOME_FAILED if failed else OK


# ---------------------------------------------------------------- models / download

def runtime_note() -> str:
    """Which runtime each device uses, without importing either (this command is quick)."""
    if importlib.util.find_spec("openvino") is not None:
        return ("Runtime: the CPU runs the network through OpenVINO, CUDA/ROCm/MPS through "
                "torch (--runtime torch|openvino to choose).")
    return ("Runtime: torch on every device; OpenVINO is not installed "
            "(`pip install openvino` makes the CPU faster).")


def model_states() -> dict:
    """name -> {state, path, bundled} for every model of the registry."""
    return {name: {"state": weights.status(name), "path": str(weights.model_path(name)),
                   "bundled": bool(e.bundled)} for name, e in weights.REGISTRY.items()}


def torch_report() -> dict:
    """The torch this Python imports and the GPU it sees; torch_error when it cannot."""
    out = {}
    try:
        import torch
        out.update(torch=torch.__version__, torch_file=torch.__file__,
                   cuda=bool(torch.cuda.is_available()), cuda_build=torch.version.cuda,
                   hip_build=getattr(torch.version, "hip", None))
        if out["cuda"]:
            out["gpu_name"] = torch.cuda.get_device_name(0)
        mps = getattr(torch.backends, "mps", None)
        out["mps"] = bool(mps and mps.is_available())
    except Exception as err:  # noqa: BLE001 - a broken torch is what this reports
        out["torch_error"] = repr(err)
    return out


def models_report() -> dict:
    """`fbcnn models --json`: what the installer and its --check read from a venv."""
    out = {"python": sys.executable, "version": sys.version.split()[0],
           "core_path": str(pathlib.Path(__file__).absolute().parent.parent)}
    out.update(torch_report())
    try:
        out["model_dir"] = str(weights.cache_dir())
        out["models"] = model_states()
    except Exception as err:  # noqa: BLE001 - reported, like torch's
        out["weights_error"] = repr(err)
    return out


def cmd_models(args) -> int:
    if args.json:
        print(json.dumps(models_report()), flush=True)
        return OK
    rows = [(name, STATE_LABELS[m["state"]], m["path"]) for name, m in model_states().items()]
    width = max(len(r[0]) for r in rows)
    swidth = max(len(r[1]) for r in rows)
    for name, state, path in rows:
        print(f"{name:<{width}}  {state:<{swidth}}  {path}")
    print(f"Downloads go to {weights.cache_dir()} (set FBCNN_MODEL_DIR to change it); "
          f"get an official model with `fbcnn download NAME`.")
    print(runtime_note())
    return OK


def cmd_download(args) -> int:
    e = weights.REGISTRY[args.name]
    url = args.url_base.rstrip("/") + "/" + e.filename if args.url_base else None
    with tqdm(total=e.size, unit="B", unit_scale=True, unit_divisor=1024, desc=args.name,
              file=sys.stderr, disable=None) as bar:
        plain = plain_progress(args.name, url or e.url) if bar.disable else None

        def progress(done, total):
            if plain:
                return plain(done, total)
            if total and bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        try:
            path = weights.download(args.name, progress=progress, url=url)
        except (weights.ModelMissing, weights.VerificationError) as err:
            bar.close()
            print(f"fbcnn: error: {jobs.one_line(err)}", file=sys.stderr)
            return FATAL
    print(f"{args.name}: downloaded and verified: {path}")
    return OK


def plain_progress(name: str, url: str):
    """Progress for a log or a pipe, where tqdm draws nothing: a line at the start and
    at every tenth of the file."""
    print(f"fbcnn: downloading {name} from {url}", file=sys.stderr, flush=True)
    shown = {"tenth": 0}

    def progress(done, total):
        tenth = 10 * done // total if total else 0
        if tenth > shown["tenth"]:
            shown["tenth"] = tenth
            print(f"fbcnn: {name}: {10 * tenth}% of {total / 1e6:.1f} MB", file=sys.stderr, flush=True)
    return progress


COMMANDS = {"restore": cmd_restore, "estimate": cmd_estimate, "models": cmd_models, "download": cmd_download}
