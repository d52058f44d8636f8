"""`prost seed` and `prost demo`: demo data and a walkthrough, over the public API only.

Both talk to a running prost at its gateway URL the way any client does (the paths,
bodies and status codes of API.md), so they work against `prost up`, the distributed
mode, compose or a cluster alike, and double as a smoke test of a deployment.

    Api                    a small aiohttp client: JSON in and out, the contract's error
                           shape raised as ApiError, 429 waited out per Retry-After
    seed()                 the catalog of `demo_catalog`, looked up first by slug and SKU,
                           so running it twice creates nothing twice
    demo()                 seed(), then three scenarios, each returning what it saw:
      checkout_succeeds      register → cart → checkout with 4242… → confirmed; the saga's steps
      declined_card          checkout with 4000…0002 → cancelled (payment_declined); the
                             compensations; the cart open again; the stock back
      race_for_last_units    N shoppers order one unit each of a product with k units, at
                             once → k confirmed, the rest rejected, the stock conserved
    Reporter               the live display (rich progress on a console); a scenario only
                           calls step()/advance()/show(), so tests run them silently

A scenario never asserts: it records `problems` (what differs from what the contract
promises), and `prost demo` exits 1 when there are any.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Self

import aiohttp
from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from prost.runtime.demo_catalog import CATEGORIES, PRODUCTS, DemoCategory, DemoProduct

DEFAULT_URL = "http://127.0.0.1:8000"
FINAL_STATUSES = frozenset({"confirmed", "rejected", "cancelled"})
GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
RACE_SKU = "DEMO-LAST-UNITS"
# The products the walkthrough buys: plenty of stock, and not each other's.
CHECKOUT_SKU = "COF-ETH-250"
DECLINED_SKU = "BOK-DDIA-01"


# --- talking to prost ------------------------------------------------------------------


class ApiError(Exception):
    """prost answered with a status the caller did not expect (contract error shape)."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        self.error = body.get("error") if isinstance(body, dict) else None
        detail = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {path} → {status} {self.error or ''}: {detail}".replace("  ", " "))


class Unreachable(Exception):
    """Nothing answered at the URL (prost is not running there?)."""


def card(number: str) -> dict[str, Any]:
    """A payment body that passes validation: a card a few years from expiring."""
    return {"card_number": number, "exp_month": 12, "exp_year": datetime.now(UTC).year + 3, "cvc": "123"}


def items_of(body: Any) -> list[dict[str, Any]]:
    """A list answer, paginated (`{"items": [...]}`) or plain."""
    if isinstance(body, dict):
        items: list[dict[str, Any]] = body["items"]
        return items
    return list(body)


class Api:
    """JSON over one pooled aiohttp session; `async with Api(url) as api`."""

    RATE_LIMIT_RETRIES = 8

    def __init__(self, base_url: str = DEFAULT_URL, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(timeout=self._timeout, connector=aiohttp.TCPConnector(limit=64))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        expect: Sequence[int] = (200,),
    ) -> Any:
        """The decoded JSON body of an answer whose status is in `expect`, else ApiError."""
        assert self._session is not None, "use `async with Api(url)`"
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        for attempt in range(self.RATE_LIMIT_RETRIES + 1):
            try:
                async with self._session.request(
                    method, self.base_url + path, json=json, params=params, headers=sent
                ) as resp:
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After", "1")
                    body = await resp.json(content_type=None) if status != 204 else None
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                raise Unreachable(
                    f"no answer from {self.base_url} ({exc.__class__.__name__}): is prost running there?"
                ) from exc
            # The gateway limits requests per client address; the demo is a client
            # like any other, so it waits as asked rather than failing.
            if status == 429 and attempt < self.RATE_LIMIT_RETRIES:
                await asyncio.sleep(min(float(retry_after) if retry_after.isdigit() else 1.0, 5.0))
                continue
            if status not in expect:
                raise ApiError(method, path, status, body)
            return body
        raise AssertionError("unreachable")  # the loop returns or raises

    async def login(self, email: str, password: str) -> str:
        body = await self.call("POST", "/api/v1/users/login", json={"email": email, "password": password})
        token: str = body["token"]
        return token


