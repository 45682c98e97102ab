"""Image files <-> HxWxC numpy arrays for the CLI, keeping bit depth, ICC profile and EXIF.

Pillow does the work, and reads the metadata of every file, except where it would lose
bits: it has no 16-bit RGB(A) or gray+alpha mode and cuts such images to 8 bits. Their
pixels go through pypng (16-bit PNG) and tifffile (16-bit colour TIFF) instead.
"""
from __future__ import annotations

import io
import pathlib
import zlib
from dataclasses import dataclass, field

import numpy as np
import png
import tifffile
from PIL import Image, TiffTags, UnidentifiedImageError

WRITABLE = (".png", ".tif", ".tiff")

# Descriptive baseline tags that Pillow writes from EXIF into an 8-bit TIFF's IFD; the same
# are handed to tifffile for 16-bit colour TIFF (it cannot write the EXIF/GPS sub-IFDs).
_TIFF_EXIF_TAGS = (269, 270, 271, 272, 274, 305, 306, 315, 316, 33432)
_TIFF_TYPE_CODES = {TiffTags.ASCII: "s", TiffTags.SHORT: "H", TiffTags.LONG: "I"}


class UnsupportedImage(ValueError):
    """An image this tool cannot process without losing data; the message says what to do."""


@dataclass
class Picture:
    pixels: np.ndarray            # HxWxC, C in 1..4, uint8 or uint16
    icc: bytes | None = None
    exif: bytes | None = None     # TIFF-structured EXIF, without the "Exif\0\0" prefix
    info: dict = field(default_factory=dict)


# ---------------------------------------------------------------- reading

FLOAT_REFUSAL = "floating-point images are not supported; save as 16-bit PNG or TIFF"
# Pillow's decompression-bomb guard stops at 179 MP, below real film scans and
# panoramas; ours opens up to this many megapixels (a 500 MP restore stays under
# 5.5 GB) and names the option for more.
MAX_MEGAPIXELS = 500


def read(path, max_megapixels: float = MAX_MEGAPIXELS) -> Picture:
    # Pillow checks its own guard again while decoding (TIFF does); ours, on the header,
    # has already decided by then.
    guard, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        return _read(pathlib.Path(path), max_megapixels)
    finally:
        Image.MAX_IMAGE_PIXELS = guard


def _read(path: pathlib.Path, max_megapixels: float) -> Picture:
    try:
        im = Image.open(path)   # reads the header only: the size is known, nothing decoded
    except UnidentifiedImageError:
        _refuse_float_tiff(path)   # Pillow can't open float RGB TIFFs at all
        raise
    megapixels = im.width * im.height / 1e6
    if megapixels > max_megapixels:
        im.close()
        raise UnsupportedImage(
            f"{im.width}x{im.height} is {megapixels:.0f} MP, more than the {max_megapixels:g} MP "
            "opened by default (a guard against decompression bombs: small files that unpack "
            f"to huge images). If you trust this file, pass --max-megapixels "
            f"{int(megapixels) + 1}")
    with im:
        icc = im.info.get("icc_profile") or None
        exif = _exif_bytes(im)
        info = {"format": im.format, "mode": im.mode}
        pixels = None
        if im.format == "PNG":
            pixels = _png16(path)
        elif im.format == "TIFF" and im.mode in ("RGB", "RGBA") and 16 in _tiff_bits(im):
            pixels = _tiff16(path)[..., :len(im.mode)]  # an unspecified extra sample is dropped
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
        raise UnsupportedImage(FLOAT_REFUSAL)
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


def _refuse_float_tiff(path: pathlib.Path) -> None:
    """The gray float TIFF's clear refusal for a colour one too, where Pillow would
    only say it cannot identify the file."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return
    try:
        with tifffile.TiffFile(path) as tif:
            kind = tif.pages[0].dtype.kind if tif.pages else None
    except Exception:  # not a TIFF after all: Pillow's own error stands
        return
    if kind == "f":
        raise UnsupportedImage(FLOAT_REFUSAL)


def _tiff_bits(im) -> tuple:
    bits = im.tag_v2.get(258, (8,))
    return bits if isinstance(bits, tuple) else (bits,)


def _tiff16(path: pathlib.Path) -> np.ndarray:
    """Pixels of a 16-bit colour TIFF (first page), which Pillow cuts to 8 bits."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        if page.compression not in tifffile.TIFF.DECOMPRESSORS:
            raise UnsupportedImage(
                f"this 16-bit TIFF uses {page.compression.name} compression, which needs the "
                f"'imagecodecs' package (pip install imagecodecs); or re-save it uncompressed, "
                f"with deflate/ZIP, or as 16-bit PNG")
        if page.dtype != np.uint16 or page.axes not in ("YXS", "SYX"):
            raise UnsupportedImage("this 16-bit colour TIFF layout (mixed depths or extra "
                                   "dimensions) is not supported; save it as a 16-bit PNG")
        a = page.asarray()
    return np.moveaxis(a, 0, -1) if page.axes == "SYX" else a  # planar -> interleaved


