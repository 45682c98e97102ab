"""The worker process, spoken to with raw frames on its real stdin/stdout.

Every test here runs `python -m core.worker` as a subprocess; the pure pixel
helpers are also checked on their own, because a wrong permutation is easier to
read there than through the network.
"""
import json
import os
import pathlib
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from core import weights
from core.frontend.protocol import read_frame, write_frame
from core.payload import apply_mask, blend, from_canonical, to_canonical

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model_path(random_model_path):
    return random_model_path


class RawWorker:
    """A worker subprocess with helpers to write frames (good or broken) and read replies."""

    def __init__(self, *args, stderr_path=None, env=None):
        self.stderr_file = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
        env = {**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")},
               **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "core.worker", *args], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr_file)
        self.next_id = 100

    def send(self, header, *payloads):
        if "id" not in header:
            self.next_id += 1
            header = dict(header, id=self.next_id)
        write_frame(self.proc.stdin, header, *payloads)
        return header["id"]

    def send_raw(self, data: bytes):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def reply(self):
        frame = read_frame(self.proc.stdout)
        assert frame is not None, "the worker closed stdout"
        return frame

    def final(self, rid):
        """Progress reports, then the result or error for request rid."""
        progress = []
        while True:
            header, payload = self.reply()
            assert header["id"] == rid, header
            if header["type"] == "progress":
                progress.append((header["done"], header["total"]))
                continue
            return header, payload, progress

    def call(self, header, *payloads):
        return self.final(self.send(header, *payloads))

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            f.close()
        if self.stderr_file is not subprocess.DEVNULL:
            self.stderr_file.close()


@pytest.fixture(scope="module")
def worker():
    w = RawWorker()
    yield w
    w.close()


def fmt(w, h, dtype, order):
    return {"width": w, "height": h, "dtype": dtype, "order": order}


def test_hello_lists_devices_and_models(worker):
    header, payload, _ = worker.call({"op": "hello"})
    assert header["type"] == "result" and payload == b""
    assert "cpu" in header["devices"] and header["default_device"] in header["devices"]
    assert header["torch"] == torch.__version__
    assert header["python"] == "%d.%d.%d" % sys.version_info[:3]
    names = [m["name"] for m in header["models"]]
    assert set(weights.REGISTRY) == set(names)
    for m in header["models"]:
        assert m["state"] in ("bundled", "downloaded", "missing", "corrupt") and m["path"]
    assert header["default_model"] == "auto"


def test_restore_u8_rgb_round_trip(worker, model_path):
    img = np.random.default_rng(1).integers(0, 256, (24, 40, 3), np.uint8)
    header, payload, progress = worker.call(
        {"op": "restore", **fmt(40, 24, "u8", "RGB"), "model": model_path, "qf": 20}, img.tobytes())
    assert header["type"] == "result", header
    assert header["qf_used"] == 20 and header["qf_source"] == "manual"
    assert header["device"] == "cpu" and header["model"] == model_path
    assert isinstance(header["seconds"], float) and header["warnings"] == []
    assert {k: header[k] for k in ("width", "height", "dtype", "order")} == fmt(40, 24, "u8", "RGB")
    assert header["nbytes"] == len(payload) == img.nbytes
    assert progress and progress[-1][0] == progress[-1][1]
    out = np.frombuffer(payload, np.uint8).reshape(img.shape)
    assert not np.array_equal(out, img)  # the network did change it


def test_estimate(worker, model_path):
    img = np.random.default_rng(2).integers(0, 256, (32, 32, 3), np.uint8)
    header, _, _ = worker.call({"op": "estimate", **fmt(32, 32, "u8", "RGB"), "model": model_path},
                               img.tobytes())
    assert header["type"] == "result", header
    assert 1 <= header["qf"] <= 100 and header["source"] in ("file", "double-jpeg", "network")
    assert isinstance(header["details"], dict)


def test_model_is_loaded_once(tmp_path, worker, model_path):
    """A second restore with the same model does not read the file again."""
    path = tmp_path / "once.pth"
    path.write_bytes(pathlib.Path(model_path).read_bytes())
    img = np.random.default_rng(3).integers(0, 256, (16, 16, 3), np.uint8)
    req = {"op": "restore", **fmt(16, 16, "u8", "RGB"), "model": str(path), "qf": 50}
    first, p1, _ = worker.call(req, img.tobytes())
    assert first["type"] == "result", first
    path.write_bytes(b"not a model any more")  # a reload would now fail
    second, p2, _ = worker.call(req, img.tobytes())
    assert second["type"] == "result", second
    assert p1 == p2


# ---------------------------------------------------------------- bad requests

def assert_still_serving(worker):
    header, _, _ = worker.call({"op": "hello"})
    assert header["type"] == "result"


def test_malformed_header_json(worker):
    body = b"{this is not json"
    worker.send_raw(struct.pack(">I", len(body)) + body)
    header, _ = worker.reply()
    assert header["type"] == "error" and header["kind"] == "bad-request" and header["id"] is None
    assert "JSON" in header["message"]
    assert_still_serving(worker)


