"""core.frontend.client against real worker processes (and against fake pythons that die or hang)."""
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import install.placing
from core import weights
from core.frontend import client, texts
from core.frontend.client import Worker, WorkerError, pixel_format

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model_path(random_model_path):
    return random_model_path


@pytest.fixture(scope="module")
def worker():
    w = Worker(python=sys.executable, core_path=str(ROOT), timeout=120)
    yield w
    w.close()


@pytest.fixture(scope="module")
def engine():
    from core.engine import Engine
    return Engine("cpu")


def fake_python(tmp_path, body: str) -> str:
    """An executable that stands in for the worker's python."""
    p = tmp_path / "fakepython"
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o755)
    return str(p)


def near(a: np.ndarray, b: np.ndarray, tol: float) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and \
        np.abs(a.astype(np.float64) - b.astype(np.float64)).max() <= tol


# ---------------------------------------------------------------- standard library only

ISOLATED_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    for name in ("numpy", "torch"):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(name + " is importable: the test is not isolated")
    from fbcnn_frontend import client as fc, protocol, regions, texts
    assert "numpy" not in sys.modules and "torch" not in sys.modules
    w = fc.Worker(config=fc.load_config(), timeout=120)
    hello = w.hello()
    fmt = fc.pixel_format(8, 8, "u8", "RGB")
    seen = []
    out, info = w.restore(bytes(range(192)), fmt, model=sys.argv[2], qf=40,
                          progress=lambda d, t: seen.append((d, t)))
    job = w.submit("restore", bytes(range(192)), fmt, model=sys.argv[2], qf=40)
    out2, _ = job.result(120)
    w.close()
    assert "numpy" not in sys.modules and "torch" not in sys.modules
    print(json.dumps({"devices": hello["devices"], "n": len(out), "same": out == out2,
                      "qf_used": info["qf_used"], "progress": seen[-1], "paths": sys.path}))