@dataclass(frozen=True, slots=True)
class Shopper:
    email: str
    username: str
    user_id: str
    token: str


async def new_shopper(api: Api, prefix: str = "shopper") -> Shopper:
    """Register a customer with a fresh address and log in."""
    tag = uuid.uuid4().hex[:8]
    email, username, password = f"{prefix}-{tag}@demo.prost", f"{prefix}_{tag}", f"demo-{uuid.uuid4().hex}"
    await api.call(
        "POST",
        "/api/v1/users/register",
        json={"email": email, "username": username, "password": password},
        expect=(201,),
    )
    body = await api.call("POST", "/api/v1/users/login", json={"email": email, "password": password})
    return Shopper(email=email, username=username, user_id=body["user"]["id"], token=body["token"])


async def settle(api: Api, token: str, order_id: str, *, wait_seconds: float) -> dict[str, Any]:
    """Poll an order until it reaches a final status (or `wait_seconds` pass: then the last seen)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    delay = 0.05
    while True:
        order: dict[str, Any] = await api.call("GET", f"/api/v1/orders/{order_id}", token=token)
        if order["status"] in FINAL_STATUSES or loop.time() >= deadline:
            return order
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.5)


async def product_by_sku(api: Api, sku: str) -> dict[str, Any] | None:
    """The active product with exactly this SKU (the search also matches names)."""
    body = await api.call("GET", "/api/v1/products", params={"q": sku, "page_size": 100})
    return next((p for p in items_of(body) if p["sku"].lower() == sku.lower()), None)


# --- the display ------------------------------------------------------------------------


class Step:
    """One line of the live display: a spinner while it runs, then ✓ or ✗ and a summary."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task
        self.failed = False

    def advance(self, amount: int = 1) -> None:
        self._progress.advance(self._task, amount)

    def update(self, description: str) -> None:
        self._progress.update(self._task, description=description)

    def fail(self, description: str) -> None:
        self.failed = True
        self.update(f"[red]✗[/] {description}")


