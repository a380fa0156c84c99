"""Edge discovery (LLPS v0.1 §1): fetch the bootstrap edge list, ``GET /ping`` every
candidate in parallel, pick the fastest answer."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Union

from .errors import ConnectionLostError

_HOST = re.compile(r"^[A-Za-z0-9.\-:\[\]]+$")


@dataclass
class Edge:
    host: str
    rest_url: str
    ws_url: str
    wt_url: str
    lat: Optional[float] = None
    lon: Optional[float] = None
    priority: Optional[float] = None
    #: Measured ``/ping`` time in seconds (set by :func:`rank_edges`).
    rtt: Optional[float] = None


def parse_bootstrap(doc: Any, secure: bool = True) -> List[Edge]:
    """Edges of a bootstrap document; ``secure`` picks https/wss, else http/ws (labs)."""
    edges = doc.get("edges") if isinstance(doc, dict) else None
    if not isinstance(edges, list):
        raise ValueError('bootstrap document has no "edges" array')
    http, ws = ("https", "wss") if secure else ("http", "ws")
    out: List[Edge] = []
    for e in edges:
        o = {"host": e} if isinstance(e, str) else e
        if not isinstance(o, dict) or not isinstance(o.get("host"), str) or not _HOST.match(o["host"]):
            continue  # skip malformed entries
        h = o["host"]

        def num(k: str) -> Optional[float]:
            v = o.get(k)
            return float(v) if isinstance(v, (int, float)) else None

        out.append(Edge(h, f"{http}://{h}", f"{ws}://{h}/ws", f"https://{h}/wt", num("lat"), num("lon"), num("priority")))
    if not out:
        raise ValueError("bootstrap document lists no usable edge")
    return out


def _get(url: str, timeout: float) -> "tuple[int, bytes]":
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (the caller's URL)
        return r.status, r.read(65536)


async def discover_edges(bootstrap_url: str, *, timeout: float = 5.0) -> List[Edge]:
    """Fetches and parses a bootstrap document (``http://`` gives http/ws edges for labs)."""
    try:
        status, body = await asyncio.to_thread(_get, bootstrap_url, timeout)
    except OSError as e:
        raise ConnectionLostError(f"bootstrap {bootstrap_url}: {e}") from None
    if status != 200:
        raise ConnectionLostError(f"bootstrap {bootstrap_url}: HTTP {status}")
    return parse_bootstrap(json.loads(body), secure=not bootstrap_url.startswith("http://"))


async def ping_edge(rest_url: str, *, timeout: float = 5.0) -> float:
    """``GET /ping``; returns the time to a ``pong`` answer in seconds."""
    t0 = time.monotonic()
    try:
        status, body = await asyncio.to_thread(_get, rest_url + "/ping", timeout)
    except OSError as e:
        raise ConnectionLostError(f"{rest_url}/ping: {e}") from None
    if status != 200 or body.strip() != b"pong":
        raise ConnectionLostError(f"{rest_url}/ping answered {status} {body[:64]!r}")
    return time.monotonic() - t0


async def rank_edges(edges: Sequence[Edge], *, timeout: float = 5.0) -> List[Edge]:
    """Pings every edge in parallel; returns those that answered, fastest first."""
    results = await asyncio.gather(*(ping_edge(e.rest_url, timeout=timeout) for e in edges), return_exceptions=True)
    ok = []
    for e, r in zip(edges, results):
        if isinstance(r, float):
            e.rtt = r
            ok.append(e)
    return sorted(ok, key=lambda e: e.rtt or 0.0)


async def nearest_edge(bootstrap: Union[str, Sequence[Edge]], *, timeout: float = 5.0) -> Edge:
    """The fastest edge of a bootstrap document URL (or of a list of edges)."""
    edges = await discover_edges(bootstrap, timeout=timeout) if isinstance(bootstrap, str) else list(bootstrap)
    ranked = await rank_edges(edges, timeout=timeout)
    if not ranked:
        raise ConnectionLostError("no edge answered /ping (tried " + ", ".join(e.host for e in edges) + ")")
    return ranked[0]
