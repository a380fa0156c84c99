"""The README's quick start, run as written against a fresh relay with its first-run dev ticket."""

import os
import queue
import threading
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_readme_quick_start(relays):
    relay = relays()
    code = re.search(r"```python\n(.*?)```", (HERE.parent / "README.md").read_text(), re.S).group(1)
    assert len(code.splitlines()) <= 14
    env = {**os.environ, "TICKET": relay.dev_ticket, "PYTHONPATH": str(HERE.parent / "src")}
    r = subprocess.run([sys.executable, "-c", code.replace("ws://127.0.0.1:8080/ws", relay.url)],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "public.hello public.# hi there"


def test_examples_publisher_subscriber(relays):
    relay = relays()
    env = {**os.environ, "TICKET": relay.dev_ticket, "PYTHONPATH": str(HERE.parent / "src")}
    sub = subprocess.Popen([sys.executable, str(HERE.parent / "examples/subscriber.py"), relay.url],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: "queue.Queue[str]" = queue.Queue()
    for stream in (sub.stdout, sub.stderr):
        threading.Thread(target=lambda s=stream: [lines.put(l) for l in s], daemon=True).start()

    def next_line() -> str:
        return lines.get(timeout=15).strip()  # bounded: raises queue.Empty instead of hanging

    try:
        assert "subscribed" in next_line()
        pub = subprocess.run([sys.executable, str(HERE.parent / "examples/publisher.py"), relay.url, "3"],
                             env=env, capture_output=True, text=True, timeout=30)
        assert pub.returncode == 0, pub.stderr
        got = [next_line() for _ in range(3)]
        assert got == [f"public.demo\tmessage {i}" for i in range(3)]
    finally:
        sub.kill()
        sub.wait()
