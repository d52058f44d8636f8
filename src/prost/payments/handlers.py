"""What payments does with the events it consumes, and its resumer loop.

Subscriptions (both `Raw`: they call the provider, and no database transaction may
stay open across a provider call)::

    payment.requested         → charge_requested_payment  → payment.processed | payment.failed
    payment.refund_requested  → refund_requested_payment  → payment.refunded

A charge runs in three steps:

1. one transaction: find or create the order's payment (`processing`, first attempt
   counted). A payment already settled answers again with its recorded outcome if
   the event is new to the inbox (a new request for the same order), else nothing;
2. no transaction: call the provider with the payment's idempotency key, retrying
   provider errors with backoff (`domain.RetryPolicy`), bounded by a timeout;
3. one statement: the inbox record, the outcome (conditional on `processing` and on
   the record being new) and the outcome event, together.

A crash between 1 and 3 leaves the event unrecorded: it is delivered again, finds the
payment still `processing`, calls the provider again with the same key and gets the
same charge back, never a second one.

The handler keeps its message for at most `payment_handler_wait_seconds` (`InFlight`):
a provider slower than that (the `...0341` card never answers) finishes steps 2-3 in
the background, so the in-process bus does not hold the producer's outbox for the
whole provider timeout. A charge let go like that, or whose message was parked as
dead, is still `processing` if the process dies: `resume_unsettled_payments` takes it
up once it has stalled, with the same key again.

A refund is the same shape: note the request; if the charge succeeded, refund it at
the provider (its own idempotency key), then mark it `refunded` + inbox + event in one
transaction. A refund asked for while the charge is still processing is noted and
carried out as soon as the charge succeeds. A repeated request changes nothing, but
hears `payment.refunded` again (orders repeats its request until it hears it).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import TypeVar

from prost.contracts.orders import PaymentRefundRequested, PaymentRequested
from prost.contracts.payments import PaymentFailed, PaymentProcessed, PaymentRefunded
from prost.kit import db, inbox, outbox
from prost.kit.db import Session
from prost.kit.messages import Envelope, Event
from prost.kit.service import Raw, ServiceContext, Subscription
from prost.payments import domain, repository
from prost.payments.provider import Charge, ProviderError, ProviderRejected, Refund, provider_of

log = logging.getLogger("prost.payments")

SERVICE = domain.SERVICE

T = TypeVar("T")


def _extra(**fields: object) -> dict[str, object]:
    return {"service": SERVICE, **fields}


def outcome_event(payment: domain.Payment) -> Event | None:
    """The event announcing a settled payment's outcome (None while processing/refunded)."""
    if payment.status == domain.SUCCEEDED:
        return PaymentProcessed(
            order_id=payment.order_id,
            payment_id=payment.id,
            amount=payment.amount,
            currency=payment.currency,
            last4=payment.last4 or "",
            brand=payment.brand or "",
        )
    if payment.status == domain.FAILED:
        return PaymentFailed(
            order_id=payment.order_id, payment_id=payment.id, reason=payment.failure_reason or domain.PAYMENT_ERROR
        )
    return None


def refunded_event(payment: domain.Payment) -> PaymentRefunded:
    return PaymentRefunded(
        order_id=payment.order_id, payment_id=payment.id, amount=payment.amount, currency=payment.currency
    )


def _wrap(event: Event, payment: domain.Payment, caused_by: Envelope | None) -> Envelope:
    return Envelope.wrap(event, producer=SERVICE, correlation_id=payment.order_id, caused_by=caused_by)


# -- talking to the provider -------------------------------------------------------------


class _Failed(Exception):
    """The provider call ended without a result (reason for the logs). Raised from a
    refund, it leaves the refund pending: the bus retries the message, the resumer
    takes over if it is let go or parked."""


