"""Token REST calls (LLPS v0.1 §1) with the MASTER token: server side only.

Never give the master token to a client; give clients the ``AT_…`` tickets these return.
Uses only the standard library (``urllib`` in a worker thread).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import re
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional, Sequence, Union

from .errors import FastPubSubError

Expiry = Union[_dt.datetime, str, int, float]


class RestError(FastPubSubError):
    """A non-2xx answer: ``status`` and the relay's ``body`` say why."""

    def __init__(self, status: int, body: str, what: str) -> None:
        super().__init__("unauthorized" if status == 401 else f"http_{status}",
                         f"{what} failed: HTTP {status}: {body.strip() or '(no body)'}")
        self.status = status
        self.body = body


def rfc3339(d: _dt.datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` in UTC."""
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return d.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _expiry(v: Expiry) -> str:
    if isinstance(v, (int, float)):
        return rfc3339(_dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=v))
    if isinstance(v, _dt.datetime):
        return rfc3339(v)
    return v


def grant(tenants: Sequence[str], pub: Sequence[str] = (), sub: Sequence[str] = ()) -> Dict[str, List[str]]:
    """One tenant grant: publish and subscribe patterns for these tenants."""
    return {"tenant_ids": list(tenants), "allow_channels_pub": list(pub), "allow_channels_sub": list(sub)}


def token_id(token: str) -> str:
    """The id part of ``AT_<id>_<secret>`` (the id ends at the first ``_``; the secret is opaque)."""
    m = re.fullmatch(r"AT_([^_]+)_.+", token, re.S)
    if not m:
        raise ValueError("not an access ticket: expected AT_<id>_<secret>")
    return m.group(1)


class TokenApi:
    """The token endpoints of an issuing relay.

    >>> api = TokenApi("http://127.0.0.1:8080", master_token)
    >>> ticket = await api.get_token([grant(["dev"], pub=["public.#"], sub=["public.#"])], expires_at=3600)
    """

    def __init__(self, api_base: str, master_token: str, *, timeout: float = 10.0) -> None:
        self.api_base = api_base.rstrip("/")
        self._master = master_token
        self._timeout = timeout

    def _call_sync(self, method: str, path: str, body: Any, what: str) -> Any:
        req = urllib.request.Request(
            self.api_base + path,
            data=json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {self._master}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as r:  # noqa: S310 (the caller's URL)
                text = r.read().decode(errors="replace")
                status = r.status
        except urllib.error.HTTPError as e:
            raise RestError(e.code, e.read().decode(errors="replace"), what) from None
        except (urllib.error.URLError, OSError) as e:
            raise RestError(0, str(e), what) from None
        try:
            return json.loads(text)
        except ValueError:
            raise RestError(status, text, f"{what} (answer is not JSON)") from None

    async def _call(self, method: str, path: str, body: Any, what: str) -> Any:
        return await asyncio.to_thread(self._call_sync, method, path, body, what)

    async def get_token(self, grants: Sequence[Dict[str, Any]], expires_at: Expiry, *,
                        created_by: str = "fastpubsub-python", description: Optional[str] = None,
                        **rights: Any) -> str:
        """``POST /v1/get-token``: a ticket for ``grants`` until ``expires_at`` (datetime, RFC 3339,
        or seconds from now; at most 24 h). Extra rights: ``allow_ip_masks``, ``allowed_ws_origin``,
        ``allow_protocols``, ``ingress_kb_per_sec``, ``egress_kb_per_sec``."""
        right = {"tenant_grants": list(grants), "expires_at": _expiry(expires_at), **rights}
        body: Dict[str, Any] = {"right": right, "created_by": created_by}
        if description is not None:
            body["description"] = description
        r = await self._call("POST", "/v1/get-token", body, "get-token")
        if not isinstance(r, dict) or not isinstance(r.get("token"), str):
            raise RestError(200, json.dumps(r), "get-token (no token in the answer)")
        return str(r["token"])

    async def refresh_token(self, token: str, expires_at: Expiry) -> _dt.datetime:
        """``PUT /v1/refresh-token``: the same ticket stays valid until ``expires_at``; returns the new expiry."""
        r = await self._call("PUT", "/v1/refresh-token",
                             {"token_id": token_id(token), "expires_at": _expiry(expires_at)}, "refresh-token")
        return _dt.datetime.strptime(r["new_expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.timezone.utc)

    async def revoke_token(self, token: str) -> None:
        """``DELETE /v1/revoke-token``: final; live connections on it are closed within about a second."""
        await self._call("DELETE", "/v1/revoke-token", {"token": token}, "revoke-token")
