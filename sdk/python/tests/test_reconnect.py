"""Reconnect after a restart, RECONNECT on SIGTERM (make-before-break), ticket refresh/revoke,
edge discovery: each test starts its own relays."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import json
import math
import socket
import threading
import time

import pytest
from conftest import run, until

from fastpubsub import AccessEndedError, HandshakeError, Reconnect, RestError, TokenApi, connect, grant, nearest_edge

FAST = Reconnect(initial_delay=0.05, max_delay=0.3)


def event(client, name):
    fut = asyncio.get_running_loop().create_future()
    client.on(name, lambda ev: fut.done() or fut.set_result(ev))
    return fut


def test_reconnect_after_restart(relays):
    relay = relays()

    async def body():
        async with connect(relay.url, relay.dev_ticket, reconnect=FAST) as s:
            sub = await s.subscribe("dev", "public.#")
            reconnecting, reconnected = event(s, "reconnecting"), event(s, "reconnected")
            relay.kill()
            assert "closed" in (await asyncio.wait_for(reconnecting, 15))["reason"]
            relay.restart()
            await asyncio.wait_for(reconnected, 30)
            assert s.stats.reconnects == 1
            async with connect(relay.url, relay.dev_ticket) as p:
                await p.publish("dev", "public.after", "back")
                m = await sub.get(5)
                assert (m.text(), m.pattern) == ("back", "public.#")
    run(body())


def test_reconnect_message_on_sigterm_make_before_break(relays):
    old = relays()

    async def body():
        async with connect(old.url, old.dev_ticket, reconnect=FAST) as s:
            sub = await s.subscribe("dev", "public.#")
            errors = []
            s.on("error", errors.append)
            reconnecting, reconnected = event(s, "reconnecting"), event(s, "reconnected")
            t0 = time.monotonic()
            old.terminate()
            assert "RECONNECT" in (await asyncio.wait_for(reconnecting, 15))["reason"]
            await asyncio.to_thread(old.wait_line, lambda l: "sending RECONNECT" in l)
            fresh = relays(port=old.port, state_dir=old.state_dir)
            await asyncio.wait_for(reconnected, 30)
            code = await asyncio.to_thread(old.proc.wait, 10)
            assert code == 0
            assert time.monotonic() - t0 < 4.5, "left the old relay before its 5 s grace"
            assert not any("grace over" in l for l in old.lines)
            async with connect(fresh.url, fresh.dev_ticket) as p:
                await p.publish("dev", "public.moved", "on the new relay")
                assert (await sub.get(5)).text() == "on the new relay"
            assert not s.closed and errors == []
    run(body())


def test_reconnect_while_publishing_two_meshed_relays(relays, mesh_certs):
    """A publisher on b keeps publishing while the client moves from a (draining) to b: every
    message arrives exactly once per pattern."""
    a = relays(args=mesh_certs("a"))
    b = relays(args=[*mesh_certs("b"), "--peer", f"a@{a.mesh_addr()}",
                     "--ticket-public-key", f"{a.state_dir}/ticket-public.key"], dev_ticket=a.dev_ticket)
    edges = [f"127.0.0.1:{a.port}"]  # what discovery finds: a, then only b once a drains

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"version": 1, "edges": edges}).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    async def body():
        boot = f"http://127.0.0.1:{srv.server_address[1]}/"
        async with connect(bootstrap=boot, token=a.dev_ticket, reconnect=FAST) as s, connect(b.url, a.dev_ticket) as p:
            assert s.url == a.url
            got = {"public.seq.#": [], "public.seq.*": []}
            for pattern, seqs in got.items():
                await s.subscribe("dev", pattern, on_message=lambda m, seqs=seqs: seqs.append(int(m.text())))
            probes = []
            await s.subscribe("dev", "public.probe", on_message=probes.append)
            deadline = time.monotonic() + 30
            while not probes:  # until b routes to a through the mesh
                assert time.monotonic() < deadline, "no message from b through the mesh within 30 s"
                await p.publish("dev", "public.probe", "x")
                await asyncio.sleep(0.05)
            sent = 0
            stop = False

            async def publisher():
                nonlocal sent
                while not stop and sent < 20_000:
                    burst = range(sent, sent + 10)
                    sent += 10
                    await asyncio.gather(*(p.publish("dev", "public.seq.n", str(i)) for i in burst))

            task = asyncio.ensure_future(publisher())
            count = lambda: len(got["public.seq.#"])  # noqa: E731
            await until(lambda: count() >= 20, 10, "messages before the move")
            reconnected = event(s, "reconnected")
            edges[:] = [f"127.0.0.1:{b.port}"]
            a.terminate()
            assert await asyncio.wait_for(reconnected, 30) == b.url
            assert await asyncio.to_thread(a.proc.wait, 10) == 0  # a exits once the client left it
            n = count()
            await until(lambda: count() >= n + 20, 10, "messages after the move")
            stop = True
            await task
            await until(lambda: count() >= sent, 10, f"all {sent} messages")
            before = len(probes)
            await p.publish("dev", "public.probe", "end")  # anything late would come before it
            await until(lambda: len(probes) > before, 10, "end marker")
            for pattern, seqs in got.items():
                assert sorted(seqs) == list(range(sent)), f"{pattern}: each of {sent} messages exactly once"
            assert s.stats.duplicates_dropped > 0, "the two connections overlapped"

    try:
        run(body())
    finally:
        srv.shutdown()
        srv.server_close()


def test_refresh_then_revoke(relays):
    relay = relays()

    async def body():
        api = TokenApi(relay.api_base, relay.master_token)
        first_expiry = math.ceil(time.time() + 3)
        token = await api.get_token([grant(["dev"], pub=["public.#"], sub=["public.#"])],
                                    expires_at=dt.datetime.fromtimestamp(first_expiry, dt.timezone.utc))
        assert token.startswith("AT_")
        c = await connect(relay.url, token, reconnect=FAST)
        try:
            sub = await c.subscribe("dev", "public.#")
            new = await api.refresh_token(token, 3600)
            assert new.timestamp() > time.time() + 3500
            await until(lambda: time.time() > first_expiry + 2, 10, "the first expiry to pass")
            assert not c.closed
            await c.publish("dev", "public.alive", "still here")
            assert (await sub.get(5)).text() == "still here"
            await api.revoke_token(token)
            err = await asyncio.wait_for(c.wait_closed(), 10)
            assert isinstance(err, AccessEndedError) and err.code == "access_ended"
            with pytest.raises(AccessEndedError):
                await sub.get(1)
            with pytest.raises(AccessEndedError):
                await c.publish("dev", "public.x", "x")
        finally:
            await c.close()
        with pytest.raises(HandshakeError) as e:
            await connect(relay.url, token)
        assert e.value.status == 401 and "revoked" in (e.value.reason or "")
        with pytest.raises(RestError) as e:
            await api.refresh_token(token, 3600)
        assert e.value.status == 409
    run(body())


def test_discovery_nearest_edge(relays):
    relay = relays()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    doc = {"version": 1, "edges": [f"127.0.0.1:{dead}", {"host": f"127.0.0.1:{relay.port}", "priority": 100}, 42]}

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        boot = f"http://127.0.0.1:{srv.server_address[1]}/edges.json"

        async def body():
            edge = await nearest_edge(boot, timeout=3)
            assert edge.ws_url == relay.url and edge.rtt is not None
            async with connect(bootstrap=boot, token=relay.dev_ticket) as c:
                assert c.url == relay.url
                assert await c.ping() >= 0
        run(body())
    finally:
        srv.shutdown()
        srv.server_close()
