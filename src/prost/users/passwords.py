"""Password hashing: bcrypt, off the event loop.

One hash costs about 234 ms at cost 12 on this machine, so it never runs on the event
loop. `PasswordHasher` owns a small thread pool sized to the cores; its threads run at
the lowest CPU priority (`SCHED_IDLE`), so logins hash at full speed on an idle
machine but never take the CPU from the event loop and the database (profile reads
keep their latency while logins run; `bench/users.py` measures both).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import bcrypt

from prost.users.domain import PASSWORD_MAX_BYTES, fits_bcrypt

_LOW_PRIORITY_NICE = 19


def _lower_thread_priority() -> None:
    """Runs in each hashing thread: make it yield the CPU to the event loop and database.

    On Linux a thread is a task with its own scheduling policy, so this slows only this
    thread. `SCHED_IDLE` is made for such work: it runs on CPU time nothing else wants,
    and a waking normal task (the event loop, a PostgreSQL backend) preempts it at once
    and may be placed on its CPU as if that CPU were idle. Where that is refused, a nice
    value of 19 comes close. bcrypt threads then use the CPU the rest leaves idle: logins
    still hash at full speed on an idle machine, and profile reads keep their latency
    while logins run. Elsewhere (no such calls) it is simply skipped."""
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, tid, _LOW_PRIORITY_NICE)


class PasswordHasher:
    """bcrypt off the event loop, on a bounded pool sized to the machine's cores.

    A pool of its own (not the loop's default executor) so that a burst of logins
    queues here instead of taking every default thread, and so its threads can run at
    a lower priority. `dummy_hash` is checked when the email is unknown, so an unknown
    email and a wrong password take the same time."""

    def __init__(self, rounds: int, *, threads: int | None = None) -> None:
        self.rounds = rounds
        self.threads = threads or max(1, os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None
        self._dummy: bytes | None = None

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.threads, thread_name_prefix="bcrypt", initializer=_lower_thread_priority
            )
        return self._pool

    def hash_sync(self, password: str) -> str:
        return bcrypt.hashpw(password.encode(), bcrypt.gensalt(self.rounds)).decode()

    @staticmethod
    def verify_sync(password: str, password_hash: str) -> bool:
        if not fits_bcrypt(password):
            return False
        try:
            return bcrypt.checkpw(password.encode(), password_hash.encode())
        except ValueError:
            return False

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._executor(), self.hash_sync, password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Check a password; with no hash (unknown email) check against the dummy hash
        so the answer takes as long, and return False. A password too long for bcrypt
        is checked as a short stand-in for the same reason."""
        if password_hash is None:
            password_hash = await self.dummy_hash()
        candidate = (
            password if fits_bcrypt(password) else password.encode()[:PASSWORD_MAX_BYTES].decode(errors="ignore")
        )
        ok = await asyncio.get_running_loop().run_in_executor(
            self._executor(), self.verify_sync, candidate, password_hash
        )
        return ok and candidate == password

    async def dummy_hash(self) -> str:
        if self._dummy is None:
            # Same cost as real hashes, so that comparing against it takes as long.
            value = await self.hash(uuid.uuid4().hex)
            self._dummy = self._dummy or value.encode()
        return self._dummy.decode()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