async def _call_with_retries(
    ctx: ServiceContext,
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    before_retry: Callable[[], Awaitable[bool]] | None = None,
) -> T:
    """`call()` under the policy's timeout; provider errors are retried with backoff.

    `before_retry` runs before every call after the first; False stops (the payment
    was settled elsewhere meanwhile). Raises `_Failed` when no result came."""
    policy = domain.RetryPolicy.from_settings(ctx.settings)
    loop = asyncio.get_running_loop()
    started = loop.time()
    attempt = 0
    while True:
        attempt += 1
        if attempt > 1 and before_retry is not None and not await before_retry():
            raise _Failed("settled elsewhere while retrying")
        try:
            async with asyncio.timeout(policy.call_timeout):
                return await call()
        except ProviderError as exc:
            delay = policy.delay_after(attempt, elapsed=loop.time() - started)
            if delay is None:
                raise _Failed(f"provider error on call {attempt}, no retry left: {exc}") from exc
            log.warning(
                "%s: provider error on call %d (%s); retrying in %.2f s", what, attempt, exc, delay, extra=_extra()
            )
            await asyncio.sleep(delay)
        except TimeoutError as exc:
            raise _Failed(f"provider did not answer within {policy.call_timeout:g} s") from exc
        except ProviderRejected as exc:
            raise _Failed(f"provider rejected the request: {exc}") from exc


# -- provider work that outlives its message -----------------------------------------

IN_FLIGHT = "payments.in_flight"
"""Key of the service's `InFlight` in `ServiceContext.extras`."""


class InFlight:
    """Provider work still running after its handler let the message go.

    A handler waits `payment_handler_wait_seconds` for its charge or refund; a slower
    one (a provider that hangs, heavy latency) goes on here, so the message is released
    without waiting for it. The in-process bus only acknowledges a publish once every
    handler returned: holding the message for the whole provider timeout would hold the
    producer's outbox (orders: every other order) for as long. The work is not lost if
    the process dies meanwhile: its payment is `processing` (or has its refund noted)
    and `resume_unsettled_payments` takes it up once it has stalled.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._let_go: set[asyncio.Task[object]] = set()

    def start(self, work: Coroutine[object, object, object], *, name: str) -> asyncio.Task[object]:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def let_go(self, task: asyncio.Task[object]) -> None:
        """Nobody waits for `task` any more: its failure is logged here."""
        if not task.done():
            self._let_go.add(task)

    def _done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if task in self._let_go:
            self._let_go.discard(task)
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.error("%s failed in the background: %r", task.get_name(), exc, extra=_extra())

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def in_flight(ctx: ServiceContext) -> InFlight:
    work: InFlight = ctx.extras.setdefault(IN_FLIGHT, InFlight())
    return work


async def _finish_or_let_go(ctx: ServiceContext, work: Coroutine[object, object, object], *, what: str) -> None:
    """Run `work`, waiting for it at most `payment_handler_wait_seconds`; its errors
    within that time are the handler's (the bus retries the message)."""
    task = in_flight(ctx).start(work, name=what)
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=ctx.settings.payment_handler_wait_seconds)
    except TimeoutError:
        in_flight(ctx).let_go(task)
        log.info("%s: the provider is still busy; finishing in the background", what, extra=_extra())


async def cancel_work_in_flight(ctx: ServiceContext) -> None:
    """Background loop: idles, and cancels detached provider work when the service stops."""
    try:
        await asyncio.Event().wait()
    finally:
        await in_flight(ctx).close()


# -- charging -------------------------------------------------------------------------


async def charge_requested_payment(envelope: Envelope, ctx: ServiceContext) -> None:
    request = PaymentRequested.model_validate(envelope.payload)
    problem = domain.request_problem(amount=request.amount, currency=request.currency)
    new_payment = repository.NewPayment(
        order_id=request.order_id,
        user_id=request.user_id,
        amount=request.amount,
        currency=request.currency,
        idempotency_key=request.idempotency_key or domain.provider_key(request.order_id),
        card_token=request.payment_token,
    )
    payment: domain.Payment | None = None
    if problem is None:
        # The usual case, a first request: the payment is one statement, no transaction.
        async with db.autocommit(ctx.engine) as conn:
            payment = await repository.add(conn, new_payment)
    if payment is None:
        payment = await _resume_or_answer(ctx, request, new_payment, problem, envelope)
        if payment is None:
            return
    what = f"payment {payment.id} for order {payment.order_id}"
    await _finish_or_let_go(ctx, settle_charge(ctx, payment, caused_by=envelope), what=what)


