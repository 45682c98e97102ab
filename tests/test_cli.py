"""The real `fbcnn` command, run as `python -m core` in a subprocess on small real files.

Restoration quality is not tested here (random-weight models stand in for trained
ones); the plumbing is: files in and out, depth, metadata, errors and exit codes.
"""
import hashlib
import http.server
import json
import os
import subprocess
import shutil
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from core import cli, images, outputs, weights
from core.network import Config, build

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# nb=4 as in the official models; a global residual keeps random-weight output close to the input.
TINY = Config(in_nc=3, out_nc=3, nc=(8, 16, 16, 16), nb=4, qf_nc=16, residual=True)
RNG = np.random.default_rng(3)


def run(args, tmp_path, prelude="", env=None):
    """Run the CLI in a fresh interpreter; `prelude` is Python run first (e.g. a test registry entry)."""
    full_env = {**os.environ, "FBCNN_MODEL_DIR": str(tmp_path / "cache"), **(env or {})}
    full_env.pop("PYTHONPATH", None)
    if prelude:
        cmd = [sys.executable, "-c", prelude + "\nimport sys\nfrom core.cli import main\nsys.exit(main(sys.argv[1:]))"]
    else:
        cmd = [sys.executable, "-m", "core"]
    return subprocess.run(cmd + [str(a) for a in args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=300)


def messages(stderr: str) -> list:
    """stderr's lines less the per-file progress lines written when it is not a terminal."""
    return [ln for ln in stderr.strip().splitlines() if not ln.startswith("fbcnn: restoring ")]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    net = build(TINY)
    with torch.no_grad():  # small weights: the residual network stays near the identity
        for p in net.parameters():
            p.mul_(0.1)
    path = tmp_path_factory.mktemp("model") / "tiny_fbcnn.pth"
    torch.save(net.state_dict(), path)
    return path


# Made once: the profile embeds its creation time.
ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def photo(h=48, w=64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (h + w)], axis=2)
    return np.clip(img + RNG.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


def jpeg(path, quality=30, with_meta=True, h=48, w=64):
    exif = Image.Exif()
    exif[0x010F] = "FBCNN test camera"
    opts = {"icc_profile": ICC, "exif": exif.tobytes()} if with_meta else {}
    Image.fromarray(photo(h, w)).save(path, quality=quality, **opts)
    return path


def gradient16(channels) -> np.ndarray:
    ramp = np.linspace(0, 65535, 1024).astype(np.uint16)
    return np.ascontiguousarray(np.broadcast_to(ramp.reshape(32, 32)[..., None], (32, 32, channels)))


def test_restore_batch_keeps_metadata_and_depth_and_reports_bad_files(tmp_path, model_file):
    src = tmp_path / "in"
    src.mkdir()
    jpeg(src / "photo.jpg")
    images.write(src / "deep.png", gradient16(3))
    images.write(src / "deepgray.png", gradient16(1))
    rgba = np.concatenate([photo(), np.full((48, 64, 1), 77, np.uint8)], axis=2)
    Image.fromarray(rgba).save(src / "alpha.png")
    (src / "broken.jpg").write_bytes(b"this is not an image")
    inputs = [src / "photo.jpg", src / "broken.jpg", src / "deep.png", src / "deepgray.png", src / "alpha.png"]
    out = tmp_path / "out"
    r = run(["restore", *inputs, "--out-dir", out, "--model", model_file, "--qf", "30", "--device", "cpu"],
            tmp_path)
    assert r.returncode == 1, r.stderr
    errors = [ln for ln in messages(r.stderr) if "broken.jpg" in ln]
    assert len(errors) == 1 and errors[0].startswith("fbcnn: ") and "Traceback" not in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["alpha.png", "deep.png", "deepgray.png", "photo.png"]

    with Image.open(out / "photo.png") as im:
        assert im.format == "PNG" and im.size == (64, 48) and im.mode == "RGB"
        assert im.info["icc_profile"] == ICC
        assert im.getexif()[0x010F] == "FBCNN test camera"
    deep = images.read(out / "deep.png").pixels
    assert deep.dtype == np.uint16 and deep.shape == (32, 32, 3)
    assert len(np.unique(deep)) > 256  # never squeezed through 8 bits
    deepgray = images.read(out / "deepgray.png").pixels
    assert deepgray.dtype == np.uint16 and deepgray.shape == (32, 32, 1) and len(np.unique(deepgray)) > 256
    alpha = images.read(out / "alpha.png").pixels
    assert alpha.shape == (48, 64, 4) and np.all(alpha[..., 3] == 77)
    assert "QF 30 (manual)" in r.stdout


def test_restore_default_name_auto_qf_and_tiles(tmp_path, model_file):
    src = jpeg(tmp_path / "big.jpg", quality=25, with_meta=False, h=200, w=300)
    r = run(["restore", src, "--model", model_file, "--tile", "128", "--device", "cpu"], tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "big.fbcnn.png"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (300, 200)
    assert "QF 25 (file)" in r.stdout  # Pillow's tables are scaled IJG tables: exact


def test_estimate_json_lines(tmp_path, model_file):
    a = jpeg(tmp_path / "a.jpg", quality=40)
    b = tmp_path / "b.png"
    Image.fromarray(photo()).save(b)
    bad = tmp_path / "c.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    r = run(["estimate", a, bad, b, "--json", "--model", model_file, "--device", "cpu"], tmp_path)
    assert r.returncode == 1, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["path"] for row in rows] == [str(a), str(b)]
    assert rows[0]["qf"] == 40 and rows[0]["source"] == "file"
    assert all(isinstance(row["qf"], int) and 1 <= row["qf"] <= 100 for row in rows)
    assert rows[1]["source"] in ("network", "double-jpeg")
    assert len([ln for ln in r.stderr.splitlines() if "c.jpg" in ln]) == 1


def test_non_fbcnn_model_is_refused_clearly(tmp_path):
    other = tmp_path / "linear.pth"
    torch.save(torch.nn.Linear(4, 4).state_dict(), other)
    src = jpeg(tmp_path / "x.jpg")
    r = run(["restore", src, "--model", other, "--device", "cpu"], tmp_path)
    assert r.returncode == 2
    assert "not an FBCNN" in r.stderr and "Traceback" not in r.stderr
    assert len(messages(r.stderr)) == 1
    assert not (tmp_path / "x.fbcnn.png").exists()


def test_code_carrying_pickle_is_refused_in_process(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pth"
    torch.save({"m_head.weight": Evil()}, evil)
    src = jpeg(tmp_path / "x.jpg")
    assert cli.main(["restore", str(src), "--model", str(evil), "--device", "cpu"]) == 2
    assert "safe loading" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "x.fbcnn.png").exists()


MISSING_COMPACT = "import pathlib, core.weights as w\nw.PACKAGE_MODELS = pathlib.Path({!r})"


def test_restore_without_any_weights_says_what_is_missing(tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    src = jpeg(tmp_path / "x.jpg")
    r = run(["restore", src, "--device", "cpu"], tmp_path, prelude=MISSING_COMPACT.format(str(empty)))
    assert r.returncode == 2
    assert "'compact' is missing" in r.stderr and "fbcnn download fbcnn_color" in r.stderr
    assert "Traceback" not in r.stderr


class _Files(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    srv.files = {}
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


REGISTER = """import pathlib, core.weights as w
from core.network import Config
w.PACKAGE_MODELS = pathlib.Path({bundled!r})
w.REGISTRY["tiny"] = w.ModelEntry("tiny", "tiny.pth", {url!r}, {size}, {sha!r}, Config(), False, "test")"""


def test_models_and_download(tmp_path, server, model_file):
    data = model_file.read_bytes()
    server.files["/tiny.pth"] = data
    bundled = tmp_path / "pkg"
    bundled.mkdir()
    # The real bundled file: its sha256 is pinned in the registry.
    shutil.copy(weights.PACKAGE_MODELS / "fbcnn_compact.pth", bundled / "fbcnn_compact.pth")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "fbcnn_gray.pth").write_bytes(b"not the real thing")
    prelude = REGISTER.format(bundled=str(bundled), url=server.url + "/tiny.pth", size=len(data),
                              sha=hashlib.sha256(data).hexdigest())

    r = run(["download", "tiny"], tmp_path, prelude=prelude)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cache" / "tiny.pth").read_bytes() == data
    assert "downloaded and verified" in r.stdout

    r = run(["models"], tmp_path, prelude=prelude)
    assert r.returncode == 0, r.stderr
    states = {line.split()[0]: line for line in r.stdout.splitlines()}
    assert "bundled" in states["compact"] and str(bundled / "fbcnn_compact.pth") in states["compact"]
    assert "downloaded, verified" in states["tiny"]
    assert "corrupt" in states["fbcnn_gray"]
    assert "missing" in states["fbcnn_color"] and str(tmp_path / "cache" / "fbcnn_color.pth") in states["fbcnn_color"]

    server.files.clear()
    (tmp_path / "cache" / "tiny.pth").unlink()
    r = run(["download", "tiny"], tmp_path, prelude=prelude)
    assert r.returncode == 2 and "404" in r.stderr and str(tmp_path / "cache" / "tiny.pth") in r.stderr


def test_models_json_is_what_the_installer_reads(tmp_path, server, model_file):
    """`fbcnn models --json`: one JSON object with this Python, core, torch and the
    models' states (the installer and its --check read it from the venv)."""
    data = model_file.read_bytes()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "tiny.pth").write_bytes(data)
    (tmp_path / "cache" / "fbcnn_gray.pth").write_bytes(b"not the real thing")
    prelude = REGISTER.format(bundled=str(weights.PACKAGE_MODELS), url=server.url + "/tiny.pth",
                              size=len(data), sha=hashlib.sha256(data).hexdigest())
    r = run(["models", "--json"], tmp_path, prelude=prelude)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1
    info = json.loads(lines[0])
    assert info["python"] == sys.executable and info["version"] == sys.version.split()[0]
    assert os.path.samefile(info["core_path"], ROOT)
    assert info["torch"] == torch.__version__ and info["torch_file"] == torch.__file__
    assert info["cuda"] is torch.cuda.is_available() and info["cuda_build"] == torch.version.cuda
    assert info["hip_build"] == getattr(torch.version, "hip", None) and info["mps"] in (True, False)
    assert info["model_dir"] == str(tmp_path / "cache")
    models = info["models"]
    assert list(models) == list(weights.REGISTRY) + ["tiny"]
    assert models["compact"] == {"state": "bundled", "bundled": True,
                                 "path": str(weights.PACKAGE_MODELS / "fbcnn_compact.pth")}
    assert models["tiny"] == {"state": "downloaded", "bundled": False,
                              "path": str(tmp_path / "cache" / "tiny.pth")}
    assert models["fbcnn_gray"]["state"] == "corrupt"
    assert models["fbcnn_color"]["state"] == "missing"
    assert not any(key.endswith("_error") for key in info)


def test_models_json_without_torch_says_so_and_still_lists_the_models(tmp_path):
    r = run(["models", "--json"], tmp_path, prelude="import sys\nsys.modules['torch'] = None")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert "torch" not in info and "ModuleNotFoundError" in info["torch_error"]
    assert info["models"]["compact"]["state"] == "bundled"


def test_download_from_a_mirror_shows_progress_in_a_pipe(tmp_path, server, model_file):
    """--url-base (the installer's --model-url-base): BASE/<file>, progress lines where
    tqdm draws nothing, and exit 2 when the mirror lacks the file."""
    data = model_file.read_bytes()
    server.files["/mirror/tiny.pth"] = data
    prelude = REGISTER.format(bundled=str(weights.PACKAGE_MODELS), url="http://127.0.0.1:9/nowhere/tiny.pth",
                              size=len(data), sha=hashlib.sha256(data).hexdigest())
    r = run(["download", "tiny", "--url-base", server.url + "/mirror/"], tmp_path, prelude=prelude)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "cache" / "tiny.pth").read_bytes() == data
    assert f"fbcnn: downloading tiny from {server.url}/mirror/tiny.pth" in r.stderr
    assert f"fbcnn: tiny: 100% of {len(data) / 1e6:.1f} MB" in r.stderr
    assert "downloaded and verified" in r.stdout
    (tmp_path / "cache" / "tiny.pth").unlink()
    r = run(["download", "tiny", "--url-base", server.url + "/elsewhere"], tmp_path, prelude=prelude)
    assert r.returncode == 2 and "404" in r.stderr and "/elsewhere/tiny.pth" in r.stderr


