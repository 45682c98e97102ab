"""A layer's pixels: in which format we read them (its own bit depth and colour
space), the regions we read, and writing the result back through GIMP's shadow
buffer so that selections, undo and alpha behave as in any GIMP filter."""
from array import array

from gi.repository import Babl, Gegl, GdkPixbuf, Gimp, GLib

from fbcnn_frontend import regions

from messages import TITLE, Refused


class PixelFormat:
    """The drawable's pixels as both babl and the worker name them."""

    def __init__(self, drawable):
        precision = drawable.get_image().get_precision().value_nick  # e.g. "u16-non-linear"
        if precision.startswith("u8"):
            babl_type, self.dtype, self.sample = "u8", "u8", "B"
        elif precision.startswith("u16"):
            babl_type, self.dtype, self.sample = "u16", "u16", "H"
        else:  # u32, half, float, double: float keeps every one of them intact enough
            babl_type, self.dtype, self.sample = "float", "f32", "f"
        self.gray = drawable.is_gray()
        self.alpha = drawable.has_alpha()
        self.order = ("Y" if self.gray else "RGB") + ("A" if self.alpha else "")
        model = ("Y'" if self.gray else "R'G'B'") + ("A" if self.alpha else "")
        self.babl = in_layer_space(model + " " + babl_type, drawable)
        # What QF detection reads: 8-bit, no alpha, same colour space.
        self.babl_u8 = in_layer_space(("Y'" if self.gray else "R'G'B'") + " u8", drawable)
        self.channels = len(self.order)
        self.pixel_bytes = self.channels * array(self.sample).itemsize

    def descriptor(self, w, h):
        return {"width": w, "height": h, "dtype": self.dtype, "order": self.order}


def in_layer_space(encoding, drawable):
    """A babl format name in the layer's own colour space: the network must see
    the values as the JPEG stored them, not converted to sRGB (an Adobe RGB
    photo would lose its saturated colours on the way back)."""
    return Babl.get_name(Babl.format_with_space(encoding, drawable.get_format()))


class Region:
    """A rectangle in drawable coordinates."""

    def __init__(self, x, y, w, h):
        self.x, self.y, self.w, self.h = x, y, w, h

    def rect(self):
        return Gegl.Rectangle.new(self.x, self.y, self.w, self.h)

    def __repr__(self):
        return "Region(%d, %d, %d, %d)" % (self.x, self.y, self.w, self.h)


def read_pixels(drawable, region, babl):
    buf = drawable.get_buffer()
    return bytes(buf.get(region.rect(), 1.0, babl, Gegl.AbyssPolicy.CLAMP))


def with_context(drawable, inner):
    """`inner` grown by the run's context, snapped outward to the image's 8-px grid
    and clipped to the layer, plus its origin in image coordinates (the tiles then
    sit on the JPEG blocks, wherever the layer and the selection start). The preview
    asks with the same context, so it is exactly what the run produces."""
    _, ox, oy = drawable.get_offsets()
    x, y, w, h = regions.grow_to_grid((inner.x, inner.y, inner.w, inner.h), regions.RUN_CONTEXT,
                                      drawable.get_width(), drawable.get_height(), (ox, oy))
    return Region(x, y, w, h), (ox + x, oy + y)


def crop(data, outer, inner, pixel_bytes):
    """The bytes of `inner` out of the bytes of `outer`."""
    return regions.crop(data, (outer.x, outer.y, outer.w, outer.h),
                        (inner.x, inner.y, inner.w, inner.h), pixel_bytes)


def keep_alpha(result, original, fmt):
    """The result with the ORIGINAL alpha samples: alpha must stay bit-identical,
    whatever the network or a float round trip would do to it."""
    if not fmt.alpha:
        return result
    out, src = array(fmt.sample), array(fmt.sample)
    out.frombytes(result)
    src.frombytes(original)
    n = fmt.channels
    out[n - 1::n] = src[n - 1::n]
    return out.tobytes()


