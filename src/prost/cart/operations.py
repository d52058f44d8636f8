"""The cart's use cases: each one calls the catalog (or orders) first, then records
the outcome locally, while holding the cart's row lock.

Why this order, and what happens when a step fails:

- The lock (`FOR NO KEY UPDATE` on the cart row) is taken before the remote call and
  kept until the local write commits, so two requests of the same user take turns:
  the catalog's hold API sets an *absolute* quantity, and an interleaving would lose
  an update.
- A remote refusal (`insufficient_stock`, unknown product) or an unreachable peer
  (503) raises before anything local is written: nothing changes.
- A local failure *after* the catalog said yes (the write or the commit fails, the
  request is cancelled) puts the hold back to what it was (`restore_hold`). If even
  that cannot reach the catalog, the stray hold is harmless: it expires with its TTL,
  the next change of that line sets its quantity absolutely, and checkout reconciles
  every hold with the cart's lines before the order starts.
- Holding a database connection while awaiting another service is bounded: at most
  `outbound_limit(...)` cart operations do so at once per process (`_outbound`), so
  they can never take every pooled connection away from the services they wait for
  (in the embedded mode all services share one pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from prost.cart import domain
from prost.cart.domain import CartRecord, CartStatus, CartView, Line, LockStatus, Product, SagaStatus
from prost.cart.remote import Catalog, Orders
from prost.cart.repository import CartRepository, SagaRepository
from prost.contracts.cart import CartCheckedOut
from prost.contracts.catalog import StockLine
from prost.kit import db, errors, outbox
from prost.kit.db import Session
from prost.kit.idempotency import IdempotencyStore, IdempotentRequest
from prost.kit.messages import Envelope
from prost.kit.service import ServiceContext

log = logging.getLogger("prost.cart")

SERVICE = "cart"
_OUTBOUND_KEY = "cart.outbound"
_CHECKOUT_ATTEMPTS = 3


def outbound_limit(pool_size: int) -> int:
    """How many cart operations may hold a connection while awaiting a peer."""
    return max(2, pool_size // 2)


def install_outbound_limit(ctx: ServiceContext) -> None:
    size = getattr(ctx.engine.pool, "size", lambda: 10)()
    ctx.extras[_OUTBOUND_KEY] = asyncio.Semaphore(outbound_limit(int(size)))


def _outbound(ctx: ServiceContext) -> asyncio.Semaphore:
    sem = ctx.extras.get(_OUTBOUND_KEY)
    if not isinstance(sem, asyncio.Semaphore):
        install_outbound_limit(ctx)
        sem = ctx.extras[_OUTBOUND_KEY]
    assert isinstance(sem, asyncio.Semaphore)
    return sem


def catalog(ctx: ServiceContext) -> Catalog:
    return Catalog(ctx.clients["catalog"], ttl_seconds=ctx.settings.cart_hold_ttl_seconds)


def orders(ctx: ServiceContext) -> Orders:
    return Orders(ctx.clients["orders"])


def _now() -> datetime:
    return datetime.now(UTC)


# -- reading --------------------------------------------------------------------------


async def _current_cart(session: Session, user_id: uuid.UUID, *, lock: bool = False) -> CartRecord:
    """The user's current cart, created on first use (in the caller's transaction: if
    that rolls back, the next use creates it again)."""
    cart = await CartRepository.get_current(session, user_id=user_id, lock=lock)
    if cart is None:
        await CartRepository.add_open(session, user_id=user_id)
        cart = await CartRepository.get_current(session, user_id=user_id, lock=lock)
    if cart is None:  # pragma: no cover - the insert or a concurrent one made it
        raise errors.Conflict("the cart could not be created; try again")
    return cart


async def _render(
    ctx: ServiceContext,
    cart: CartRecord,
    lines: Sequence[Line],
    *,
    known: dict[uuid.UUID, Product] | None = None,
    strict: bool,
) -> CartView:
    """Price the lines at the catalog's current prices.

    `strict`: an unreachable catalog is a 503 (a plain read); otherwise (the answer to
    a change that already committed) the prices last seen are shown instead, so a
    client never retries a change that went through."""
    quotes = dict(known or {})
    missing = [line.product_id for line in lines if line.product_id not in quotes]
    if missing:
        try:
            quotes.update(await catalog(ctx).quote(missing))
        except errors.Unavailable:
            if strict:
                raise
            log.warning("catalog quote unavailable after a cart change; showing prices last seen")
    return domain.present(cart, lines, quotes, _now())


async def view_cart(ctx: ServiceContext, user_id: uuid.UUID) -> CartView:
    async with db.transaction(ctx.engine) as session:
        cart = await _current_cart(session, user_id)
        lines = await CartRepository.lines(session, cart_id=cart.id)
    return await _render(ctx, cart, lines, strict=True)


# -- changing lines -------------------------------------------------------------------


@dataclass
class _Change:
    """What a line change did remotely, so it can be undone if recording it fails."""

    product_id: uuid.UUID
    previous: int = 0
    cart_id: uuid.UUID | None = None
    applied: bool = False


@contextlib.asynccontextmanager
async def _locked_cart(ctx: ServiceContext, user_id: uuid.UUID) -> AsyncIterator[tuple[Session, CartRecord]]:
    """A transaction holding the user's open cart locked (it must be editable)."""
    async with db.transaction(ctx.engine) as session:
        cart = await _current_cart(session, user_id, lock=True)
        domain.check_editable(cart)
        yield session, cart


