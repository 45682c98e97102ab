"""core.images: bit depth, ICC and EXIF survive a read/write round trip."""
import io
import struct
import zlib

import numpy as np
import png
import pytest
import tifffile
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
    out = io.BytesIO()
    png.write_chunks(out, [(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0)),
                           (b"IDAT", zlib.compress(rows.tobytes())), (b"IEND", b"")])
    return out.getvalue()


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
        images.write(tmp_path / "c.tif", g.repeat(2, axis=2))  # 16-bit gray+alpha


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_tiff_round_trip_keeps_pixels_icc_and_exif_tags(tmp_path, channels):
    px = RNG.integers(0, 65536, (19, 23, channels), dtype=np.uint16)
    images.write(tmp_path / "o.tif", px, srgb_icc(), exif_bytes())
    pic = images.read(tmp_path / "o.tif")
    assert pic.pixels.dtype == np.uint16 and np.array_equal(pic.pixels, px)
    assert pic.icc == srgb_icc()
    with Image.open(tmp_path / "o.tif") as im:  # what other programs see
        assert im.mode == ("RGB", "RGBA")[channels - 3]
        assert im.getexif()[0x010F] == "FBCNN test camera" and im.getexif()[0x0112] == 6


def test_16bit_rgb_png_round_trip_is_exact(tmp_path):
    px = RNG.integers(0, 65536, (31, 17, 3), dtype=np.uint16)
    images.write(tmp_path / "o.png", px)
    pic = images.read(tmp_path / "o.png")
    assert pic.pixels.dtype == np.uint16 and np.array_equal(pic.pixels, px)
    assert pic.icc is None and pic.exif is None


def test_interlaced_16bit_png_reads_exactly(tmp_path):
    px = RNG.integers(0, 65536, (13, 9, 4), dtype=np.uint16)
    with open(tmp_path / "i.png", "wb") as f:
        png.Writer(9, 13, greyscale=False, alpha=True, bitdepth=16, interlace=True).write(f, px.reshape(13, -1))
    assert np.array_equal(images.read(tmp_path / "i.png").pixels, px)


@pytest.mark.parametrize("opts", [
    {}, {"compression": "zlib"}, {"compression": "zlib", "predictor": True, "rowsperstrip": 3},
    {"byteorder": ">", "rowsperstrip": 4}, {"planarconfig": "separate"},
    {"channels": 4, "compression": "zlib", "predictor": True}, {"tile": (16, 16)},
])
def test_16bit_colour_tiff_reads_exactly(tmp_path, opts):
    """Layouts other programs write (strips, byte orders, predictor, planes, tiles)."""
    opts = dict(opts)
    px = RNG.integers(0, 65536, (20, 18, opts.pop("channels", 3)), dtype=np.uint16)
    data = np.moveaxis(px, -1, 0) if opts.get("planarconfig") == "separate" else px
    extra = ["unassalpha"] if px.shape[2] == 4 else None
    tifffile.imwrite(tmp_path / "t.tif", data, photometric="rgb", extrasamples=extra, **opts)
    got = images.read(tmp_path / "t.tif").pixels
    assert got.dtype == np.uint16 and np.array_equal(got, px)


def test_16bit_colour_tiff_with_lzw_is_refused_clearly(tmp_path):
    try:
        import imagecodecs  # noqa: F401 - with it tifffile decodes LZW, so nothing to refuse
        pytest.skip("imagecodecs is installed")
    except ImportError:
        pass
    px = RNG.integers(0, 65536, (4, 4, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "t.tif", px, photometric="rgb", byteorder="<")
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


@pytest.mark.parametrize("shape,dtype", [((8, 9, 3), np.float32), ((8, 9), np.float32),
                                         ((8, 9, 4), np.float32), ((8, 9, 3), np.float16)])
def test_float_tiffs_are_refused_with_one_clear_message(tmp_path, shape, dtype):
    """Colour float TIFFs got Pillow's "cannot identify image file", as if broken."""
    import tifffile
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, np.random.default_rng(0).random(shape).astype(dtype),
                     photometric="rgb" if len(shape) == 3 else "minisblack")
    with pytest.raises(images.UnsupportedImage, match="floating-point images are not supported; "
                                                      "save as 16-bit PNG or TIFF"):
        images.read(path)


def test_a_file_that_is_no_image_keeps_pillows_error(tmp_path):
    path = tmp_path / "junk.tif"
    path.write_bytes(b"not an image")
    with pytest.raises(Exception, match="cannot identify"):
        images.read(path)


def test_the_decompression_bomb_guard_names_its_option(tmp_path):
    """Pillow stopped at 179 MP with "decompression bomb DOS attack"; ours says what to do."""
    before = Image.MAX_IMAGE_PIXELS
    path = tmp_path / "big.png"
    Image.new("L", (4000, 3000)).save(path)          # 12 MP, a few KB on disk
    with pytest.raises(images.UnsupportedImage, match=r"12 MP, more than the 10 MP .* "
                                                      r"--max-megapixels 13"):
        images.read(path, max_megapixels=10)
    assert images.read(path, max_megapixels=13).pixels.shape == (3000, 4000, 1)
    assert Image.MAX_IMAGE_PIXELS == before          # Pillow's own guard is left as it was
    # Above Pillow's own limit, within ours: opened.
    wide = tmp_path / "wide.png"
    Image.new("L", (20000, 9000)).save(wide)          # 180 MP
    assert images.read(wide).pixels.shape == (9000, 20000, 1)


def test_pillows_guard_while_decoding_a_tiff_does_not_overrule_ours(tmp_path, monkeypatch):
    """Pillow checks its guard again when it decodes an RGB TIFF strip and refuses above
    twice its limit: a 400 MP TIFF from tifffile (one strip) failed so. A lowered Pillow
    limit stands in for the 358 MP that a real case needs."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = tmp_path / "one-strip.tif"
    tifffile.imwrite(path, np.zeros((48, 64, 3), np.uint8))          # 3072 px > 2 x 1000
    assert images.read(path).pixels.shape == (48, 64, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000