def to_display(data, region, fmt):
    """Any of our formats as 8-bit RGB for a GdkPixbuf; babl does the conversion."""
    buf = Gegl.Buffer.new(fmt.babl, 0, 0, region.w, region.h)
    rect = Gegl.Rectangle.new(0, 0, region.w, region.h)
    buf.set(rect, fmt.babl, data)
    rgb = bytes(buf.get(rect, 1.0, "R'G'B' u8", Gegl.AbyssPolicy.CLAMP))
    return GdkPixbuf.Pixbuf.new_from_bytes(GLib.Bytes.new(rgb), GdkPixbuf.Colorspace.RGB,
                                           False, 8, region.w, region.h, region.w * 3)


def the_layer(drawables):
    """The one pixel layer we can filter, or Refused with what to do instead."""
    if len(drawables) != 1:
        raise Refused("Select exactly one layer, then run %s again." % TITLE)
    drawable = drawables[0]
    if drawable.is_group_layer():
        raise Refused("%s works on pixel layers, not on layer groups. Select a layer "
                      "inside the group, or merge the group first." % TITLE)
    if not drawable.is_layer() or drawable.is_layer_mask():
        raise Refused("%s works on image layers only, not on layer masks or channels. "
                      "Select the layer itself in the Layers dialog." % TITLE)
    refusal = non_raster_refusal(drawable)
    if refusal:
        raise Refused(refusal)
    if drawable.is_indexed():
        raise Refused("%s needs an RGB or grayscale image. Use Image > Mode > RGB first."
                      % TITLE)
    return drawable


# Layers whose pixels GIMP renders from something else (text, a path, a linked
# file): writing pixels into them would throw that source away or be undone by
# the next render. GIMP 3.0 has only text layers; 3.2 adds vector and link
# layers, hence the getattr.
NON_RASTER = [
    ("is_text_layer", "a text layer",
     "Use Layer > Discard Text Information (or Layer > Rasterize in GIMP 3.2) first, "
     "or pick a raster layer."),
    ("is_vector_layer", "a vector layer",
     "Use Layer > Rasterize first, or pick a raster layer."),
    ("is_link_layer", "a link layer (its pixels come from another file)",
     "Use Layer > Rasterize first, or pick a raster layer."),
]


def non_raster_refusal(drawable):
    """What to tell the user when the layer is not made of pixels, else None."""
    for method, what, todo in NON_RASTER:
        test = getattr(drawable, method, None)
        if test is not None and test():
            return "%s works on raster layers; '%s' is %s. %s" % (
                TITLE, drawable.get_name(), what, todo)
    return None


def qf_hints(image):
    """What the image knows about its JPEG origin, for the worker's QF detection:
    first the loader's jpeg-settings parasite, then the original file."""
    hints = {}
    parasite = image.get_parasite("jpeg-settings")
    if parasite is not None:
        hints["jpeg_settings"] = bytes(parasite.get_data()).hex()
    gfile = image.get_imported_file() or image.get_file()
    path = gfile.get_path() if gfile is not None else None
    if path:
        hints["source_path"] = path
    return hints


def write_back(image, drawable, inner, fmt, pixels, new_layer):
    """Through the shadow buffer, so GIMP blends by the selection (feathering
    included) and records one undo step named for the filter."""
    image.undo_group_start()
    target = None
    try:
        target = result_layer(image, drawable) if new_layer else drawable
        shadow = target.get_shadow_buffer()
        shadow.set(inner.rect(), fmt.babl, pixels)
        shadow.flush()
        target.merge_shadow(True)
        target.update(inner.x, inner.y, inner.w, inner.h)
    except Exception:
        if new_layer and target is not None:
            image.remove_layer(target)   # no half-made result left behind
        raise
    finally:
        image.undo_group_end()
    Gimp.displays_flush()


def result_layer(image, drawable):
    """A copy of the layer right above it, to receive the result."""
    layer = drawable.copy()
    layer.set_name("%s (JPEG artifacts removed)" % drawable.get_name())
    image.insert_layer(layer, drawable.get_parent(), image.get_item_position(drawable))
    return layer
