"""Pixel layouts, regions and byte shuffling, with the standard library only.

Krita hands out pixels as raw bytes in the layer's colour space. The worker
understands those bytes directly when told their layout, so the plug-in never
converts the pixels it sends; it only converts small preview crops to 8 bits
for display.
"""
import array
import struct
import sys
from collections import namedtuple

# How Krita lays out one pixel in memory (see the headless note): integer RGB is
# B G R A, float RGB is R G B A, gray is Y A.
Layout = namedtuple("Layout", "order dtype bytes_per_pixel")

LAYOUTS = {
    ("RGBA", "U8"): Layout("BGRA", "u8", 4),
    ("RGBA", "U16"): Layout("BGRA", "u16", 8),
    ("RGBA", "F16"): Layout("RGBA", "f16", 8),
    ("RGBA", "F32"): Layout("RGBA", "f32", 16),
    ("GRAYA", "U8"): Layout("YA", "u8", 2),
    ("GRAYA", "U16"): Layout("YA", "u16", 4),
    ("GRAYA", "F16"): Layout("YA", "f16", 4),
    ("GRAYA", "F32"): Layout("YA", "f32", 8),
}

MODEL_NAMES = {"CMYKA": "CMYK", "LABA": "Lab", "XYZA": "XYZ", "YCbCrA": "YCbCr"}



class UnsupportedLayer(Exception):
    """A colour model or depth the worker cannot take; the message says what to do."""


def layout_for(color_model, color_depth):
    """The memory layout of a layer, or UnsupportedLayer with a way out."""
    layout = LAYOUTS.get((color_model, color_depth))
    if layout is not None:
        return layout
    if color_model in ("RGBA", "GRAYA"):
        raise UnsupportedLayer(
            f"This layer uses a {color_depth} colour depth, which the filter cannot read.\n\n"
            "Convert it with Image > Convert Image Color Space... to 8-bit, 16-bit or "
            "32-bit float, then run the filter again.")
    name = MODEL_NAMES.get(color_model, color_model)
    raise UnsupportedLayer(
        f"This layer is in the {name} colour model. JPEG artifact removal works on "
        "RGB and grayscale pixels only.\n\n"
        "Convert the image with Image > Convert Image Color Space... to "
        "RGB/Alpha (or Grayscale/Alpha), then run the filter again.")


def pixel_format(layout, width, height):
    """The worker's pixel descriptor for a width x height block in this layout."""
    return {"width": width, "height": height, "dtype": layout.dtype, "order": layout.order}


# ---------------------------------------------------------------- preview conversion

def _srgb_encode(v):
    # Krita's float profiles are usually linear; the screen wants sRGB.
    return 12.92 * v if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055


def _floats(data, dtype):
    if dtype == "f32":
        values = array.array("f")
        values.frombytes(bytes(data))
        if sys.byteorder != "little":
            values.byteswap()
        return values
    return struct.unpack("<%de" % (len(data) // 2), data)


def to_display_bgra(data, layout, linear=False):
    """8-bit B G R A bytes (Qt's ARGB32 in memory) for showing pixels on screen."""
    n_channels = len(layout.order)
    if layout.dtype == "u8":
        samples = bytes(data)
    elif layout.dtype == "u16":
        samples = bytes(data)[1::2]  # the high byte of each little-endian sample
    else:
        values = _floats(data, layout.dtype)
        if linear:
            encode = [i % n_channels != n_channels - 1 for i in range(n_channels)]
            samples = bytes(
                max(0, min(255, int((_srgb_encode(max(0.0, v)) if encode[i % n_channels] else v)
                                    * 255 + 0.5)))
                for i, v in enumerate(values))
        else:
            samples = bytes(max(0, min(255, int(v * 255 + 0.5))) for v in values)
    n_pixels = len(samples) // n_channels
    out = bytearray(n_pixels * 4)
    if layout.order == "BGRA":
        out[:] = samples
    elif layout.order == "RGBA":
        out[0::4], out[1::4], out[2::4], out[3::4] = (
            samples[2::4], samples[1::4], samples[0::4], samples[3::4])
    else:  # YA
        gray, alpha = samples[0::2], samples[1::2]
        out[0::4], out[1::4], out[2::4], out[3::4] = gray, gray, gray, alpha
    return bytes(out)
