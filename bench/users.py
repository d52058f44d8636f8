"""Users service benchmark: profile reads, logins, and reads while logins run.

It starts `prost up` itself (embedded PostgreSQL in a temporary data directory, the
per-address request limit off), once per bcrypt cost (default 12, then 4), and measures:

- baseline: the raw bcrypt hash rate of 2 threads at that cost, in this process, in the
  same run (what 2 cores can hash; logins can at best match it);
- reads: `GET /api/v1/users/profile/{id}` with N concurrent clients → req/s, p50, p99;
- logins: `POST /api/v1/users/login` with M concurrent clients → logins/s and the ratio
  to the baseline (target ≥ 0.9);
- reads at a fixed rate (a quarter of the maximum just measured; open loop, latency from
  the intended send time) in alternating windows without and with logins running at
  full speed → p50/p99 both ways (they must stay about the same).

The client runs on the same machine and takes some of the same cores. Last line: one
JSON summary.

    .venv/bin/python bench/users.py [--duration 10] [--rounds 12,4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary_ms(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2) if latencies else float("nan"),
    }


def bcrypt_rate(rounds: int, threads: int = 2, seconds: float = 5.0) -> float:
    """Hashes per second that `threads` threads manage at this cost (bcrypt releases the GIL)."""
    salt = bcrypt.gensalt(rounds)
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def work(i: int) -> None:
        while time.perf_counter() < stop:
            bcrypt.hashpw(b"benchmark-password", salt)
            counts[i] += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - start)


class Prost:
    """`prost up` in a child process on a fresh data directory."""

    def __init__(self, rounds: int, bcrypt_threads: int = 0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = tempfile.mkdtemp(prefix="prost-bench-")
        self.log = Path(self.dir) / "prost.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROST_")}
        env.update(
            {
                "PROST_HTTP_PORT": str(self.port),
                "PROST_DATA_DIR": str(Path(self.dir) / "data"),
                "PROST_BCRYPT_ROUNDS": str(rounds),
                "PROST_BCRYPT_THREADS": str(bcrypt_threads),
                "PROST_RATE_LIMIT_PER_SECOND": "0",
                "PROST_LOG_LEVEL": "ERROR",
            }
        )
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Prost:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "prost.cli", "up", env=self.env, stdout=log, stderr=log
            )
        async with aiohttp.ClientSession() as s:
            for _ in range(600):
                if self.proc.returncode is not None:
                    raise RuntimeError(f"prost up exited: {self.log.read_text()[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with s.get(self.url + "/ready") as r:
                        if r.status == 200:
                            return self
                await asyncio.sleep(0.2)
        raise RuntimeError("prost up did not become ready")

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 60)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def fetch(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> int:
    """The response status, or 0 when the connection failed. A keep-alive connection the
    server closed just as it was reused is tried once more (the client's race, not a
    server failure)."""
    for attempt in range(2):
        try:
            async with session.request(method, url, **kw) as r:
                await r.read()
                return r.status
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            if attempt == 1:
                return 0
    return 0


async def register_users(session: aiohttp.ClientSession, url: str, count: int) -> list[dict[str, Any]]:
    users = []
    for _ in range(count):
        tag = uuid.uuid4().hex[:10]
        ident = {"email": f"bench-{tag}@prost.test", "username": f"bench_{tag}", "password": "bench-password-1"}
        async with session.post(url + "/api/v1/users/register", json=ident) as r:
            assert r.status == 201, await r.text()
        async with session.post(url + "/api/v1/users/login", json=ident) as r:
            body = await r.json()
        users.append({**ident, "id": body["user"]["id"], "token": body["token"]})
    return users


async def closed_loop_reads(
    session: aiohttp.ClientSession, url: str, users: list[dict[str, Any]], concurrency: int, seconds: float
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(i: int) -> None:
        nonlocal errors
        user = users[i % len(users)]
        path = f"{url}/api/v1/users/profile/{user['id']}"
        headers = {"Authorization": f"Bearer {user['token']}"}
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            if await fetch(session, "GET", path, headers=headers) != 200:
                errors += 1
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {"rps": round(len(latencies) / elapsed, 1), "errors": errors, **summary_ms(latencies)}


async def open_loop_reads(
    session: aiohttp.ClientSession, url: str, users: list[dict[str, Any]], rate: float, seconds: float
) -> tuple[list[float], int]:
    """Requests sent on a fixed schedule; latency counts from the intended send time, so
    a stalled server cannot hide its stall by delaying the next request."""
    latencies: list[float] = []
    errors = 0
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int, intended: float) -> None:
        nonlocal errors
        user = users[i % len(users)]
        path = f"{url}/api/v1/users/profile/{user['id']}"
        if await fetch(session, "GET", path, headers={"Authorization": f"Bearer {user['token']}"}) != 200:
            errors += 1
        latencies.append(time.perf_counter() - intended)

    start = time.perf_counter()
    total = int(rate * seconds)
    for i in range(total):
        intended = start + i / rate
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, intended)))
    await asyncio.gather(*tasks)
    return latencies, errors


async def logins(
    session: aiohttp.ClientSession, url: str, users: list[dict[str, Any]], concurrency: int, stop: asyncio.Event
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0

    async def client(i: int) -> None:
        nonlocal errors
        user = users[i % len(users)]
        body = {"email": user["email"], "password": user["password"]}
        while not stop.is_set():
            t0 = time.perf_counter()
            if await fetch(session, "POST", url + "/api/v1/users/login", json=body) != 200:
                errors += 1
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {"logins_per_s": round(len(latencies) / elapsed, 2), "errors": errors, **summary_ms(latencies)}


async def timed(coro_factory: Any, seconds: float) -> dict[str, Any]:
    stop = asyncio.Event()
    task = asyncio.create_task(coro_factory(stop))
    await asyncio.sleep(seconds)
    stop.set()
    result: dict[str, Any] = await task
    return result


async def scenario(rounds: int, args: argparse.Namespace) -> dict[str, Any]:
    print(f"-- bcrypt cost {rounds}", flush=True)
    baseline = await asyncio.to_thread(bcrypt_rate, rounds, 2, args.baseline_seconds)
    print(f"   baseline: 2 threads hash {baseline:.2f}/s", flush=True)
    async with Prost(rounds, args.bcrypt_threads) as prost:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            users = await register_users(session, prost.url, max(args.login_concurrency, 8))
            # Warm up connections and caches.
            await closed_loop_reads(session, prost.url, users, args.read_concurrency, 1.0)

            reads = await closed_loop_reads(session, prost.url, users, args.read_concurrency, args.duration)
            print(f"   profile reads (closed loop, {args.read_concurrency} clients): {reads}", flush=True)

            alone = await timed(
                lambda stop: logins(session, prost.url, users, args.login_concurrency, stop), args.duration
            )
            ratio = alone["logins_per_s"] / baseline
            print(f"   logins ({args.login_concurrency} clients): {alone} → {ratio:.0%} of the baseline", flush=True)

            # A fixed share of the capacity just measured: below saturation, so a change in
            # latency shows what the logins take from the reads, not queueing at the limit.
            rate = args.open_rate or max(10.0, round(reads["rps"] * args.open_fraction))
            # Quiet and busy windows alternate, so that a drift in the machine's other load
            # falls on both alike; each side's latencies are pooled.
            window = args.duration / args.alternations
            quiet_lat: list[float] = []
            busy_lat: list[float] = []
            errors = 0
            login_counts: list[dict[str, Any]] = []
            for _ in range(args.alternations):
                lat, err = await open_loop_reads(session, prost.url, users, rate, window)
                quiet_lat += lat
                errors += err
                stop = asyncio.Event()
                login_task = asyncio.create_task(logins(session, prost.url, users, args.login_concurrency, stop))
                await asyncio.sleep(0.5)  # let the logins fill the bcrypt pool first
                lat, err = await open_loop_reads(session, prost.url, users, rate, window)
                busy_lat += lat
                errors += err
                stop.set()
                login_counts.append(await login_task)
            quiet = {"rate": rate, "sent": len(quiet_lat), **summary_ms(quiet_lat)}
            busy = {"rate": rate, "sent": len(busy_lat), **summary_ms(busy_lat)}
            during = {
                "logins_per_s": round(statistics.fmean(c["logins_per_s"] for c in login_counts), 2),
                "errors": sum(c["errors"] for c in login_counts) + errors,
            }
            print(f"   profile reads at {rate}/s, no logins: {quiet}", flush=True)
            print(f"   profile reads at {rate}/s, logins running: {busy}", flush=True)
            print(f"   logins meanwhile: {during}", flush=True)
    return {
        "bcrypt_rounds": rounds,
        "bcrypt_threads": args.bcrypt_threads or os.cpu_count(),
        "baseline_hashes_per_s_2_threads": round(baseline, 2),
        "profile_reads": reads,
        "logins": {**alone, "ratio_to_baseline": round(ratio, 3)},
        "profile_reads_open_loop_quiet": quiet,
        "profile_reads_open_loop_with_logins": busy,
        "logins_during_reads": during,
        "p99_ratio_with_logins": round(busy["p99_ms"] / quiet["p99_ms"], 2) if quiet["p99_ms"] else None,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--baseline-seconds", type=float, default=5.0)
    parser.add_argument("--rounds", default="12,4", help="bcrypt costs to run, comma-separated")
    parser.add_argument("--read-concurrency", type=int, default=32)
    parser.add_argument("--login-concurrency", type=int, default=4)
    parser.add_argument(
        "--open-fraction", type=float, default=0.25, help="open-loop read rate as a share of the measured maximum"
    )
    parser.add_argument("--open-rate", type=float, default=0.0, help="a fixed open-loop read rate instead (per second)")
    parser.add_argument(
        "--bcrypt-threads", type=int, default=0, help="PROST_BCRYPT_THREADS for prost up (0: one per core)"
    )
    parser.add_argument("--alternations", type=int, default=4, help="quiet/busy window pairs in the open-loop phase")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    results = [await scenario(int(r), args) for r in args.rounds.split(",")]
    summary = {
        "bench": "users",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "mode": "prost up (embedded)",
            # The machine is shared: the 1-minute load average before and after says how quiet it was.
            "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "duration_s": args.duration,
        "runs": results,
    }
    print(json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    asyncio.run(main())