async def _extend_others(
    cat: Catalog, session: Session, cart: CartRecord, lines: Sequence[Line], changed: uuid.UUID
) -> None:
    """Any change to the cart extends its holds. Done before the change itself: an
    extension that is not followed by the change does no harm."""
    now = _now()
    if any(line.product_id != changed and domain.is_held(line, now) for line in lines):
        await CartRepository.refresh_holds(session, cart_id=cart.id, holds=await cat.extend_holds(cart.id))


async def _undo(cat: Catalog, change: _Change) -> None:
    if not change.applied or change.cart_id is None:
        return
    cart_id = change.cart_id
    try:
        await asyncio.shield(cat.restore_hold(cart_id, change.product_id, change.previous))
    except Exception:
        log.warning(
            "could not restore the hold of cart %s on product %s; it expires with its TTL",
            cart_id,
            change.product_id,
            exc_info=True,
        )


@contextlib.asynccontextmanager
async def _undone_on_failure(cat: Catalog, change: _Change) -> AsyncIterator[None]:
    """Put the hold back if what follows fails. Used twice around a change: inside the
    cart lock (a failing statement: undone before another request can touch the line)
    and outside it (a failing commit)."""
    try:
        yield
    except BaseException:
        await _undo(cat, change)
        change.applied = False
        raise


class _LineChange(NamedTuple):
    """A change of one line under way: the cart locked, its lines as they were."""

    cat: Catalog
    change: _Change
    session: Session
    cart: CartRecord
    lines: list[Line]
    line: Line | None


@contextlib.asynccontextmanager
async def _changing_line(ctx: ServiceContext, user_id: uuid.UUID, product_id: uuid.UUID) -> AsyncIterator[_LineChange]:
    """The user's cart locked for a change of one line's hold; the catalog's hold is put
    back if the change fails, under the lock (a failing statement) or after it (a
    failing commit)."""
    cat = catalog(ctx)
    change = _Change(product_id=product_id)
    async with (
        _outbound(ctx),
        _undone_on_failure(cat, change),  # the commit fails
        _locked_cart(ctx, user_id) as (session, cart),
        _undone_on_failure(cat, change),  # a statement fails: undone under the lock
    ):
        change.cart_id = cart.id
        lines = await CartRepository.lines(session, cart_id=cart.id)
        line = next((x for x in lines if x.product_id == product_id), None)
        yield _LineChange(cat, change, session, cart, lines, line)


