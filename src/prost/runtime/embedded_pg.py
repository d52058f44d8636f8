"""The embedded PostgreSQL (`pgserver`): a real PostgreSQL 16 shipped in a wheel."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

MAX_CONNECTIONS = 300
"""PostgreSQL's default of 100 is tight for the distributed mode's processes and pools
on one machine; set once, when the data directory is made."""


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (Path(data_dir) / "pg").resolve()
        self._server: Any = None

    async def start(self) -> str:
        """Start (or attach to) the server and return a URL for the `prost` database."""
        from pgserver import get_server  # type: ignore[attr-defined]

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (self.pgdata / "PG_VERSION").exists()
        await asyncio.to_thread(forget_dead_handles, self.pgdata)
        self._server = await asyncio.to_thread(get_server, self.pgdata, cleanup_mode="stop")
        if fresh:
            # A setting that needs a restart: made on the new cluster, then restarted.
            await asyncio.to_thread(self._server.psql, f"ALTER SYSTEM SET max_connections = {MAX_CONNECTIONS};")
            await asyncio.to_thread(self._server.cleanup)
            self._server = await asyncio.to_thread(get_server, self.pgdata, cleanup_mode="stop")
        uri = urlparse(self._server.get_uri())
        socket_dir = parse_qs(uri.query)["host"][0]
        return f"postgresql://postgres@/prost?host={socket_dir}"

    async def stop(self) -> None:
        if self._server is not None:
            await asyncio.to_thread(self._server.cleanup)
            self._server = None


def forget_dead_handles(pgdata: Path) -> None:
    """Drop the processes that died holding the server from pgserver's list of them.

    pgserver stops its server when the last process attached to it lets go, and keeps
    who is attached as process ids in `<pgdata>/.handle_pids.json`. A process killed
    without letting go (`kill -9`, the OOM killer, a power cut of the terminal) stays
    listed for ever: no later stop is then the last one, and the server outlives every
    `prost up` after it. Called before attaching, under pgserver's own inter-process
    lock (pgserver 0.1.4 keeps both as they are here)."""
    from pgserver.postgres_server import PostgresServer  # type: ignore[import-untyped]

    handles = pgdata / ".handle_pids.json"
    with PostgresServer._lock:
        if not handles.exists():
            return
        listed = [int(pid) for pid in json.loads(handles.read_text())]
        alive = [pid for pid in listed if _alive(pid)]
        if alive != listed:
            handles.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        pass
    return True
