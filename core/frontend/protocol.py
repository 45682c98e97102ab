"""The worker protocol: frames of a JSON header plus raw bytes, the pixel formats,
the message and error kinds, and the protocol's version (docs/contracts.md).

Standard library only: the worker imports it from here, and the plug-ins get it as
part of the fbcnn_frontend package, so neither side can drift from the other.
"""
from __future__ import annotations

import json
import struct

# Raised on any change that an older client or worker would misread; the client
# compares it with the worker's `hello` before its first request.
PROTOCOL_VERSION = 1

# Client-side error kinds, besides the worker's own (bad-request, missing-model,
# out-of-memory, cancelled, internal).
NOT_CONFIGURED = "not-configured"
TIMEOUT = "timeout"
WORKER_DIED = "worker-died"
PROTOCOL = "protocol"
VERSION_MISMATCH = "version-mismatch"

DTYPES = {"u8": 1, "u16": 2, "f16": 2, "f32": 4}
ORDERS = ("RGB", "RGBA", "BGRA", "Y", "YA")
MAX_HEADER = 16 << 20  # a longer header means the stream is out of sync
# The most payload any frame may carry: a 400 MP float RGBA layer is 6.4 GB. A frame
# that describes its pixels may carry no more than they need.
MAX_PAYLOAD = 8 << 30
_LEN = struct.Struct(">I")


class FrameError(Exception):
    """A frame that cannot be parsed. ``fatal`` means the stream is out of sync;
    ``discard`` counts payload bytes still in the stream that the reader refused to
    hold: skip them (in small pieces) to stay in step."""

    def __init__(self, message: str, fatal: bool = False, discard: int = 0, header=None):
        super().__init__(message)
        self.fatal = fatal
        self.discard = discard
        self.header = header  # the parsed header, when the payload was the problem


# ---------------------------------------------------------------- framing

def _read_exact(stream, n: int) -> bytes | None:
    """n bytes, or None at EOF before the first byte; raises EOFError when cut inside."""
    if n == 0:
        return b""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = stream.readinto(view[got:])
        if not k:
            if got == 0:
                return None
            raise EOFError(f"stream ended after {got} of {n} bytes")
        got += k
    return bytes(buf) if n < 4096 else buf


def read_frame(stream):
    """Next (header, payload) from a binary stream, or None at a clean EOF.

    Raises EOFError for a frame cut short, FrameError for a header that is not a
    JSON object (its bytes are consumed; no payload is assumed, so the stream
    stays in step as long as the sender meant none).
    """
    raw = _read_exact(stream, 4)
    if raw is None:
        return None
    if len(raw) < 4:
        raise EOFError("stream ended inside a frame length")
    (n,) = _LEN.unpack(raw)
    if n > MAX_HEADER:
        raise FrameError(f"frame header of {n} bytes is larger than {MAX_HEADER}; "
                         "the stream is out of sync", fatal=True)
    body = _read_exact(stream, n)
    if body is None and n:
        raise EOFError("stream ended before a frame header")
    try:
        header = json.loads(bytes(body or b"").decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise FrameError(f"frame header is not valid UTF-8 JSON: {e}") from None
    if not isinstance(header, dict):
        raise FrameError(f"frame header must be a JSON object, not {type(header).__name__}")
    nbytes = header.get("nbytes", 0) or 0
    if not isinstance(nbytes, int) or isinstance(nbytes, bool) or nbytes < 0:
        raise FrameError(f"nbytes must be a non-negative integer, not {nbytes!r}")
    limit = payload_limit(header)
    if nbytes > limit:
        raise FrameError(f"a payload of {nbytes} bytes is more than this frame may carry "
                         f"({limit} bytes); refused before reading it", discard=nbytes,
                         header=header)
    try:
        payload = _read_exact(stream, nbytes)
    except MemoryError:
        raise FrameError(f"not enough memory to take a payload of {nbytes} bytes",
                         discard=nbytes, header=header) from None
    if payload is None and nbytes:
        raise EOFError(f"stream ended before a payload of {nbytes} bytes")
    return header, payload if payload is not None else b""


def plain(o):
    """What json cannot encode, as plain JSON values (a ``default`` for json.dumps):
    numpy scalars and arrays through tolist(), bytes as hex, sets and tuples as lists,
    anything else (a path) as its text. Duck-typed: this module has no numpy."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (bytes, bytearray)):
        return o.hex()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def write_frame(stream, header: dict, *payloads) -> None:
    """Write one frame; ``nbytes`` is set from the payload parts, which are not joined."""
    views = [p if isinstance(p, memoryview) else memoryview(p) for p in payloads]
    header = dict(header, nbytes=sum(v.nbytes for v in views))
    body = json.dumps(header, separators=(",", ":"), default=plain).encode("utf-8")
    stream.write(_LEN.pack(len(body)) + body)
    for v in views:
        if v.nbytes:
            stream.write(v.cast("B") if v.format != "B" else v)
    stream.flush()


# ---------------------------------------------------------------- pixel formats

def pixel_format(width: int, height: int, dtype: str, order: str) -> dict:
    """The pixel descriptor of the protocol, checked."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {list(ORDERS)}, not {order!r}")
    if int(width) < 1 or int(height) < 1:
        raise ValueError(f"image size must be positive, not {width}x{height}")
    return {"width": int(width), "height": int(height), "dtype": dtype, "order": order}


def payload_limit(header: dict) -> int:
    """The most payload bytes a frame with this header may carry: what its pixels
    (and their selection mask) need when it describes them, never over MAX_PAYLOAD."""
    w, h = header.get("width"), header.get("height")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (w, h)):
        return MAX_PAYLOAD  # no usable size: the worker's own checks say what is wrong
    try:
        need = frame_nbytes(header) + (w * h if header.get("mask") is True else 0)
    except (KeyError, TypeError):
        return MAX_PAYLOAD
    return min(need, MAX_PAYLOAD)


def skip(stream, n: int, chunk: int = 1 << 20) -> bool:
    """Read and drop n bytes in pieces (no n-byte buffer); False at EOF first."""
    while n > 0:
        got = stream.read(min(chunk, n))
        if not got:
            return False
        n -= len(got)
    return True


def frame_nbytes(fmt: dict) -> int:
    """Bytes of pixel data that a descriptor calls for."""
    return fmt["width"] * fmt["height"] * len(fmt["order"]) * DTYPES[fmt["dtype"]]


