"""The asyncio client: one logical connection to a relay that survives reconnects."""

from __future__ import annotations

import asyncio
import collections
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Deque, Dict, Generator, List, Optional, Set, Tuple, TypeVar, Union

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .errors import (
    AccessEndedError,
    ClosedError,
    ConnectionLostError,
    FastPubSubError,
    HandshakeError,
    RelayError,
    RequestTimeoutError,
    err_names,
    parse_err,
    relay_error,
)
from .frames import FrameError, PublishMode, decode_deliver, encode_publish
from .limits import check_channel, check_pattern, check_payload, check_tenant

TokenSource = Union[str, Callable[[], Union[str, Awaitable[str]]]]
_T = TypeVar("_T")


@dataclass(frozen=True)
class Message:
    """One delivered message, once per matching subscription pattern."""

    tenant: str
    channel: str
    #: The subscription pattern that matched, exactly as subscribed.
    pattern: str
    payload: bytes

    def text(self) -> str:
        """The payload as UTF-8 text."""
        return self.payload.decode()

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)


@dataclass
class QueueStats:
    """Counters of one subscription: received, dropped (queue full, oldest first), queued now, bound."""

    received: int = 0
    dropped: int = 0
    queued: int = 0
    capacity: int = 0


@dataclass
class ClientStats:
    """Counters of a client."""

    delivered: int = 0
    duplicates_dropped: int = 0
    unroutable: int = 0
    reconnects: int = 0


@dataclass
class Reconnect:
    """Full-jitter exponential backoff between reconnect attempts."""

    initial_delay: float = 0.25
    max_delay: float = 10.0
    max_attempts: Optional[int] = None


class Subscription:
    """An async iterator of :class:`Message` (or a callback). The queue is bounded: when it is
    full the OLDEST message is dropped and counted in :attr:`stats`."""

    def __init__(self, client: "Client", tenant: str, pattern: str, queue_size: int,
                 on_message: Optional[Callable[[Message], Any]]) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._client = client
        self.tenant = tenant
        self.pattern = pattern
        self._on_message = on_message
        self._queue: Deque[Message] = collections.deque()
        self._capacity = queue_size
        self._received = 0
        self._dropped = 0
        self._ended = False
        self._error: Optional[BaseException] = None
        self._wakeup = asyncio.Event()

    def _push(self, m: Message) -> None:
        if self._ended:
            return
        self._received += 1
        if self._on_message is not None:
            try:
                self._on_message(m)
            except Exception as e:  # a callback's bug must not kill the connection
                self._client._emit_error(e)
            return
        if len(self._queue) >= self._capacity:
            self._queue.popleft()
            self._dropped += 1
        self._queue.append(m)
        self._wakeup.set()

    def _end(self, error: Optional[BaseException] = None) -> None:
        if self._ended:
            return
        self._ended = True
        self._error = error
        self._wakeup.set()

    @property
    def stats(self) -> QueueStats:
        return QueueStats(self._received, self._dropped, len(self._queue),
                          0 if self._on_message else self._capacity)

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Message:
        while True:
            if self._queue:
                return self._queue.popleft()
            if self._ended:
                if self._error is not None:
                    e, self._error = self._error, None
                    raise e
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    async def get(self, timeout: Optional[float] = None) -> Message:
        """The next message; raises :class:`StopAsyncIteration` once ended, ``TimeoutError`` on timeout."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    async def unsubscribe(self) -> None:
        """Stops this subscription (``UNSUB`` once no other local subscription uses the pattern)."""
        await self._client._drop(self)


@dataclass
class _Waiter:
    tenant: str
    target: str
    fut: "asyncio.Future[None]"


@dataclass
class _PingEntry:
    t0: float = 0.0
    waiters: List["asyncio.Future[float]"] = field(default_factory=list)
    publishes: List[_Waiter] = field(default_factory=list)


class _Conn:
    def __init__(self) -> None:
        self.ws: Optional[ClientConnection] = None
        self.url = ""
        self.open = True
        self.sub_waiters: List[_Waiter] = []
        self.unsub_waiters: List[_Waiter] = []
        self.pings: List[_PingEntry] = []
        self.barrier: Optional[_PingEntry] = None
        self.access_ended: Optional[str] = None
        self.outq: "asyncio.Queue[Union[str, bytes, None]]" = asyncio.Queue()
        self.tasks: List["asyncio.Task[None]"] = []
        self.ended = asyncio.Event()

    def send(self, item: Union[str, bytes]) -> None:
        # One writer task per connection keeps frames in call order (publish before its PING).
        self.outq.put_nowait(item)


@dataclass
class _SubEntry:
    tenant: str
    pattern: str
    locals: Set[Subscription]
    ready: "asyncio.Future[None]"
    confirmed: bool = False


class _Overlap:
    """A ``RECONNECT`` move in progress: ``old`` and ``nxt`` both deliver. Each side keeps the
    deliveries (message × pattern) it passed on that the other has not sent yet; one the other
    side already passed on is a duplicate. Per pattern, because the new connection may deliver
    for some patterns before it has every ``OK:SUB``. A payload is kept as its 64-bit hash."""

    BOUND = 65_536  # per side: the overlap is short; past it, duplicates may pass

    def __init__(self, old: _Conn, nxt: _Conn) -> None:
        self.old = old
        self.nxt = nxt
        self.pending: Dict[int, Dict[Tuple[str, str, str, int], int]] = {id(old): {}, id(nxt): {}}

    def first_copy(self, conn: _Conn, k: Tuple[str, str, str, int]) -> bool:
        """True to deliver ``k`` from ``conn``; False for a duplicate of the other side's."""
        theirs = self.pending[id(self.nxt if conn is self.old else self.old)]
        n = theirs.get(k, 0)
        if n > 0:
            if n == 1:
                del theirs[k]
            else:
                theirs[k] = n - 1
            return False
        mine = self.pending[id(conn)]
        if len(mine) < self.BOUND:
            mine[k] = mine.get(k, 0) + 1
        return True


