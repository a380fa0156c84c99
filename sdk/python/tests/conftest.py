"""Real `fastpubsub-relay run` processes on 127.0.0.1 for the tests (killed when a test ends,
also on failure). Tests import the package from ../src, so no install is needed."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
ROOT = HERE.parents[2]
WAIT = 30.0


def relay_bin() -> str:
    b = os.environ.get("FASTPUBSUB_RELAY_BIN") or str(ROOT / "target/debug/fastpubsub-relay")
    if not Path(b).exists():
        subprocess.run(["cargo", "build", "--locked", "-p", "fastpubsub-relay", "--bin", "fastpubsub-relay"], cwd=ROOT, check=True)
    return b


class Relay:
    def __init__(self, port: int = 0, state_dir: Optional[str] = None, args: Sequence[str] = (),
                 dev_ticket: Optional[str] = None) -> None:
        self.owns_state = state_dir is None
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="fps-py-")
        self.args = list(args)
        self.dev_ticket = dev_ticket
        self._spawn(port)

    def _spawn(self, port: int) -> None:
        self.lines: List[str] = []
        self._cv = threading.Condition()
        self.proc = subprocess.Popen(
            [relay_bin(), "run", "--listen", f"127.0.0.1:{port}", "--admin-listen", "off",
             "--state-dir", self.state_dir, "--shutdown-grace-ms", "5000", *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        line = self.wait_line(lambda l: "listening on ws://" in l)
        addr = line.split("ws://")[1].split("/")[0]
        self.port = int(addr.rsplit(":", 1)[1])
        self.url = f"ws://{addr}/ws"
        self.api_base = f"http://{addr}"
        master = Path(self.state_dir, "master.token")
        self.master_token = master.read_text().strip() if master.exists() else None
        if self.dev_ticket is None:
            if self.owns_state:
                self.dev_ticket = self.wait_line(lambda l: l.strip().startswith("AT_")).strip()
            else:
                self.dev_ticket = self.ticket(ttl="24h")

    def _pump(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()

    def wait_line(self, pred: Callable[[str], bool], timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for l in self.lines:
                    if pred(l):
                        return l
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("relay: expected line not printed; output:\n" + "\n".join(self.lines))
                self._cv.wait(min(left, 0.5))

    def mesh_addr(self) -> str:
        """The mesh (QUIC) address this relay printed (``--mesh-listen``), ``host:port``."""
        return self.wait_line(lambda l: " on quic://" in l).split("quic://")[1].split()[0]

    def ticket(self, tenant: str = "dev", pub=("public.#",), sub=("public.#",), ttl: str = "1h") -> str:
        args = [relay_bin(), "ticket", "--signing-key", str(Path(self.state_dir, "ticket-signing.key")), "--tenant", tenant, "--ttl", ttl]
        for p in pub:
            args += ["--pub", p]
        for s in sub:
            args += ["--sub", s]
        out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
        return next(w for w in out.split() if w.startswith("AT_"))

    def terminate(self) -> None:
        self.proc.terminate()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=WAIT)

    def restart(self) -> None:
        self._spawn(self.port)

    def stop(self) -> None:
        self.kill()
        if self.owns_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)


@pytest.fixture
def relays():
    """Factory: ``relays()`` starts a relay; every one started is stopped after the test."""
    started: List[Relay] = []

    def start(**kw) -> Relay:
        r = Relay(**kw)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


@pytest.fixture
def mesh_certs(tmp_path):
    """``args(name)``: the ``run`` flags that put a relay named ``name`` in a test mesh on 127.0.0.1."""
    subprocess.run([relay_bin(), "mesh-ca", "--dir", str(tmp_path / "ca")], check=True, capture_output=True)

    def args(name: str) -> List[str]:
        if not (tmp_path / f"{name}.pem").exists():
            subprocess.run([relay_bin(), "mesh-cert", "--name", name, "--ca-dir", str(tmp_path / "ca"), "--out", str(tmp_path)],
                           check=True, capture_output=True)
        return ["--mesh-listen", "127.0.0.1:0", "--name", name, "--mesh-cert", str(tmp_path / f"{name}.pem"),
                "--mesh-key", str(tmp_path / f"{name}.key"), "--mesh-ca", str(tmp_path / "ca/ca.pem")]

    return args


@pytest.fixture(scope="module")
def relay():
    r = Relay()
    yield r
    r.stop()


def run(coro, timeout: float = 60.0):
    """Runs one async test body with an overall bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