async def _resume_or_answer(
    ctx: ServiceContext,
    request: PaymentRequested,
    new_payment: repository.NewPayment,
    problem: str | None,
    envelope: Envelope,
) -> domain.Payment | None:
    """A request that is refused, repeated or redelivered: answered at once (None), or
    the payment to charge again (its attempt counted)."""
    async with db.transaction(ctx.engine) as session:
        # No inbox lookup first: an event already handled finds its payment settled,
        # and the inbox record below refuses it a second answer.
        if problem is not None:
            await _refuse_request(session, request, problem, envelope)
            return None
        # The first request's insert (`charge_requested_payment`) found the payment there.
        payment = await repository.existing(session, new_payment)
        if payment.is_settled:
            # Another request for an order already charged (or refused): the same answer
            # again, unless this very event was settled meanwhile by a concurrent copy.
            if not await inbox.record(session, SERVICE, envelope.event_id):
                return None
            if (event := outcome_event(payment)) is not None:
                await outbox.add_to_outbox(session, _wrap(event, payment, envelope))
            log.info(
                "payment %s for order %s already %s; answered again",
                payment.id,
                payment.order_id,
                payment.status,
                extra=_extra(),
            )
            return None
        # Redelivered after a crash (or a duplicate in flight): this call counts too.
        await repository.begin_attempt(session, payment_id=payment.id)
    return payment


async def _refuse_request(session: Session, request: PaymentRequested, problem: str, envelope: Envelope) -> None:
    """A request no provider could charge: answer `payment_error`, store nothing."""
    if not await inbox.record(session, SERVICE, envelope.event_id):
        return
    event = PaymentFailed(order_id=request.order_id, payment_id=uuid.uuid4(), reason=domain.PAYMENT_ERROR)
    await outbox.add_to_outbox(
        session, Envelope.wrap(event, producer=SERVICE, correlation_id=request.order_id, caused_by=envelope)
    )
    log.error("payment request for order %s refused: %s", request.order_id, problem, extra=_extra())


async def settle_charge(
    ctx: ServiceContext, payment: domain.Payment, *, caused_by: Envelope | None
) -> domain.Payment | None:
    """Steps 2 and 3 of a charge whose first attempt is already counted. Returns the
    settled payment, or None when another worker settled it first."""
    provider = provider_of(ctx)

    async def charge() -> Charge:
        return await provider.charge(
            token=payment.card_token,
            amount=payment.amount,
            currency=payment.currency,
            idempotency_key=payment.idempotency_key,
        )

    async def count_attempt() -> bool:
        async with db.transaction(ctx.engine) as session:
            return await repository.begin_attempt(session, payment_id=payment.id)

    what = f"payment {payment.id} for order {payment.order_id}"
    try:
        result: Charge | None = await _call_with_retries(ctx, charge, what=what, before_retry=count_attempt)
        problem = None
    except _Failed as exc:
        result, problem = None, str(exc)

    if result is None:
        outcome = repository.settled(payment, status=domain.FAILED, failure_reason=domain.PAYMENT_ERROR)
    else:
        outcome = repository.settled(
            payment,
            status=domain.SUCCEEDED if result.succeeded else domain.FAILED,
            failure_reason=None if result.succeeded else domain.failure_reason(result.decline_code),
            charge_id=result.charge_id,
            last4=result.last4,
            brand=result.brand,
        )
    event = outcome_event(outcome)
    announce = [_wrap(event, outcome, caused_by)] if event is not None else []
    async with db.autocommit(ctx.engine) as session:  # one statement: the record, the outcome, the event
        settled = await repository.settle(
            session, outcome, caused_by=caused_by.event_id if caused_by is not None else None, announce=announce
        )
    if settled is None:
        return None  # this event was handled before, or a concurrent delivery or the resumer settled it

    if problem is not None:
        log.warning("%s failed: payment_error (%s)", what, problem, extra=_extra())
    else:
        log.info(
            "%s %s%s",
            what,
            settled.status,
            f" ({settled.failure_reason})" if settled.failure_reason else "",
            extra=_extra(),
        )
    if settled.status == domain.SUCCEEDED and settled.refund_requested_at is not None:
        # A refund was asked for while the charge was still running: do it now.
        await complete_refund(ctx, settled, caused_by=None)
    return settled


# -- refunding ------------------------------------------------------------------------