def test_usage_errors(tmp_path, capsys):
    a, b = jpeg(tmp_path / "a.jpg"), jpeg(tmp_path / "b.jpg")
    assert cli.main(["restore", str(a), str(b), "-o", str(tmp_path / "o.png")]) == 2
    assert "--out-dir" in capsys.readouterr().err
    assert cli.main(["restore", str(a), "-o", str(tmp_path / "o.jpg")]) == 2
    assert "artifacts" in capsys.readouterr().err
    assert cli.main(["restore", str(a), "--model", "no_such_model"]) == 2
    assert "unknown model" in capsys.readouterr().err
    for bad in (["restore", str(a), "--qf", "0"], ["restore", str(a), "--tile", "100"]):
        with pytest.raises(SystemExit) as info:
            cli.main(bad)
        assert info.value.code == 2


def test_never_overwrites_an_input(tmp_path, model_file, capsys):
    """A clash stops the command before any compute (#20): exit 2, not a per-file failure."""
    src = tmp_path / "x.png"
    Image.fromarray(photo()).save(src)
    before = src.read_bytes()
    assert cli.main(["restore", str(src), "--out-dir", str(tmp_path), "--model", str(model_file),
                     "--qf", "50", "--device", "cpu"]) == 2
    assert "overwrite the input" in capsys.readouterr().err
    assert src.read_bytes() == before


