"""Interop peer on this Python SDK, driven over stdin/stdout by sdk/js/test/interop.test.js.

Same line protocol as interop/rust-sdk (see its src/main.rs):
  stdin:  sub T P | unsub T P | pub T C HEX [MODE] | quit
  stdout: ready | ok-sub T P | ok-unsub T P | pub-ok | msg T C P HEX | err TEXT
Usage: python interop_peer.py --url ws://HOST/ws --token AT_…
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from fastpubsub import FastPubSubError, connect  # noqa: E402


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    a = ap.parse_args()
    try:
        client = await connect(a.url, a.token)
    except FastPubSubError as e:
        out(f"err {e}")
        return 2
    client.on("error", lambda e: out(f"err {e}"))
    out("ready")
    subs = {}
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        raw = await reader.readline()
        if not raw:
            break
        f = raw.decode().split()
        try:
            if f[:1] == ["sub"] and len(f) == 3:
                subs[(f[1], f[2])] = await client.subscribe(
                    f[1], f[2], on_message=lambda m: out(f"msg {m.tenant} {m.channel} {m.pattern} {m.payload.hex() or '-'}")
                )
                out(f"ok-sub {f[1]} {f[2]}")
            elif f[:1] == ["unsub"] and len(f) == 3:
                s = subs.pop((f[1], f[2]), None)
                if s:
                    await s.unsubscribe()
                out(f"ok-unsub {f[1]} {f[2]}")
            elif f[:1] == ["pub"] and len(f) in (4, 5):
                payload = b"" if f[3] == "-" else bytes.fromhex(f[3])
                await client.publish(f[1], f[2], payload, mode=f[4] if len(f) == 5 else "broadcast")  # type: ignore[arg-type]
                out("pub-ok")
            elif f == ["quit"]:
                break
            elif f:
                out(f"err unknown command {raw!r}")
        except (FastPubSubError, ValueError) as e:
            out(f"err {e}")
    await client.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
