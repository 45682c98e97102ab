"""core.quality: file QF from tables and GIMP's parasite, double-JPEG detection, precedence."""
import io

import numpy as np
import pytest
from PIL import Image

from core import ijg, quality
from core.quality import Estimate, double_jpeg, estimate_quality, file_quality
from tests.conftest import shared_path


def photo(h=256, w=256, seed=0) -> np.ndarray:
    """A photo-like RGB image: 1/f noise (natural-image spectrum) plus a few hard-edged discs."""
    rng = np.random.default_rng(seed)
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None, :] ** 2)
    f[0, 0] = 1.0

    def field():
        return np.fft.irfft2(np.fft.rfft2(rng.normal(size=(h, w))) / f, s=(h, w))

    base = field()
    img = np.stack([base + 0.4 * field() for _ in range(3)], -1)
    img = (img - img.mean()) / img.std() * 45 + 128
    yy, xx = np.mgrid[:h, :w]
    for _ in range(6):
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(10, 60)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += rng.normal(0, 40, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_bytes(rgb: np.ndarray, qf: int, **opts) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=qf, **opts)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def resaved(rgb, q1, q2, shift=(4, 4)) -> bytes:
    """First save at q1, crop shift px off the top and left, second save at q2."""
    first = decode(jpeg_bytes(rgb, q1))[shift[0]:, shift[1]:]
    return jpeg_bytes(np.ascontiguousarray(first), q2)


def no_predict(_pixels):
    raise AssertionError("the network must not be asked when another source decided")


@pytest.fixture(scope="module")
def img():
    return photo()


@pytest.fixture(scope="module")
def small():
    """Too small for the double-JPEG search (which then skips): keeps the other tests fast."""
    return photo(64, 64, seed=3)


@pytest.fixture(scope="module")
def double_file(tmp_path_factory, img):
    p = tmp_path_factory.mktemp("dj") / "double.jpg"
    p.write_bytes(resaved(img, 10, 50))
    return p


# --- file --------------------------------------------------------------------

@pytest.mark.parametrize("qf", [5, 37, 90, 100])
def test_file_qf_exact_for_pillow(tmp_path, img, qf):
    p = tmp_path / "a.jpg"
    p.write_bytes(jpeg_bytes(img, qf))
    e = file_quality(p)
    assert (e.qf, e.source, e.details["exact"], e.details["distance"]) == (qf, "file", True, 0.0)


def test_ijg_base_tables_are_pillows_quality_50(img):
    q = Image.open(io.BytesIO(jpeg_bytes(img, 50))).quantization
    assert list(q[0]) == ijg.IJG_LUMA.tolist()
    assert list(q[1]) == ijg.IJG_CHROMA.tolist()


def test_every_ijg_quality_is_recognised_from_its_tables():
    for qf in range(1, 101):
        for baseline in (True, False):
            m = quality.match_ijg(ijg.ijg_table(ijg.IJG_LUMA, qf, baseline),
                                  ijg.ijg_table(ijg.IJG_CHROMA, qf, baseline))
            assert (m["qf"], m["exact"]) == (qf, True)


def test_gray_jpeg_has_one_table(tmp_path, img):
    p = tmp_path / "g.jpg"
    Image.fromarray(img[:, :, 0]).save(p, quality=63)
    e = file_quality(p)
    assert (e.qf, e.details["exact"]) == (63, True)


def test_camera_mpo_file_is_read_as_jpeg(tmp_path, small):
    p = tmp_path / "camera.jpg"
    Image.fromarray(small).save(p, "MPO", save_all=True, append_images=[Image.fromarray(small)], quality=44)
    assert Image.open(p).format == "MPO"
    e = file_quality(p)
    assert (e.qf, e.details["exact"]) == (44, True)


def test_gimp_parasite_without_tables(img):
    # What GIMP attaches to a Pillow quality-37 file: the tables are IJG, so none stored.
    parasite = bytes([3, 37, 3, 0, 2, 2, 1, 1, 1, 1])
    e = file_quality(jpeg_settings=parasite)
    assert (e.qf, e.source, e.details["exact"]) == (37, "file", True)
    px = decode(jpeg_bytes(img, 37))
    e = estimate_quality(px, jpeg_settings=parasite, predict=no_predict)
    assert (e.qf, e.source) == (37, "file")


def parasite_with_tables(quality_byte, *tables) -> bytes:
    head = bytes([3, quality_byte, 3, len(tables), 2, 2, 1, 1, 1, 1])
    return head + b"".join(np.asarray(t, ">u2").tobytes() for t in tables)


