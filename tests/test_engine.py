"""The tiled engine: tiling agreement, grid alignment, dtypes, alpha, QF, OOM ladder, cancel."""
import dataclasses
import io
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from core import devices, engine, tiling, weights
from core.engine import Engine
from tests.conftest import runtimes

ROOT = pathlib.Path(__file__).resolve().parent.parent


def blocky(h=200, w=232, qf=15, seed=0, gray=False):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    img = np.clip(base[:, :, None] + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    if gray:
        img = img[:, :, :1]
    buf = io.BytesIO()
    Image.fromarray(img[:, :, 0] if gray else img).save(buf, "JPEG", quality=qf)
    out = np.asarray(Image.open(buf))
    return out[:, :, None] if gray else out


@pytest.fixture(scope="module")
def model_path(random_model_path):
    """The bundled model when it exists, else a randomly initialised one of the same shape."""
    return "compact" if weights.status("compact") == "bundled" else random_model_path


@pytest.fixture(scope="module", params=runtimes())
def eng(request):
    """An fp32 CPU engine on each runtime: every test that takes it runs on both."""
    return Engine("cpu", "fp32", runtime=request.param)


def psnr(a, b, peak=1.0):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(peak ** 2 / max(mse, 1e-20))


def test_spans_start_on_the_grid_and_cover_everything():
    for length in list(range(1, 3000, 7)) + [4097, 6000]:
        for tile, overlap in ((128, 32), (256, 64), (512, 64), (960, 64)):
            s = tiling.spans(length, tile, overlap)
            assert s[0][0] == 0 and s[-1][1] == length
            assert all(a % 8 == 0 for a, _ in s)
            assert all(b - a <= tile for a, b in s)
            assert all(b1 - a2 >= overlap for (_, b1), (a2, _) in zip(s, s[1:]))
            assert all(a2 > a1 for (a1, _), (a2, _) in zip(s, s[1:]))


def test_spans_are_even_so_no_sliver_tile_is_recomputed():
    """1024 px under a 960 px tile: two spans of 544, not 960 + a 128 px sliver with a full overlap."""
    assert tiling.spans(1024, 960, 64) == [(0, 544), (480, 1024)]
    for length, tile in ((6000, 640), (4000, 640), (2049, 512)):
        sizes = [b - a for a, b in tiling.spans(length, tile, 64)]
        assert max(sizes) - min(sizes) <= 64, sizes


def test_qf_windows_never_add_up_to_more_than_the_image():
    for h, w in ((512, 512), (700, 900), (200, 5000), (1024, 1024), (4000, 6000), (256, 256)):
        wins = tiling.sample_windows(h, w, 256, 9)
        area = sum((t.y1 - t.y0) * (t.x1 - t.x0) for t in wins)
        assert area <= h * w, (h, w, area)
        assert all(t.y0 % 8 == 0 and t.x0 % 8 == 0 and t.y1 <= h and t.x1 <= w for t in wins)
    assert len(tiling.sample_windows(512, 512, 256, 9)) == 1          # one pass
    assert len(tiling.sample_windows(4000, 6000, 256, 9)) == 9        # spread windows


def test_tiled_output_matches_whole_image(eng, model_path):
    img = blocky(300, 340)
    whole = eng.restore(img.astype(np.float32) / 255, model=model_path, qf=20, tile=2048)
    tiled = eng.restore(img.astype(np.float32) / 255, model=model_path, qf=20, tile=128)
    assert psnr(whole.pixels, tiled.pixels) >= 50


def test_crop_uses_the_whole_images_grid(eng, model_path):
    """A crop starting off-grid is processed on the image's grid, not its own."""
    img = blocky(160, 160)
    full = eng.restore(img.astype(np.float32) / 255, model=model_path, qf=15).pixels
    crop = img[13:13 + 96, 5:5 + 96].astype(np.float32) / 255
    right = eng.restore(crop, model=model_path, qf=15, origin=(5, 13)).pixels
    wrong = eng.restore(crop, model=model_path, qf=15, origin=(0, 0)).pixels
    ref = full[13:13 + 96, 5:5 + 96]
    inner = np.s_[16:-16, 16:-16]
    assert psnr(right[inner], ref[inner]) > psnr(wrong[inner], ref[inner]) + 3


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_dtype_depth_and_alpha_pass_through(eng, model_path, dtype, channels):
    rng = np.random.default_rng(channels)
    base = blocky(64, 72, gray=channels < 3)
    hi = {np.uint8: 1, np.uint16: 257}.get(dtype)
    px = base.astype(np.float32) / 255 if hi is None else base.astype(np.uint32) * hi
    px = px.astype(dtype)
    if channels in (2, 4):
        amax = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1.0)
        alpha = (rng.random((64, 72, 1)) * amax).astype(dtype)
        px = np.concatenate([px, alpha], axis=2)
    res = eng.restore(px, model=model_path, qf=30)
    assert res.pixels.dtype == px.dtype and res.pixels.shape == px.shape
    if channels in (2, 4):
        assert np.array_equal(res.pixels[:, :, -1], px[:, :, -1])


