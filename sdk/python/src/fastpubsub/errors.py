"""Errors. Each is a :class:`FastPubSubError` with a machine-readable ``code``; the class
says whose fault it is:

- :class:`ValidationError`: refused locally, nothing was sent (fix the call);
- :class:`RelayError`: the relay answered ``ERR:`` to this call;
- :class:`HandshakeError`: the relay refused the connection (bad, expired, revoked ticket…);
- :class:`AccessEndedError`: the relay ended a live connection's access (revoked/expired);
- :class:`ConnectionLostError` / :class:`RequestTimeoutError`: network trouble;
- :class:`ClosedError`: the application closed the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


class FastPubSubError(Exception):
    """Base class of every error of this package."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        #: Machine-readable reason, e.g. ``permission_denied``.
        self.code = code


class ValidationError(FastPubSubError, ValueError):
    """The call was refused locally; nothing was sent."""


class RelayError(FastPubSubError):
    """The relay refused the command or publish with an ``ERR:`` line."""

    def __init__(self, raw: str, parsed: "ParsedErr") -> None:
        super().__init__(parsed.code, f"relay refused: {raw}")
        #: The full text after ``ERR:``.
        self.raw = raw
        #: ``SUB``, ``UNSUB`` or ``PUB`` when the relay named the command.
        self.command = parsed.command
        self.tenant = parsed.tenant
        #: Pattern (SUB/UNSUB) or channel (PUB) the refusal names.
        self.target = parsed.target
        #: The relay's explanation, if any.
        self.detail = parsed.detail


class HandshakeError(FastPubSubError):
    """The relay refused the WebSocket handshake (401 bad/expired/revoked ticket, 403, 503)."""

    def __init__(self, url: str, status: Optional[int], reason: Optional[str]) -> None:
        msg = f"the relay at {url} refused the connection: HTTP {status}" + (f": {reason}" if reason else "")
        super().__init__("handshake_refused", msg)
        self.status = status
        self.reason = reason


class AccessEndedError(FastPubSubError):
    """The relay ended this connection's access: the ticket was revoked or expired."""

    def __init__(self, why: str) -> None:
        super().__init__("access_ended", f"the relay ended this connection's access: {why}; get a new ticket")


class ConnectionLostError(FastPubSubError, ConnectionError):
    """The connection was lost or could not be opened."""

    def __init__(self, message: str) -> None:
        super().__init__("connection_lost", message)


class RequestTimeoutError(FastPubSubError, TimeoutError):
    """An answer from the relay did not come in time."""

    def __init__(self, message: str) -> None:
        super().__init__("timeout", message)


class ClosedError(FastPubSubError):
    """The client was closed by the application."""

    def __init__(self, message: str = "the client is closed") -> None:
        super().__init__("closed", message)


@dataclass
class ParsedErr:
    """An ``ERR:`` text split as ``code[:CMD:tenant:target[:detail]]``."""

    code: str
    command: Optional[str] = None
    tenant: Optional[str] = None
    rest: Optional[str] = None
    target: Optional[str] = None
    detail: Optional[str] = None


def parse_err(text: str) -> ParsedErr:
    """Splits the text after ``ERR:``; target/detail are a guess when a name contains ``:``."""
    parts = text.split(":")
    code = parts[0]
    if len(parts) >= 4 and parts[1] in ("SUB", "UNSUB", "PUB"):
        return ParsedErr(
            code=code,
            command=parts[1],
            tenant=parts[2],
            rest=":".join(parts[3:]),
            target=parts[3],
            detail=":".join(parts[4:]) if len(parts) > 4 else None,
        )
    return ParsedErr(code=code, detail=":".join(parts[1:]) if len(parts) > 1 else None)


def err_names(err: ParsedErr, command: str, tenant: str, target: str) -> Optional[str]:
    """The detail text if ``err`` names exactly this command, tenant and target, else None."""
    if err.command != command or err.tenant != tenant or err.rest is None:
        return None
    if err.rest == target:
        return ""
    if err.rest.startswith(target + ":"):
        return err.rest[len(target) + 1 :]
    return None


def relay_error(raw: str, parsed: ParsedErr, target: str, detail: str) -> RelayError:
    return RelayError(
        raw,
        ParsedErr(parsed.code, parsed.command, parsed.tenant, parsed.rest, target, detail or None),
    )