def test_gimp_parasite_with_tables():
    ijg41 = parasite_with_tables(41, ijg.ijg_table(ijg.IJG_LUMA, 41),
                                 ijg.ijg_table(ijg.IJG_CHROMA, 41))
    assert file_quality(jpeg_settings=ijg41).qf == 41
    assert file_quality(jpeg_settings=ijg41).details["exact"] is True
    # A camera-like table: flat steps GIMP could only approximate.
    cam = parasite_with_tables(88, np.full(64, 3), np.full(64, 5))
    e = file_quality(jpeg_settings=cam)
    assert e.source == "file" and e.details["exact"] is False and e.details["distance"] > 0.2
    assert e.details["gimp_quality"] == 88
    assert 80 <= e.qf <= 97


def test_non_ijg_tables_flagged_inexact(tmp_path, img):
    luma = ijg.ijg_table(ijg.IJG_LUMA, 60).copy()
    chroma = ijg.ijg_table(ijg.IJG_CHROMA, 60).copy()
    luma[::5] += 2       # e.g. an encoder's own tuning of the IJG tables
    p = tmp_path / "custom.jpg"
    Image.fromarray(img).save(p, qtables=[luma.tolist(), chroma.tolist()])
    e = file_quality(p)
    assert e.source == "file" and e.details["exact"] is False
    assert 0 < e.details["distance"] < 0.2
    assert abs(e.qf - 60) <= 2


def test_sixteen_bit_tables_of_cjpeg_without_baseline():
    m = quality.match_ijg(ijg.ijg_table(ijg.IJG_LUMA, 8, baseline=False),
                          ijg.ijg_table(ijg.IJG_CHROMA, 8, baseline=False))
    assert (m["qf"], m["exact"], m["baseline"]) == (8, True, False)


def test_not_a_jpeg_gives_no_file_estimate(tmp_path, small):
    img = small
    png = tmp_path / "a.png"
    Image.fromarray(img).save(png)
    assert file_quality(png) is None
    assert file_quality(tmp_path / "missing.jpg") is None
    e = estimate_quality(img, source_path=png, predict=lambda _p: 42)
    assert (e.qf, e.source) == (42, "network")
    assert "not a JPEG" in e.details["file"]["reason"]
    e = estimate_quality(img, source_path=tmp_path / "missing.jpg", predict=lambda _p: 42)
    assert "not found" in e.details["file"]["reason"]


@pytest.mark.parametrize("bad, msg", [
    (b"\x03\x25", "too short"),
    (bytes([3, 37, 3, 1, 2, 2, 1, 1, 1, 1]) + bytes(20), "truncated"),
    (bytes([3, 0, 3, 0, 2, 2, 1, 1, 1, 1]), "quality 0"),
    (bytes([3, 37, 9, 0]), "components"),
    ("03250300", "bytes.fromhex"),
])
def test_bad_parasite_raises(bad, msg):
    with pytest.raises(ValueError, match=msg):
        file_quality(jpeg_settings=bad)


# --- double JPEG ----------------------------------------------------------------

def test_double_jpeg_wins_over_the_file(double_file):
    px = decode(double_file.read_bytes())
    e = estimate_quality(px, source_path=double_file, predict=no_predict)
    assert e.source == "double-jpeg"
    assert abs(e.qf - 10) <= 5
    assert e.details["last_qf"] == 50 and e.details["file"]["qf"] == 50
    # The first save's grid starts 4 px before ours: it sits at (8-4, 8-4).
    assert e.details["double_jpeg"]["shift"] == [4, 4]


def test_double_jpeg_pixels_only_and_last_save(double_file):
    px = decode(double_file.read_bytes())
    e = double_jpeg(px)
    assert e.source == "double-jpeg" and abs(e.qf - 10) <= 5
    assert abs(e.details["last_qf_estimate"] - 50) <= 5
    # Without a file the double-JPEG check decides before the network.
    e = estimate_quality(px, predict=no_predict)
    assert e.source == "double-jpeg" and abs(e.qf - 10) <= 5 and abs(e.details["last_qf"] - 50) <= 5


def test_double_jpeg_same_result_for_16bit_float_gray_and_alpha(double_file):
    px = decode(double_file.read_bytes())
    ref = double_jpeg(px).qf
    alpha = np.random.default_rng(1).integers(0, 256, px.shape[:2] + (1,), dtype=np.uint8)
    variants = {
        "u16": px.astype(np.uint16) * 257,
        "f32 rgba": np.concatenate([px, alpha], -1).astype(np.float32) / 255,
    }
    for name, v in variants.items():
        e = double_jpeg(v)
        assert e is not None and e.qf == ref, name
    y = np.asarray(Image.fromarray(px).convert("L"))    # 8-bit luma, the gray case
    e = double_jpeg(y[:, :, None])
    assert e is not None and abs(e.qf - 10) <= 5


