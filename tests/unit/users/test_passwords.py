"""bcrypt hashing off the event loop."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import bcrypt
import pytest

from prost.users import passwords
from prost.users.passwords import PasswordHasher


@pytest.fixture
def hasher() -> Iterator[PasswordHasher]:
    h = PasswordHasher(4, threads=2)
    yield h
    h.close()


async def test_a_hashed_password_verifies_and_another_does_not(hasher: PasswordHasher) -> None:
    h = await hasher.hash("correct horse")
    assert h.startswith("$2b$04$")
    assert await hasher.verify("correct horse", h)
    assert not await hasher.verify("correct horsE", h)


async def test_the_cost_comes_from_the_settings() -> None:
    h = PasswordHasher(5)
    try:
        assert (await h.hash("password-1")).startswith("$2b$05$")
    finally:
        h.close()


async def test_an_unknown_account_is_checked_against_a_dummy_hash_of_the_same_cost(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bytes] = []
    real = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        seen.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(passwords.bcrypt, "checkpw", spy)
    assert not await hasher.verify("whatever-1", None)
    assert len(seen) == 1
    assert seen[0].startswith(b"$2b$04$")
    assert seen[0].decode() == await hasher.dummy_hash()


async def test_a_password_over_72_bytes_matches_nothing_but_is_still_hashed(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = await hasher.hash("x" * 72)
    calls: list[int] = []
    real = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        calls.append(len(password))
        return real(password, hashed)

    monkeypatch.setattr(passwords.bcrypt, "checkpw", spy)
    # bcrypt would read only the first 72 bytes, which match: the longer password must not.
    assert not await hasher.verify("x" * 73, stored)
    assert calls == [72]


async def test_hashing_runs_on_the_pool_threads_not_the_event_loop(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    real = bcrypt.hashpw

    def spy(password: bytes, salt: bytes) -> bytes:
        threads.append(threading.current_thread().name)
        return real(password, salt)

    monkeypatch.setattr(passwords.bcrypt, "hashpw", spy)
    await hasher.hash("password-1")
    assert threads
    assert threads[0].startswith("bcrypt")
    assert threads[0] != threading.main_thread().name


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="thread scheduling policies are a Linux feature")
async def test_the_hashing_threads_run_at_the_lowest_priority(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int]] = []
    real = bcrypt.hashpw

    def spy(password: bytes, salt: bytes) -> bytes:
        tid = threading.get_native_id()
        seen.append((os.sched_getscheduler(tid), os.getpriority(os.PRIO_PROCESS, tid)))
        return real(password, salt)

    monkeypatch.setattr(passwords.bcrypt, "hashpw", spy)
    await hasher.hash("password-1")
    policy, nice = seen[0]
    me = threading.get_native_id()
    assert policy == os.SCHED_IDLE or nice > os.getpriority(os.PRIO_PROCESS, me)
    assert os.sched_getscheduler(me) == os.SCHED_OTHER  # the event loop's thread is untouched


def test_the_pool_is_sized_to_the_cores_by_default() -> None:
    assert PasswordHasher(4).threads == max(1, os.cpu_count() or 1)
