"""The embedded mode: the gateway and every service in one process.

`System` is also the test harness: `async with System(settings) as system:` gives a
running prost on `system.url`. It starts, in order: the database (the configured
`PROST_DATABASE_URL`, else the embedded PostgreSQL under `PROST_DATA_DIR`), the
migrations, the bus (in-process unless `PROST_BROKER_URL` is set), the HTTP server on
an already-bound socket (so the services know their own address before they start),
then the services' start-up steps, consumers, relays and loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Self

import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.kit import migrations
from prost.kit.auth import TokenAuthority, TokenRevocations
from prost.kit.bus.base import MessageBus
from prost.kit.db import create_engine
from prost.kit.settings import SERVICES, Settings
from prost.runtime import registry
from prost.runtime.embedded_pg import EmbeddedPostgres
from prost.runtime.host import ServiceHost
from prost.runtime.secrets import jwt_secret

log = logging.getLogger("prost.runtime")

Progress = Callable[[str], None]


def make_bus(settings: Settings) -> MessageBus:
    """The bus the settings name. Events no service consumes are its announcements,
    worked out from every service's subscriptions (not only the ones this process runs)."""
    announcements = registry.announcements()
    if settings.broker_url:
        from prost.kit.bus.rabbitmq import RabbitMQBus

        return RabbitMQBus(
            settings.broker_url,
            quorum=settings.rabbitmq_quorum,
            prefetch=settings.rabbitmq_prefetch,
            max_delivery_attempts=settings.max_delivery_attempts,
            retry_base_delay_ms=settings.retry_base_delay_ms,
            announcements=announcements,
        )
    from prost.kit.bus.memory import MemoryBus

    return MemoryBus(
        max_delivery_attempts=settings.max_delivery_attempts,
        retry_base_delay_ms=settings.retry_base_delay_ms,
        announcements=announcements,
    )


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the runners own SIGINT/SIGTERM and
    stop the system in order (uvicorn would re-raise the signal after serving and
    kill the process before the embedded PostgreSQL is stopped)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """Bind before serving, so the port is known early; `reuse_port` lets replicas share it."""
    # IPPROTO_TCP, not 0: asyncio turns TCP_NODELAY on only for sockets that say TCP,
    # and without it every request after the first on a kept-alive connection waits
    # ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class System:
    def __init__(
        self, settings: Settings, *, progress: Progress | None = None, services: list[str] | None = None
    ) -> None:
        self.settings = settings
        self.progress = progress or (lambda _msg: None)
        self.services = services
        self.database_url: str | None = settings.database_url
        self.engine: AsyncEngine | None = None
        self.bus: MessageBus | None = None
        self.host: ServiceHost | None = None
        self.app: FastAPI | None = None
        self.url = ""
        self._pg: EmbeddedPostgres | None = None
        self._server: uvicorn.Server | None = None
        self._serve_task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    async def start(self) -> None:
        s = self.settings
        if self.database_url is None:
            self.progress("starting the embedded PostgreSQL")
            self._pg = EmbeddedPostgres(s.data_dir)
            self.database_url = await self._pg.start()
        self.progress("applying migrations")
        await migrations.ensure_database(self.database_url)
        await migrations.upgrade(self.database_url, services=[d for d in SERVICES if d in (self.services or SERVICES)])
        # One pool for every service, their relays (each holds a connection while the
        # in-process bus runs its handlers) and their inboxes.
        self.engine = create_engine(self.database_url, pool_size=s.db_pool_size * 4, max_overflow=s.db_max_overflow * 4)
        self.progress("connecting the event bus")
        self.bus = make_bus(s)
        await self.bus.connect()

        self._socket = bind_socket(s.http_host, s.http_port)
        port = self._socket.getsockname()[1]
        self.url = f"http://{s.http_host}:{port}"
        auth = TokenAuthority(
            secret=jwt_secret(s, embedded=True), ttl_seconds=s.jwt_ttl_seconds, revocations=TokenRevocations()
        )
        definitions = registry.definitions(self.services)
        self.host = ServiceHost(
            definitions,
            settings=s,
            engine=self.engine,
            bus=self.bus,
            auth=auth,
            urls=dict.fromkeys(SERVICES, self.url),
        )
        from prost.gateway.embedded import create_embedded_app

        self.app = create_embedded_app(self.host, settings=s, engine=self.engine, bus=self.bus, auth=auth)
        self.progress("starting the services")
        await self.host.start()
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="off", loop="none", http="httptools"
        )
        self._server = QuietServer(config)
        self._serve_task = asyncio.create_task(self._server.serve(sockets=[self._socket]), name="http")
        while not self._server.started:
            if self._serve_task.done():
                await self._serve_task
                raise RuntimeError("the HTTP server stopped while starting")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._serve_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._serve_task
        if self.host is not None:
            await self.host.stop()
        if self.bus is not None:
            await self.bus.close()
        if self.engine is not None:
            await self.engine.dispose()
        if self._socket is not None:
            self._socket.close()
        if self._pg is not None:
            await self._pg.stop()

    async def wait(self) -> None:
        if self._serve_task is not None:
            await self._serve_task

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
