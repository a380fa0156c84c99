"""The client against a real relay process: patterns, limits, errors, delivery modes, queues."""

from __future__ import annotations

import asyncio
import os

import pytest
from conftest import run, until

from fastpubsub import MAX_PAYLOAD, RelayError, ValidationError, connect


async def collect(c, tenant, pattern):
    got = []
    await c.subscribe(tenant, pattern, on_message=got.append)
    return got


def test_two_patterns_one_message_each(relay):
    async def body():
        async with connect(relay.url, relay.dev_ticket) as s, connect(relay.url, relay.dev_ticket) as p:
            a = await s.subscribe("dev", "public.#")
            b = await s.subscribe("dev", "public.*")
            await p.publish("dev", "public.hello", "hi there")
            ma = await a.get(5)
            mb = await b.get(5)
            assert (ma.pattern, mb.pattern) == ("public.#", "public.*")
            for m in (ma, mb):
                assert (m.tenant, m.channel, m.text()) == ("dev", "public.hello", "hi there")
            assert s.stats.delivered == 1, "both patterns arrive in one deliver frame"
            await p.publish("dev", "public.json", b'{"n": 42}')
            assert (await a.get(5)).json() == {"n": 42}
    run(body())


def test_star_and_hash(relay):
    async def body():
        async with connect(relay.url, relay.dev_ticket) as s, connect(relay.url, relay.dev_ticket) as p:
            star = await collect(s, "dev", "public.*.x")
            hash_ = await collect(s, "dev", "public.a.#")
            end = await collect(s, "dev", "public.end")
            for ch in ["public.a", "public.a.x", "public.b.x", "public.b.y.x", "public.a.b.c", "public.x"]:
                await p.publish("dev", ch, ch)
            await p.publish("dev", "public.end", "end")
            await until(lambda: len(end) == 1, 5, "end marker")
            assert [m.channel for m in star] == ["public.a.x", "public.b.x"]
            assert [m.channel for m in hash_] == ["public.a", "public.a.x", "public.a.b.c"]
    run(body())


def test_unsubscribe(relay):
    async def body():
        async with connect(relay.url, relay.dev_ticket) as s, connect(relay.url, relay.dev_ticket) as p:
            sub = await s.subscribe("dev", "public.unsub")
            end = await collect(s, "dev", "public.end2")
            await p.publish("dev", "public.unsub", "one")
            assert (await sub.get(5)).text() == "one"
            await sub.unsubscribe()
            await p.publish("dev", "public.unsub", "two")
            await p.publish("dev", "public.end2", "end")
            await until(lambda: len(end) == 1, 5, "end marker")
            with pytest.raises(StopAsyncIteration):
                await sub.get(1)
            assert sub.stats.received == 1
            assert s.stats.unroutable == 0
    run(body())


def test_64k_intact_and_64k_plus_one_refused(relay):
    async def body():
        async with connect(relay.url, relay.dev_ticket) as s, connect(relay.url, relay.dev_ticket) as p:
            sub = await s.subscribe("dev", "public.big")
            big = os.urandom(MAX_PAYLOAD)
            await p.publish("dev", "public.big", big)
            assert (await sub.get(10)).payload == big
            over = os.urandom(MAX_PAYLOAD + 1)
            with pytest.raises(ValidationError) as e:
                await p.publish("dev", "public.big", over)
            assert e.value.code == "payload_too_large"
            with pytest.raises(RelayError) as e:
                await p.publish("dev", "public.big", over, unchecked=True)
            assert (e.value.code, e.value.command, e.value.tenant, e.value.target) == ("payload_too_large", "PUB", "dev", "public.big")
            await p.publish("dev", "public.big", "small")
            assert (await sub.get(5)).text() == "small"
    run(body())


