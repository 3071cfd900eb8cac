"""The wire protocol between the app (ZeroMQ DEALER) and the inference server (ROUTER). See docs/protocol.md.

A message is one or two ZeroMQ frames: a msgpack header (a map with the protocol version and a `kind`),
then, for audio and image messages, the raw little-endian array bytes whose dtype and shape the header
names. Nothing from the wire is ever unpickled or evaluated. This module imports no torch: both sides use it.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlparse

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # enforced on both ends with ZMQ_MAXMSGSIZE; a 1024x1024 RGB frame fits
MAX_HEADER_BYTES = 16 * 1024

# client -> server
HELLO = "hello"        # {client: name, kiosk: id, classes: [..] or None}: start (or restart) a session
AUDIO = "audio"        # {id, sample_rate} + float32 mono samples: classify this window
CREDIT = "credit"      # {last_frame, window}: frames may be sent while fewer than `window` follow last_frame
STEER = "steer"        # {class, intensity, layer}: dream this class whatever is heard (None: what is heard)
PING = "ping"          # {t}: heartbeat; the server answers PONG (also to a kiosk it does not serve: a load probe)
IMAGE = "image"        # {label, confidence} + uint8 RGB image: the picture on screen, to dream on from (a hand-off)
# server -> client
RESULT = "result"      # {id, label, confidence, top, dbfs, trained, ms}: what the window sounded like
FRAME = "frame"        # {id, label, source} + uint8 RGB image: a dream keyframe
PONG = "pong"          # {t, kiosks, keyframes_per_s, load}: heartbeat answer, with the server's load
ERROR = "error"        # {code, message, id?}: the request was refused; the connection stays up

KINDS = {HELLO, AUDIO, CREDIT, STEER, PING, IMAGE, RESULT, FRAME, PONG, ERROR}
ARRAY_KINDS = {AUDIO: "<f4", FRAME: "|u1", IMAGE: "|u1"}  # the only payloads there are, each with exactly one dtype


class ProtocolError(ValueError):
    """A message that breaks the protocol. `code` is sent back to the peer in an ERROR message."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


def encode(kind: str, payload: np.ndarray | None = None, **fields) -> list[bytes]:
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}")
    header = {"v": PROTOCOL_VERSION, "kind": kind, **fields}
    if kind not in ARRAY_KINDS:
        return [msgpack.packb(header)]
    array = np.ascontiguousarray(payload, dtype=np.dtype(ARRAY_KINDS[kind]))
    header.update(dtype=array.dtype.str, shape=list(array.shape))
    return [msgpack.packb(header), array.tobytes()]


def decode(parts: list[bytes]) -> tuple[dict, np.ndarray | None]:
    """Header and payload of a message, or ProtocolError saying exactly what is wrong with it."""
    if not parts or len(parts) > 2:
        raise ProtocolError("bad_frames", f"expected 1 or 2 frames, got {len(parts)}")
    if sum(len(p) for p in parts) > MAX_MESSAGE_BYTES:
        raise ProtocolError("too_large", f"message exceeds {MAX_MESSAGE_BYTES} bytes")
    if len(parts[0]) > MAX_HEADER_BYTES:
        raise ProtocolError("bad_header", f"header exceeds {MAX_HEADER_BYTES} bytes")
    try:
        header = msgpack.unpackb(parts[0], raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for garbage
        raise ProtocolError("bad_header", f"header is not msgpack ({type(exc).__name__})") from exc
    if not isinstance(header, dict):
        raise ProtocolError("bad_header", "header is not a map")
    if header.get("v") != PROTOCOL_VERSION:
        raise ProtocolError("bad_version", f"protocol version {header.get('v')!r}, this side speaks {PROTOCOL_VERSION}")
    kind = header.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:  # a list or a map would not even hash
        raise ProtocolError("bad_kind", f"unknown message kind {kind!r}")
    if kind not in ARRAY_KINDS:
        if len(parts) != 1:
            raise ProtocolError("bad_frames", f"{kind} carries no payload")
        return header, None
    if len(parts) != 2:
        raise ProtocolError("bad_frames", f"{kind} needs a payload frame")
    return header, _array(header, parts[1], ARRAY_KINDS[kind])


def _array(header: dict, buffer: bytes, dtype: str) -> np.ndarray:
    if header.get("dtype") != dtype:
        raise ProtocolError("bad_dtype", f"{header['kind']} must be {dtype}, got {header.get('dtype')!r}")
    shape = header.get("shape")
    if not (isinstance(shape, list) and 1 <= len(shape) <= 3
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape)):
        raise ProtocolError("bad_shape", f"shape must be 1-3 positive ints, got {shape!r}")
    itemsize = np.dtype(dtype).itemsize
    if int(np.prod(shape)) * itemsize != len(buffer):
        raise ProtocolError("bad_shape", f"shape {shape} needs {int(np.prod(shape)) * itemsize} bytes, "
                                         f"payload has {len(buffer)}")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def check_audio(header: dict, samples: np.ndarray, expected_rate: int, max_samples: int) -> None:
    """What the server needs of an AUDIO message beyond its framing."""
    if header.get("sample_rate") != expected_rate:
        raise ProtocolError("bad_rate", f"sample_rate must be {expected_rate}, got {header.get('sample_rate')!r}")
    if samples.ndim != 1 or not 0 < samples.size <= max_samples:
        raise ProtocolError("bad_shape", f"audio must be mono with 1..{max_samples} samples, got {samples.shape}")
    if not np.all(np.isfinite(samples)):
        raise ProtocolError("bad_samples", "audio contains NaN or infinite samples")


def check_frame(shape) -> None:
    if len(shape) != 3 or shape[2] != 3:
        raise ProtocolError("bad_shape", f"frame must be HxWx3, got {shape}")


def check_image(header: dict, image: np.ndarray, allowed_labels) -> tuple[str, float]:
    """What the server needs of an IMAGE (hand-off) message beyond its framing; returns its label and confidence."""
    check_frame(image.shape)
    if not (16 <= min(image.shape[:2]) and max(image.shape[:2]) <= 4096):
        raise ProtocolError("bad_shape", f"image sides must be within 16..4096 pixels, got {list(image.shape[:2])}")
    label = header.get("label")
    if not isinstance(label, str) or label not in allowed_labels:
        raise ProtocolError("bad_field", f"label {label!r} is not in this client's class set")
    confidence = header.get("confidence", 0.0)
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.0 <= confidence <= 1.0:
        raise ProtocolError("bad_field", f"confidence must be a number within 0..1, got {confidence!r}")
    return label, float(confidence)


def is_loopback(address: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on a loopback host; "*" and every interface name are not."""
    url = urlparse(address)
    if url.scheme in ("ipc", "inproc"):
        return True
    if url.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(url.hostname or "").is_loopback
    except ValueError:
        return False