# ---------------------------------------------------------------- outputs (#18 items 2, 3)

def no_engine(monkeypatch):
    """Fail the test if anything would load a model: the outputs must be checked first."""
    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the outputs were checked")
    monkeypatch.setattr(cli, "_engine", refuse)


@pytest.mark.parametrize("how", ["-o", "--out-dir"])
def test_an_output_folder_that_cannot_exist_fails_before_any_compute(tmp_path, model_file, capsys,
                                                                       monkeypatch, how):
    src = jpeg(tmp_path / "x.jpg")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = ["-o", str(blocker / "sub" / "x.png")] if how == "-o" else ["--out-dir", str(blocker / "sub")]
    no_engine(monkeypatch)
    assert cli.main(["restore", str(src), *out, "--model", str(model_file), "--qf", "50"]) == 2
    err = capsys.readouterr().err
    assert "cannot create the output folder" in err and str(blocker / "sub") in err
    assert ".tmp" not in err and "Traceback" not in err


def test_o_creates_its_folder_like_out_dir(tmp_path, model_file):
    src = jpeg(tmp_path / "x.jpg")
    dst = tmp_path / "new" / "deeper" / "x.png"
    assert cli.main(["restore", str(src), "-o", str(dst), "--model", str(model_file), "--qf", "50",
                     "--device", "cpu"]) == 0
    assert np.asarray(Image.open(dst)).shape == (48, 64, 3)


