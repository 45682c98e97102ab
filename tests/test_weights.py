"""core.weights against a real HTTP server on 127.0.0.1 and real files."""
import hashlib
import http.server
import io
import pickle
import socket
import threading
from dataclasses import replace

import pytest
import torch

from core import weights
from core.network import Config, build
from core.weights import InvalidModel, ModelEntry, ModelMissing, VerificationError

# nb=4 like the official models: config_from_state_dict reads the down-conv at index 4.
TINY = Config(in_nc=3, out_nc=3, nc=(4, 8, 8, 8), nb=4, qf_nc=8)


def tiny_bytes(seed=0) -> bytes:
    torch.manual_seed(seed)
    buf = io.BytesIO()
    torch.save(build(TINY).state_dict(), buf)
    return buf.getvalue()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves server.files; server.modes picks a misbehaviour per path."""
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path)
        mode = srv.modes.get(self.path, "range")
        if data is None:
            self.send_error(404, "Not Found")
            return
        if mode == "fail-then-ok" and srv.failures.get(self.path, 0) > 0:
            srv.failures[self.path] -= 1
            self.send_error(503, "Busy")
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and mode in ("range", "cut-once", "fail-then-ok"):
            start = int(rng.split("=")[1].split("-")[0])
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if mode == "truncate" or (mode.startswith("cut-once") and self.path not in srv.cuts):
            srv.cuts[self.path] = True
            self.wfile.write(body[:len(body) // 2])  # then close: Content-Length is never met
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.modes, srv.requests, srv.cuts, srv.failures = {}, {}, [], {}, {}
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    d = tmp_path / "models"
    monkeypatch.setenv("FBCNN_MODEL_DIR", str(d))
    return d


def register(monkeypatch, server, path, data, *, size=True, sha=None, mode="range"):
    """A temporary registry entry 'tiny' served at `path`."""
    server.files[path] = data
    server.modes[path] = mode
    e = ModelEntry("tiny", "tiny.pth", server.url + path, len(data) if size else None,
                   sha or hashlib.sha256(data).hexdigest(), TINY, False, "test model")
    monkeypatch.setitem(weights.REGISTRY, "tiny", e)
    return e


def no_wait(attempt):
    return 0


def test_full_download_verifies_and_loads(server, cache, monkeypatch):
    data = tiny_bytes()
    register(monkeypatch, server, "/tiny.pth", data)
    seen = []
    assert weights.status("tiny") == "missing"
    path = weights.download("tiny", progress=lambda d, t: seen.append((d, t)), backoff=no_wait)
    assert path == cache / "tiny.pth" and path.read_bytes() == data
    assert not (cache / "tiny.pth.part").exists()
    assert seen[-1] == (len(data), len(data))
    assert weights.status("tiny") == "downloaded"
    model = weights.load_model("tiny")
    assert model.config == TINY and not model.training
    # Already there and verified: no second request.
    weights.download("tiny", backoff=no_wait)
    assert len(server.requests) == 1


def test_unknown_size_is_verified_by_hash(server, cache, monkeypatch):
    data = tiny_bytes()
    register(monkeypatch, server, "/g.pth", data, size=False)
    assert weights.download("tiny", backoff=no_wait).read_bytes() == data


def test_resume_after_cut_sends_range(server, cache, monkeypatch):
    data = tiny_bytes()
    register(monkeypatch, server, "/cut.pth", data, mode="cut-once")
    # First try only: the connection is cut halfway and the .part keeps the first half.
    with pytest.raises(ModelMissing, match="closed after"):
        weights.download("tiny", retries=0, backoff=no_wait)
    part = cache / "tiny.pth.part"
    assert part.read_bytes() == data[:len(data) // 2]
    path = weights.download("tiny", backoff=no_wait)
    assert path.read_bytes() == data
    assert server.requests[-1] == ("/cut.pth", f"bytes={len(data) // 2}-")
    assert not part.exists()


def test_resume_within_one_call_with_retries(server, cache, monkeypatch):
    data = tiny_bytes()
    register(monkeypatch, server, "/cut.pth", data, mode="cut-once")
    waits = []
    path = weights.download("tiny", backoff=lambda a: waits.append(a) or 0)
    assert path.read_bytes() == data and waits == [0]
    assert [r[1] for r in server.requests] == [None, f"bytes={len(data) // 2}-"]


def test_server_ignoring_range_restarts_cleanly(server, cache, monkeypatch):
    data = tiny_bytes()
    register(monkeypatch, server, "/nr.pth", data, mode="cut-once-norange")
    path = weights.download("tiny", backoff=no_wait)
    # The second request asked for a range, got 200 and the whole file: no doubled prefix.
    assert server.requests[1][1] is not None
    assert path.read_bytes() == data


def test_retries_5xx_with_exponential_backoff(server, cache, monkeypatch):
    data = tiny_bytes()
    register(monkeypatch, server, "/busy.pth", data, mode="fail-then-ok")
    server.failures["/busy.pth"] = 2
    waits = []
    assert weights.download("tiny", backoff=lambda a: waits.append(a) or 0).read_bytes() == data
    assert waits == [0, 1]
    assert [weights._default_backoff(a) for a in range(4)] == [1, 2, 4, 8]


def test_wrong_hash_deletes_file(server, cache, monkeypatch):
    data = tiny_bytes()
    register(monkeypatch, server, "/bad.pth", data, sha="0" * 64)
    with pytest.raises(VerificationError, match="sha256"):
        weights.download("tiny", backoff=no_wait)
    assert list(cache.iterdir()) == []
    assert weights.status("tiny") == "missing"


def test_wrong_size_deletes_file(server, cache, monkeypatch):
    data = tiny_bytes()
    e = register(monkeypatch, server, "/big.pth", data)
    server.files["/big.pth"] = data + b"extra"  # the server's file is longer than the entry says
    with pytest.raises((VerificationError, ModelMissing)):
        weights.download("tiny", retries=1, backoff=no_wait)
    assert not (cache / e.filename).exists()


def test_404_is_a_clear_missing_model(server, cache, monkeypatch):
    e = register(monkeypatch, server, "/x.pth", b"x")
    monkeypatch.setitem(weights.REGISTRY, "tiny", replace(e, url=server.url + "/nope.pth"))
    with pytest.raises(ModelMissing) as info:
        weights.download("tiny", backoff=lambda a: pytest.fail("a 404 must not be retried"))
    msg = str(info.value)
    assert "404" in msg and "/nope.pth" in msg and e.sha256 in msg and str(cache / "tiny.pth") in msg
    assert not (cache / "tiny.pth").exists()


def test_truncated_body_fails_after_retries(server, cache, monkeypatch):
    data = tiny_bytes()
    register(monkeypatch, server, "/t.pth", data, size=False, mode="truncate")
    with pytest.raises(ModelMissing, match="3 tries"):
        weights.download("tiny", retries=2, backoff=no_wait)
    assert not (cache / "tiny.pth").exists()
    assert len(server.requests) == 3


def test_no_network_message_names_url_sha_and_path(cache, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: connection refused
    url = f"http://127.0.0.1:{port}/fbcnn_color.pth"
    with pytest.raises(ModelMissing) as info:
        weights.download("fbcnn_color", url=url, retries=1, backoff=no_wait)
    msg = str(info.value)
    e = weights.REGISTRY["fbcnn_color"]
    assert url in msg and e.sha256 in msg and str(cache / "fbcnn_color.pth") in msg
    # Loading a model that was never downloaded says the same, with the release URL.
    with pytest.raises(ModelMissing) as info:
        weights.load_model("fbcnn_color")
    msg = str(info.value)
    assert e.url in msg and e.sha256 in msg and str(cache / "fbcnn_color.pth") in msg
    assert "fbcnn download fbcnn_color" in msg


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"m_head.weight": torch.zeros(1), "x": _Evil(str(marker))}, path)
    with pytest.raises(InvalidModel, match="safe loading") as info:
        weights.load_model(path)
    assert not marker.exists()
    # Said plainly, whole, and without torch's advice to switch the protection off.
    message = str(info.value)
    assert "could run code" in message and "was not loaded" in message
    assert "weights_only" not in message and "Re-running" not in message
    # The payload is real: an unsafe load would have created the marker.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_plain_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned2"
    path = tmp_path / "evil2.pth"
    path.write_bytes(pickle.dumps(_Evil(str(marker)), protocol=2))
    with pytest.raises(InvalidModel):
        weights.load_state_dict(path)
    assert not marker.exists()


def test_non_fbcnn_files_are_refused(tmp_path):
    other = tmp_path / "resnet.pth"
    torch.save(torch.nn.Linear(3, 4).state_dict(), other)
    with pytest.raises(InvalidModel, match="not an FBCNN"):
        weights.load_model(other)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(InvalidModel, match="not a loadable") as info:
        weights.load_model(junk)
    assert "weights_only" not in str(info.value) and "Re-running" not in str(info.value)
    with pytest.raises(InvalidModel, match="does not exist"):
        weights.load_model(tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="unknown model"):
        weights.load_model("no_such_model")
    # Right keys, wrong shapes somewhere: strict loading catches it with a short message.
    sd = build(TINY).state_dict()
    sd["m_tail.bias"] = torch.zeros(5)
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(InvalidModel, match="does not match"):
        weights.load_model(tmp_path / "broken.pth")


def test_any_fbcnn_family_file_loads_and_checkpoints_unwrap(tmp_path):
    for cfg in (TINY, Config(in_nc=1, out_nc=1, nc=(4, 8, 8, 8), nb=4, qf_nc=8, residual=True)):
        model = build(cfg)
        torch.save(model.state_dict(), tmp_path / "m.pth")
        loaded = weights.load_model(tmp_path / "m.pth")
        assert loaded.config == cfg
        for k, v in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v)
    torch.save({"params": build(TINY).state_dict(), "iter": 5}, tmp_path / "ckpt.pth")
    assert weights.load_model(str(tmp_path / "ckpt.pth")).config == TINY
    wrapped = {"module." + k: v for k, v in build(TINY).state_dict().items()}
    torch.save({"state_dict": wrapped}, tmp_path / "dp.pth")
    assert weights.load_model(tmp_path / "dp.pth").config == TINY


def test_compact_config_round_trips_through_a_file(tmp_path):
    # Needs config_from_state_dict to find the down-convs at index nb (not a fixed 4).
    for cfg in (weights.COMPACT_CONFIG, Config(nc=(4, 8, 8, 8), nb=2, qf_nc=8)):
        torch.save(build(cfg).state_dict(), tmp_path / "m.pth")
        assert weights.load_model(tmp_path / "m.pth").config == cfg


def test_verification_is_cached_and_tampering_detected(server, cache, monkeypatch):
    data = tiny_bytes()
    register(monkeypatch, server, "/c.pth", data)
    path = weights.download("tiny", backoff=no_wait)
    assert (cache / "tiny.pth.verified").exists()
    calls = []
    real = weights.sha256_file
    monkeypatch.setattr(weights, "sha256_file", lambda p: calls.append(p) or real(p))
    weights._verified.clear()  # as in a fresh process: only the sidecar remains
    weights.load_state_dict("tiny")
    weights.load_state_dict("tiny")
    assert calls == []
    # Same size, other bytes, new mtime: hashed again, refused and moved aside (a file
    # we didn't download, e.g. one copied by hand, is never deleted).
    tampered = bytearray(data)
    tampered[-100] ^= 0xFF
    path.write_bytes(bytes(tampered))
    assert weights.status("tiny") == "corrupt" and path.exists()  # status never moves
    with pytest.raises(VerificationError, match="moved aside") as info:
        weights.load_model("tiny")
    rejected = path.with_name("tiny.pth.rejected")
    assert str(rejected) in str(info.value) and "not deleted" in str(info.value)
    assert not path.exists() and rejected.read_bytes() == bytes(tampered) and calls
    assert weights.status("tiny") == "missing"


def test_bundled_model_missing_or_present(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "PACKAGE_MODELS", tmp_path)
    assert weights.status("compact") == "missing"
    with pytest.raises(ModelMissing) as info:
        weights.load_model("compact")
    assert "compact" in str(info.value) and "fbcnn download fbcnn_color" in str(info.value)
    torch.save(build(TINY).state_dict(), tmp_path / "fbcnn_compact.pth")
    data = (tmp_path / "fbcnn_compact.pth").read_bytes()
    e = weights.REGISTRY["compact"]
    monkeypatch.setitem(weights.REGISTRY, "compact",
                        replace(e, sha256=hashlib.sha256(data).hexdigest()))
    assert weights.status("compact") == "bundled"
    assert weights.load_model("compact").config == TINY
    assert not list(tmp_path.glob("*.verified"))  # nothing written into the package folder
    assert weights.download("compact") == tmp_path / "fbcnn_compact.pth"
    monkeypatch.setitem(weights.REGISTRY, "compact", replace(e, sha256="1" * 64))
    assert weights.status("compact") == "corrupt"
    with pytest.raises(VerificationError, match="reinstall"):
        weights.load_model("compact")
    assert (tmp_path / "fbcnn_compact.pth").exists()  # never delete a packaged file


def test_registry_matches_design_note():
    r = weights.REGISTRY
    assert set(r) == {"compact", "fbcnn_color", "fbcnn_gray", "fbcnn_gray_double"}
    assert r["fbcnn_color"].size == 287755111 and r["fbcnn_gray"].size is None
    assert r["fbcnn_gray_double"].sha256.startswith("4444b8b2")
    assert r["fbcnn_color"].url.endswith("/v1.0/fbcnn_color.pth")
    assert r["fbcnn_gray"].config.in_nc == 1 and r["compact"].bundled
    assert r["compact"].config == weights.COMPACT_CONFIG
    assert weights.model_path("compact").parent.name == "models"


@pytest.mark.parametrize("platform, env, expected", [
    ("linux", {"XDG_DATA_HOME": "/xdg/data"}, "/xdg/data/fbcnn/models"),
    ("linux", {}, "HOME/.local/share/fbcnn/models"),
    ("linux", {"XDG_DATA_HOME": "relative/path"}, "HOME/.local/share/fbcnn/models"),
    ("win32", {"LOCALAPPDATA": "/C/Users/u/AppData/Local"}, "/C/Users/u/AppData/Local/fbcnn/models"),
    ("darwin", {}, "HOME/Library/Application Support/fbcnn/models"),
    ("darwin", {"FBCNN_MODEL_DIR": "/custom/dir"}, "/custom/dir"),
    ("win32", {"FBCNN_MODEL_DIR": "/custom/win"}, "/custom/win"),
])
def test_cache_dir_per_platform(platform, env, expected, tmp_path, monkeypatch):
    for var in ("FBCNN_MODEL_DIR", "XDG_DATA_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(weights.sys, "platform", platform)
    assert str(weights.cache_dir()) == expected.replace("HOME", str(tmp_path))


def test_shipped_compact_model_meets_its_size_and_flops_bars():
    """The bundled file itself: verified, <= 10 MB, the registry's architecture, <= 1/20 of the FLOPs."""
    path = weights.verify("compact")
    assert path.stat().st_size <= 10_000_000, path.stat().st_size
    assert weights.load_model("compact").config == weights.COMPACT_CONFIG
    from core.network import flops_per_pixel
    assert flops_per_pixel(weights.COMPACT_CONFIG, 64) * 20 <= flops_per_pixel(Config(), 64)