async def refund_requested_payment(envelope: Envelope, ctx: ServiceContext) -> None:
    request = PaymentRefundRequested.model_validate(envelope.payload)
    async with db.transaction(ctx.engine) as session:
        if await inbox.seen(session, SERVICE, envelope.event_id):
            return
        payment = await repository.get_by_order(session, order_id=request.order_id, for_update=True)
        if payment is not None and request.payment_id is not None and payment.id != request.payment_id:
            payment = None
        action = domain.refund_action(payment.status if payment is not None else None)
        if payment is not None and action in (domain.RefundAction.REFUND, domain.RefundAction.DEFER):
            payment = await repository.note_refund_request(session, payment_id=payment.id, reason=request.reason)
        if action is not domain.RefundAction.REFUND or payment is None:
            # Nothing to give back now: settled here (a deferred refund follows the charge).
            if not await inbox.record(session, SERVICE, envelope.event_id):
                return
            if action is domain.RefundAction.ALREADY_REFUNDED and payment is not None:
                await outbox.add_to_outbox(session, _wrap(refunded_event(payment), payment, envelope))
            log.info("refund for order %s: %s", request.order_id, action.value, extra=_extra())
            return
        # REFUND: the inbox record waits for the refund's outcome, so a crash before it
        # means a redelivery, and the provider returns the same refund.
    await _finish_or_let_go(
        ctx, complete_refund(ctx, payment, caused_by=envelope), what=f"refund of payment {payment.id}"
    )


async def complete_refund(
    ctx: ServiceContext, payment: domain.Payment, *, caused_by: Envelope | None
) -> domain.Payment | None:
    """Refund a succeeded charge at the provider, then record it and announce it.
    Raises `_Failed` when the provider gave no result (nothing is recorded then)."""
    charge_id = payment.provider_charge_id
    if charge_id is None:
        raise _Failed("the payment has no provider charge")
    provider = provider_of(ctx)

    async def refund() -> Refund:
        return await provider.refund(charge_id=charge_id, idempotency_key=domain.refund_key(payment.idempotency_key))

    result = await _call_with_retries(ctx, refund, what=f"refund of payment {payment.id}")
    async with db.transaction(ctx.engine) as session:
        if caused_by is not None and not await inbox.record(session, SERVICE, caused_by.event_id):
            return None
        refunded = await repository.mark_refunded(session, payment_id=payment.id, refund_id=result.refund_id)
        if refunded is None:
            return None  # refunded by a concurrent request
        await outbox.add_to_outbox(session, _wrap(refunded_event(refunded), refunded, caused_by))
    log.info("payment %s for order %s refunded", refunded.id, refunded.order_id, extra=_extra())
    return refunded


# -- the resumer ----------------------------------------------------------------------


async def resume_once(ctx: ServiceContext, *, older_than: float | None = None) -> int:
    """Drive on charges and refunds that stalled (their handler crashed, their message
    was parked); returns how many it took. Safe with replicas (SKIP LOCKED + lease)."""
    stalled_after = domain.RetryPolicy.from_settings(ctx.settings).stalled_after if older_than is None else older_than
    async with db.autocommit(ctx.engine) as conn:  # each claim is one statement
        charges = await repository.claim_stalled_charges(conn, older_than=stalled_after)
        refunds = await repository.claim_pending_refunds(conn, older_than=stalled_after)
    for payment in charges:
        log.warning(
            "payment %s for order %s stalled while processing; resuming", payment.id, payment.order_id, extra=_extra()
        )
        async with db.transaction(ctx.engine) as session:
            if not await repository.begin_attempt(session, payment_id=payment.id):
                continue
        await settle_charge(ctx, payment, caused_by=None)
    for payment in refunds:
        log.warning(
            "refund of payment %s for order %s is pending; resuming", payment.id, payment.order_id, extra=_extra()
        )
        try:
            await complete_refund(ctx, payment, caused_by=None)
        except _Failed as exc:
            log.warning("refund of payment %s still not done: %s", payment.id, exc, extra=_extra())
    return len(charges) + len(refunds)


async def resume_unsettled_payments(ctx: ServiceContext) -> None:
    """Background loop: `resume_once` every sweep interval."""
    while True:
        await asyncio.sleep(max(ctx.settings.sweep_interval_seconds, 0.5))
        await resume_once(ctx)


SUBSCRIPTIONS: dict[str, Subscription] = {
    "payment.requested": Raw(charge_requested_payment),
    "payment.refund_requested": Raw(refund_requested_payment),
}