async def set_line(
    ctx: ServiceContext,
    user_id: uuid.UUID,
    product_id: uuid.UUID,
    *,
    add: int | None = None,
    quantity: int | None = None,
) -> CartView:
    """`add` units to the line (POST /cart/items), or set its `quantity` (PUT; 0 removes)."""
    if quantity == 0:
        return await remove_line(ctx, user_id, product_id)
    known: dict[uuid.UUID, Product] = {}
    async with _changing_line(ctx, user_id, product_id) as (cat, change, session, cart, lines, line):
        if add is not None:
            wanted = domain.quantity_after_adding(line.quantity if line else 0, add)
        else:
            if line is None:
                raise domain.LineNotFound()
            wanted = domain.check_quantity(quantity or 0)
        # What the catalog holds now for this line (0 when it lapsed: restoring
        # a lapsed hold would take stock nobody holds any more).
        change.previous = line.lock_quantity if line is not None and domain.is_held(line, _now()) else 0
        await _extend_others(cat, session, cart, lines, product_id)
        try:
            hold, product = await cat.set_hold(cart.id, product_id, wanted)
        except errors.Unavailable:
            change.applied = True  # the answer may have been lost after the hold was set
            raise
        change.applied = True
        domain.check_currency(cart.currency, lines, product)
        await CartRepository.save_line(session, cart_id=cart.id, product=product, quantity=wanted)
        await CartRepository.record_hold(session, cart_id=cart.id, hold=hold)
        first = not any(x.product_id != product_id for x in lines)
        await CartRepository.touch(session, cart_id=cart.id, currency=product.currency if first else None)
        known[product_id] = product
        after = await _as_it_will_be(session, cart)
    return await _render(ctx, *after, known=known, strict=False)


async def remove_line(ctx: ServiceContext, user_id: uuid.UUID, product_id: uuid.UUID) -> CartView:
    """Release the line's hold and drop the line; removing an absent line is a no-op."""
    async with _changing_line(ctx, user_id, product_id) as (cat, change, session, cart, lines, line):
        if line is not None:
            change.previous = line.lock_quantity if domain.is_held(line, _now()) else 0
            await _extend_others(cat, session, cart, lines, product_id)
            change.applied = change.previous > 0  # a lost answer may hide a done release
            await cat.release_hold(cart.id, product_id)
            await CartRepository.remove_line(session, cart_id=cart.id, product_id=product_id)
            await CartRepository.touch(session, cart_id=cart.id)
        after = await _as_it_will_be(session, cart)
    return await _render(ctx, *after, strict=False)


async def _as_it_will_be(session: Session, cart: CartRecord) -> tuple[CartRecord, list[Line]]:
    """The cart and its lines as this transaction leaves them (read under the lock just
    before the commit, so the answer shows exactly this change)."""
    now = await CartRepository.get(session, cart_id=cart.id)
    return now or cart, await CartRepository.lines(session, cart_id=cart.id)


# -- checkout -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckoutOutcome:
    """The checkout's answer: 202 `{order_id, status}`, or a response replayed for
    its `Idempotency-Key`."""

    status_code: int
    body: dict[str, Any]

    @classmethod
    def accepted(cls, order_id: uuid.UUID) -> CheckoutOutcome:
        return cls(status_code=202, body={"order_id": str(order_id), "status": "pending"})


async def checkout(
    ctx: ServiceContext,
    user_id: uuid.UUID,
    payment: dict[str, Any],
    *,
    remember: IdempotentRequest | None = None,
    store: IdempotencyStore | None = None,
) -> CheckoutOutcome:
    """Turn the open cart into an order (the saga's first step).

    1. (own transaction, committed) choose the order id and record the checkout as a
       `starting` saga row: a retry of the same lines reuses the id, so orders (which
       is idempotent on it) makes one order however often it is asked;
    2. (cart locked) make the catalog's holds match the lines exactly: extend them,
       place lapsed ones again (not enough stock → 409 `insufficient_stock`, the cart
       stays open), release strays;
    3. start the order (`POST /internal/orders`); unreachable → 503 and the cart stays
       open with its holds; then the cart is `checked_out`, its locks `converted`
       (catalog turns the holds into the order's reservation when it handles
       `order.placed`, in one transaction, so the stock is never free in between),
       the saga `placed`, `cart.checked_out` is announced, and the response is stored
       under the `Idempotency-Key` (`remember`), all in one transaction.

    Checking out a cart that is already checked out answers with its order again
    (after the key check: the same key with another body is still a 422).
    """
    keys = _Keys(remember, store)
    async with _outbound(ctx):
        for _ in range(_CHECKOUT_ATTEMPTS):
            started = await _begin_checkout(ctx, user_id, keys)
            if isinstance(started, CheckoutOutcome):
                return started
            result = await _complete_checkout(ctx, user_id, started, payment, keys)
            if result is not None:
                return result
    raise domain.CartChanged()


