"""Prints every message on dev/public.# until Ctrl-C.  TICKET=AT_… python subscriber.py [URL]"""

import asyncio
import os
import sys

from fastpubsub import connect


async def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8080/ws"
    async with connect(url, os.environ["TICKET"]) as client:
        client.on("reconnecting", lambda ev: print("reconnecting:", ev["reason"], file=sys.stderr))
        sub = await client.subscribe("dev", "public.#")
        print("subscribed to dev/public.#", file=sys.stderr, flush=True)
        async for msg in sub:
            print(f"{msg.channel}\t{msg.text()}", flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