""")


def test_client_runs_under_isolated_python_without_numpy(tmp_path, model_path):
    """The plug-ins' view: the front-end package placed by the installer as fbcnn_frontend,
    imported by a plain `python -I` that has no numpy or torch."""
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    install.placing.place_frontend(ROOT / "core" / "frontend", plugin_dir)
    (tmp_path / "check.py").write_text(ISOLATED_SCRIPT)
    config = tmp_path / "frontend.json"
    config.write_text(json.dumps({"python": sys.executable, "core_path": str(ROOT)}))
    env = dict(os.environ, FBCNN_FRONTEND_CONFIG=str(config))
    proc = subprocess.run([sys.executable, "-I", "-S", str(tmp_path / "check.py"), str(plugin_dir),
                           model_path], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert not any("site-packages" in p for p in got["paths"])
    assert "cpu" in got["devices"] and got["n"] == 192 and got["same"] and got["qf_used"] == 40
    assert got["progress"][0] == got["progress"][1]


def test_a_worker_of_another_protocol_version_is_refused_before_any_work(model_path, monkeypatch):
    """An old plug-in against a new worker (or the other way): said plainly, nothing sent."""
    monkeypatch.setattr(client, "PROTOCOL_VERSION", client.PROTOCOL_VERSION + 1)
    w = Worker(python=sys.executable, core_path=str(ROOT), timeout=120)
    try:
        with pytest.raises(WorkerError) as e:
            w.restore(b"\0" * 48, pixel_format(4, 4, "u8", "RGB"), model=model_path, qf=30)
        assert e.value.kind == client.VERSION_MISMATCH
        assert "different versions" in e.value.message and "re-run the installer" in e.value.message
        text = texts.advice(e.value, "GIMP")
        assert text.startswith("The plug-in and the worker are from different versions")
        with pytest.raises(WorkerError):
            w.hello()
    finally:
        w.close()


# ---------------------------------------------------------------- restore through the client

def test_hello(worker):
    hello = worker.hello()
    assert "cpu" in hello["devices"]
    assert {m["name"] for m in hello["models"]} == set(weights.REGISTRY)
    assert "id" not in hello and "type" not in hello


def test_u8_rgb_matches_direct_engine(worker, engine, model_path):
    img = np.random.default_rng(10).integers(0, 256, (48, 64, 3), np.uint8)
    out, info = worker.restore(img.tobytes(), pixel_format(64, 48, "u8", "RGB"),
                               model=model_path, qf=25, origin=(8, 16))
    direct = engine.restore(img.copy(), model=model_path, qf=25, origin=(8, 16)).pixels
    got = np.frombuffer(out, np.uint8).reshape(img.shape)
    assert near(got, direct, 1), np.abs(got.astype(int) - direct).max()
    assert info["qf_used"] == 25 and info["qf_source"] == "manual"


def test_bgra_channel_order_round_trips(worker, engine, model_path):
    """Memory order BGRA in and out; the network sees R, G, B in their places."""
    rng = np.random.default_rng(11)
    rgba = np.zeros((40, 56, 4), np.uint8)
    rgba[..., 0] = 230  # strongly different channels: a swap cannot hide
    rgba[..., 1] = rng.integers(90, 140, (40, 56))
    rgba[..., 2] = 15
    rgba[..., 3] = rng.integers(0, 256, (40, 56))
    bgra = rgba[..., [2, 1, 0, 3]].copy()
    out, info = worker.restore(bgra.tobytes(), pixel_format(56, 40, "u8", "BGRA"),
                               model=model_path, qf=30)
    assert info["order"] == "BGRA" and info["dtype"] == "u8"
    got_bgra = np.frombuffer(out, np.uint8).reshape(bgra.shape)
    direct = engine.restore(rgba.copy(), model=model_path, qf=30).pixels
    assert near(got_bgra[..., [2, 1, 0, 3]], direct, 1)
    assert np.array_equal(got_bgra[..., 3], bgra[..., 3])
    assert not near(got_bgra, direct, 40)  # read the wrong way round, it is far off


@pytest.mark.parametrize("dtype, npdt, scale, tol", [("u16", np.uint16, 65535, 3),
                                                     ("f32", np.float32, 1.0, 5e-5)])
def test_gray_alpha_keeps_dtype_and_alpha(worker, engine, model_path, dtype, npdt, scale, tol):
    rng = np.random.default_rng(12)
    ya = np.empty((32, 40, 2), npdt)
    ramp = np.linspace(0.1, 0.9, 40)[None, :] + rng.normal(0, 0.02, (32, 40))
    ya[..., 0] = (np.clip(ramp, 0, 1) * scale).astype(npdt)
    ya[..., 1] = (rng.random((32, 40)) * scale).astype(npdt)
    out, info = worker.restore(ya.tobytes(), pixel_format(40, 32, dtype, "YA"), model=model_path,
                               qf=35)
    assert info["dtype"] == dtype and len(out) == ya.nbytes
    got = np.frombuffer(out, npdt).reshape(ya.shape)
    assert got[..., 1].tobytes() == ya[..., 1].tobytes()  # alpha bit-identical
    direct = engine.restore(ya.copy(), model=model_path, qf=35).pixels
    assert near(got, direct, tol * scale if dtype == "f32" else tol)
    if dtype == "u16":
        assert len(np.unique(got[..., 0])) > 256  # not squeezed through 8 bits


def test_f16_rgba(worker, engine, model_path):
    rgba = np.random.default_rng(13).random((24, 24, 4)).astype(np.float16)
    out, info = worker.restore(rgba.tobytes(), pixel_format(24, 24, "f16", "RGBA"),
                               model=model_path, qf=60)
    got = np.frombuffer(out, np.float16).reshape(rgba.shape)
    assert info["dtype"] == "f16" and got[..., 3].tobytes() == rgba[..., 3].tobytes()
    direct = engine.restore(rgba.astype(np.float32), model=model_path, qf=60).pixels
    assert near(got.astype(np.float32), direct, 2e-3)


def test_mask_leaves_unselected_bytes_identical(worker, model_path):
    rng = np.random.default_rng(14)
    bgra = rng.integers(0, 256, (32, 48, 4), np.uint8)
    mask = np.zeros((32, 48), np.uint8)
    mask[:, 16:32] = 255
    mask[:, 32:] = 128
    fmt = pixel_format(48, 32, "u8", "BGRA")
    full, _ = worker.restore(bgra.tobytes(), fmt, model=model_path, qf=30)
    out, _ = worker.restore(bgra.tobytes(), fmt, mask=mask.tobytes(), model=model_path, qf=30)
    full = np.frombuffer(full, np.uint8).reshape(bgra.shape)
    got = np.frombuffer(out, np.uint8).reshape(bgra.shape)
    assert got[:, :16].tobytes() == bgra[:, :16].tobytes()
    assert near(got[:, 16:32], full[:, 16:32], 1)
    half = bgra[:, 32:].astype(float) + (full[:, 32:].astype(float) - bgra[:, 32:]) * 128 / 255
    assert np.abs(got[:, 32:] - half).max() <= 1.5
    assert not np.array_equal(got[:, 32:], bgra[:, 32:])


def test_estimate(worker, model_path):
    img = np.random.default_rng(15).integers(0, 256, (32, 32, 3), np.uint8)
    est = worker.estimate(img.tobytes(), pixel_format(32, 32, "u8", "RGB"), model=model_path)
    assert 1 <= est["qf"] <= 100 and est["source"] in ("file", "double-jpeg", "network")


def test_client_checks_byte_count_before_sending(worker):
    with pytest.raises(WorkerError) as e:
        worker.restore(b"\0" * 10, pixel_format(4, 4, "u8", "RGB"))
    assert e.value.kind == "bad-request" and "48" in e.value.message


def test_worker_error_reply_becomes_worker_error(worker):
    with pytest.raises(WorkerError) as e:
        worker.restore(b"\0" * 48, pixel_format(4, 4, "u8", "RGB"), model="no_such_model")
    assert e.value.kind == "bad-request" and "unknown model" in e.value.message
    assert worker.hello()["devices"]


# ---------------------------------------------------------------- cancel, death, deadlines

def big_job(worker, model_path, **kw):
    img = np.random.default_rng(16).integers(0, 256, (512, 512, 3), np.uint8)
    started = threading.Event()
    job = worker.submit("restore", img.tobytes(), pixel_format(512, 512, "u8", "RGB"),
                        model=model_path, qf=30, tile=128, progress=lambda d, t: started.set(), **kw)
    assert started.wait(120), "no progress report"
    return job


def test_cancel_during_restore(worker, model_path):
    job = big_job(worker, model_path)
    assert not job.done() and job.progress[1] > 4
    job.cancel()
    with pytest.raises(WorkerError) as e:
        job.result(60)
    assert e.value.kind == "cancelled" and job.done()
    assert job.progress[0] < job.progress[1]  # it stopped part-way
    assert worker.hello()["devices"]  # and the same worker serves on


def test_job_cancelled_while_queued_ends_cancelled(worker, model_path):
    """Calls on one Worker queue; a job cancelled in the queue ends at once, the running one runs on."""
    first = big_job(worker, model_path)
    queued = worker.submit("restore", b"\0" * 48, pixel_format(4, 4, "u8", "RGB"), model=model_path)
    queued.cancel()
    first.cancel()
    for job in (first, queued):
        with pytest.raises(WorkerError) as e:
            job.result(60)
        assert e.value.kind == "cancelled"
    assert worker.hello()["devices"]


def test_progress_callback_that_raises(worker, model_path):
    """The callback's error reaches the caller; the request is stopped and the worker serves on."""
    img = np.zeros((512, 512, 3), np.uint8)

    def progress(done, total):
        raise RuntimeError("the dialog was closed")

    t = time.monotonic()
    with pytest.raises(RuntimeError, match="dialog was closed"):
        worker.restore(img.tobytes(), pixel_format(512, 512, "u8", "RGB"), model=model_path, qf=30,
                       tile=128, progress=progress)
    assert time.monotonic() - t < 30
    out, _ = worker.restore(b"\0" * 48, pixel_format(4, 4, "u8", "RGB"), model=model_path, qf=30)
    assert len(out) == 48


