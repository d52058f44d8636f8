"""Shared bits for benchmarks: processes, fresh databases, vhosts, wrk."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa

from prost.kit import migrations
from prost.kit.db import create_engine

CLK_TCK = os.sysconf("SC_CLK_TCK")
PG = os.environ.get("PROST_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP = os.environ.get("PROST_BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    name = f"prost_bench_{uuid.uuid4().hex[:10]}"
    url = str(sa.make_url(PG).set(database=name).render_as_string(hide_password=False))
    await migrations.ensure_database(url)
    try:
        await migrations.upgrade(url)
        yield url
    finally:
        admin = create_engine(PG, pool_size=1)
        async with admin.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@contextlib.contextmanager
def fresh_vhost() -> Iterator[str]:
    vhost = f"prost_bench_{uuid.uuid4().hex[:8]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    try:
        yield AMQP.rstrip("/") + "/" + vhost
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, capture_output=True)


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        base = {k: v for k, v in os.environ.items() if not k.startswith("PROST_")}
        base.update({"PROST_LOG_LEVEL": "WARNING", "PROST_RATE_LIMIT_PER_SECOND": "0", "PROST_HTTP_PORT": str(port)})
        base.update(env)
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "prost.cli", *args], env=base, stdout=log.open("ab"), stderr=subprocess.STDOUT
        )

    async def ready(self, path: str = "/ready", within: float = 60) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise RuntimeError(f"process exited with {self.popen.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.url + path)).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.url} not ready")

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(15)
        except subprocess.TimeoutExpired:
            self.popen.kill()


def wrk(
    url: str,
    *,
    seconds: int = 10,
    connections: int = 32,
    threads: int = 1,
    headers: dict[str, str] | None = None,
    script: str | None = None,
) -> dict[str, float]:
    """Requests/s and latency percentiles from wrk (Debian's `wrk`). `script` is a Lua
    script of the caller's own (it must print the `JSON <p50> <p99>` line too);
    without it, plain GETs of `url`."""
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark needs wrk: apt-get install -y wrk")
    with tempfile.TemporaryDirectory() as tmp:
        lua = Path(__file__).with_name("_latency.lua")
        if script is not None:
            lua = Path(tmp) / "script.lua"
            lua.write_text(script)
        args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua)]
        for k, v in (headers or {}).items():
            args += ["-H", f"{k}: {v}"]
        out = subprocess.run([*args, url], check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    stats = {"rps": rps, "non_2xx": float(non2xx.group(1)) if non2xx else 0.0}
    for line in out.splitlines():
        if line.startswith("JSON "):
            p50, p99 = line.split()[1:3]
            stats |= {"p50_ms": float(p50) / 1000, "p99_ms": float(p99) / 1000}
    return stats


# -- where the CPU goes --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessCpu:
    ppid: int
    name: str  # the kernel's short name (`comm`)
    cmdline: str
    seconds: float  # user + system CPU since the process started


def processes() -> dict[int, ProcessCpu]:
    """Every process of the machine, with its CPU so far (from /proc)."""
    table: dict[int, ProcessCpu] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        fields = raw[raw.rindex(")") + 2 :].split()
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        table[int(entry)] = ProcessCpu(
            int(fields[1]), name, cmdline.strip(), (int(fields[11]) + int(fields[12])) / CLK_TCK
        )
    return table


def descendants(table: dict[int, ProcessCpu], root: int) -> set[int]:
    """`root` and every process under it."""
    children: dict[int, list[int]] = {}
    for pid, p in table.items():
        children.setdefault(p.ppid, []).append(pid)
    found, stack = set(), [root]
    while stack:
        pid = stack.pop()
        found.add(pid)
        stack.extend(children.get(pid, []))
    return found


def _infrastructure(p: ProcessCpu) -> str | None:
    """'postgresql' or 'rabbitmq' for the servers' processes, None for anything else."""
    if p.name.startswith("postgres"):
        return "postgresql"
    if p.name.startswith("beam") or p.name in ("epmd", "erl_child_setup", "inet_gethost"):
        return "rabbitmq"
    return None


def cpu_by(
    before: dict[int, ProcessCpu],
    after: dict[int, ProcessCpu],
    *,
    me: str,
    label: Callable[[int, ProcessCpu], str | None] = lambda _pid, _p: None,
) -> dict[str, float]:
    """CPU seconds spent between two `processes()` readings, by process, largest first:
    'postgresql' and 'rabbitmq' for the servers, then what `label` names (None: not
    its own), `me` for this process, and 'other' for the rest of the machine."""
    spent: dict[str, float] = {}
    for pid, p in after.items():
        earlier = before.get(pid)
        used = p.seconds - (earlier.seconds if earlier is not None and earlier.name == p.name else 0.0)
        if used > 0:
            key = _infrastructure(p) or label(pid, p) or (me if pid == os.getpid() else "other")
            spent[key] = spent.get(key, 0.0) + used
    return dict(sorted(spent.items(), key=lambda kv: -kv[1]))