def test_header_that_is_not_an_object(worker):
    body = b"[1, 2, 3]"
    worker.send_raw(struct.pack(">I", len(body)) + body)
    header, _ = worker.reply()
    assert header["type"] == "error" and header["kind"] == "bad-request"
    assert_still_serving(worker)


def test_wrong_byte_count(worker, model_path):
    img = np.zeros((8, 8, 3), np.uint8)
    short = img.tobytes()[:-5]
    header, payload, _ = worker.call({"op": "restore", **fmt(8, 8, "u8", "RGB"), "model": model_path},
                                     short)
    assert header["type"] == "error" and header["kind"] == "bad-request", header
    assert "187" in header["message"] and "192" in header["message"]
    # The short payload was consumed whole: the next request is read in step.
    ok, out, _ = worker.call({"op": "restore", **fmt(8, 8, "u8", "RGB"), "model": model_path,
                              "qf": 50}, img.tobytes())
    assert ok["type"] == "result" and len(out) == img.nbytes


@pytest.mark.parametrize("change, words", [
    ({"model": "no_such_model"}, "unknown model"),
    ({"model": "/nowhere/x.pth"}, "does not exist"),
    ({"dtype": "u32"}, "dtype"),
    ({"order": "BGR"}, "order"),
    ({"qf": 0}, "qf"),
    ({"qf": "high"}, "qf"),
    ({"origin": [1]}, "origin"),
    ({"device": "tpu"}, "device"),
    ({"jpeg_settings": "zz"}, "hex"),
    ({"mask": "yes"}, "mask"),
    ({"width": 0}, "width"),
    ({"op": "paint"}, "unknown op"),
])
def test_bad_request_fields(worker, model_path, change, words):
    img = np.zeros((8, 8, 3), np.uint8)
    req = {"op": "restore", **fmt(8, 8, "u8", "RGB"), "model": model_path, "qf": 50, **change}
    header, payload, _ = worker.call(req, img.tobytes())
    assert header["type"] == "error" and header["kind"] == "bad-request", header
    assert words in header["message"]
    assert payload == b""
    assert_still_serving(worker)


@pytest.mark.parametrize("rid", ["seven", [1], {"a": 1}, None, True])
def test_request_without_integer_id(worker, rid):
    worker.send({"op": "hello", "id": rid})
    header, _ = worker.reply()
    assert header["type"] == "error" and header["kind"] == "bad-request" and header["id"] == rid
    assert_still_serving(worker)


def test_cancel_of_a_finished_request_is_ignored(worker):
    """A cancel that crosses its target's reply must not hit a later request with the same id."""
    worker.send({"op": "cancel", "target": 77})
    header, _, _ = worker.call({"op": "hello", "id": 77})
    assert header["type"] == "result"
    worker.send({"op": "cancel", "target": "x"})
    header, _ = worker.reply()
    assert header["type"] == "error" and header["kind"] == "bad-request"


def test_missing_registry_model_says_what_to_do(tmp_path, model_path):
    """A registry model that is not downloaded: kind missing-model, naming where it goes."""
    w = RawWorker(env={"FBCNN_MODEL_DIR": str(tmp_path)})
    try:
        img = np.zeros((8, 8, 3), np.uint8)
        header, _, _ = w.call({"op": "restore", **fmt(8, 8, "u8", "RGB"), "model": "fbcnn_color",
                               "qf": 50}, img.tobytes())
        assert header["type"] == "error" and header["kind"] == "missing-model", header
        assert str(tmp_path) in header["message"]
        assert_still_serving(w)
    finally:
        w.close()


# ---------------------------------------------------------------- lifecycle

def test_cancel_while_restoring(model_path):
    w = RawWorker()
    try:
        img = np.random.default_rng(4).integers(0, 256, (512, 512, 3), np.uint8)
        rid = w.send({"op": "restore", **fmt(512, 512, "u8", "RGB"), "model": model_path, "qf": 30,
                      "tile": 128}, img.tobytes())
        header, _ = w.reply()
        assert (header["id"], header["type"], header["done"]) == (rid, "progress", 1)
        assert header["total"] > 4
        w.send({"op": "cancel", "target": rid})
        while True:
            header, payload = w.reply()
            if header["type"] != "progress":
                break
        assert header["id"] == rid and header["type"] == "error" and header["kind"] == "cancelled"
        assert payload == b""
        assert_still_serving(w)
    finally:
        w.close()


def test_shutdown_replies_then_exits_0():
    w = RawWorker()
    try:
        header, _, _ = w.call({"op": "shutdown"})
        assert header["type"] == "result"
        assert w.proc.wait(10) == 0
    finally:
        w.close()


def test_stdin_eof_exits_0():
    w = RawWorker()
    try:
        w.proc.stdin.close()
        assert w.proc.wait(30) == 0
        assert w.proc.stdout.read() == b""
    finally:
        w.close()


def test_truncated_frame_at_eof_ends_cleanly(tmp_path):
    w = RawWorker(stderr_path=tmp_path / "stderr")
    try:
        body = json.dumps({"op": "restore", "id": 1, "nbytes": 1000}).encode()
        w.send_raw(struct.pack(">I", len(body)) + body + b"x" * 10)
        w.proc.stdin.close()
        assert w.proc.wait(30) == 0
        assert w.proc.stdout.read() == b""
        assert "ended inside a frame" in (tmp_path / "stderr").read_text()
    finally:
        w.close()