def test_jpeg_cropped_off_grid_without_resave(img):
    # GIMP's usual case: open a JPEG, crop it, filter. The first grid is shifted and
    # no later save is visible, so the finer divisor lattices match too.
    px = np.ascontiguousarray(decode(jpeg_bytes(img, 25))[3:, 5:])
    e = double_jpeg(px)
    assert e is not None and e.qf == 25 and e.details["shift"] == [5, 3]
    assert e.details["last_qf_estimate"] is None


@pytest.mark.parametrize("qf", [10, 50, 90])
def test_single_jpeg_is_not_double(img, qf):
    px = decode(jpeg_bytes(img, qf))
    assert double_jpeg(px) is None


def test_single_jpeg_file_wins(tmp_path, img):
    p = tmp_path / "s.jpg"
    p.write_bytes(jpeg_bytes(img, 30))
    e = estimate_quality(decode(p.read_bytes()), source_path=p, predict=no_predict)
    assert (e.qf, e.source) == (30, "file")
    assert e.details["double_jpeg"]["found"] is False


def test_higher_first_quality_does_not_beat_the_file(tmp_path, img):
    # Saved at 70, re-saved at 30: the last save dominates, the file's 30 stays.
    p = tmp_path / "hl.jpg"
    p.write_bytes(resaved(img, 70, 30))
    e = estimate_quality(decode(p.read_bytes()), source_path=p, predict=no_predict)
    assert (e.qf, e.source) == (30, "file")


def test_mcmaster_double_jpeg():
    path = shared_path("datasets", "val", "McMaster", "01.png")
    rgb = np.asarray(Image.open(path).convert("RGB"))
    e = double_jpeg(decode(resaved(rgb, 20, 60)))
    assert e is not None and abs(e.qf - 20) <= 5


# --- network and defaults --------------------------------------------------------

def test_nothing_found_falls_to_predict(small):
    img = small
    seen = []
    e = estimate_quality(img, predict=lambda p: seen.append(p.shape) or 33)
    assert (e.qf, e.source) == (33, "network") and seen == [img.shape]
    assert e.details["file"]["found"] is False


def test_no_predictor_gives_the_documented_default(small):
    e = estimate_quality(small)
    assert (e.qf, e.source) == (quality.DEFAULT_QF, quality.DEFAULT_SOURCE)
    assert str(quality.DEFAULT_QF) in e.details["reason"]


@pytest.mark.parametrize("ret", [0, 101, "50", None, 12.5])
def test_bad_prediction_raises(small, ret):
    with pytest.raises(ValueError, match="predict returned"):
        estimate_quality(small, predict=lambda _p: ret)


def test_flat_and_tiny_images_are_not_judged():
    flat = np.full((300, 300, 3), 128, np.uint8)
    e, info = quality._double_jpeg(flat)
    assert e is None and "flat" in info["reason"]
    e, info = quality._double_jpeg(np.zeros((40, 40, 3), np.uint8))
    assert e is None and "smaller" in info["reason"]


# --- bad input ---------------------------------------------------------------------

@pytest.mark.parametrize("bad, msg", [
    (np.zeros((64, 64, 3), np.int32), "dtype"),
    (np.zeros((64, 64, 3), bool), "dtype"),
    (np.zeros((64, 64, 5), np.uint8), "C in 1..4"),
    (np.zeros((64,), np.uint8), "HxWxC"),
    (np.zeros((0, 64, 3), np.uint8), "empty"),
    ([[1, 2], [3, 4]], "numpy array"),
    (np.full((64, 64, 3), np.nan, np.float32), "NaN"),
])
def test_bad_pixels_raise(bad, msg):
    with pytest.raises(ValueError, match=msg):
        estimate_quality(bad, predict=lambda _p: 50)


def test_bad_arguments_raise(small):
    with pytest.raises(ValueError, match="callable"):
        estimate_quality(small, predict=50)
    with pytest.raises(ValueError, match="source_path"):
        estimate_quality(small, source_path=123, predict=lambda _p: 50)


def test_estimate_is_json_serialisable(double_file):
    import json
    e = estimate_quality(decode(double_file.read_bytes()), source_path=double_file)
    assert isinstance(e, Estimate)
    json.dumps({"qf": e.qf, "source": e.source, "details": e.details})
