"""Publishes N numbered messages (default 5) to dev/public.demo.
TICKET=AT_… python publisher.py [URL] [N]"""

import asyncio
import os
import sys

from fastpubsub import connect


async def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8080/ws"
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    async with connect(url, os.environ["TICKET"]) as client:
        for i in range(count):
            await client.publish("dev", "public.demo", f"message {i}")
        print(f"published {count} messages; rtt {await client.ping() * 1000:.1f} ms", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