class Reporter:
    """Step-by-step live display on a rich console; `Reporter.silent()` shows nothing.

    Each step is its own short-lived progress display (a spinner, and a bar when it
    counts several things), which stays on screen as one ✓/✗ line when the step ends,
    so tables printed between steps land in the order things happened."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()

    @classmethod
    def silent(cls) -> Reporter:
        return cls(Console(file=io.StringIO(), width=120))

    @contextlib.contextmanager
    def step(self, description: str, *, total: int = 1) -> Iterator[Step]:
        columns: list[ProgressColumn] = [SpinnerColumn(finished_text=" "), TextColumn("{task.description}")]
        if total > 1:
            columns += [BarColumn(bar_width=24), MofNCompleteColumn()]
        columns.append(TimeElapsedColumn())
        progress = Progress(*columns, console=self.console)
        task = progress.add_task(description, total=total)
        step = Step(progress, task)
        with progress:
            try:
                yield step
            except BaseException:
                step.fail(description)
                raise
            finally:
                if not step.failed:
                    current = progress.tasks[0].description
                    progress.update(task, completed=total, description=f"[green]✓[/] {current}")

    def show(self, renderable: RenderableType) -> None:
        self.console.print(renderable)

    def heading(self, text: str) -> None:
        self.console.rule(f"[bold]{text}", align="left")


# --- prost seed ---------------------------------------------------------------------------


@dataclass
class SeedReport:
    categories_created: int = 0
    categories_existing: int = 0
    products_created: int = 0
    products_existing: int = 0
    product_ids: dict[str, str] = field(default_factory=dict)  # SKU → id, for the products seen active


async def seed(
    api: Api,
    *,
    admin_token: str,
    reporter: Reporter,
    categories: Sequence[DemoCategory] = CATEGORIES,
    products: Sequence[DemoProduct] = PRODUCTS,
) -> SeedReport:
    """Make sure every demo category and product exists; change nothing that does.

    Existing products keep their price and stock (an admin may have changed them).
    A 409 on create means another seed got there first (or the product exists but is
    deactivated, hidden from lists): it counts as existing."""
    report = SeedReport()
    with reporter.step("categories", total=len(categories)) as step:
        by_slug = {
            c["slug"]: c for c in items_of(await api.call("GET", "/api/v1/categories", params={"page_size": 100}))
        }
        for category in categories:
            if category.slug in by_slug:
                report.categories_existing += 1
            else:
                try:
                    created = await api.call(
                        "POST",
                        "/api/v1/categories",
                        token=admin_token,
                        json={"name": category.name, "slug": category.slug},
                        expect=(201,),
                    )
                    by_slug[category.slug] = created
                    report.categories_created += 1
                except ApiError as exc:
                    if exc.status != 409:
                        raise
                    report.categories_existing += 1
            step.advance()
        if any(c.slug not in by_slug for c in categories):  # created concurrently by someone else
            by_slug = {
                c["slug"]: c for c in items_of(await api.call("GET", "/api/v1/categories", params={"page_size": 100}))
            }
        step.update(f"categories: {report.categories_created} new, {report.categories_existing} already there")

    with reporter.step("products", total=len(products)) as step:
        by_sku = {p["sku"].lower(): p for p in await _all_products(api)}
        for product in products:
            found = by_sku.get(product.sku.lower())
            if found is None:
                body = {
                    "sku": product.sku,
                    "name": product.name,
                    "description": product.description,
                    "price": product.price,
                    "currency": "USD",
                    "stock": product.stock,
                }
                if product.category in by_slug:
                    body["category_id"] = by_slug[product.category]["id"]
                try:
                    found = await api.call("POST", "/api/v1/products", token=admin_token, json=body, expect=(201,))
                    report.products_created += 1
                except ApiError as exc:
                    if exc.status != 409:
                        raise
                    report.products_existing += 1
                    found = await product_by_sku(api, product.sku)
            else:
                report.products_existing += 1
            if found is not None:
                report.product_ids[product.sku] = found["id"]
            step.advance()
        step.update(f"products: {report.products_created} new, {report.products_existing} already there")
    return report


async def _all_products(api: Api) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    page = 1
    while True:
        body = await api.call("GET", "/api/v1/products", params={"page": page, "page_size": 100})
        items = items_of(body)
        found.extend(items)
        total = body.get("total", len(found)) if isinstance(body, dict) else len(found)
        if not items or len(found) >= total:
            return found
        page += 1


# --- prost demo ------------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    title: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def expect(self, condition: bool, problem: str) -> None:
        if not condition:
            self.problems.append(problem)


@dataclass
class CheckoutResult(ScenarioResult):
    order: dict[str, Any] = field(default_factory=dict)
    saga: dict[str, Any] = field(default_factory=dict)
    cart_after: dict[str, Any] = field(default_factory=dict)


@dataclass
class DeclinedResult(ScenarioResult):
    order: dict[str, Any] = field(default_factory=dict)
    saga: dict[str, Any] = field(default_factory=dict)
    cart_after: dict[str, Any] = field(default_factory=dict)
    available_before: int = 0
    available_in_cart: int = 0
    available_after: int = 0


@dataclass
class RaceResult(ScenarioResult):
    shoppers: int = 0
    units: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # final status → orders
    failure_reasons: dict[str, int] = field(default_factory=dict)
    final_stock: int = 0
    final_available: int = 0

    @property
    def confirmed(self) -> int:
        return self.statuses.get("confirmed", 0)

    @property
    def rejected(self) -> int:
        return self.statuses.get("rejected", 0)


@dataclass
class DemoReport:
    seed: SeedReport
    checkout: CheckoutResult
    declined: DeclinedResult
    race: RaceResult

    @property
    def scenarios(self) -> list[ScenarioResult]:
        return [self.checkout, self.declined, self.race]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.scenarios)


def saga_table(saga: Mapping[str, Any]) -> Table:
    """The saga's steps and then its compensations (`undo`), with their times."""
    table = Table(expand=False)
    table.add_column("", style="dim")
    table.add_column(f"saga of order {saga.get('order_id', '?')}: {_status_style(str(saga.get('status')))}")
    table.add_column("status")
    table.add_column("at", style="dim")
    for row in saga.get("steps", []):
        table.add_row("step", str(row.get("name")), _status_style(str(row.get("status"))), _time(row.get("at")))
    for row in saga.get("compensations", []):
        table.add_row("undo", str(row.get("action")), _status_style(str(row.get("status"))), _time(row.get("at")))
    return table