@dataclass(frozen=True, slots=True)
class _Keys:
    request: IdempotentRequest | None
    store: IdempotencyStore | None

    async def claim(self, session: Session) -> CheckoutOutcome | None:
        """Take the key in the effect's transaction; the stored response when another
        request owns it (422 `idempotency_key_reused` for another body)."""
        if self.request is None or self.store is None:
            return None
        hit = await self.store.claim(session, self.request)
        return CheckoutOutcome(status_code=hit.status_code, body=hit.body) if hit is not None else None

    async def complete(self, session: Session, outcome: CheckoutOutcome) -> CheckoutOutcome:
        if self.request is not None and self.store is not None:
            await self.store.complete(session, self.request, status_code=outcome.status_code, body=outcome.body)
        return outcome

    async def abandon(self, session: Session) -> None:
        """A failed request keeps nothing under its key, so a retry runs again."""
        if self.request is not None and self.store is not None:
            await self.store.abandon(session, self.request)

    async def settle(self, session: Session, outcome: CheckoutOutcome) -> CheckoutOutcome:
        """Store `outcome` under the key, unless another request owns it (its response wins)."""
        return await self.claim(session) or await self.complete(session, outcome)


async def _begin_checkout(ctx: ServiceContext, user_id: uuid.UUID, keys: _Keys) -> uuid.UUID | CheckoutOutcome:
    async with db.transaction(ctx.engine) as session:
        cart = await _current_cart(session, user_id, lock=True)
        saga = await SagaRepository.live(session, cart_id=cart.id)
        if cart.status == CartStatus.CHECKED_OUT and saga is not None:
            # Already checked out (a repeated request): it is the same order.
            return await keys.settle(session, CheckoutOutcome.accepted(saga.order_id))
        domain.check_editable(cart)
        lines = await CartRepository.lines(session, cart_id=cart.id)
        if not lines:
            raise errors.CartEmpty()
        reuse = domain.reusable_order_id(saga, lines)
        if reuse is not None:
            return reuse
        if saga is not None:
            await SagaRepository.move(session, saga_id=saga.id, to=SagaStatus.SUPERSEDED)
        fresh = await SagaRepository.add(
            session, cart_id=cart.id, order_id=uuid.uuid4(), user_id=user_id, lines=domain.order_lines(lines)
        )
        return fresh.order_id


async def _complete_checkout(
    ctx: ServiceContext, user_id: uuid.UUID, order_id: uuid.UUID, payment: dict[str, Any], keys: _Keys
) -> CheckoutOutcome | None:
    """Steps 2 and 3 under the cart lock; None when the cart moved since step 1."""
    cat = catalog(ctx)
    failure: BaseException | None = None
    result: CheckoutOutcome | None = None
    async with db.transaction(ctx.engine) as session:
        cart = await CartRepository.get_current(session, user_id=user_id, lock=True)
        if cart is None:  # pragma: no cover
            return None
        saga = await SagaRepository.live(session, cart_id=cart.id)
        if saga is None or saga.order_id != order_id:
            return None
        if cart.status == CartStatus.CHECKED_OUT:
            return await keys.settle(session, CheckoutOutcome.accepted(saga.order_id))
        lines = await CartRepository.lines(session, cart_id=cart.id)
        if saga.status != SagaStatus.STARTING or domain.order_lines(lines) != saga.lines:
            return None
        if (hit := await keys.claim(session)) is not None:
            return hit
        try:
            await _hold_every_line(cat, session, cart, lines)
            await orders(ctx).place(
                order_id=order_id, user_id=user_id, cart_id=cart.id, items=saga.lines, payment=payment
            )
        except errors.DomainError as exc:
            # Keep what was learnt about the holds (committed below); the cart stays
            # open, and the key is free again for a retry.
            failure = exc
            await keys.abandon(session)
        else:
            await CartRepository.set_status(session, cart_id=cart.id, status=CartStatus.CHECKED_OUT)
            await CartRepository.set_locks(session, cart_id=cart.id, status=LockStatus.CONVERTED)
            await SagaRepository.move(session, saga_id=saga.id, to=SagaStatus.PLACED)
            event = CartCheckedOut(
                cart_id=cart.id,
                user_id=user_id,
                order_id=order_id,
                lines=[StockLine(product_id=line.product_id, quantity=line.quantity) for line in lines],
            )
            await outbox.add_to_outbox(session, Envelope.wrap(event, producer=SERVICE, correlation_id=order_id))
            result = await keys.complete(session, CheckoutOutcome.accepted(order_id))
    if failure is not None:
        raise failure
    return result