def test_permission_and_validation_errors(relay):
    async def body():
        async with connect(relay.url, relay.dev_ticket) as c:
            with pytest.raises(RelayError) as e:
                await c.subscribe("dev", "private.#")
            assert (e.value.code, e.value.command, e.value.tenant, e.value.target) == ("permission_denied", "SUB", "dev", "private.#")
            with pytest.raises(RelayError) as e:
                await c.subscribe("other", "public.#")
            assert e.value.tenant == "other"
            with pytest.raises(RelayError) as e:
                await c.publish("dev", "private.x", "no")
            assert (e.value.code, e.value.command, e.value.target) == ("permission_denied", "PUB", "private.x")
            results = await asyncio.gather(c.publish("dev", "public.ok", "1"), c.publish("dev", "private.y", "2"),
                                           c.publish("dev", "public.ok", "3"), return_exceptions=True)
            assert [type(r).__name__ for r in results] == ["NoneType", "RelayError", "NoneType"]
            assert results[1].target == "private.y"
            for bad, code in [("public.#.x", "invalid_pattern"), ("public.a*", "invalid_pattern")]:
                with pytest.raises(ValidationError) as e:
                    await c.subscribe("dev", bad)
                assert e.value.code == code
            with pytest.raises(ValidationError) as e:
                await c.publish("dev", "public.*", "x")
            assert e.value.code == "invalid_channel"
            with pytest.raises(ValidationError) as e:
                await c.publish("a:b", "public.x", "x")
            assert e.value.code == "invalid_tenant"
            assert await c.ping() >= 0
    run(body())


def test_delivery_modes(relay):
    async def body():
        async with connect(relay.url, relay.dev_ticket) as p:
            subs = []
            for _ in range(3):
                c = await connect(relay.url, relay.dev_ticket)
                subs.append((c, await collect(c, "dev", "public.work"), await collect(c, "dev", "public.work.end")))
            try:
                n = 30
                for i in range(n):
                    await p.publish("dev", "public.work", f"r{i}", mode="one-random")
                for i in range(n):
                    await p.publish("dev", "public.work", f"l{i}", mode="one-low-latency")
                await p.publish("dev", "public.work", "all")
                await p.publish("dev", "public.work.end", "end")
                await until(lambda: all(len(e) == 1 for _, _, e in subs), 5, "end markers")
                texts = [m.text() for _, w, _ in subs for m in w]
                for prefix in "rl":
                    assert sorted(t for t in texts if t.startswith(prefix)) == sorted(f"{prefix}{i}" for i in range(n))
                assert texts.count("all") == 3
                per = [sum(1 for m in w if m.text().startswith("r")) for _, w, _ in subs]
                assert sum(1 for x in per if x > 0) >= 2, per
            finally:
                for c, _, _ in subs:
                    await c.close()
    run(body())


def test_bounded_queue_drops_oldest(relay):
    async def body():
        async with connect(relay.url, relay.dev_ticket) as s, connect(relay.url, relay.dev_ticket) as p:
            sub = await s.subscribe("dev", "public.q", queue_size=4)
            end = await collect(s, "dev", "public.q.end")
            for i in range(10):
                await p.publish("dev", "public.q", str(i))
            await p.publish("dev", "public.q.end", "end")
            await until(lambda: len(end) == 1, 5, "end marker")
            st = sub.stats
            assert (st.received, st.dropped, st.queued, st.capacity) == (10, 6, 4, 4)
            assert [(await sub.get(1)).text() for _ in range(4)] == ["6", "7", "8", "9"]
    run(body())


def test_async_for_and_shared_pattern(relay):
    async def body():
        async with connect(relay.url, relay.dev_ticket) as s, connect(relay.url, relay.dev_ticket) as p:
            a = await s.subscribe("dev", "public.iter")
            b = await s.subscribe("dev", "public.iter")
            for t in ["x", "y", "z"]:
                await p.publish("dev", "public.iter", t)
            seen = []
            async for m in a:
                seen.append(m.text())
                if len(seen) == 3:
                    break
            assert seen == ["x", "y", "z"]
            await a.unsubscribe()
            await p.publish("dev", "public.iter", "after")
            assert [(await b.get(5)).text() for _ in range(4)] == ["x", "y", "z", "after"]
    run(body())
