"""Image files <-> HxWxC numpy arrays for the CLI, keeping bit depth, ICC profile and EXIF.

Pillow does the work except where it would lose bits: it has no 16-bit RGB(A) or
gray+alpha mode and decodes such PNGs to 8 bits. Those PNGs are decoded and
written here (zlib + PNG row filters in numpy); metadata still comes from Pillow.
"""
from __future__ import annotations

import pathlib
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel (no palette)
_PNG_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}
WRITABLE = (".png", ".tif", ".tiff")


class UnsupportedImage(ValueError):
    """An image this tool cannot process without losing data; the message says what to do."""


@dataclass
class Picture:
    pixels: np.ndarray            # HxWxC, C in 1..4, uint8 or uint16
    icc: bytes | None = None
    exif: bytes | None = None     # TIFF-structured EXIF, without the "Exif\0\0" prefix
    info: dict = field(default_factory=dict)


# ---------------------------------------------------------------- reading

def read(path) -> Picture:
    path = pathlib.Path(path)
    with Image.open(path) as im:
        icc = im.info.get("icc_profile") or None
        exif = _exif_bytes(im)
        info = {"format": im.format, "mode": im.mode}
        pixels = None
        if im.format == "PNG":
            pixels = _png16(path)
        elif im.format == "TIFF" and im.mode in ("RGB", "RGBA") and 16 in _tiff_bits(im):
            pixels = _tiff16(im, path)
        if pixels is None:
            pixels = _pillow_pixels(im)
    return Picture(pixels, icc, exif, info)


def _exif_bytes(im) -> bytes | None:
    exif = im.getexif()
    if not len(exif):
        return None
    data = exif.tobytes()
    return data[6:] if data.startswith(b"Exif\x00\x00") else data


def _pillow_pixels(im) -> np.ndarray:
    mode = im.mode
    if mode in ("CMYK", "LAB", "HSV"):
        raise UnsupportedImage(f"{mode} images are not supported; convert to RGB first "
                               f"(with its colour profile, in an image editor)")
    if mode == "F":
        raise UnsupportedImage("32-bit float images are not supported; save as 16-bit PNG or TIFF")
    if mode == "1":
        im = im.convert("L")
    elif mode in ("P", "PA"):
        im = im.convert("RGBA" if "transparency" in im.info or mode == "PA" else "RGB")
    elif mode == "YCbCr":
        im = im.convert("RGB")
    elif mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)[..., None]
    elif mode == "I":
        a = np.asarray(im)
        if a.min() < 0 or a.max() > 65535:
            raise UnsupportedImage("32-bit integer images are not supported; save as 16-bit")
        return a.astype(np.uint16)[..., None]
    a = np.asarray(im)
    return a[..., None] if a.ndim == 2 else a


def _tiff_bits(im) -> tuple:
    bits = im.tag_v2.get(258, (8,))
    return bits if isinstance(bits, tuple) else (bits,)


_TIFF_DEFLATE = (8, 32946)


def _tiff16(im, path: pathlib.Path) -> np.ndarray:
    """Pixels of a 16-bit colour TIFF (strips, uncompressed or deflate), which Pillow cuts to 8 bits."""
    tags = im.tag_v2
    w, h = im.size
    spp = int(tags.get(277, 1))
    compression, predictor = int(tags.get(259, 1)), int(tags.get(317, 1))
    if set(_tiff_bits(im)) != {16} or int(tags.get(284, 1)) != 1 or 322 in tags:
        raise UnsupportedImage("this 16-bit colour TIFF layout (tiles, planes or mixed depths) is not "
                               "supported; save it as a 16-bit PNG")
    if compression not in (1, *_TIFF_DEFLATE) or predictor not in (1, 2):
        raise UnsupportedImage("16-bit colour TIFF is read uncompressed or with deflate/ZIP only "
                               "(this one uses another compression); re-save it that way or as 16-bit PNG")
    data = bytearray()
    with open(path, "rb") as f:
        order = "<" if f.read(2) == b"II" else ">"
        for offset, count in zip(tags[273], tags[279]):
            f.seek(offset)
            strip = f.read(count)
            data += zlib.decompress(strip) if compression != 1 else strip
    if len(data) < w * h * spp * 2:
        raise UnsupportedImage(f"{path.name}: TIFF data is truncated")
    a = np.frombuffer(bytes(data[:w * h * spp * 2]), order + "u2").reshape(h, w, spp).astype(np.uint16)
    if predictor == 2:
        a = np.cumsum(a, axis=1, dtype=np.uint16)  # horizontal differencing, undone mod 2**16
    return a[..., :len(im.mode)]  # RGB with an unspecified extra sample keeps 3 channels


def _png_chunks(data: bytes):
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        yield kind, data[pos + 8:pos + 8 + length]
        pos += 12 + length