async def _hold_every_line(cat: Catalog, session: Session, cart: CartRecord, lines: Sequence[Line]) -> None:
    """Make the catalog hold exactly the cart's lines, with a fresh TTL.

    Lines that cannot be held again are recorded (`unavailable`) and reported as one
    `insufficient_stock` (or 404 when a product is gone) naming them."""
    holds = await cat.extend_holds(cart.id)
    await CartRepository.refresh_holds(session, cart_id=cart.id, holds=holds)
    plan = domain.reconcile(lines, holds)
    for stray in plan.release:
        await cat.release_hold(cart.id, stray)
    short: list[Line] = []
    gone: list[Line] = []
    for line in plan.place:
        try:
            hold, _product = await cat.set_hold(cart.id, line.product_id, line.quantity)
        except errors.InsufficientStock:
            short.append(line)
            continue
        except domain.ProductNotFound:
            gone.append(line)
            continue
        await CartRepository.record_hold(session, cart_id=cart.id, hold=hold)
    missing = short + gone
    if missing:
        await CartRepository.record_no_hold(
            session, cart_id=cart.id, product_ids=[x.product_id for x in missing], status=LockStatus.UNAVAILABLE
        )
        names = ", ".join(f"{x.sku} ({x.quantity})" for x in missing)
        details: list[Any] = [{"product_id": str(x.product_id), "requested": x.quantity} for x in missing]
        if short:
            raise errors.InsufficientStock(f"not enough stock to hold again: {names}", details=details)
        raise domain.ProductNotFound(f"no longer for sale: {names}")


# -- the re-hold loop -----------------------------------------------------------------


async def hold_pending_lines(ctx: ServiceContext) -> bool:
    """Place holds for the lines of one cart waiting for them (a failed order reopened
    it). Returns False when no cart is waiting, or the catalog cannot be reached.

    The cart is taken with `SKIP LOCKED`, so replicas share the work and a user's own
    request on that cart simply waits for this one transaction; a catalog that is
    unreachable leaves the lines `pending` for the next round."""
    cat = catalog(ctx)
    async with _outbound(ctx), db.transaction(ctx.engine) as session:
        claimed = await CartRepository.claim_carts_waiting_for_holds(session, limit=1)
        if not claimed:
            return False
        cart_id = claimed[0]
        lines = [x for x in await CartRepository.lines(session, cart_id=cart_id) if x.lock_status == LockStatus.PENDING]
        for line in lines:
            try:
                hold, product = await cat.set_hold(cart_id, line.product_id, line.quantity)
            except (errors.InsufficientStock, domain.ProductNotFound):
                await CartRepository.record_no_hold(
                    session, cart_id=cart_id, product_ids=[line.product_id], status=LockStatus.UNAVAILABLE
                )
                continue
            except errors.Unavailable:
                log.warning("catalog unavailable; cart %s keeps waiting for its holds", cart_id)
                return False  # what was placed so far is recorded (commit)
            await CartRepository.record_hold(session, cart_id=cart_id, hold=hold)
            await CartRepository.save_line(session, cart_id=cart_id, product=product, quantity=line.quantity)
    return True


async def hold_pending_lines_forever(ctx: ServiceContext) -> None:
    """Background loop of `hold_pending_lines` (every `PROST_SWEEP_INTERVAL_SECONDS`)."""
    while True:
        try:
            for _ in range(100):  # then let the interval pass, whatever is left
                if not await hold_pending_lines(ctx):
                    break
        except errors.DomainError:
            log.warning("re-holding cart lines failed; retrying", exc_info=True)
        await asyncio.sleep(ctx.settings.sweep_interval_seconds)