def test_worker_killed_mid_request(model_path):
    w = Worker(python=sys.executable, core_path=str(ROOT), timeout=120)
    try:
        pid = w.hello()["pid"]
        job = big_job(w, model_path)
        os.kill(pid, 9)
        with pytest.raises(WorkerError) as e:
            job.result(30)
        assert e.value.kind == client.WORKER_DIED
        # Named, with the likely cause: the kernel's out-of-memory killer sends SIGKILL.
        assert "killed by SIGKILL" in e.value.message and "out of memory?" in e.value.message
        assert "ready" in e.value.stderr_tail  # what the worker had written to stderr
        assert w.hello()["pid"] != pid  # the next call starts a fresh worker
    finally:
        w.close()


def test_python_that_exits_at_once_reports_its_stderr(tmp_path):
    py = fake_python(tmp_path, 'echo "no module named torch, says the fake" >&2\nexit 3')
    w = Worker(python=py, core_path=str(tmp_path), timeout=20)
    t = time.monotonic()
    with pytest.raises(WorkerError) as e:
        w.hello()
    assert time.monotonic() - t < 10
    assert e.value.kind == client.WORKER_DIED and "code 3" in e.value.message
    assert "no module named torch, says the fake" in e.value.stderr_tail
    assert "says the fake" in str(e.value)