_STATUS_COLOURS = {
    "completed": "green",
    "confirmed": "green",
    "succeeded": "green",
    "failed": "red",
    "rejected": "red",
    "cancelled": "red",
    "compensated": "yellow",
    "compensating": "yellow",
    "acknowledged": "yellow",
}


def _status_style(status: str) -> str:
    colour = _STATUS_COLOURS.get(status)
    return f"[{colour}]{status}[/]" if colour else status


def _time(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(value).strftime("%H:%M:%S.%f")[:-3]
    return value


async def checkout_succeeds(api: Api, *, product_id: str, reporter: Reporter, wait_seconds: float) -> CheckoutResult:
    result = CheckoutResult("checkout")
    with reporter.step("register a shopper and log in") as step:
        shopper = await new_shopper(api, "ada")
        step.update(f"shopper {shopper.email} logged in")
    with reporter.step("add 2 units to the cart") as step:
        cart = await api.call(
            "POST", "/api/v1/cart/items", token=shopper.token, json={"product_id": product_id, "quantity": 2}
        )
        line = cart["items"][0]
        step.update(f"cart: 2 × {line['name']} = {cart['total_amount']} {cart['currency']} (stock held)")
    with reporter.step(f"check out with {GOOD_CARD}") as step:
        accepted = await api.call(
            "POST",
            "/api/v1/cart/checkout",
            token=shopper.token,
            json={"payment": card(GOOD_CARD)},
            headers={"Idempotency-Key": uuid.uuid4().hex},
            expect=(202,),
        )
        order_id = accepted["order_id"]
        step.update(f"order {order_id} accepted ({accepted['status']}); waiting for the saga")
        result.order = await settle(api, shopper.token, order_id, wait_seconds=wait_seconds)
        step.update(f"order {order_id}: {result.order['status']}")
        if result.order["status"] != "confirmed":
            step.fail(f"order {order_id}: {result.order['status']} ({result.order.get('failure_reason')})")
    result.saga = await api.call("GET", f"/api/v1/orders/{order_id}/saga", token=shopper.token)
    reporter.show(saga_table(result.saga))
    # The cart learns of the confirmation by an event, a moment after the order.
    result.cart_after = await _cart_once(api, shopper.token, lambda c: not c.get("items"), wait_seconds=wait_seconds)
    result.expect(result.order["status"] == "confirmed", f"the order ended {result.order['status']}, not confirmed")
    result.expect(
        Decimal(result.order["total_amount"]) == Decimal(cart["total_amount"]),
        "the order's total differs from the cart's",
    )
    result.expect(bool(result.saga.get("steps")), "the saga shows no steps")
    result.expect(not result.cart_after.get("items"), "the shopper's cart is not empty after a confirmed order")
    return result


async def declined_card(api: Api, *, product_id: str, reporter: Reporter, wait_seconds: float) -> DeclinedResult:
    result = DeclinedResult("declined card")
    shopper = await new_shopper(api, "bob")
    with reporter.step("a second shopper puts 1 unit in the cart") as step:
        result.available_before = (await api.call("GET", f"/api/v1/products/{product_id}"))["available"]
        await api.call(
            "POST", "/api/v1/cart/items", token=shopper.token, json={"product_id": product_id, "quantity": 1}
        )
        result.available_in_cart = (await api.call("GET", f"/api/v1/products/{product_id}"))["available"]
        step.update(
            f"{shopper.email}: available {result.available_before} → {result.available_in_cart} (held by the cart)"
        )
    with reporter.step(f"check out with {DECLINED_CARD} (declined)") as step:
        accepted = await api.call(
            "POST",
            "/api/v1/cart/checkout",
            token=shopper.token,
            json={"payment": card(DECLINED_CARD)},
            headers={"Idempotency-Key": uuid.uuid4().hex},
            expect=(202,),
        )
        order_id = accepted["order_id"]
        result.order = await settle(api, shopper.token, order_id, wait_seconds=wait_seconds)
        step.update(f"order {order_id}: {result.order['status']} ({result.order.get('failure_reason')})")
    result.saga = await api.call("GET", f"/api/v1/orders/{order_id}/saga", token=shopper.token)
    reporter.show(saga_table(result.saga))
    with reporter.step("the cart is open again; the shopper empties it") as step:
        result.cart_after = await _cart_once(
            api, shopper.token, lambda c: c.get("status") == "open", wait_seconds=wait_seconds
        )
        kept = sum(i["quantity"] for i in result.cart_after.get("items", []))
        await api.call("DELETE", f"/api/v1/cart/items/{product_id}", token=shopper.token)
        result.available_after = await _settled_available(
            api, product_id, result.available_before, wait_seconds=wait_seconds
        )
        step.update(
            f"cart {result.cart_after.get('status')} again with {kept} unit(s); emptied, available is "
            f"{result.available_after} (was {result.available_before} before the cart)"
        )
    result.expect(result.order["status"] == "cancelled", f"the order ended {result.order['status']}, not cancelled")
    result.expect(
        result.order.get("failure_reason") == "payment_declined",
        f"failure_reason is {result.order.get('failure_reason')}",
    )
    result.expect(bool(result.saga.get("compensations")), "the saga shows no compensation")
    result.expect(result.available_in_cart == result.available_before - 1, "adding to the cart did not hold one unit")
    result.expect(
        result.cart_after.get("status") == "open", f"the cart is {result.cart_after.get('status')}, not open again"
    )
    result.expect(result.available_after == result.available_before, "the held unit did not come back")
    return result


async def _cart_once(
    api: Api, token: str, condition: Callable[[dict[str, Any]], bool], *, wait_seconds: float
) -> dict[str, Any]:
    """The shopper's cart once `condition` holds, or as it is when `wait_seconds` pass
    (the cart follows the order by events, so it may lag the order's status a little)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while True:
        cart: dict[str, Any] = await api.call("GET", "/api/v1/cart", token=token)
        if condition(cart) or loop.time() >= deadline:
            return cart
        await asyncio.sleep(0.1)


async def _settled_available(api: Api, product_id: str, expected: int, *, wait_seconds: float) -> int:
    """`available` once it is back to `expected`, or whatever it is when the timeout passes
    (a release travels as an event, so it may land a moment after the order's status)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while True:
        available: int = (await api.call("GET", f"/api/v1/products/{product_id}"))["available"]
        if available == expected or loop.time() >= deadline:
            return available
        await asyncio.sleep(0.1)


async def race_product(api: Api, *, admin_token: str, units: int) -> dict[str, Any]:
    """The product the shoppers race for, with exactly `units` on hand.

    One fixed SKU, restocked at each run, so repeated demos do not fill the shop with
    copies. If it cannot be restocked (units still reserved by an unfinished earlier
    run, or it was deactivated), a fresh one is made."""
    existing = await product_by_sku(api, RACE_SKU)
    if existing is not None:
        with contextlib.suppress(ApiError):
            product: dict[str, Any] = await api.call(
                "PUT", f"/api/v1/products/{existing['id']}/stock", token=admin_token, json={"stock": units}
            )
            if product["available"] == units:
                return product
    sku = RACE_SKU if existing is None else f"{RACE_SKU}-{uuid.uuid4().hex[:6].upper()}"
    body = {
        "sku": sku,
        "name": "Last units: signed limited-edition print",
        "description": "A numbered print of the prost storefront, signed. Only a few left.",
        "price": "49.00",
        "stock": units,
    }
    try:
        created: dict[str, Any] = await api.call(
            "POST", "/api/v1/products", token=admin_token, json=body, expect=(201,)
        )
    except ApiError as exc:
        if exc.status != 409:
            raise
        body["sku"] = f"{RACE_SKU}-{uuid.uuid4().hex[:6].upper()}"
        created = await api.call("POST", "/api/v1/products", token=admin_token, json=body, expect=(201,))
    return created


async def race_for_last_units(
    api: Api, *, admin_token: str, reporter: Reporter, shoppers: int, units: int, wait_seconds: float
) -> RaceResult:
    result = RaceResult("race for the last units", shoppers=shoppers, units=units)
    product = await race_product(api, admin_token=admin_token, units=units)
    with reporter.step(f"{shoppers} shoppers register", total=shoppers) as step:
        # Registration hashes a password (bcrypt): a few at a time is as fast and kinder.
        gate = asyncio.Semaphore(4)

        async def register() -> Shopper:
            async with gate:
                shopper = await new_shopper(api, "racer")
                step.advance()
                return shopper

        racers = await asyncio.gather(*(register() for _ in range(shoppers)))
        step.update(f"{shoppers} shoppers ready for {product['name']!r} ({units} on hand)")

    with reporter.step(f"all order 1 unit at once ({units} on hand)", total=shoppers) as step:
        start = asyncio.Event()

        async def buy(shopper: Shopper) -> dict[str, Any]:
            await start.wait()
            accepted = await api.call(
                "POST",
                "/api/v1/orders",
                token=shopper.token,
                json={"items": [{"product_id": product["id"], "quantity": 1}], "payment": card(GOOD_CARD)},
                headers={"Idempotency-Key": uuid.uuid4().hex},
                expect=(202,),
            )
            order = await settle(api, shopper.token, accepted["id"], wait_seconds=wait_seconds)
            step.advance()
            return order

        buyers = [asyncio.create_task(buy(s)) for s in racers]
        await asyncio.sleep(0)  # every buyer is waiting at the line
        start.set()
        orders = await asyncio.gather(*buyers)
        for order in orders:
            result.statuses[order["status"]] = result.statuses.get(order["status"], 0) + 1
            if order.get("failure_reason"):
                result.failure_reasons[order["failure_reason"]] = (
                    result.failure_reasons.get(order["failure_reason"], 0) + 1
                )
        reasons = ", ".join(f"{n} {reason}" for reason, n in result.failure_reasons.items())
        step.update(
            f"settled: {result.confirmed} confirmed, {result.rejected} rejected"
            + _others(result.statuses)
            + (f" ({reasons})" if reasons else "")
        )

    with reporter.step("final stock") as step:
        # Confirmation commits the reservation (stock goes down) by an event: wait for it.
        expected = units - result.confirmed
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_seconds
        while True:
            now = await api.call("GET", f"/api/v1/products/{product['id']}")
            result.final_stock, result.final_available = now["stock"], now["available"]
            if (result.final_stock, result.final_available) == (expected, expected) or loop.time() >= deadline:
                break
            await asyncio.sleep(0.1)
        step.update(f"stock {units} → {result.final_stock}, available {result.final_available}")

    table = Table(title=f"race: {shoppers} shoppers, {units} units", title_justify="left")
    for column in ("confirmed", "rejected", "other", "stock before", "stock after", "conserved"):
        table.add_column(column, justify="right")
    others = shoppers - result.confirmed - result.rejected
    conserved = result.final_stock == units - result.confirmed
    table.add_row(
        str(result.confirmed),
        str(result.rejected),
        str(others),
        str(units),
        str(result.final_stock),
        "yes" if conserved else "[red]no[/]",
    )
    reporter.show(table)

    result.expect(sum(result.statuses.values()) == shoppers, "not every order was accepted")
    result.expect(set(result.statuses) <= FINAL_STATUSES, f"orders still open after {wait_seconds}s: {result.statuses}")
    result.expect(
        result.confirmed == min(units, shoppers),
        f"{result.confirmed} confirmed for {units} units and {shoppers} shoppers",
    )
    result.expect(
        result.rejected == shoppers - result.confirmed,
        f"{result.rejected} rejected, expected {shoppers - result.confirmed}",
    )
    result.expect(set(result.failure_reasons) <= {"out_of_stock"}, f"unexpected failures: {result.failure_reasons}")
    result.expect(conserved, f"stock {result.final_stock} after {result.confirmed} sold of {units}")
    result.expect(result.final_available == result.final_stock, "units are still reserved after every order settled")
    return result


def _others(statuses: Mapping[str, int]) -> str:
    rest = {k: v for k, v in statuses.items() if k not in ("confirmed", "rejected")}
    return "".join(f", {v} {k}" for k, v in rest.items())


async def demo(
    api: Api,
    *,
    admin_email: str,
    admin_password: str,
    reporter: Reporter,
    shoppers: int = 8,
    units: int = 3,
    wait_seconds: float = 30.0,
) -> DemoReport:
    """Seed, then the three scenarios, one after the other (each needs the system to itself
    only for its own products)."""
    reporter.heading("the shop")
    with reporter.step("admin logs in") as step:
        admin_token = await api.login(admin_email, admin_password)
        step.update(f"admin {admin_email} logged in")
    seeded = await seed(api, admin_token=admin_token, reporter=reporter)

    reporter.heading("1. a successful checkout")
    checkout = await checkout_succeeds(
        api, product_id=seeded.product_ids[CHECKOUT_SKU], reporter=reporter, wait_seconds=wait_seconds
    )
    reporter.heading("2. a declined card, and its compensation")
    declined = await declined_card(
        api, product_id=seeded.product_ids[DECLINED_SKU], reporter=reporter, wait_seconds=wait_seconds
    )
    reporter.heading("3. a race for the last units")
    race = await race_for_last_units(
        api, admin_token=admin_token, reporter=reporter, shoppers=shoppers, units=units, wait_seconds=wait_seconds
    )
    return DemoReport(seed=seeded, checkout=checkout, declined=declined, race=race)


# --- entry points for the CLI ------------------------------------------------------------------


async def run_seed(url: str, *, admin_email: str, admin_password: str, console: Console | None = None) -> int:
    """`prost seed`: returns the exit code."""
    reporter = Reporter(console)
    try:
        async with Api(url) as api:
            with reporter.step("admin logs in"):
                token = await api.login(admin_email, admin_password)
            report = await seed(api, admin_token=token, reporter=reporter)
    except (Unreachable, ApiError) as exc:
        reporter.console.print(f"[red]prost seed failed:[/] {exc}")
        return 1
    reporter.console.print(
        f"demo catalog at {url}: {report.categories_created} categories and {report.products_created} products created, "
        f"{report.categories_existing} and {report.products_existing} already there"
    )
    return 0


async def run_demo(
    url: str,
    *,
    admin_email: str,
    admin_password: str,
    shoppers: int = 8,
    units: int = 3,
    wait_seconds: float = 30.0,
    console: Console | None = None,
) -> int:
    """`prost demo`: returns the exit code (1 when anything differed from the contract)."""
    reporter = Reporter(console)
    try:
        async with Api(url) as api:
            report = await demo(
                api,
                admin_email=admin_email,
                admin_password=admin_password,
                reporter=reporter,
                shoppers=shoppers,
                units=units,
                wait_seconds=wait_seconds,
            )
    except (Unreachable, ApiError) as exc:
        reporter.console.print(f"[red]prost demo failed:[/] {exc}")
        return 1
    for scenario in report.scenarios:
        if scenario.ok:
            reporter.console.print(f"[green]✓[/] {scenario.title}")
        for problem in scenario.problems:
            reporter.console.print(f"[red]✗[/] {scenario.title}: {problem}")
    return 0 if report.ok else 1
