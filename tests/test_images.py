"""core.images: bit depth, ICC and EXIF survive a read/write round trip."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from core import images
from core.images import UnsupportedImage

RNG = np.random.default_rng(7)


_ICC = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # embeds its creation time


def srgb_icc() -> bytes:
    return _ICC


def exif_bytes() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "FBCNN test camera"   # Make
    exif[0x0112] = 6                     # Orientation: kept, not applied
    return exif.tobytes()[6:]


def filtered_png16(pixels: np.ndarray, ftypes) -> bytes:
    """A 16-bit PNG whose rows use the given filter types (the forward filters, vectorised)."""
    h, w, c = pixels.shape
    r = pixels.astype(">u2").view(np.uint8).reshape(h, w, c * 2).astype(np.int16)
    a = np.zeros_like(r)
    a[:, 1:] = r[:, :-1]
    b = np.zeros_like(r)
    b[1:] = r[:-1]
    cc = np.zeros_like(r)
    cc[1:, 1:] = r[:-1, :-1]
    pa, pb, pc = np.abs(b - cc), np.abs(a - cc), np.abs(a + b - 2 * cc)
    paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, cc))
    ft = np.asarray(ftypes)[:, None, None]
    pred = np.select([ft == 1, ft == 2, ft == 3, ft == 4], [a, b, (a + b) >> 1, paeth], 0)
    rows = np.concatenate([np.asarray(ftypes, np.uint8)[:, None],
                           ((r - pred) & 255).astype(np.uint8).reshape(h, -1)], axis=1)
    ctype = {2: 4, 3: 2, 4: 6}[c]
    return (images.PNG_SIGNATURE + images._chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0))
            + images._chunk(b"IDAT", zlib.compress(rows.tobytes())) + images._chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_png_decoder_handles_every_row_filter(tmp_path, channels):
    px = RNG.integers(0, 65536, (23, 31, channels), dtype=np.uint16)
    ftypes = [i % 5 for i in range(23)]
    path = tmp_path / "f.png"
    path.write_bytes(filtered_png16(px, ftypes))
    got = images.read(path).pixels
    assert got.dtype == np.uint16 and np.array_equal(got, px)
    # Pillow decodes the same file to the high bytes: the test encoder is a valid PNG writer.
    hi = np.asarray(Image.open(path))
    if channels == 2:
        assert np.array_equal(hi[..., 0], px[..., 0] >> 8)
    else:
        assert np.array_equal(hi, (px >> 8).astype(np.uint8))


def test_16bit_gray_png_from_pillow_reads_exactly(tmp_path):
    g = (np.add.outer(np.arange(64), np.arange(48)) * 900 + RNG.integers(0, 99, (64, 48))).astype(np.uint16)
    Image.fromarray(g).save(tmp_path / "g.png")
    got = images.read(tmp_path / "g.png").pixels
    assert got.shape == (64, 48, 1) and got.dtype == np.uint16 and np.array_equal(got[..., 0], g)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_round_trip_keeps_depth_icc_and_exif(tmp_path, channels, dtype):
    px = RNG.integers(0, np.iinfo(dtype).max + 1, (17, 13, channels)).astype(dtype)
    icc, exif = srgb_icc(), exif_bytes()
    images.write(tmp_path / "o.png", px, icc, exif)
    pic = images.read(tmp_path / "o.png")
    assert pic.pixels.dtype == dtype and np.array_equal(pic.pixels, px)
    assert pic.icc == icc
    with Image.open(tmp_path / "o.png") as im:  # what other programs see
        assert im.info["icc_profile"] == icc
        assert im.getexif()[0x010F] == "FBCNN test camera" and im.getexif()[0x0112] == 6


def test_16bit_gradient_keeps_more_than_256_levels(tmp_path):
    px = np.broadcast_to(np.linspace(0, 65535, 4000).astype(np.uint16)[None, :, None], (4, 4000, 3))
    images.write(tmp_path / "grad.png", px)
    assert len(np.unique(images.read(tmp_path / "grad.png").pixels)) > 256


def test_jpeg_metadata_is_read(tmp_path):
    px = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(px).save(tmp_path / "i.jpg", quality=50, icc_profile=srgb_icc(),
                             exif=b"Exif\x00\x00" + exif_bytes())
    pic = images.read(tmp_path / "i.jpg")
    assert pic.pixels.shape == (16, 16, 3) and pic.pixels.dtype == np.uint8
    assert pic.icc == srgb_icc() and pic.exif and pic.info["format"] == "JPEG"


def test_tiff_8bit_and_16bit_gray(tmp_path):
    px = RNG.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    images.write(tmp_path / "o.tif", px, srgb_icc())
    pic = images.read(tmp_path / "o.tif")
    assert np.array_equal(pic.pixels, px) and pic.icc == srgb_icc()
    g = RNG.integers(0, 65536, (9, 11, 1), dtype=np.uint16)
    images.write(tmp_path / "g.tiff", g)
    assert np.array_equal(images.read(tmp_path / "g.tiff").pixels, g)
    with pytest.raises(UnsupportedImage, match="PNG"):
        images.write(tmp_path / "c.tif", g.repeat(3, axis=2))


def tiff16(path, px, *, compression=1, predictor=1, order="<", rows_per_strip=None):
    """A baseline 16-bit TIFF in strips, written by hand (Pillow cannot write 16-bit colour)."""
    h, w, c = px.shape
    rps = rows_per_strip or h
    samples = px.astype(np.uint16)
    if predictor == 2:
        samples = samples.copy()
        samples[:, 1:] -= px[:, :-1].astype(np.uint16)  # horizontal differencing, wraps mod 2**16
    strips = []
    for y in range(0, h, rps):
        raw = samples[y:y + rps].astype(order + "u2").tobytes()
        strips.append(zlib.compress(raw) if compression == 8 else raw)
    tags = {256: (3, [w]), 257: (3, [h]), 258: (3, [16] * c), 259: (3, [compression]),
            262: (3, [2]), 273: (4, []), 277: (3, [c]), 278: (3, [rps]),
            279: (4, [len(s) for s in strips]), 284: (3, [1]), 317: (3, [predictor])}
    if c == 4:
        tags[338] = (3, [2])  # unassociated alpha
    n = len(tags)
    extra_at = 8 + 2 + 12 * n + 4
    extra = b""
    # Values longer than 4 bytes go after the IFD; the strips after those.
    sizes = {k: (2 if t == 3 else 4) * max(1, len(v)) for k, (t, v) in tags.items()}
    long_bytes = sum(sz for k, sz in sizes.items() if sz > 4 and k != 273) + (4 * len(strips) if len(strips) > 1 else 0)
    body_at = extra_at + long_bytes
    offsets, pos = [], body_at
    for st in strips:
        offsets.append(pos)
        pos += len(st)
    tags[273] = (4, offsets)
    ifd = struct.pack(order + "H", n)
    for k in sorted(tags):
        t, v = tags[k]
        fmt = order + ("H" if t == 3 else "I") * len(v)
        packed = struct.pack(fmt, *v)
        if len(packed) <= 4:
            ifd += struct.pack(order + "HHI", k, t, len(v)) + packed.ljust(4, b"\0")
        else:
            ifd += struct.pack(order + "HHII", k, t, len(v), extra_at + len(extra))
            extra += packed
    head = (b"II*\0" if order == "<" else b"MM\0*") + struct.pack(order + "I", 8)
    data = head + ifd + struct.pack(order + "I", 0) + extra
    assert len(data) == body_at
    path.write_bytes(data + b"".join(strips))


@pytest.mark.parametrize("opts", [
    {}, {"compression": 8}, {"compression": 8, "predictor": 2, "rows_per_strip": 3},
    {"order": ">", "rows_per_strip": 4}, {"channels": 4, "compression": 8, "predictor": 2},
])
def test_16bit_colour_tiff_reads_exactly(tmp_path, opts):
    opts = dict(opts)
    px = RNG.integers(0, 65536, (10, 7, opts.pop("channels", 3)), dtype=np.uint16)
    tiff16(tmp_path / "t.tif", px, **opts)
    got = images.read(tmp_path / "t.tif").pixels
    assert got.dtype == np.uint16 and np.array_equal(got, px)
    # Pillow reads the same file as 8 bits: the hand-written TIFF is a valid one.
    assert np.array_equal(np.asarray(Image.open(tmp_path / "t.tif")), (px >> 8).astype(np.uint8))


def test_16bit_colour_tiff_with_lzw_is_refused_clearly(tmp_path):
    px = RNG.integers(0, 65536, (4, 4, 3), dtype=np.uint16)
    tiff16(tmp_path / "t.tif", px)
    data = bytearray((tmp_path / "t.tif").read_bytes())
    # Rewrite the Compression tag's value to LZW (5): the reader must refuse, not misread.
    i = data.index(struct.pack("<HHI", 259, 3, 1))
    data[i + 8:i + 10] = struct.pack("<H", 5)
    (tmp_path / "t.tif").write_bytes(bytes(data))
    with pytest.raises(UnsupportedImage, match="deflate"):
        images.read(tmp_path / "t.tif")


def test_palette_with_transparency_becomes_rgba(tmp_path):
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.save(tmp_path / "p.png", transparency=0)
    assert images.read(tmp_path / "p.png").pixels.shape == (4, 4, 4)


def test_refusals_are_clear(tmp_path):
    Image.new("CMYK", (4, 4)).save(tmp_path / "c.jpg")
    with pytest.raises(UnsupportedImage, match="CMYK"):
        images.read(tmp_path / "c.jpg")
    px = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(UnsupportedImage, match="artifacts"):
        images.write(tmp_path / "o.jpg", px)
    with pytest.raises(ValueError, match="HxWxC"):
        images.write(tmp_path / "o.png", np.zeros((4, 4), np.uint8))