def test_python_that_does_not_exist(tmp_path):
    w = Worker(python=str(tmp_path / "nope" / "python"), core_path=str(tmp_path))
    with pytest.raises(WorkerError) as e:
        w.hello()
    assert e.value.kind == client.WORKER_DIED and "installer.py" in e.value.message


def test_hung_worker_hits_the_deadline(tmp_path):
    py = fake_python(tmp_path, 'echo "loading forever" >&2\nexec sleep 60')
    w = Worker(python=py, core_path=str(tmp_path), timeout=1.5, grace=1)
    t = time.monotonic()
    with pytest.raises(WorkerError) as e:
        w.hello()
    took = time.monotonic() - t
    assert e.value.kind == client.TIMEOUT and took < 1.5 + 1.5, took
    assert "loading forever" in e.value.stderr_tail
    w.close()


def test_hung_worker_that_stops_reading_does_not_block_the_write(tmp_path):
    """A worker that never reads stdin: a 24 MB request fills the pipe, the deadline still holds."""
    py = fake_python(tmp_path, "exec sleep 60")
    w = Worker(python=py, core_path=str(tmp_path), timeout=1.5, grace=1)
    t = time.monotonic()
    with pytest.raises(WorkerError) as e:
        w.restore(bytes(2000 * 3000 * 4), pixel_format(2000, 3000, "u8", "RGBA"))
    assert e.value.kind == client.TIMEOUT and time.monotonic() - t < 4


def test_close_kills_a_worker_that_ignores_shutdown(tmp_path):
    py = fake_python(tmp_path, "exec sleep 60")
    w = Worker(python=py, core_path=str(tmp_path), timeout=1, grace=0.5)
    with pytest.raises(WorkerError):
        w.hello()
    w._process()  # a fresh, still hung, process
    proc = w._proc.popen
    t = time.monotonic()
    w.close()
    assert proc.poll() is not None and time.monotonic() - t < 3


def test_close_shuts_down_cleanly():
    w = Worker(python=sys.executable, core_path=str(ROOT))
    w.hello()
    proc = w._proc.popen
    w.close()
    assert proc.returncode == 0


PIPES_SCRIPT = textwrap.dedent("""
    import gc, json, os, sys, threading, warnings
    warnings.simplefilter("error", ResourceWarning)
    caught = []
    # A file collected unclosed warns from its __del__, where an error cannot propagate.
    sys.unraisablehook = lambda u: caught.append(repr(u.exc_value))
    root, hangs, dies = sys.argv[1:4]
    sys.path.insert(0, root)
    from core.frontend.client import Worker, WorkerError
    popens = {}

    w = Worker(python=sys.executable, core_path=root, timeout=120)
    w.hello()
    popens["closed"] = w._proc.popen
    w.close()
    w.close()  # a second close has nothing left to close

    w = Worker(python=dies, core_path=root, timeout=20)
    try:
        w.hello()
    except WorkerError as e:
        popens["died"] = e.kind

    w = Worker(python=hangs, core_path=root, timeout=1, grace=0.5)
    try:
        w.hello()
    except WorkerError as e:
        popens["timed out"] = e.kind

    w = Worker(python=hangs, core_path=root, timeout=1, grace=0.5)
    gone = w._process().popen
    gone.kill()
    gone.wait()
    w._process()  # replaces the process that went away (an idle timeout does this)
    popens["gone"] = gone
    popens["replacement"] = w._proc.popen
    w.close()

    open_pipes = {k: [n for n in ("stdin", "stdout", "stderr") if not getattr(p, n).closed]
                  for k, p in popens.items() if not isinstance(p, str)}
    kinds = {k: p for k, p in popens.items() if isinstance(p, str)}
    for t in threading.enumerate():
        if t.name.startswith("fbcnn-"):
            t.join(10)
    del popens, w, gone
    gc.collect()
    print(json.dumps({"open": open_pipes, "kinds": kinds, "warnings": caught}))
""")


