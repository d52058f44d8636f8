"""Gateway overhead: GET /api/v1/products/{id} straight from the catalog service and
through the gateway, side by side in one run (alternating rounds, same load).

Starts `prost serve catalog` and `prost serve gateway` as processes on a fresh
database and RabbitMQ vhost (the machine's servers, or PROST_BENCH_DATABASE_URL /
PROST_BENCH_BROKER_URL), and, as the alternative the gateway's HTTP client was chosen
against, a minimal httpx.AsyncClient proxy (bench/_httpx_proxy.py). Needs wrk. Target: the gateway keeps ≥ 60% of the
service's own throughput. Last line: a JSON summary.

    .venv/bin/python bench/gateway.py [--seconds 10] [--connections 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from prost.kit.auth import TokenAuthority

from _procs import Proc, free_port, fresh_database, fresh_vhost, wrk

SECRET = "bench-secret-" + "b" * 40


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logdir = Path(tempfile.mkdtemp(prefix="prost-bench-"))
    async with fresh_database() as db:
        with fresh_vhost() as broker:
            catalog_port, gateway_port = free_port(), free_port()
            common = {"PROST_DATABASE_URL": db, "PROST_BROKER_URL": broker, "PROST_JWT_SECRET": SECRET}
            catalog = Proc(["serve", "catalog"], common, catalog_port, logdir / "catalog.log")
            others = {
                f"PROST_{s.upper()}_URL": f"http://127.0.0.1:{free_port()}"
                for s in ("users", "cart", "orders", "payments")
            }
            gateway = Proc(
                ["serve", "gateway"],
                common | others | {"PROST_CATALOG_URL": catalog.url},
                gateway_port,
                logdir / "gateway.log",
            )
            httpx_port = free_port()
            httpx_proxy = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("_httpx_proxy.py")), str(httpx_port), catalog.url],
                stdout=(logdir / "httpx.log").open("ab"),
                stderr=subprocess.STDOUT,
            )
            httpx_url = f"http://127.0.0.1:{httpx_port}"
            try:
                await catalog.ready()
                await gateway.ready("/health")
                admin, _ = TokenAuthority(secret=SECRET).issue(
                    user_id=uuid.uuid4(), email="bench@prost.test", username="bench", role="admin"
                )
                async with httpx.AsyncClient() as client:
                    body = {"sku": f"BENCH-{uuid.uuid4().hex[:8]}", "name": "Bench", "price": "9.99", "stock": 10}
                    r = await client.post(
                        f"{catalog.url}/api/v1/products", json=body, headers={"Authorization": f"Bearer {admin}"}
                    )
                    r.raise_for_status()
                    product_id = r.json()["id"]
                path = f"/api/v1/products/{product_id}"
                for url in (catalog.url, gateway.url, httpx_url):  # warm-up
                    wrk(url + path, seconds=2, connections=args.connections)
                direct, proxied, via_httpx = [], [], []
                for _ in range(args.rounds):
                    direct.append(wrk(catalog.url + path, seconds=args.seconds, connections=args.connections))
                    proxied.append(wrk(gateway.url + path, seconds=args.seconds, connections=args.connections))
                    via_httpx.append(wrk(httpx_url + path, seconds=args.seconds, connections=args.connections))
            finally:
                httpx_proxy.terminate()
                gateway.stop()
                catalog.stop()
    d_rps = statistics.mean(x["rps"] for x in direct)
    g_rps = statistics.mean(x["rps"] for x in proxied)
    x_rps = statistics.mean(x["rps"] for x in via_httpx)
    for name, runs in (("service alone", direct), ("through gateway", proxied), ("httpx proxy", via_httpx)):
        for run in runs:
            print(
                f"{name:16} {run['rps']:8.0f} req/s  p50 {run.get('p50_ms', 0):6.2f} ms  p99 {run.get('p99_ms', 0):6.2f} ms"
            )
    summary = {
        "benchmark": "gateway",
        "endpoint": "GET /api/v1/products/{id}",
        "connections": args.connections,
        "service_rps": round(d_rps),
        "gateway_rps": round(g_rps),
        "ratio": round(g_rps / d_rps, 3),
        "httpx_proxy_rps": round(x_rps),
        "httpx_proxy_ratio": round(x_rps / d_rps, 3),
        "target_ratio": 0.6,
        "service_p99_ms": round(statistics.mean(x.get("p99_ms", 0) for x in direct), 2),
        "gateway_p99_ms": round(statistics.mean(x.get("p99_ms", 0) for x in proxied), 2),
        "errors": int(sum(x["non_2xx"] for x in direct + proxied)),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
