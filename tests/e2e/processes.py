"""Running prost as real processes for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ProstProcess:
    """`prost <args>` as a child process with its own environment and log file."""

    def __init__(self, args: list[str], *, env: dict[str, str], log_path: Path, port: int) -> None:
        self.args = args
        self.env = env
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, *, ready_timeout: float = 90.0) -> None:
        log = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "prost.cli", *self.args, env=self.env, stdout=log, stderr=log, start_new_session=True
        )
        log.close()
        deadline = asyncio.get_running_loop().time() + ready_timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(
                        f"prost {' '.join(self.args)} exited with {self.proc.returncode}:\n{self.tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.url + "/ready")).status_code == 200:
                        return
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"prost {' '.join(self.args)} not ready in {ready_timeout}s:\n{self.tail()}")
                await asyncio.sleep(0.25)

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.kill_tree()
            return await self.proc.wait()

    def kill_tree(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(self.proc.pid)
            for child in parent.children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
            parent.kill()

    def children(self, name: str) -> list[psutil.Process]:
        """The supervised processes running `prost serve <name>`."""
        assert self.proc is not None
        found = []
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                cmd = child.cmdline()
                if cmd[-2:] == ["serve", name]:
                    found.append(child)
        return found


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROST_")}
    env.update({"PROST_BCRYPT_ROUNDS": "4", "PROST_LOG_LEVEL": "WARNING", "PROST_RATE_LIMIT_PER_SECOND": "0"})
    env.update(extra)
    return env