def test_sixteen_bit_keeps_more_than_256_levels(eng, model_path):
    ramp = np.linspace(0, 65535, 1024).astype(np.uint16)
    img = np.repeat(np.repeat(ramp[None, :, None], 64, axis=0), 3, axis=2)
    out = eng.restore(img, model=model_path, qf=90).pixels
    assert len(np.unique(out[32, :, 0])) > 256


def test_manual_qf_overrides_and_auto_detects_once(eng, model_path):
    img = blocky()
    res = eng.restore(img, model=model_path, qf=42)
    assert (res.qf_used, res.qf_source, res.qf_detected) == (42, "manual", None)
    calls = []
    orig = eng._predict_qf

    def counting(*a):
        calls.append(1)
        return orig(*a)

    eng._predict_qf = counting
    try:
        auto = eng.restore(img, model=model_path, tile=128)
    finally:
        eng._predict_qf = orig
    assert 1 <= auto.qf_used <= 100 and auto.qf_detected == auto.qf_used
    assert auto.qf_source in ("network", "double-jpeg", "file")
    assert len(calls) <= 1


def test_bad_inputs_are_refused_clearly(eng, model_path):
    with pytest.raises(ValueError, match="HxWxC"):
        eng.restore(np.zeros((4, 4), np.uint8), model=model_path)
    with pytest.raises(ValueError, match="unsupported pixel type"):
        eng.restore(np.zeros((8, 8, 3), np.int32), model=model_path)
    with pytest.raises(ValueError, match="QF"):
        eng.restore(np.zeros((8, 8, 3), np.uint8), model=model_path, qf=0)
    with pytest.raises(ValueError, match="NaN"):
        eng.restore(np.full((8, 8, 3), np.nan, np.float32), model=model_path)


def test_progress_and_cancel_between_tiles(eng, model_path):
    img = blocky(300, 300)
    seen = []
    eng.restore(img, model=model_path, qf=20, tile=128, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] > 1 and [d for d, _ in seen] == list(range(1, len(seen) + 1))
    with pytest.raises(engine.Cancelled):
        eng.restore(img, model=model_path, qf=20, tile=128, cancel=lambda: len(seen) > 0)


def test_device_choice_order():
    assert engine.pick_device("auto", ["cuda", "cpu"])[0] == "cuda"
    assert engine.pick_device("auto", ["mps", "cpu"])[0] == "mps"
    assert engine.pick_device("auto", ["cpu"]) == ("cpu", [])
    dev, warns = engine.pick_device("gpu", ["cpu"])
    assert dev == "cpu" and "CPU" in warns[0]
    assert engine.pick_dtype("cuda") == torch.float16 and engine.pick_dtype("mps") == torch.float16
    assert engine.pick_dtype("cpu", "fp32") is None
    with pytest.raises(ValueError):
        engine.pick_device("tpu")


