"""The distributed mode: one service per process, on PostgreSQL and RabbitMQ.

`serve(name)` runs one service (or the gateway) in this process, on
`PROST_HTTP_HOST:PROST_HTTP_PORT`; replicas of a service may share its port
(SO_REUSEPORT), so a peer's single URL reaches all of them. It does not migrate:
`prost migrate` (or the migration Job) does, once.

`Supervisor` is `prost up --distributed`: it migrates, gives each service a port
(`PROST_<SERVICE>_PORT`, else a free loopback one), starts the gateway and every
service (with `--replicas`) as child processes, restarts a child that dies, and on
Ctrl-C/SIGTERM stops them all (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field

import uvicorn

from prost.kit import db, migrations
from prost.kit.auth import TokenAuthority, TokenRevocations
from prost.kit.clients import ServiceClients
from prost.kit.db import create_engine
from prost.kit.http import create_service_app
from prost.kit.settings import SERVICES, Settings
from prost.runtime import registry, revocations
from prost.runtime.embedded import QuietServer, bind_socket, make_bus
from prost.runtime.host import ServiceHost
from prost.runtime.loop import tune_collector
from prost.runtime.openapi import public_openapi
from prost.runtime.secrets import SecretMissing, jwt_secret

log = logging.getLogger("prost.runtime")

PROCESSES = ("gateway", *SERVICES)


class ConfigurationError(RuntimeError):
    pass


def peer_urls(settings: Settings) -> dict[str, str]:
    return {s: url for s in SERVICES if (url := settings.service_url(s))}


async def _serve_app(app: object, settings: Settings, stop: asyncio.Event) -> None:
    sock = bind_socket(settings.http_host, settings.http_port, reuse_port=True)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", loop="none", http="httptools")  # type: ignore[arg-type]
    server = QuietServer(config)
    tune_collector()  # the app and its services are built: what is left is per request
    task = asyncio.create_task(server.serve(sockets=[sock]))
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    sock.close()


async def serve(name: str, settings: Settings, stop: asyncio.Event) -> None:
    if name not in PROCESSES:
        raise ConfigurationError(f"unknown service {name!r}; one of {', '.join(PROCESSES)}")
    try:
        secret = jwt_secret(settings, embedded=False)
    except SecretMissing as exc:
        raise ConfigurationError(str(exc)) from exc
    auth = TokenAuthority(secret=secret, ttl_seconds=settings.jwt_ttl_seconds, revocations=TokenRevocations())
    if name == "gateway":
        from prost.gateway.proxy import create_gateway_app

        urls = peer_urls(settings)
        missing = [s for s in SERVICES if s not in urls]
        if missing:
            raise ConfigurationError("the gateway needs " + ", ".join(f"PROST_{s.upper()}_URL" for s in missing))
        app = create_gateway_app(settings=settings, auth=auth, urls=urls, openapi_schema=public_openapi())
        await _serve_gateway(app, settings, auth, urls, stop)
        return

    if not settings.database_url or not settings.broker_url:
        raise ConfigurationError("a service process needs PROST_DATABASE_URL and PROST_BROKER_URL")
    engine = create_engine(
        settings.database_url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
    )
    bus = make_bus(settings)
    await bus.connect()

    host = ServiceHost(
        [registry.definition(name)],
        settings=settings,
        engine=engine,
        bus=bus,
        auth=auth,
        urls=peer_urls(settings),
        declare_also=registry.definitions(),
    )
    app = create_service_app(
        name, ready_checks={"database": functools.partial(db.is_ready, engine), "bus": bus.is_ready}
    )
    app.state.auth = auth
    app.state.settings = settings
    host.mount(app)
    try:
        await host.start()
        await _serve_app(app, settings, stop)
    finally:
        await host.stop()
        await bus.close()
        await engine.dispose()


async def _serve_gateway(
    app: object, settings: Settings, auth: TokenAuthority, urls: dict[str, str], stop: asyncio.Event
) -> None:
    """The gateway refuses revoked tokens too: it follows the same feed as the services
    (so it needs the broker), but holds no database connection."""
    assert auth.revocations is not None
    if not settings.broker_url:
        raise ConfigurationError("the gateway needs PROST_BROKER_URL (to hear of revoked tokens)")
    bus = make_bus(settings)
    await bus.connect()
    clients = ServiceClients(caller="gateway", urls=urls, auth=auth, timeout=settings.http_client_timeout_seconds)
    await revocations.listen_for_revocations(bus, auth.revocations)
    refresher = asyncio.create_task(revocations.keep_snapshot_fresh(clients, auth.revocations))
    try:
        await _serve_app(app, settings, stop)
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        await clients.close()
        await bus.close()


def parse_replicas(spec: str) -> dict[str, int]:
    """`orders=2,catalog=2` → {"orders": 2, "catalog": 2}."""
    result: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = part.partition("=")
        if name not in PROCESSES or not count.isdigit() or int(count) < 1:
            raise ConfigurationError(f"bad replica spec {part!r}: use service=N with N ≥ 1")
        result[name] = int(count)
    return result


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Child:
    name: str
    replica: int
    env: dict[str, str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    GRACE_SECONDS = 10.0

    def __init__(self, settings: Settings, replicas: dict[str, int]) -> None:
        self.settings = settings
        self.replicas = replicas
        self.children: list[Child] = []
        self.stopping = asyncio.Event()
        self.url = ""

    async def run(self) -> int:
        s = self.settings
        if not s.broker_url:
            raise ConfigurationError("the distributed mode needs PROST_BROKER_URL (RabbitMQ)")
        try:
            jwt_secret(s, embedded=False)
        except SecretMissing as exc:
            raise ConfigurationError(str(exc)) from exc
        pg = None
        database_url = s.database_url
        if not database_url:
            from prost.runtime.embedded_pg import EmbeddedPostgres

            pg = EmbeddedPostgres(s.data_dir)
            database_url = await pg.start()
        try:
            await migrations.ensure_database(database_url)
            await migrations.upgrade(database_url)
            self._plan(database_url)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.stopping.set)
            for child in self.children:
                child.task = asyncio.create_task(self._keep_running(child))
            log.info("prost (distributed) is starting at %s", self.url)
            await self.stopping.wait()
            await self._stop_all()
        finally:
            if pg is not None:
                await pg.stop()
        return 0

    def _plan(self, database_url: str) -> None:
        s = self.settings
        ports = {svc: (getattr(s, f"{svc}_port") or free_port()) for svc in SERVICES}
        base = {k: v for k, v in os.environ.items() if k not in ("PROST_HTTP_HOST", "PROST_HTTP_PORT")}
        base.update(
            {
                "PROST_DATABASE_URL": database_url,
                "PROST_BROKER_URL": s.broker_url or "",
                **{f"PROST_{svc.upper()}_URL": f"http://127.0.0.1:{port}" for svc, port in ports.items()},
            }
        )
        self.url = f"http://{s.http_host}:{s.http_port}"
        for name in PROCESSES:
            env = dict(base)
            if name == "gateway":
                env["PROST_HTTP_HOST"] = s.http_host
                env["PROST_HTTP_PORT"] = str(s.http_port)
            else:
                env["PROST_HTTP_HOST"] = "127.0.0.1"
                env["PROST_HTTP_PORT"] = str(ports[name])
            for replica in range(self.replicas.get(name, 1)):
                self.children.append(Child(name=name, replica=replica, env=env))

    async def _keep_running(self, child: Child) -> None:
        delay = 0.5
        while not self.stopping.is_set():
            child.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "prost.cli", "serve", child.name, env=child.env, start_new_session=True
            )
            started = asyncio.get_running_loop().time()
            code = await child.process.wait()
            if self.stopping.is_set():
                return
            child.restarts += 1
            log.error("%s[%d] exited with %s; restarting (restart %d)", child.name, child.replica, code, child.restarts)
            if asyncio.get_running_loop().time() - started > 30:
                delay = 0.5
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            delay = min(delay * 2, 10.0)

    async def _stop_all(self) -> None:
        running = [c.process for c in self.children if c.process is not None and c.process.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), self.GRACE_SECONDS)
        except TimeoutError:
            for proc in running:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in running))
        for child in self.children:
            if child.task is not None:
                child.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await child.task


def run_distributed(settings: Settings, *, replicas: str) -> int:
    try:
        return asyncio.run(Supervisor(settings, parse_replicas(replicas)).run())
    except ConfigurationError as exc:
        print(f"prost: {exc}", file=sys.stderr)  # noqa: T201
        return 2