def _png16(path: pathlib.Path) -> np.ndarray | None:
    """Pixels of a 16-bit colour or gray+alpha PNG, which Pillow would cut to 8 bits; else None."""
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        return None
    chunks = list(_png_chunks(data))
    width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if depth != 16 or ctype not in (2, 4, 6):
        return None
    if interlace:
        raise UnsupportedImage("interlaced 16-bit PNG is not supported; save it without interlacing")
    channels = _PNG_CHANNELS[ctype]
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = width * channels * 2
    if len(raw) < height * (stride + 1):
        raise UnsupportedImage(f"{path.name}: PNG data is truncated")
    rows = np.frombuffer(raw, np.uint8, height * (stride + 1)).reshape(height, stride + 1)
    recon = _unfilter(rows[:, 0], rows[:, 1:].reshape(height, width, channels * 2))
    return recon.reshape(height, width * channels * 2).view(">u2").reshape(height, width, channels) \
        .astype(np.uint16)


def _unfilter(ftypes: np.ndarray, filt: np.ndarray) -> np.ndarray:
    """Undo PNG row filters on (H, W, bytes-per-pixel) data."""
    if ftypes.max(initial=0) > 4:
        raise UnsupportedImage("PNG uses an unknown row filter; the file is damaged")
    if ftypes.max(initial=0) <= 2:
        return _unfilter_rows(ftypes, filt)
    return _unfilter_wavefront(ftypes, filt)


def _unfilter_rows(ftypes, filt):
    """None/Sub/Up only: every row is one vectorised step (Sub is a running sum mod 256)."""
    out = np.empty_like(filt)
    prev = np.zeros_like(filt[0])
    for y, ft in enumerate(ftypes):
        row = filt[y]
        if ft == 1:
            row = np.cumsum(row, axis=0, dtype=np.uint8)  # uint8 arithmetic wraps mod 256
        elif ft == 2:
            row = row + prev
        out[y] = row
        prev = out[y]
    return out


def _unfilter_wavefront(ftypes, filt):
    """Average/Paeth depend on the left, upper and upper-left pixels, so all pixels on one
    anti-diagonal (x + y = k) are independent: H + W vectorised steps instead of H * W."""
    h, w, bpp = filt.shape
    rec = np.zeros((h + 1, w + 1, bpp), np.int16)  # one row/column of zeros as the PNG border
    ft_all = ftypes.astype(np.int16)
    for k in range(h + w - 1):
        y = np.arange(max(0, k - w + 1), min(h, k + 1))
        x = k - y
        a, b, c = rec[y + 1, x], rec[y, x + 1], rec[y, x]
        ft = ft_all[y][:, None]
        pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = np.select([ft == 1, ft == 2, ft == 3, ft == 4], [a, b, (a + b) >> 1, paeth], 0)
        rec[y + 1, x + 1] = (filt[y, x] + pred) & 255
    return rec[1:, 1:].astype(np.uint8)


# ---------------------------------------------------------------- writing

def write(path, pixels: np.ndarray, icc: bytes | None = None, exif: bytes | None = None) -> None:
    """Write PNG (any depth) or TIFF (8-bit, 16-bit gray) with the ICC profile and EXIF kept."""
    path = pathlib.Path(path)
    ext = path.suffix.lower()
    if ext not in WRITABLE:
        raise UnsupportedImage(f"cannot write {ext or 'files without an extension'}: use .png "
                               f"(lossless; writing JPEG again would bring the artifacts back)")
    if pixels.ndim != 3 or not 1 <= pixels.shape[2] <= 4 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected HxWxC uint8/uint16 pixels with C in 1..4, got "
                         f"{pixels.shape} {pixels.dtype}")
    if pixels.dtype == np.uint16 and ext == ".png":
        path.write_bytes(encode_png16(pixels, icc, exif))
        return
    if pixels.dtype == np.uint16 and pixels.shape[2] != 1:
        raise UnsupportedImage("16-bit colour output is written as PNG only; use a .png name")
    # Pillow infers the mode from dtype and shape: L, LA, RGB, RGBA, or I;16 for 16-bit gray.
    im = Image.fromarray(np.ascontiguousarray(pixels if pixels.shape[2] > 1 else pixels[..., 0]))
    opts = {}
    if icc:
        opts["icc_profile"] = icc
    if exif:
        opts["exif"] = b"Exif\x00\x00" + exif
    im.save(path, **opts)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def encode_png16(pixels: np.ndarray, icc: bytes | None = None, exif: bytes | None = None) -> bytes:
    h, w, c = pixels.shape
    be = np.ascontiguousarray(pixels, dtype=">u2").view(np.uint8).reshape(h, w * c * 2)
    # The Up filter on every row: cheap to compute and helps zlib on smooth images.
    up = be.copy()
    up[1:] -= be[:-1]
    rows = np.concatenate([np.full((h, 1), 2, np.uint8), up], axis=1)
    out = [PNG_SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, _PNG_COLOR_TYPE[c], 0, 0, 0))]
    if icc:
        out.append(_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    if exif:
        out.append(_chunk(b"eXIf", exif))
    out += [_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)), _chunk(b"IEND", b"")]
    return b"".join(out)