def _key(tenant: str, pattern: str) -> str:
    return f"{tenant}\0{pattern}"


def _silence(fut: "asyncio.Future[Any]") -> None:
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())


class Client:
    """A FastPubSub client; create it with :func:`connect`."""

    def __init__(self, url: Optional[str], token: TokenSource, *, bootstrap: Optional[str] = None,
                 request_timeout: float = 10.0, reconnect: Union[Reconnect, bool] = True,
                 queue_size: int = 1024, move_drain: float = 1.0) -> None:
        if not url and not bootstrap:
            raise TypeError("connect() needs url='ws://HOST/ws' or bootstrap=...")
        if not token:
            raise TypeError("connect() needs token='AT_…' (an access ticket)")
        self._url = url
        self._bootstrap = bootstrap
        self._token = token
        self._timeout = request_timeout
        self._reconnect = Reconnect() if reconnect is True else reconnect
        self._queue_size = queue_size
        self._move_drain = move_drain
        self._conn: Optional[_Conn] = None
        self._overlap: Optional[_Overlap] = None
        self._subs: Dict[str, _SubEntry] = {}
        self._closed_error: Optional[FastPubSubError] = None
        self._recovering: Optional["asyncio.Task[None]"] = None
        self._open_waiters: List["asyncio.Future[_Conn]"] = []
        self._listeners: Dict[str, List[Callable[[Any], Any]]] = {}
        self._closed_event = asyncio.Event()
        #: Counters: delivered frames, duplicates dropped during a move, unroutable, reconnects.
        self.stats = ClientStats()

    # ---- public API --------------------------------------------------------------

    @property
    def url(self) -> Optional[str]:
        """URL of the current connection."""
        return self._conn.url if self._conn else None

    @property
    def closed(self) -> bool:
        return self._closed_error is not None

    @property
    def close_error(self) -> Optional[FastPubSubError]:
        """Why the client ended (``ClosedError`` when the application closed it)."""
        return self._closed_error

    def on(self, event: str, fn: Callable[[Any], Any]) -> Callable[[], None]:
        """Adds a listener for ``reconnecting`` (dict), ``reconnected`` (url), ``error`` (exception)
        or ``close`` (exception or None); returns a function that removes it."""
        self._listeners.setdefault(event, []).append(fn)
        return lambda: self._listeners.get(event, []).remove(fn) if fn in self._listeners.get(event, []) else None

    async def wait_closed(self) -> Optional[FastPubSubError]:
        """Waits until the client ends; returns the error (None when closed by the application)."""
        await self._closed_event.wait()
        return None if isinstance(self._closed_error, ClosedError) else self._closed_error

    async def subscribe(self, tenant: str, pattern: str, *, on_message: Optional[Callable[[Message], Any]] = None,
                        queue_size: Optional[int] = None) -> Subscription:
        """Subscribes; returns once the relay confirmed (``OK:SUB``). Raises :class:`ValidationError`
        (nothing sent) or :class:`RelayError` (e.g. ``permission_denied``)."""
        check_tenant(tenant)
        check_pattern(pattern)
        self._raise_if_closed()
        sub = Subscription(self, tenant, pattern, queue_size or self._queue_size, on_message)
        k = _key(tenant, pattern)
        entry = self._subs.get(k)
        if entry is None:
            fut: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
            _silence(fut)
            entry = _SubEntry(tenant, pattern, set(), fut)
            self._subs[k] = entry
            if self._conn:
                self._send_sub(self._conn, entry)
        entry.locals.add(sub)
        if entry.confirmed:
            return sub
        try:
            await asyncio.wait_for(asyncio.shield(entry.ready), self._timeout)
        except asyncio.TimeoutError:
            self._forget(entry, sub, send_unsub=True)
            raise RequestTimeoutError(f"no answer to SUB:{tenant}:{pattern} within {self._timeout} s") from None
        except BaseException:
            self._forget(entry, sub, send_unsub=False)
            raise
        return sub

    async def unsubscribe(self, tenant: str, pattern: str) -> None:
        """Ends every local subscription to ``pattern`` and sends ``UNSUB``; returns on ``OK:UNSUB``."""
        check_tenant(tenant)
        check_pattern(pattern)
        entry = self._subs.get(_key(tenant, pattern))
        if entry is None:
            return
        for s in list(entry.locals):
            s._end()
        entry.locals.clear()
        await self._unsub_wire(entry)

    async def publish(self, tenant: str, channel: str, payload: Union[bytes, bytearray, memoryview, str], *,
                      mode: PublishMode = "broadcast", unchecked: bool = False) -> None:
        """Publishes; returns once the relay processed it (a shared ``PING`` barrier). Raises
        :class:`ValidationError` (bad names, payload over 65,536 bytes: nothing sent) or
        :class:`RelayError` (e.g. ``permission_denied``). Delivery is fire-and-forget."""
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        if not unchecked:
            check_tenant(tenant)
            check_channel(channel)
            check_payload(data)
        frame = encode_publish(mode, tenant, channel, data)
        conn = await self._when_open()
        fut: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        self._barrier(conn).publishes.append(_Waiter(tenant, channel, fut))
        conn.send(frame)
        await self._wait(fut, f"the confirmation of a publish to {channel}")

    async def ping(self) -> float:
        """Sends ``PING``; returns the round-trip time in seconds."""
        conn = await self._when_open()
        fut: "asyncio.Future[float]" = asyncio.get_running_loop().create_future()
        conn.pings.append(_PingEntry(time.monotonic(), [fut], []))
        conn.send("PING")
        return await self._wait(fut, "PING")

    async def close(self) -> None:
        """Closes the client: iterators end, pending calls raise :class:`ClosedError`."""
        conns = [c for c in (self._conn, self._overlap.old if self._overlap else None) if c]
        self._end(None)
        if conns:
            await asyncio.wait([asyncio.ensure_future(c.ended.wait()) for c in conns], timeout=2.0)

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # ---- internals ---------------------------------------------------------------

    def _emit(self, event: str, arg: Any) -> None:
        for fn in list(self._listeners.get(event, [])):
            try:
                fn(arg)
            except Exception as e:
                if event != "error":
                    self._emit("error", e)

    def _emit_error(self, e: BaseException) -> None:
        self._emit("error", e)

    def _raise_if_closed(self) -> None:
        if self._closed_error is not None:
            raise self._closed_error

    async def _wait(self, fut: "asyncio.Future[_T]", what: str) -> _T:
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self._timeout)
        except asyncio.TimeoutError:
            _silence(fut)
            raise RequestTimeoutError(f"no answer to {what} within {self._timeout} s") from None

    async def _when_open(self) -> _Conn:
        self._raise_if_closed()
        if self._conn:
            return self._conn
        fut: "asyncio.Future[_Conn]" = asyncio.get_running_loop().create_future()
        self._open_waiters.append(fut)
        return await self._wait(fut, "the reconnect")

    def _barrier(self, conn: _Conn) -> _PingEntry:
        if conn.barrier is not None:
            return conn.barrier
        entry = _PingEntry()
        conn.barrier = entry

        def flush() -> None:
            # One PING after the current burst of publishes confirms all of them.
            if conn.barrier is not entry:
                return
            conn.barrier = None
            if not conn.open:
                self._fail_entry(entry, ConnectionLostError("the connection was lost before the relay confirmed"))
                return
            entry.t0 = time.monotonic()
            conn.pings.append(entry)
            conn.send("PING")

        asyncio.get_running_loop().call_soon(flush)
        return entry

    @staticmethod
    def _fail_entry(entry: _PingEntry, err: BaseException) -> None:
        for w in entry.publishes:
            if not w.fut.done():
                w.fut.set_exception(err)
        for f in entry.waiters:
            if not f.done():
                f.set_exception(err)

    def _forget(self, entry: _SubEntry, sub: Subscription, send_unsub: bool) -> None:
        entry.locals.discard(sub)
        k = _key(entry.tenant, entry.pattern)
        if not entry.locals and self._subs.get(k) is entry:
            del self._subs[k]
            if send_unsub and self._conn:
                self._conn.send(f"UNSUB:{entry.tenant}:{entry.pattern}")

    async def _drop(self, sub: Subscription) -> None:
        entry = self._subs.get(_key(sub.tenant, sub.pattern))
        sub._end()
        if entry is None or sub not in entry.locals:
            return
        entry.locals.discard(sub)
        if not entry.locals:
            await self._unsub_wire(entry)

    async def _unsub_wire(self, entry: _SubEntry) -> None:
        k = _key(entry.tenant, entry.pattern)
        if self._subs.get(k) is entry:
            del self._subs[k]
        if not entry.ready.done():
            entry.ready.set_exception(ClosedError("unsubscribed before the relay confirmed"))
        conn = self._conn
        if conn is None or self.closed:
            return
        fut: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        conn.unsub_waiters.append(_Waiter(entry.tenant, entry.pattern, fut))
        conn.send(f"UNSUB:{entry.tenant}:{entry.pattern}")
        await self._wait(fut, f"UNSUB:{entry.tenant}:{entry.pattern}")

    def _send_sub(self, conn: _Conn, entry: _SubEntry) -> "asyncio.Future[None]":
        fut: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()

        def done(f: "asyncio.Future[None]") -> None:
            if f.cancelled():
                return
            e = f.exception()
            if e is None:
                entry.confirmed = True
                if not entry.ready.done():
                    entry.ready.set_result(None)
            elif isinstance(e, RelayError):
                # The relay refused: the subscription is over; its iterators end with the error.
                k = _key(entry.tenant, entry.pattern)
                if self._subs.get(k) is entry:
                    del self._subs[k]
                for s in entry.locals:
                    s._end(e)
                if not entry.ready.done():
                    entry.ready.set_exception(e)
                elif entry.confirmed:
                    self._emit("error", e)

        fut.add_done_callback(done)
        _silence(fut)
        conn.sub_waiters.append(_Waiter(entry.tenant, entry.pattern, fut))
        conn.send(f"SUB:{entry.tenant}:{entry.pattern}")
        return fut

    async def _token_now(self) -> str:
        t = self._token
        if callable(t):
            v = t()
            return await v if asyncio.iscoroutine(v) or isinstance(v, asyncio.Future) else v  # type: ignore[return-value]
        return t

    async def _target(self) -> str:
        if self._bootstrap:
            from .discovery import nearest_edge

            try:
                edge = await nearest_edge(self._bootstrap, timeout=self._timeout)
                self._url = edge.ws_url
            except Exception:
                if not self._url:
                    raise
        assert self._url
        return self._url

    async def _open(self) -> _Conn:
        conn = _Conn()
        url = await self._target()
        token = await self._token_now()
        try:
            ws = await ws_connect(
                url,
                subprotocols=["llps.v1", f"at.{token}"],  # type: ignore[list-item]
                compression=None,
                open_timeout=self._timeout,
                max_size=None,  # deliver frames are bounded by the contract (64 KiB payload + names)
                ping_interval=20,
                ping_timeout=20,
                close_timeout=2,
            )
        except InvalidStatus as e:
            body = e.response.body.decode(errors="replace").strip() if e.response.body else ""
            raise HandshakeError(url, e.response.status_code, body or e.response.reason_phrase) from None
        except (OSError, asyncio.TimeoutError) as e:
            raise ConnectionLostError(f"cannot connect to {url}: {e}") from None
        except Exception as e:  # websockets' InvalidHandshake and friends
            raise ConnectionLostError(f"cannot connect to {url}: {e}") from None
        if ws.subprotocol != "llps.v1":
            await ws.close()
            raise ConnectionLostError(f"{url} did not accept the llps.v1 subprotocol: is this a FastPubSub relay?")
        conn.ws = ws
        conn.url = url
        conn.tasks = [asyncio.ensure_future(self._reader(conn)), asyncio.ensure_future(self._writer(conn))]
        return conn

    async def _writer(self, conn: _Conn) -> None:
        assert conn.ws
        try:
            while True:
                item = await conn.outq.get()
                if item is None:
                    return
                await conn.ws.send(item)
        except (ConnectionClosed, OSError):
            pass  # the reader sees the close

    async def _reader(self, conn: _Conn) -> None:
        assert conn.ws
        code, reason = 1006, "connection lost"
        try:
            async for frame in conn.ws:
                if isinstance(frame, str):
                    self._on_text(conn, frame)
                else:
                    self._on_binary(conn, frame)
        except ConnectionClosed:
            pass
        except Exception as e:  # never let the reader die silently
            self._emit("error", e)
        rcvd = conn.ws.close_code
        if rcvd is not None:
            code, reason = rcvd, conn.ws.close_reason or ""
        self._on_close(conn, code, reason)

    def _on_text(self, conn: _Conn, text: str) -> None:
        if text == "PONG":
            if conn.pings:
                entry = conn.pings.pop(0)
                rtt = time.monotonic() - entry.t0
                for f in entry.waiters:
                    if not f.done():
                        f.set_result(rtt)
                for w in entry.publishes:
                    if not w.fut.done():
                        w.fut.set_result(None)
            return
        if text == "RECONNECT":
            if conn is self._conn:
                self._start_recovery(conn, "the relay asked to move (RECONNECT)")
            return
        if text.startswith("OK:SUB:") or text.startswith("OK:UNSUB:"):
            is_sub = text.startswith("OK:SUB:")
            rest = text[7:] if is_sub else text[9:]
            tenant, _, pattern = rest.partition(":")
            lst = conn.sub_waiters if is_sub else conn.unsub_waiters
            for i, w in enumerate(lst):
                if w.tenant == tenant and w.target == pattern:
                    del lst[i]
                    if not w.fut.done():
                        w.fut.set_result(None)
                    break
            return
        if text.startswith("ERR:"):
            self._on_err(conn, text[4:])

    def _on_err(self, conn: _Conn, raw: str) -> None:
        p = parse_err(raw)
        if p.code == "access_ended":
            conn.access_ended = p.detail or "ticket revoked or expired"
            return  # the close that follows ends the client

        def match(lst: List[_Waiter], cmd: str) -> bool:
            for i, w in enumerate(lst):
                detail = err_names(p, cmd, w.tenant, w.target)
                if detail is None:
                    continue
                del lst[i]
                if not w.fut.done():
                    w.fut.set_exception(relay_error(raw, p, w.target, detail))
                return True
            return False

        if p.command == "SUB" and match(conn.sub_waiters, "SUB"):
            return
        if p.command == "UNSUB" and match(conn.unsub_waiters, "UNSUB"):
            return
        if p.command == "PUB":
            # The oldest pending publish to that channel: the relay answers in order.
            for entry in conn.pings + ([conn.barrier] if conn.barrier else []):
                if match(entry.publishes, "PUB"):
                    return
        self._emit("error", RelayError(raw, p))

    def _on_binary(self, conn: _Conn, frame: bytes) -> None:
        try:
            d = decode_deliver(frame)
        except FrameError as e:
            self._emit("error", e)
            return
        ov = self._overlap
        if ov is not None and conn is not ov.old and conn is not ov.nxt:
            ov = None
        first = True
        for pattern in d.patterns:
            if ov is not None and not ov.first_copy(conn, (d.tenant, d.channel, pattern, hash(d.payload))):
                self.stats.duplicates_dropped += 1
                continue
            if first:
                self.stats.delivered += 1
                first = False
            entry = self._subs.get(_key(d.tenant, pattern))
            if entry is None or not entry.locals:
                self.stats.unroutable += 1
                continue
            m = Message(d.tenant, d.channel, pattern, d.payload)
            for s in list(entry.locals):
                s._push(m)

    def _on_close(self, conn: _Conn, code: int, reason: str) -> None:
        conn.open = False
        conn.ended.set()
        conn.outq.put_nowait(None)
        lost = ConnectionLostError(
            f"the connection was lost (close {code}{': ' + reason if reason else ''}) before the relay answered;"
            " a publish may or may not have been delivered"
        )
        for w in conn.sub_waiters + conn.unsub_waiters:
            if not w.fut.done():
                w.fut.set_exception(lost)
        for e in conn.pings + ([conn.barrier] if conn.barrier else []):
            self._fail_entry(e, lost)
        conn.sub_waiters, conn.unsub_waiters, conn.pings, conn.barrier = [], [], [], None
        ov = self._overlap
        if ov is not None and (conn is ov.old or conn is ov.nxt):
            self._overlap = None
        if conn is not self._conn or self.closed:
            return
        self._conn = None
        if conn.access_ended is not None:
            self._end(AccessEndedError(conn.access_ended))
            return
        if self._reconnect is False:
            self._end(lost)
            return
        self._start_recovery(None, f"the connection closed ({code}{': ' + reason if reason else ''})")

    def _start_recovery(self, old: Optional[_Conn], reason: str) -> None:
        if self._recovering is None or self._recovering.done():
            self._recovering = asyncio.ensure_future(self._recover(old, reason))

    async def _recover(self, old: Optional[_Conn], reason: str) -> None:
        """New connection with every subscription active. With ``old`` still open (RECONNECT)
        this is make-before-break: ``old`` delivers until the new one has every ``OK:SUB``,
        duplicates of the overlap are dropped, then ``old`` is closed."""
        policy = self._reconnect if isinstance(self._reconnect, Reconnect) else Reconnect()
        attempt = 0
        while not self.closed:
            attempt += 1
            if policy.max_attempts is not None and attempt > policy.max_attempts:
                self._end(ConnectionLostError(f"could not reconnect after {policy.max_attempts} attempts ({reason})"))
                return
            ceiling = min(policy.max_delay, policy.initial_delay * 2 ** (attempt - 1))
            delay = random.uniform(0, ceiling)
            self._emit("reconnecting", {"reason": reason, "attempt": attempt, "delay": delay})
            await asyncio.sleep(delay)
            if self.closed:
                return
            try:
                conn = await self._open()
            except HandshakeError as e:
                if e.status in (401, 403) and not callable(self._token):
                    self._end(e)  # the ticket is refused for good: retrying cannot help
                    return
                reason = str(e)
                continue
            except FastPubSubError as e:
                reason = str(e)
                continue
            if self.closed:
                await self._shutdown_conn(conn)
                return
            self._overlap = _Overlap(old, conn) if old is not None and old.open else None
            entries = list(self._subs.values())
            futs = [self._send_sub(conn, e) for e in entries]
            done, pending = await asyncio.wait(futs, timeout=self._timeout) if futs else (set(), set())
            if not conn.open:
                continue
            failed = pending or {f for f in done if f.exception() and not isinstance(f.exception(), RelayError)}
            if failed:
                reason = "resubscribe did not complete"
                await self._shutdown_conn(conn)
                continue
            self._conn = conn
            self.stats.reconnects += 1
            for entry in list(self._subs.values()):
                if entry not in entries:
                    self._send_sub(conn, entry)  # subscribed while we resubscribed
            for entry in entries:
                if self._subs.get(_key(entry.tenant, entry.pattern)) is not entry:
                    conn.send(f"UNSUB:{entry.tenant}:{entry.pattern}")  # unsubscribed meanwhile
            if old is not None and old.open and self._overlap is not None and self._overlap.old is old:
                # Keep the old connection a moment for what is already on its way to it.
                asyncio.get_running_loop().call_later(self._move_drain, self._drain_done, old)
            for w in self._open_waiters:
                if not w.done():
                    w.set_result(conn)
            self._open_waiters.clear()
            self._emit("reconnected", conn.url)
            return

    def _drain_done(self, old: _Conn) -> None:
        if old.open and old.ws is not None:
            asyncio.ensure_future(old.ws.close(1000, "moved to a new connection"))

    async def _shutdown_conn(self, conn: _Conn) -> None:
        if conn.ws is not None:
            await asyncio.wait([asyncio.ensure_future(conn.ws.close(1000, "closed"))], timeout=2.0)

    def _end(self, error: Optional[FastPubSubError]) -> None:
        if self._closed_error is not None:
            return
        self._closed_error = error or ClosedError()
        err = self._closed_error
        for entry in self._subs.values():
            for s in entry.locals:
                s._end(error)
            if not entry.ready.done():
                entry.ready.set_exception(err)
        self._subs.clear()
        for ow in self._open_waiters:
            if not ow.done():
                ow.set_exception(err)
        self._open_waiters.clear()
        if self._recovering is not None and not self._recovering.done() and self._recovering is not asyncio.current_task():
            self._recovering.cancel()
        for c in (self._conn, self._overlap.old if self._overlap else None):
            if c is None:
                continue
            for w in c.sub_waiters + c.unsub_waiters:
                if not w.fut.done():
                    w.fut.set_exception(err)
            for e in c.pings + ([c.barrier] if c.barrier else []):
                self._fail_entry(e, err)
            c.pings, c.barrier = [], None
            if c.ws is not None:
                asyncio.ensure_future(c.ws.close(1000, "client closed"))
        self._conn, self._overlap = None, None
        self._closed_event.set()
        self._emit("close", error)