def test_every_pipe_is_closed_without_resource_warnings(tmp_path):
    """close(), a worker that died and one that timed out leave no pipe open: left open,
    each is a ResourceWarning when collected (GIMP 3.2 printed them)."""
    hangs = fake_python(tmp_path, "exec sleep 60")
    dies = tmp_path / "dies"
    dies.write_text("#!/bin/sh\necho bye >&2\nexit 3\n")
    dies.chmod(0o755)
    (tmp_path / "pipes.py").write_text(PIPES_SCRIPT)
    proc = subprocess.run([sys.executable, "-W", "error::ResourceWarning", str(tmp_path / "pipes.py"),
                           str(ROOT), hangs, str(dies)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["kinds"] == {"died": client.WORKER_DIED, "timed out": client.TIMEOUT}
    assert got["open"] == {"closed": [], "gone": [], "replacement": []}
    assert got["warnings"] == [] and "ResourceWarning" not in proc.stderr, proc.stderr


def test_idle_worker_is_restarted_on_the_next_call():
    w = Worker(python=sys.executable, core_path=str(ROOT), idle_timeout=1)
    try:
        pid = w.hello()["pid"]
        proc = w._proc.popen
        proc.wait(30)
        assert proc.returncode == 0
        assert w.hello()["pid"] != pid
    finally:
        w.close()


def test_job_result_wait_can_time_out_without_stopping_the_job(worker, model_path):
    job = big_job(worker, model_path)
    with pytest.raises(WorkerError) as e:
        job.result(0.01)
    assert e.value.kind == client.TIMEOUT and not job.done()
    job.cancel()
    with pytest.raises(WorkerError):
        job.result(60)


# ---------------------------------------------------------------- configuration

def test_not_configured_when_the_config_file_is_absent(tmp_path, monkeypatch):
    monkeypatch.setenv("FBCNN_FRONTEND_CONFIG", str(tmp_path / "absent.json"))
    for call in (client.load_config, Worker):
        with pytest.raises(WorkerError) as e:
            call()
        assert e.value.kind == client.NOT_CONFIGURED
        assert "installer.py" in e.value.message and "absent.json" in e.value.message


def test_not_configured_when_the_config_is_broken(tmp_path):
    bad = tmp_path / "frontend.json"
    bad.write_text("{not json")
    with pytest.raises(WorkerError) as e:
        client.load_config(bad)
    assert e.value.kind == client.NOT_CONFIGURED
    bad.write_text(json.dumps({"python": "/usr/bin/python3"}))
    with pytest.raises(WorkerError) as e:
        client.load_config(bad)
    assert e.value.kind == client.NOT_CONFIGURED and "core_path" in e.value.message


def test_config_path(monkeypatch, tmp_path):
    monkeypatch.delenv("FBCNN_FRONTEND_CONFIG", raising=False)
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
        assert client.config_path() == tmp_path / "fbcnn" / "frontend.json"
        # A relative XDG_CONFIG_HOME is invalid per the XDG spec: ignored, as the
        # installer ignores it (it writes the file where this function says).
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.setenv("XDG_CONFIG_HOME", "relative/cfg")
        assert client.config_path() == tmp_path / "home" / ".config" / "fbcnn" / "frontend.json"
    monkeypatch.setenv("FBCNN_FRONTEND_CONFIG", str(tmp_path / "x.json"))
    assert client.config_path() == tmp_path / "x.json"


def test_command_and_environment(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/krita/lib/python")
    monkeypatch.setenv("PYTHONHOME", "/krita")
    w = Worker(python="/venv/bin/python", core_path="/opt/fbcnn", idle_timeout=300)
    assert w.command() == ["/venv/bin/python", "-m", "core.worker", "--idle-timeout", "300"]
    env = w._env()
    assert "PYTHONPATH" not in env and "PYTHONHOME" not in env
    fw = Worker(config={"python": "/venv/bin/python", "core_path": "/opt/fbcnn", "flatpak_spawn": True})
    assert fw.command()[:3] == ["flatpak-spawn", "--host", "--directory=/opt/fbcnn"]
    assert fw.command()[-3:] == ["/venv/bin/python", "-m", "core.worker"]


def test_pixel_format_checks():
    assert pixel_format(3, 2, "u16", "YA") == {"width": 3, "height": 2, "dtype": "u16", "order": "YA"}
    assert client.frame_nbytes(pixel_format(3, 2, "u16", "YA")) == 24
    for bad in ((3, 2, "u32", "RGB"), (3, 2, "u8", "BGR"), (0, 2, "u8", "RGB")):
        with pytest.raises(ValueError):
            pixel_format(*bad)
