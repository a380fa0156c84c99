"""Contract limits (LLPS v0.1 §3–§5) and local validation with the relay's error codes."""

from __future__ import annotations

import unicodedata

from .errors import ValidationError

#: Largest payload in bytes (64 KiB).
MAX_PAYLOAD = 65_536
#: Largest tenant in bytes.
MAX_TENANT = 255
#: Largest channel or pattern in bytes.
MAX_NAME = 255


def _forbidden(ch: str) -> bool:
    # The relay refuses Unicode control characters and whitespace.
    return ch.isspace() or unicodedata.category(ch) == "Cc"


def check_tenant(tenant: str) -> None:
    """Raises :class:`ValidationError` ``invalid_tenant`` unless 1–255 bytes, no ``:``, whitespace or controls."""
    if not isinstance(tenant, str) or not tenant:
        raise ValidationError("invalid_tenant", "tenant is empty: give the tenant id from your ticket")
    n = len(tenant.encode())
    if n > MAX_TENANT:
        raise ValidationError("invalid_tenant", f"tenant is {n} bytes long, the maximum is {MAX_TENANT}")
    if ":" in tenant:
        raise ValidationError("invalid_tenant", f"tenant {tenant!r} contains ':'")
    if any(_forbidden(c) for c in tenant):
        raise ValidationError("invalid_tenant", f"tenant {tenant!r} contains whitespace or a control character")


def _check_name(name: str, wildcards: bool) -> "str | None":
    if not isinstance(name, str) or not name:
        return "name is empty"
    n = len(name.encode())
    if n > MAX_NAME:
        return f"name is {n} bytes long, the maximum is {MAX_NAME}"
    segs = name.split(".")
    for i, seg in enumerate(segs):
        segment = i + 1
        if not seg:
            return f"segment {segment} is empty (no leading, trailing or doubled '.')"
        if any(_forbidden(c) for c in seg):
            return f"segment {segment} contains whitespace or a control character"
        if "*" not in seg and "#" not in seg:
            continue
        if not wildcards:
            return f"segment {segment} contains '*' or '#': a channel is concrete, wildcards belong in patterns"
        if seg == "*":
            continue
        if seg == "#":
            if i == len(segs) - 1:
                continue
            return f"segment {segment} is '#' but is not the last segment: '#' is only allowed at the end"
        return f"segment {segment} mixes '*' or '#' with other characters: a wildcard must be a whole segment"
    return None


def check_pattern(pattern: str) -> None:
    """Raises :class:`ValidationError` ``invalid_pattern`` unless valid (``*`` one segment, final ``#`` zero or more)."""
    why = _check_name(pattern, True)
    if why:
        raise ValidationError("invalid_pattern", f"invalid pattern {pattern!r}: {why}")


def check_channel(channel: str) -> None:
    """Raises :class:`ValidationError` ``invalid_channel`` unless a valid concrete channel."""
    why = _check_name(channel, False)
    if why:
        raise ValidationError("invalid_channel", f"invalid channel {channel!r}: {why}")


def check_payload(payload: bytes) -> None:
    """Raises :class:`ValidationError` ``payload_too_large`` above :data:`MAX_PAYLOAD`."""
    if len(payload) > MAX_PAYLOAD:
        raise ValidationError(
            "payload_too_large",
            f"the payload is {len(payload)} bytes (at most {MAX_PAYLOAD}): split it or send a reference",
        )


def matches(pattern: str, channel: str) -> bool:
    """True when ``pattern`` matches ``channel`` (both valid)."""
    p = pattern.split(".")
    c = channel.split(".")
    for i, seg in enumerate(p):
        if seg == "#" and i == len(p) - 1:
            return True
        if i >= len(c) or (seg != "*" and seg != c[i]):
            return False
    return len(p) == len(c)