def test_idle_timeout_exits_0():
    w = RawWorker("--idle-timeout", "1")
    try:
        header, _, _ = w.call({"op": "hello"})  # the clock starts after the last request
        t = time.monotonic()
        assert w.proc.wait(30) == 0
        assert time.monotonic() - t >= 0.9
    finally:
        w.close()


# ---------------------------------------------------------------- pixel layouts (pure helpers)

@pytest.mark.parametrize("dtype, npdt", [("u8", np.uint8), ("u16", np.uint16),
                                         ("f16", np.float16), ("f32", np.float32)])
@pytest.mark.parametrize("order", ["RGB", "RGBA", "BGRA", "Y", "YA"])
def test_layout_round_trip(dtype, npdt, order):
    rng = np.random.default_rng(5)
    layout = (rng.random((5, 7, len(order))) * (255 if npdt == np.uint8 else 1000)).astype(npdt)
    f = fmt(7, 5, dtype, order)
    canon = to_canonical(f, layout.tobytes())
    assert canon.shape == (5, 7, len(order)) and canon.flags.writeable
    assert canon.dtype == (np.float32 if dtype == "f16" else npdt)
    if order == "BGRA":
        assert np.array_equal(canon[..., 0], layout[..., 2])  # R came from memory slot 2
        assert np.array_equal(canon[..., 2], layout[..., 0])
    back = from_canonical(f, canon)
    assert back.dtype == npdt and back.tobytes() == layout.tobytes()


def test_blend_and_mask_keep_unselected_bytes():
    rng = np.random.default_rng(6)
    orig = rng.integers(0, 65536, (4, 6, 4), np.uint16)
    res = rng.integers(0, 65536, (4, 6, 4), np.uint16)
    mask = np.array([[0, 255, 128, 0, 255, 64]] * 4, np.uint8)
    out = blend(orig, res, mask)
    assert np.array_equal(out[:, 1], res[:, 1]) and np.array_equal(out[:, 0], orig[:, 0])
    want = np.rint(orig[:, 2] + (res[:, 2].astype(float) - orig[:, 2]) * 128 / 255)
    assert np.abs(out[:, 2] - want).max() <= 1
    f = fmt(6, 4, "u16", "BGRA")
    layout = from_canonical(f, orig)
    got = apply_mask(f, layout.tobytes(), mask.tobytes(), res, orig)
    assert np.array_equal(got[mask == 0], layout[mask == 0])


def test_mask_copies_float_bits_exactly():
    """-0.0 and NaN survive where the mask is 0, though float arithmetic would change them."""
    orig = np.array([[[-0.0, np.nan], [0.5, 1.0]]], np.float16)
    res = np.array([[[0.25, 0.25], [0.75, 1.0]]], np.float32)
    f = fmt(2, 1, "f16", "YA")
    got = apply_mask(f, orig.tobytes(), bytes([0, 255]), res, to_canonical(f, orig.tobytes()))
    assert got.tobytes()[:4] == orig.tobytes()[:4]
    assert np.array_equal(got[0, 1], res[0, 1].astype(np.float16))


def test_a_payload_larger_than_its_pixels_need_is_refused_unread_and_skipped(worker, model_path):
    """Refused before any allocation for it; its bytes are skipped in small pieces, so
    the worker answers the request by its id and stays in step for the next one."""
    req = {"op": "restore", "id": 41, **fmt(8, 8, "u8", "RGB"), "model": model_path, "qf": 50}
    worker.send(req, b"\0" * 10_000_000)        # 8x8 RGB needs 192 bytes
    header, payload = worker.reply()
    assert header["type"] == "error" and header["kind"] == "bad-request" and header["id"] == 41
    assert "more than this frame may carry (192 bytes)" in header["message"] and payload == b""
    assert_still_serving(worker)


def test_an_absurd_byte_count_gets_an_answer_not_a_dead_reader():
    """2**60 bytes announced: no MemoryError in the reader thread, an error reply at once,
    and the worker ends cleanly when the client goes (it waits for the bytes to skip)."""
    import subprocess
    proc = subprocess.Popen([sys.executable, "-m", "core.worker"], cwd=str(ROOT),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        body = json.dumps({"op": "hello", "id": 5, "nbytes": 1 << 60}).encode()
        proc.stdin.write(struct.pack(">I", len(body)) + body)
        proc.stdin.flush()
        header, _ = read_frame(proc.stdout)
        assert header["type"] == "error" and header["id"] == 5
        assert "refused before reading it" in header["message"]
        proc.stdin.close()
        assert proc.wait(60) == 0
        assert b"MemoryError" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_a_dead_reader_thread_ends_the_worker_non_zero():
    """A worker whose stdin reader dies must exit (non-zero), never sit unanswering."""
    import io
    from core.worker import Server

    class Broken(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, buffer):
            raise RuntimeError("the reader broke")

    assert Server(Broken(), io.BytesIO(), idle_timeout=30).serve() == 1
