"""Binary frames of LLPS v0.1 §3: publish v2 (client → relay) and deliver (relay → client)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import List, Literal

PublishMode = Literal["broadcast", "one-low-latency", "one-random"]
_MODES = {"broadcast": 0, "one-low-latency": 1, "one-random": 2}


def encode_publish(mode: str, tenant: str, channel: str, payload: bytes) -> bytes:
    """``0x02 | mode | str16 tenant | str16 channel | payload``."""
    m = _MODES.get(mode)
    if m is None:
        raise ValueError(f"unknown publish mode {mode!r}: use broadcast, one-low-latency or one-random")
    t = tenant.encode()
    c = channel.encode()
    return b"".join((bytes((2, m)), struct.pack(">H", len(t)), t, struct.pack(">H", len(c)), c, payload))


class FrameError(ValueError):
    """A deliver frame that does not follow the contract."""


@dataclass
class Deliver:
    tenant: str
    channel: str
    payload: bytes
    patterns: List[str]


def decode_deliver(frame: bytes) -> Deliver:
    """``0x01 | str16 tenant | str16 channel | u32 len | payload | u16 n | n × str16``, nothing after."""
    mv = memoryview(frame)
    pos = 0

    def need(n: int, what: str) -> None:
        if pos + n > len(frame):
            raise FrameError(f"bad deliver frame: truncated in {what} ({len(frame)} bytes)")

    def str16(what: str) -> str:
        nonlocal pos
        need(2, what)
        (n,) = struct.unpack_from(">H", frame, pos)
        pos += 2
        if n == 0:
            raise FrameError(f"bad deliver frame: empty {what}")
        need(n, what)
        try:
            s = bytes(mv[pos : pos + n]).decode()
        except UnicodeDecodeError:
            raise FrameError(f"bad deliver frame: {what} is not UTF-8") from None
        pos += n
        return s

    need(1, "tag")
    if frame[0] != 1:
        raise FrameError(f"bad deliver frame: unknown tag 0x{frame[0]:02x}")
    pos = 1
    tenant = str16("tenant")
    channel = str16("channel")
    need(4, "payload length")
    (n,) = struct.unpack_from(">I", frame, pos)
    pos += 4
    need(n, "payload")
    payload = bytes(mv[pos : pos + n])
    pos += n
    need(2, "pattern count")
    (count,) = struct.unpack_from(">H", frame, pos)
    pos += 2
    if count == 0:
        raise FrameError("bad deliver frame: no pattern")
    patterns = [str16("pattern") for _ in range(count)]
    if pos != len(frame):
        raise FrameError(f"bad deliver frame: {len(frame) - pos} trailing bytes")
    return Deliver(tenant, channel, payload, patterns)