class _Connect:
    """``await connect(...)`` or ``async with connect(...) as client``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def _start(self) -> Client:
        self._client._conn = await self._client._open()
        return self._client

    def __await__(self) -> Generator[Any, None, Client]:
        return self._start().__await__()

    async def __aenter__(self) -> Client:
        return await self._start()

    async def __aexit__(self, *exc: Any) -> None:
        await self._client.close()


def connect(url: Optional[str] = None, token: TokenSource = "", *, bootstrap: Optional[str] = None,
            request_timeout: float = 10.0, reconnect: Union[Reconnect, bool] = True,
            queue_size: int = 1024, move_drain: float = 1.0) -> _Connect:
    """Connects to a relay over WebSocket (subprotocols ``llps.v1`` and ``at.<token>``).

    ``url`` is ``ws://HOST/ws`` / ``wss://HOST/ws``; or give ``bootstrap`` (an edge list URL:
    the nearest edge by ``GET /ping`` is used, again on each reconnect). ``token`` is the
    ``AT_…`` ticket or a function returning a fresh one. Raises :class:`HandshakeError` or
    :class:`ConnectionLostError` when the first connection fails. ``move_drain``: after a
    ``RECONNECT`` move, seconds the old connection stays open to deliver what was already on
    its way to it (duplicates of the new one's are dropped).
    """
    return _Connect(Client(url, token, bootstrap=bootstrap, request_timeout=request_timeout,
                           reconnect=reconnect, queue_size=queue_size, move_drain=move_drain))
