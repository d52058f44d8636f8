"""`prost up` as a real process: embedded PostgreSQL under a fresh data directory,
register, log in and read the profile over HTTP, stop with SIGTERM, start again on the
same directory and find the user, and the old token, still good."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from helpers import eventually
from processes import ProstProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "prost-data"


def up_env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROST_")}
    # No PROST_DATABASE_URL and no PROST_JWT_SECRET: the embedded database, a generated secret.
    env.update(
        {
            "PROST_HTTP_PORT": str(port),
            "PROST_DATA_DIR": str(data_dir),
            "PROST_BCRYPT_ROUNDS": "4",
            "PROST_LOG_LEVEL": "WARNING",
        }
    )
    return env


async def test_prost_up_serves_users_stops_cleanly_and_keeps_data_and_tokens(data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    env = up_env(data_dir, port)
    first = ProstProcess(["up"], env=env, log_path=tmp_path / "up-1.log", port=port)
    tag = uuid.uuid4().hex[:8]
    ident = {"email": f"e2e-{tag}@prost.test", "username": f"e2e_{tag}", "password": "password-123"}
    await first.start()
    try:
        async with httpx.AsyncClient(base_url=first.url, timeout=30) as client:
            r = await client.post("/api/v1/users/register", json=ident)
            assert r.status_code == 201, r.text
            user = r.json()
            r = await client.post("/api/v1/users/login", json={"email": ident["email"], "password": ident["password"]})
            assert r.status_code == 200, r.text
            token = r.json()["token"]
            r = await client.get(f"/api/v1/users/profile/{user['id']}", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200
            assert r.json() == user
    finally:
        code = await first.stop(signal.SIGTERM)
    assert code == 0, first.tail()
    assert (data_dir / "jwt_secret").is_file()
    # The embedded PostgreSQL stopped with it (a running server keeps its pid file).
    assert not (data_dir / "pg" / "postmaster.pid").exists()

    second = ProstProcess(["up"], env=env, log_path=tmp_path / "up-2.log", port=port)
    await second.start()
    try:
        async with httpx.AsyncClient(base_url=second.url, timeout=30) as client:
            r = await client.get(f"/api/v1/users/profile/{user['id']}", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
            assert r.json() == user
            r = await client.post("/api/v1/users/login", json={"email": ident["email"], "password": ident["password"]})
            assert r.status_code == 200
    finally:
        code = await second.stop(signal.SIGTERM)
    assert code == 0, second.tail()
    assert not (data_dir / "pg" / "postmaster.pid").exists()


async def test_a_killed_prost_up_leaves_no_database_running_after_the_next_stop(data_dir: Path, tmp_path: Path) -> None:
    """`kill -9` of `prost up` leaves its embedded PostgreSQL running (nothing was there
    to stop it). The next `prost up` on the same directory takes the server over, and
    its clean stop stops it: no PostgreSQL is left behind for good."""
    port = free_port()
    env = up_env(data_dir, port)
    first = ProstProcess(["up"], env=env, log_path=tmp_path / "up-1.log", port=port)
    await first.start()
    assert first.proc is not None
    first.proc.kill()  # prost alone, as kill -9 or the OOM killer would
    await first.proc.wait()
    postmaster = data_dir / "pg" / "postmaster.pid"
    server_pid = int(postmaster.read_text().split()[0])
    assert psutil.pid_exists(server_pid)  # orphaned, still serving

    second = ProstProcess(["up"], env=env, log_path=tmp_path / "up-2.log", port=port)
    await second.start()
    code = await second.stop(signal.SIGTERM)
    assert code == 0, second.tail()
    await eventually(lambda: not psutil.pid_exists(server_pid), timeout=20)
    assert not postmaster.exists()