def test_bf16_only_where_the_cpu_computes_it_natively():
    # Plain AVX512 (Skylake-X .. Ice Lake) emulates bf16 at 3.6x the cost of fp32.
    assert not engine.bf16_native("x86_64", {"avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"})
    assert engine.bf16_native("x86_64", {"avx2", "avx512f", "avx512_bf16"})
    assert engine.bf16_native("AMD64", {"amx_bf16", "amx_tile"})
    assert not engine.bf16_native("x86_64", None)
    flags = devices._cpu_flags()
    if flags is not None:  # Linux: the real answer follows this CPU's own flags
        assert engine.cpu_has_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})
        assert (engine.pick_dtype("cpu") == torch.bfloat16) == engine.cpu_has_bf16()


class OOMAbove(torch.nn.Module):
    """Wraps a real model and raises out-of-memory for inputs larger than `limit` (forces the GPU ladder)."""

    def __init__(self, inner, limit):
        super().__init__()
        self.inner, self.limit, self.config = inner, limit, inner.config

    def restore(self, x, qf_input):
        if max(x.shape[-2:]) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner.restore(x, qf_input)

    def predict_qf(self, x):
        return self.inner.predict_qf(x)


def test_out_of_memory_halves_tile_then_falls_back_to_cpu(model_path):
    # The ladder is torch's: OpenVINO on the CPU has no device memory to run out of.
    eng = Engine("cpu", "fp32", runtime="torch")
    real = eng._load(model_path, "cpu")
    img = blocky(300, 300)
    eng._models[(model_path, "cpu")] = OOMAbove(real, 150)
    res = eng.restore(img, model=model_path, qf=20, tile=512)
    assert any("tile 256" in w for w in res.warnings) and any("tile 128" in w for w in res.warnings)
    assert res.device == "cpu"

    # A pretend GPU that is always out of memory: the ladder ends on the CPU with a warning.
    eng = Engine("cpu", "fp32", runtime="torch")
    eng.device = "cuda"
    eng._models[(model_path, "cuda")] = OOMAbove(real, 0)
    eng._models[(model_path, "cpu")] = real
    orig_to_tensor = eng._to_tensor
    eng._to_tensor = lambda a, device: orig_to_tensor(a, "cpu")
    orig_forward = eng._forward
    eng._forward = lambda m, x, q, device: orig_forward(m, x, q, "cpu")
    torch_empty = torch.cuda.empty_cache
    torch.cuda.empty_cache = lambda: None
    try:
        res = eng.restore(img, model=model_path, qf=20, tile=256)
    finally:
        torch.cuda.empty_cache = torch_empty
    assert res.device == "cpu"
    assert any("falling back to the CPU" in w for w in res.warnings)


def test_decoder_qf_offsets_interpolate_and_apply_only_to_their_model(monkeypatch):
    monkeypatch.setitem(weights.QF_OFFSETS_BY_FILE, weights.COMPACT_SHA256, ((10, 4), (50, 0)))
    assert weights.decoder_qf("compact", 10) == 14 and weights.decoder_qf("compact", 30) == 32
    assert weights.decoder_qf("compact", 5) == 9 and weights.decoder_qf("compact", 90) == 90
    assert weights.decoder_qf("fbcnn_color", 30) == 30  # the official models are used as released
    assert weights.decoder_qf("/some/file.pth", 30) == 30
    if weights.status("compact") == "bundled":   # the offsets travel with the file
        assert weights.decoder_qf(str(weights.model_path("compact")), 10) == 14