def _png16(path: pathlib.Path) -> np.ndarray | None:
    """Pixels of a 16-bit colour or gray+alpha PNG, which Pillow would cut to 8 bits; else None."""
    reader = png.Reader(filename=str(path))
    try:
        reader.preamble()
        if reader.bitdepth != 16 or reader.color_type not in (2, 4, 6):
            return None
        width, height, rows, meta = reader.read()  # tRNS is not applied, as with Pillow's 8-bit modes
        pixels = np.vstack([np.asarray(row, np.uint16) for row in rows])
    except png.Error as err:
        raise UnsupportedImage(f"{path.name}: damaged PNG ({err})") from None
    finally:
        reader.file.close()
    return pixels.reshape(height, width, meta["planes"])


# ---------------------------------------------------------------- writing

def write(path, pixels: np.ndarray, icc: bytes | None = None, exif: bytes | None = None) -> None:
    """Write PNG (any depth) or TIFF (8-bit, 16-bit gray/RGB/RGBA) with the ICC profile and EXIF kept.

    16-bit colour TIFF keeps only EXIF's descriptive baseline tags (Make, Model, Orientation...).
    """
    path = pathlib.Path(path)
    ext = path.suffix.lower()
    if ext not in WRITABLE:
        raise UnsupportedImage(f"cannot write {ext or 'files without an extension'}: use .png "
                               f"(lossless; writing JPEG again would bring the artifacts back)")
    if pixels.ndim != 3 or not 1 <= pixels.shape[2] <= 4 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected HxWxC uint8/uint16 pixels with C in 1..4, got "
                         f"{pixels.shape} {pixels.dtype}")
    channels = pixels.shape[2]
    if pixels.dtype == np.uint16 and ext == ".png" and channels > 1:
        path.write_bytes(_encode_png16(pixels, icc, exif))
        return
    if pixels.dtype == np.uint16 and channels >= 3:
        _write_tiff16(path, pixels, icc, exif)
        return
    if pixels.dtype == np.uint16 and channels == 2:
        raise UnsupportedImage("16-bit gray+alpha output is written as PNG only; use a .png name")
    # Pillow infers the mode from dtype and shape: L, LA, RGB, RGBA, or I;16 for 16-bit gray.
    im = Image.fromarray(np.ascontiguousarray(pixels if channels > 1 else pixels[..., 0]))
    opts = {}
    if icc:
        opts["icc_profile"] = icc
    if exif:
        opts["exif"] = b"Exif\x00\x00" + exif
    im.save(path, **opts)


def _encode_png16(pixels: np.ndarray, icc: bytes | None, exif: bytes | None) -> bytes:
    """pypng writes the pixels; the iCCP and eXIf chunks go in through its chunk API."""
    h, w, c = pixels.shape
    writer = png.Writer(w, h, greyscale=c <= 2, alpha=c in (2, 4), bitdepth=16)
    packed = np.ascontiguousarray(pixels, ">u2").view(np.uint8).reshape(h, w * c * 2)
    buf = io.BytesIO()
    writer.write_packed(buf, packed)
    chunks = list(png.Reader(bytes=buf.getvalue()).chunks())
    meta = []
    if icc:  # profile name, NUL, compression method 0 (zlib), compressed profile
        meta.append((b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    if exif:
        meta.append((b"eXIf", exif))
    out = io.BytesIO()
    png.write_chunks(out, chunks[:1] + meta + chunks[1:])  # after IHDR, before IDAT
    return out.getvalue()


def _write_tiff16(path: pathlib.Path, pixels: np.ndarray, icc: bytes | None, exif: bytes | None):
    tags = []
    if exif:
        parsed = Image.Exif()
        parsed.load(b"Exif\x00\x00" + exif)
        for tag in _TIFF_EXIF_TAGS:
            value, code = parsed.get(tag), _TIFF_TYPE_CODES.get(TiffTags.lookup(tag).type)
            if isinstance(value, str) and code == "s":
                tags.append((tag, "s", 0, value, True))
            elif isinstance(value, int) and code in ("H", "I"):
                tags.append((tag, code, 1, value, True))
    tifffile.imwrite(path, pixels, photometric="rgb", compression="zlib", predictor=True,
                     extrasamples=["unassalpha"] if pixels.shape[2] == 4 else None,
                     iccprofile=icc or None, software=False, metadata=None, extratags=tags)