def test_an_existing_output_is_skipped_and_said_unless_overwrite(tmp_path, model_file, capsys,
                                                                 monkeypatch):
    src = jpeg(tmp_path / "x.jpg")
    dst = tmp_path / "x.png"
    dst.write_bytes(b"the user's own file")
    args = ["restore", str(src), "-o", str(dst), "--model", str(model_file), "--qf", "50",
            "--device", "cpu"]
    with monkeypatch.context() as m:
        no_engine(m)              # nothing to do: no model is loaded either
        assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "skipped" in err and "--overwrite" in err and "0 written, 1 skipped" in err
    assert dst.read_bytes() == b"the user's own file"
    assert cli.main(args + ["--overwrite"]) == 0
    assert np.asarray(Image.open(dst)).shape == (48, 64, 3)


def test_results_go_to_unique_temp_names_and_never_half_written(tmp_path, monkeypatch):
    seen = []

    def write(tmp):
        seen.append(tmp)
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp != tmp_path / "x.png"
        tmp.write_bytes(b"x" * 10)

    outputs.write_atomically(tmp_path / "x.png", write)
    outputs.write_atomically(tmp_path / "x.png", write)
    assert seen[0] != seen[1]     # two runs into one folder never share a name

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        outputs.write_atomically(tmp_path / "y.png", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]   # nothing half-written