def test_engine_conditions_the_decoder_on_the_calibrated_qf(eng, monkeypatch, tmp_path):
    if weights.status("compact") != "bundled":
        pytest.skip("no bundled compact model")
    monkeypatch.setitem(weights.QF_OFFSETS_BY_FILE, weights.COMPACT_SHA256, ((10, 6),))
    img = blocky(64, 64, qf=10)
    path = str(weights.model_path("compact"))
    res = eng.restore(img, model="compact", qf=10)
    assert res.qf_used == 10  # what the user sees stays the JPEG quality
    # The same file by path restores the same: the offsets belong to the file, not its name.
    assert np.array_equal(res.pixels, eng.restore(img, model=path, qf=10).pixels)
    # The same weights in another file (other bytes) carry no offsets: QF 16 there is
    # what QF 10 is for the calibrated file.
    other = tmp_path / "resaved.pth"
    torch.save(weights.load_state_dict("compact"), other)
    if weights.sha256_file(other) == weights.COMPACT_SHA256:
        pytest.skip("torch.save wrote the same bytes")
    assert np.array_equal(res.pixels, eng.restore(img, model=str(other), qf=16).pixels)
    assert not np.array_equal(res.pixels, eng.restore(img, model=str(other), qf=10).pixels)


# ---------------------------------------------------------------- runtimes

def test_runtime_choice():
    assert engine.pick_runtime("auto", "cpu", openvino_installed=True) == "openvino"
    assert engine.pick_runtime("auto", "cpu", openvino_installed=False) == "torch"
    assert engine.pick_runtime("auto", "cuda", openvino_installed=True) == "torch"
    assert engine.pick_runtime("auto", "mps", openvino_installed=True) == "torch"
    assert engine.pick_runtime("torch", "cpu", openvino_installed=True) == "torch"
    with pytest.raises(ValueError, match="not installed"):
        engine.pick_runtime("openvino", "cpu", openvino_installed=False)
    with pytest.raises(ValueError, match="runs on the CPU"):
        engine.pick_runtime("openvino", "cuda", openvino_installed=True)
    with pytest.raises(ValueError, match="unknown runtime"):
        engine.pick_runtime("onnx", "cpu", openvino_installed=True)


def test_intel_accelerators_are_named_from_openvinos_device_list():
    from core import openvino_runtime as ovr
    assert ovr.accelerators(["CPU"]) == []
    assert ovr.accelerators(["CPU", "GPU.0", "GPU.1", "NPU"]) == ["intel-gpu", "npu"]
    assert ovr.accelerators(["CPU", "GPU"]) == ["intel-gpu"]

    def broken():
        raise RuntimeError("driver crashed")
    assert ovr.ov_devices(broken) == []          # a broken driver hides only itself
    assert ovr.ov_devices(lambda: ["CPU", "NPU"]) == ["CPU", "NPU"]


needs_openvino = pytest.mark.skipif("openvino" not in runtimes(),
                                    reason="OpenVINO is not installed (pip install openvino)")


@needs_openvino
def test_openvino_equals_torch_fp32_through_the_engine(model_path):
    """The same tiles, QF and blending: only each tile's forward pass differs."""
    img = blocky(300, 340).astype(np.float32) / 255
    a = Engine("cpu", "fp32", runtime="torch").restore(img, model=model_path, qf=20, tile=128)
    b = Engine("cpu", "fp32", runtime="openvino").restore(img, model=model_path, qf=20, tile=128)
    assert (a.runtime, b.runtime) == ("torch", "openvino")
    assert np.abs(a.pixels - b.pixels).max() <= 1e-4


@needs_openvino
def test_openvino_converts_once_per_weights_and_serves_every_qf_and_size(model_path, tmp_path):
    from core import openvino_runtime as ovr
    net = weights.load_model(model_path)
    first = ovr.CompiledNet(net, cache=tmp_path)
    again = ovr.CompiledNet(net, cache=tmp_path)
    assert first.converted and not again.converted and first.path == again.path
    assert [p.suffix for p in sorted(tmp_path.glob("fbcnn-*"))] == [".bin", ".json", ".xml"]
    x = np.random.default_rng(0).random((1, 3, 45, 70), np.float32)
    for qf in (0.9, 0.3):                 # the slider: one compiled model, any QF
        with torch.inference_mode():
            ref = net.restore(torch.from_numpy(x), torch.full((1, 1), qf)).numpy()
        assert np.abs(again.restore(x, qf) - ref).max() <= 1e-4
    changed = weights.load_model(model_path)
    with torch.no_grad():
        changed.m_tail.bias += 0.01       # other weights: another conversion
    assert ovr.model_key(changed) != ovr.model_key(net)


