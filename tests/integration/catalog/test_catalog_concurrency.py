"""Stock is never oversold, whatever runs at once (real PostgreSQL, real connections):
racers for the last units, orders locking the same products in opposite orders,
sweepers side by side, a commit racing an expiry, and random interleavings of every
operation checked against the invariants."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from catalog_support import counters, make_product
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from prost.catalog import domain, inventory
from prost.catalog.repository import run_in_transaction
from prost.kit import db
from prost.kit.db import Session, create_engine


@pytest.fixture(scope="module")
async def racing_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """Enough connections for the racers to really run at the same time."""
    eng = create_engine(database_url, pool_size=10, max_overflow=10)
    yield eng
    await eng.dispose()


async def attempt(engine: AsyncEngine, fn: Callable[[Session], Awaitable[Any]]) -> Any:
    """One racer: its own transaction, no retry (a deadlock would surface here)."""
    async with db.transaction(engine) as session:
        return await fn(session)


# -- the last units ------------------------------------------------------------------


async def test_sixty_carts_racing_for_ten_units_get_exactly_ten(racing_engine: AsyncEngine) -> None:
    pid = await make_product(racing_engine, stock=10)

    async def racer(_: int) -> bool:
        try:
            await attempt(
                racing_engine,
                lambda s: inventory.set_hold(s, cart_id=uuid.uuid4(), product_id=pid, quantity=1, ttl_seconds=600),
            )
        except domain.OutOfStock:
            return False
        return True

    won = await asyncio.gather(*(racer(i) for i in range(60)))
    assert sum(won) == 10
    c = await counters(racing_engine, pid)
    assert (c["stock"], c["reserved"], c["active_units"], c["available"]) == (10, 10, 10, 0)


async def test_sixty_orders_racing_for_ten_units_reserve_exactly_ten(racing_engine: AsyncEngine) -> None:
    pid = await make_product(racing_engine, stock=10)

    async def racer(_: int) -> str:
        result = await attempt(
            racing_engine,
            lambda s: inventory.reserve_for_order(
                s, order_id=uuid.uuid4(), lines=[(pid, 1)], cart_id=None, ttl_seconds=600
            ),
        )
        return str(result.outcome)

    outcomes = await asyncio.gather(*(racer(i) for i in range(60)))
    assert (outcomes.count("reserved"), outcomes.count("failed")) == (10, 50)
    c = await counters(racing_engine, pid)
    assert (c["reserved"], c["active_units"], c["available"]) == (10, 10, 0)


async def test_orders_locking_two_products_in_opposite_orders_never_deadlock(racing_engine: AsyncEngine) -> None:
    a = await make_product(racing_engine, stock=150)
    b = await make_product(racing_engine, stock=150)

    async def racer(first: uuid.UUID, second: uuid.UUID) -> str:
        result = await attempt(
            racing_engine,
            lambda s: inventory.reserve_for_order(
                s, order_id=uuid.uuid4(), lines=[(first, 1), (second, 1)], cart_id=None, ttl_seconds=600
            ),
        )
        return str(result.outcome)

    pairs = [racer(a, b) for _ in range(100)] + [racer(b, a) for _ in range(100)]
    outcomes = await asyncio.gather(*pairs)  # any deadlock error would fail the test here
    reserved = outcomes.count("reserved")
    assert (reserved, outcomes.count("failed")) == (150, 50)
    ca, cb = await counters(racing_engine, a), await counters(racing_engine, b)
    assert ca["reserved"] == cb["reserved"] == ca["active_units"] == cb["active_units"] == reserved
    assert ca["stock"] == cb["stock"] == 150


async def test_a_deadlock_is_retried_by_the_unit_of_work_and_never_reaches_the_caller(
    racing_engine: AsyncEngine,
) -> None:
    a = await make_product(racing_engine, stock=10)
    b = await make_product(racing_engine, stock=10)
    both_hold_their_first = asyncio.Barrier(2)
    attempts: list[str] = []

    def crosswise(first: uuid.UUID, second: uuid.UUID, name: str) -> Callable[[Session], Awaitable[None]]:
        async def work(s: Session) -> None:
            attempts.append(name)
            await inventory.set_hold(s, cart_id=uuid.uuid4(), product_id=first, quantity=1, ttl_seconds=600)
            if attempts.count(name) == 1:
                await both_hold_their_first.wait()  # make the first attempts cross for sure
            await inventory.set_hold(s, cart_id=uuid.uuid4(), product_id=second, quantity=1, ttl_seconds=600)

        return work

    await asyncio.gather(
        run_in_transaction(racing_engine, crosswise(a, b, "ab")),
        run_in_transaction(racing_engine, crosswise(b, a, "ba")),
    )
    assert len(attempts) == 3, "PostgreSQL aborted one of the two, which ran again"
    assert (await counters(racing_engine, a))["reserved"] == (await counters(racing_engine, b))["reserved"] == 2


async def test_a_one_statement_unit_runs_outside_a_transaction_block(racing_engine: AsyncEngine) -> None:
    """`unit=db.autocommit` is for work of exactly one statement (the cart's extension of
    its holds): no `BEGIN` and no `COMMIT` of its own; the default unit is a transaction."""

    async def in_a_block(s: Session) -> bool:
        return bool(s.driver.is_in_transaction())

    assert await run_in_transaction(racing_engine, in_a_block) is True
    assert await run_in_transaction(racing_engine, in_a_block, unit=db.autocommit) is False


# -- sweepers ------------------------------------------------------------------------


async def test_two_sweepers_over_a_thousand_expired_reservations_release_each_once(
    make_database: Callable[[], Any],
) -> None:
    async with make_database() as url:
        engine = create_engine(url, pool_size=4, max_overflow=0)
        try:
            products = [await make_product(engine, stock=1000) for _ in range(20)]
            async with engine.begin() as conn:
                await conn.execute(
                    sa.text(
                        """
                        INSERT INTO catalog.inventory_reservations (id, kind, owner_id, product_id, quantity, expires_at)
                        SELECT gen_random_uuid(), CASE WHEN i % 2 = 0 THEN 'order' ELSE 'cart_hold' END,
                               gen_random_uuid(), (CAST(:products AS uuid[]))[1 + i % 20], 1 + i % 3, now() - interval '1 second'
                        FROM generate_series(0, 999) AS i
                        """
                    ),
                    {"products": products},
                )
                await conn.execute(
                    sa.text(
                        "UPDATE catalog.products p SET reserved = (SELECT coalesce(sum(quantity), 0) FROM catalog.inventory_reservations r "
                        "WHERE r.product_id = p.id AND r.status = 'active')"
                    )
                )

            async def sweeper() -> int:
                total = 0
                idle = 0
                while idle < 3:  # a few empty rounds: the other may still hold some products
                    ended = await run_in_transaction(engine, lambda s: inventory.sweep_expired(s, max_products=3))
                    total += ended
                    idle = idle + 1 if ended == 0 else 0
                    await asyncio.sleep(0)
                return total

            first, second = await asyncio.gather(sweeper(), sweeper())
            assert first + second == 1000
            assert first > 0
            assert second > 0
            async with engine.connect() as conn:
                left = await conn.scalar(
                    sa.text("SELECT count(*) FROM catalog.inventory_reservations WHERE status = 'active'")
                )
                events = (
                    await conn.execute(
                        sa.text(
                            "SELECT envelope->'payload'->>'owner_id' AS owner, count(*) AS n FROM catalog.outbox "
                            "WHERE event_type = 'stock.released' GROUP BY 1"
                        )
                    )
                ).all()
                reserved = await conn.scalar(sa.text("SELECT sum(reserved) FROM catalog.products"))
            assert left == 0
            assert len(events) == 1000
            assert {n for _, n in events} == {1}
            assert reserved == 0
        finally:
            await engine.dispose()


# -- commit against expiry -----------------------------------------------------------


async def test_a_commit_and_an_expiry_racing_two_hundred_times_never_both_happen(racing_engine: AsyncEngine) -> None:
    rounds = 200
    pid = await make_product(racing_engine, stock=rounds * 2)
    outcomes: dict[tuple[str, int], int] = {}
    for i in range(rounds):
        order = uuid.uuid4()
        async with db.transaction(racing_engine) as s:
            await inventory.reserve_for_order(s, order_id=order, lines=[(pid, 2)], cart_id=None, ttl_seconds=600)
            await s.execute(
                sa.text(
                    "UPDATE catalog.inventory_reservations SET expires_at = now() - interval '1 ms' WHERE owner_id = :o"
                ),
                {"o": order},
            )
        commit, _ = await asyncio.gather(
            run_in_transaction(
                racing_engine, lambda s, order=order: inventory.commit_order(s, order_id=order, lines=[(pid, 2)])
            ),
            # Half the time the background sweeper (SKIP LOCKED), half a writer expiring on its way.
            run_in_transaction(racing_engine, inventory.sweep_expired if i % 2 else lambda s: expire_product(s, pid)),
        )
        async with racing_engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.text(
                        """
                        SELECT r.status, p.stock, p.reserved,
                          (SELECT count(*) FROM catalog.outbox o WHERE o.event_type = 'stock.released'
                             AND o.envelope->'payload'->>'owner_id' = :os) AS released
                        FROM catalog.inventory_reservations r JOIN catalog.products p ON p.id = r.product_id
                        WHERE r.owner_id = :o
                        """
                    ),
                    {"o": order, "os": str(order)},
                )
            ).one()
        assert commit.outcome == "committed"
        assert [line.quantity for line in commit.lines] == [2]
        assert (row.stock, row.reserved) == (rounds * 2 - 2 * (i + 1), 0), "the sale happened exactly once"
        assert (row.status, row.released) in {("committed", 0), ("expired", 1)}, "committed or expired, never both"
        outcomes[(row.status, row.released)] = outcomes.get((row.status, row.released), 0) + 1
    assert sum(outcomes.values()) == rounds


async def expire_product(session: Session, pid: uuid.UUID) -> int:
    """What a writer short of units does: lock the product, expire its due reservations."""
    await inventory.lock_products(session, [pid])
    return len(await inventory.expire_due(session, [pid]))


# -- random interleavings ------------------------------------------------------------

OPS = st.one_of(
    st.tuples(st.just("hold"), st.integers(0, 3), st.integers(0, 6)),
    st.tuples(st.just("unhold"), st.integers(0, 3), st.just(0)),
    st.tuples(st.just("reserve"), st.integers(0, 3), st.integers(1, 6)),
    st.tuples(st.just("checkout"), st.integers(0, 3), st.integers(1, 6)),
    st.tuples(st.just("commit"), st.integers(0, 3), st.just(0)),
    st.tuples(st.just("release"), st.integers(0, 3), st.just(0)),
    st.tuples(st.just("expire"), st.integers(0, 3), st.just(0)),
    st.tuples(st.just("sweep"), st.just(0), st.just(0)),
    st.tuples(st.just("restock"), st.just(0), st.integers(-4, 6)),
)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(rounds=st.lists(st.lists(OPS, min_size=1, max_size=4), min_size=1, max_size=8), initial=st.integers(0, 10))
async def test_random_interleavings_keep_the_stock_invariants(
    racing_engine: AsyncEngine, rounds: list[list[tuple[str, int, int]]], initial: int
) -> None:
    """Each round runs its operations at once. After every round: 0 <= available <= stock,
    `reserved` equals the active reservations, and stock + units sold = initial + restocks."""
    engine = racing_engine
    pid = await make_product(engine, stock=initial)
    carts = [uuid.uuid4() for _ in range(4)]
    orders = [uuid.uuid4() for _ in range(4)]
    sold = 0
    restocked = 0

    async def run(op: str, who: int, n: int) -> None:
        nonlocal sold, restocked
        cart, order = carts[who], orders[who]
        try:
            if op == "hold":
                await run_in_transaction(
                    engine, lambda s: inventory.set_hold(s, cart_id=cart, product_id=pid, quantity=n, ttl_seconds=600)
                )
            elif op == "unhold":
                await run_in_transaction(engine, lambda s: inventory.release_hold(s, cart_id=cart, product_id=pid))
            elif op in ("reserve", "checkout"):
                await run_in_transaction(
                    engine,
                    lambda s: inventory.reserve_for_order(
                        s, order_id=order, lines=[(pid, n)], cart_id=cart if op == "checkout" else None, ttl_seconds=600
                    ),
                )
            elif op == "commit":
                result = await run_in_transaction(
                    engine, lambda s: inventory.commit_order(s, order_id=order, lines=[(pid, 1)])
                )
                sold += sum(line.quantity for line in result.lines)
            elif op == "release":
                await run_in_transaction(engine, lambda s: inventory.release_order(s, order_id=order))
            elif op == "expire":
                async with db.transaction(engine) as s:
                    await s.execute(
                        sa.text(
                            "UPDATE catalog.inventory_reservations SET expires_at = now() - interval '1 second' "
                            "WHERE owner_id IN (:c, :o) AND status = 'active'"
                        ),
                        {"c": cart, "o": order},
                    )
            elif op == "sweep":
                await run_in_transaction(engine, lambda s: expire_product(s, pid))
            elif op == "restock":

                async def restock(s: Session) -> int:
                    state = (await inventory.lock_products(s, [pid]))[pid]
                    await inventory.set_stock(s, product_id=pid, stock=max(0, state.stock + n))
                    return max(0, state.stock + n) - state.stock

                delta = await run_in_transaction(engine, restock)
                restocked += delta  # not `+= await`: that reads the total before waiting
        except (domain.OutOfStock, domain.StockBelowReserved):
            pass  # refused as a whole: nothing changed

    for batch in rounds:
        await asyncio.gather(*(run(*op) for op in batch))
        c = await counters(engine, pid)
        assert 0 <= c["available"] <= c["stock"], c
        assert c["reserved"] == c["active_units"], c
        assert 0 <= c["reserved"] <= c["stock"], c
        assert c["stock"] + sold == initial + restocked, (c, sold, restocked)
        assert c["available"] == c["stock"] - c["live_units"], c