# ---------------------------------------------------------------- weights that load but are broken (#18 item 4)

def test_weights_that_load_but_cannot_restore_are_refused_by_name(tmp_path, model_file, capsys):
    src = jpeg(tmp_path / "x.jpg")
    nan = tmp_path / "nan.pth"
    torch.save({k: v * float("nan") for k, v in torch.load(model_file, weights_only=True).items()},
               nan)
    assert cli.main(["restore", str(src), "--model", str(nan), "--qf", "50", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert str(nan) in err and "NaN or infinite weights" in err
    assert not (tmp_path / "x.fbcnn.png").exists()
    if weights.status("compact") != "bundled":
        pytest.skip("the marker check needs the bundled compact model")
    # The bundled model without its global_residual marker loads as another network,
    # one that turns pictures black: refused, not written.
    sd = weights.load_state_dict("compact")
    del sd["global_residual"]
    lost = tmp_path / "no-marker.pth"
    torch.save(sd, lost)
    assert cli.main(["restore", str(src), "--model", str(lost), "--qf", "50", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert str(lost) in err and "degenerate" in err and "global_residual" in err
    assert not (tmp_path / "x.fbcnn.png").exists()


def test_piped_stderr_gets_a_plain_line_per_file(tmp_path, model_file):
    """With stderr in a pipe or a log the progress bar draws nothing; a long run must
    still say what it is doing (#18 item 10)."""
    srcs = [jpeg(tmp_path / f"p{i}.jpg") for i in range(2)]
    r = run(["restore", *srcs, "--out-dir", tmp_path / "out", "--model", model_file, "--qf", "50",
             "--device", "cpu"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"fbcnn: restoring 1/2: {srcs[0]}" in r.stderr
    assert f"fbcnn: restoring 2/2: {srcs[1]}" in r.stderr


def test_offline_download_fails_fast_with_the_manual_way(tmp_path, monkeypatch, capsys):
    """A name that does not resolve is not retried behind a frozen bar (it took 15-24 s):
    no back-off is ever waited, and the message says how to place the file by hand."""
    import dataclasses
    monkeypatch.setenv("FBCNN_MODEL_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(weights.REGISTRY, "tiny", dataclasses.replace(
        weights.REGISTRY["fbcnn_color"], name="tiny", url="http://no-such-host.invalid/tiny.pth"))
    waits = []
    with pytest.raises(weights.ModelMissing) as info:
        weights.download("tiny", backoff=lambda attempt: waits.append(attempt) or 0)
    assert waits == [] and "does not resolve" in str(info.value)
    assert "place the file at" in str(info.value) and str(tmp_path / "cache") in str(info.value)
    assert cli.main(["download", "tiny"]) == 2
    assert "does not resolve" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare to mount a small tmpfs in a private namespace")
def test_a_full_disk_fails_that_file_cleanly_and_leaves_no_part_of_it(tmp_path, model_file):
    """The output folder is a 64 KiB tmpfs (in a private mount namespace, gone with the
    process): the first PNG fits, the big second one does not. It is reported, the exit
    code says a file failed, and no partial or temporary file is left."""
    small = jpeg(tmp_path / "a-small.jpg")
    big = tmp_path / "b-big.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (256, 256, 3), np.uint8)).save(big)
    out = tmp_path / "full"
    out.mkdir()
    script = (f"mount -t tmpfs -o size=64k tmpfs {out} && "
              f"{sys.executable} -m core restore {small} {big} --out-dir {out} --model {model_file} "
              f"--qf 50 --device cpu; rc=$?; echo LEFT:; ls -A {out}; exit $rc")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], cwd=ROOT,
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "FBCNN_MODEL_DIR": str(tmp_path / "cache")})
    assert r.returncode == 1, r.stderr
    assert "b-big" in r.stderr and "No space left on device" in r.stderr, r.stderr
    left = r.stdout.split("LEFT:", 1)[1].split()
    assert left == ["a-small.png"], r.stdout   # only the whole small result remains