@needs_openvino
def test_converting_sends_no_telemetry_and_writes_nothing_in_home(model_path, tmp_path):
    """OpenVINO's converter phones home and writes ~/intel unless told otherwise; a fresh
    process (not the test run's, where CI=true may switch that off) must do neither."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env.update(HOME=str(home), FBCNN_CACHE_DIR=str(tmp_path / "cache"))
    code = ("import sys; from core import weights, openvino_runtime as o; "
            "o.CompiledNet(weights.load_model(sys.argv[1]))")
    subprocess.run([sys.executable, "-c", code, str(model_path)], env=env, cwd=ROOT, check=True, timeout=600)
    assert list((tmp_path / "cache").rglob("fbcnn-*.xml")) and list(home.iterdir()) == []


def test_intel_accelerators_are_offered_and_chosen_only_when_present():
    listed = engine.available_devices(lambda: ["CPU", "GPU.0", "NPU"])
    assert listed[-2:] == ["intel-gpu", "npu"] and "cpu" in listed
    assert engine.available_devices(lambda: ["CPU"])[-1] == "cpu"
    assert engine.pick_device("intel-gpu", listed) == ("intel-gpu", [])
    assert engine.pick_device("npu", listed) == ("npu", [])
    assert engine.pick_device("auto", ["cpu", "intel-gpu"]) == ("cpu", [])   # only when asked
    assert engine.pick_device("gpu", ["cpu", "intel-gpu"]) == ("intel-gpu", [])
    device, warns = engine.pick_device("npu", ["cpu"])                       # absent: the CPU
    assert device == "cpu" and "NPU" in warns[0]
    assert engine.pick_runtime("auto", "npu", openvino_installed=True) == "openvino"
    with pytest.raises(ValueError, match="OpenVINO only"):
        engine.pick_runtime("torch", "intel-gpu", openvino_installed=True)


@needs_openvino
def test_an_intel_accelerator_runs_the_same_tiles(model_path, monkeypatch):
    """Without the hardware: "intel-gpu" is pointed at OpenVINO's CPU device, so the
    whole accelerator path (torch on the CPU for the QF, OpenVINO for the tiles) runs."""
    from core import openvino_runtime as ovr
    monkeypatch.setitem(ovr.DEVICE_NAMES, "intel-gpu", "CPU")
    monkeypatch.setattr(devices, "available_devices", lambda ov_lister=None: ["cpu", "intel-gpu"])
    img = blocky(120, 136)
    eng = Engine("intel-gpu", "fp32")
    assert (eng.device, eng.runtime, eng.torch_device) == ("intel-gpu", "openvino", "cpu")
    res = eng.restore(img, model=model_path, qf=None)
    ref = Engine("cpu", "fp32", runtime="torch").restore(img, model=model_path, qf=res.qf_used)
    assert (res.device, res.runtime) == ("intel-gpu", "openvino")
    assert np.abs(res.pixels.astype(int) - ref.pixels).max() <= 1


def test_torch_on_the_cpu_keeps_freed_buffers_and_openvino_does_not(monkeypatch):
    calls = []
    monkeypatch.setattr(engine, "keep_freed_buffers", lambda: calls.append(1))
    monkeypatch.delenv("FBCNN_KEEP_FREED", raising=False)
    Engine("cpu", runtime="torch")
    assert calls == [1]
    if "openvino" in runtimes():
        Engine("cpu", runtime="openvino")
        assert calls == [1]
    monkeypatch.setenv("FBCNN_KEEP_FREED", "0")
    Engine("cpu", runtime="torch")
    assert calls == [1]


def test_keep_freed_buffers_raises_glibcs_thresholds():
    import platform
    engine.keep_freed_buffers.cache_clear()
    assert engine.keep_freed_buffers() == (platform.libc_ver()[0] == "glibc")
