"""Browser tests of the storefront: headless Chromium driven by Playwright.

The system under test is real: `prost_server` starts `prost up` as its own process
(embedded mode) on a free port with a fresh data directory, and waits for
`GET /ready`. Set `PROST_E2E_BASE_URL` (with `PROST_E2E_ADMIN_EMAIL` and
`PROST_E2E_ADMIN_PASSWORD`) to run the same tests against a prost that is already
running, e.g. the distributed mode.

Chromium is Debian's (`/usr/bin/chromium`); Playwright's own download is not used.
Without it the tests skip, unless `PROST_REQUIRE_SERVICES=1`, when they fail.
Screenshots of the main pages go to `artifacts/screenshots/` (git-ignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

REPO_ROOT = Path(__file__).resolve().parents[3]
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STARTUP_TIMEOUT_S = 180.0
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"


def _require_services() -> bool:
    return os.environ.get("PROST_REQUIRE_SERVICES") == "1"


def _unavailable(reason: str) -> None:
    """Skip with `reason`, or fail when the run demands every service (PROST_REQUIRE_SERVICES=1)."""
    if _require_services():
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass
class Server:
    base_url: str
    admin_email: str
    admin_password: str
    log_path: Path | None = None

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=30.0)

    async def token(self, email: str, password: str) -> str:
        async with self.api() as client:
            answer = await client.post("/api/v1/users/login", json={"email": email, "password": password})
            assert answer.status_code == 200, answer.text
            return str(answer.json()["token"])

    async def admin_token(self) -> str:
        return await self.token(self.admin_email, self.admin_password)

    async def create_product(
        self, *, name: str, price: str = "9.99", stock: int = 50, description: str = ""
    ) -> dict[str, Any]:
        """A product made through the public admin API (test set-up, not the thing under test)."""
        token = await self.admin_token()
        async with self.api() as client:
            answer = await client.post(
                "/api/v1/products",
                json={
                    "sku": "E2E-" + uuid.uuid4().hex[:12].upper(),
                    "name": name,
                    "description": description,
                    "price": price,
                    "stock": stock,
                },
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answer.status_code == 201, answer.text
            product: dict[str, Any] = answer.json()
            return product


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _prost_executable() -> str | None:
    beside = Path(sys.executable).parent / "prost"
    if beside.exists():
        return str(beside)
    return shutil.which("prost")


def _log_tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Ask `prost up` to stop as Ctrl-C would (it stops its embedded PostgreSQL), then
    make sure nothing is left in the process group we started."""
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
async def prost_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    external = os.environ.get("PROST_E2E_BASE_URL")
    if external:
        yield Server(
            base_url=external.rstrip("/"),
            admin_email=os.environ.get("PROST_E2E_ADMIN_EMAIL", ""),
            admin_password=os.environ.get("PROST_E2E_ADMIN_PASSWORD", ""),
        )
        return
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install -y chromium); browser tests need it")
    executable = _prost_executable()
    if executable is None or importlib.util.find_spec("prost.cli") is None:
        _unavailable("the `prost` command (prost.cli) is not available, so `prost up` cannot be started")
        return  # for type checkers; _unavailable never returns

    workdir = tmp_path_factory.mktemp("prost-up")
    port = _free_port()
    admin_email = "admin@e2e.example.com"
    admin_password = "admin-" + uuid.uuid4().hex
    env = {
        **os.environ,
        "PROST_HTTP_HOST": "127.0.0.1",
        "PROST_HTTP_PORT": str(port),
        "PROST_DATA_DIR": str(workdir / "data"),
        "PROST_ADMIN_EMAIL": admin_email,
        "PROST_ADMIN_PASSWORD": admin_password,
        "PROST_BCRYPT_ROUNDS": "4",
    }
    # Embedded mode: make sure no external database or broker from the caller's shell is picked up.
    env.pop("PROST_DATABASE_URL", None)
    env.pop("PROST_BROKER_URL", None)
    log_path = workdir / "prost-up.log"
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        # A real process, started as a person would start it.
        process = await asyncio.create_subprocess_exec(
            executable, "up", cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        async with httpx.AsyncClient(timeout=2.0) as probe:
            while True:
                if process.returncode is not None:
                    pytest.fail(
                        f"`prost up` exited with {process.returncode} before it was ready:\n{_log_tail(log_path)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await probe.get(f"{base_url}/ready")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    pytest.fail(f"`prost up` was not ready within {STARTUP_TIMEOUT_S:.0f} s:\n{_log_tail(log_path)}")
                await asyncio.sleep(0.25)
        yield Server(base_url=base_url, admin_email=admin_email, admin_password=admin_password, log_path=log_path)
    finally:
        await _stop(process)


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install -y chromium); browser tests need it")
    # The async API shares pytest-asyncio's loop with the rest of the suite (the sync
    # API would run a loop of its own and clash with every async test after it).
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


@dataclass
class PageProblems:
    """What the page itself got wrong: uncaught exceptions and CSP refusals (each a failure)."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on(
            "console",
            lambda msg: (
                self.errors.append(f"console: {msg.text}")
                if msg.type == "error" and ("Content Security Policy" in msg.text or "Trusted Type" in msg.text)
                else None
            ),
        )


async def _new_page(browser: Browser, viewport: dict[str, int], problems: PageProblems) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(viewport=viewport, locale="en-GB", timezone_id="UTC")  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    page = await context.new_page()
    problems.watch(page)
    return context, page


@pytest.fixture
async def page(browser: Browser, prost_server: Server) -> AsyncIterator[Page]:
    problems = PageProblems()
    context, page = await _new_page(browser, DESKTOP, problems)
    try:
        yield page
    finally:
        await context.close()
    assert problems.errors == [], problems.errors


@pytest.fixture
async def phone_page(browser: Browser, prost_server: Server) -> AsyncIterator[Page]:
    problems = PageProblems()
    context, page = await _new_page(browser, PHONE, problems)
    try:
        yield page
    finally:
        await context.close()
    assert problems.errors == [], problems.errors


async def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot to artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


class Shop:
    """The storefront as a person uses it: through labels, roles and visible text."""

    def __init__(self, page: Page, server: Server) -> None:
        self.page = page
        self.server = server

    async def on_screen(self) -> None:
        """Wait until the page for the current address is the one shown (pages render off-screen first)."""
        await self.page.wait_for_function(
            "() => document.querySelector('main').dataset.route === (location.hash || '#/')"
        )

    async def open(self, route: str = "#/") -> None:
        """Load the storefront at `route` (a full page load: any earlier sign-in is gone)."""
        await self.page.goto(f"{self.server.base_url}/{route}")
        await self.on_screen()

    async def go(self, route: str) -> None:
        """Move to `route` inside the running page (no reload), as a link would."""
        await self.page.evaluate("route => { location.hash = route; }", route)
        await self.page.wait_for_function("route => location.hash === route", arg=route)
        await self.on_screen()

    async def register(self, prefix: str = "shopper") -> tuple[str, str]:
        tag = uuid.uuid4().hex[:10]
        email, username, password = f"{prefix}-{tag}@e2e.example.com", f"{prefix}_{tag}", "correct-horse-" + tag
        await self.open("#/register")
        main = self.page.locator("main")
        await main.get_by_label("Email").fill(email)
        await main.get_by_label("Username").fill(username)
        await main.get_by_label("Password").fill(password)
        await main.get_by_role("button", name="Create account").click()
        await self.page.locator("header .username").get_by_text(username).wait_for()
        await self.page.wait_for_function("() => location.hash === '#/'")
        await self.on_screen()
        return email, password

    async def login(self, email: str, password: str) -> None:
        await self.open("#/login")
        main = self.page.locator("main")
        await main.get_by_label("Email").fill(email)
        await main.get_by_label("Password").fill(password)
        await main.get_by_role("button", name="Log in").click()
        await self.page.locator("header .username").wait_for()
        await self.page.wait_for_function("() => location.hash === '#/'")
        await self.on_screen()

    async def nav(self, name: str) -> None:
        link = self.page.get_by_role("navigation", name="Main").get_by_role("link", name=name)
        route = await link.get_attribute("href")
        await link.click()
        await self.page.wait_for_function("route => location.hash === route", arg=route)
        await self.on_screen()

    async def search(self, text: str) -> None:
        main = self.page.locator("main")
        await main.get_by_role("searchbox", name="Search").fill(text)
        await main.get_by_role("button", name="Search").click()
        # The count line names the search once the new results are in.
        await main.locator(".result-count", has_text=text).wait_for()

    async def pay(self, card: str, *, double_click: bool = False) -> None:
        form = self.page.locator("form.checkout")
        await form.get_by_label("Card number").fill(card)
        await form.get_by_label("Expiry month").fill("12")
        await form.get_by_label("Expiry year").fill(str(time.gmtime().tm_year + 2))
        await form.get_by_label("CVC").fill("123")
        button = form.get_by_role("button", name="Pay")
        if double_click:
            await button.dblclick()
        else:
            await button.click()
        await self.page.wait_for_url("**/#/orders/*")
        await self.on_screen()

    async def unlabelled_fields(self) -> list[str]:
        """Form fields on the page with no accessible name (should be none)."""
        names: list[str] = await self.page.evaluate(
            """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                 .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                               && !el.getAttribute('aria-labelledby'))
                 .map(el => el.outerHTML.slice(0, 120))"""
        )
        return names


@pytest.fixture
def shop(page: Page, prost_server: Server) -> Shop:
    return Shop(page, prost_server)


@pytest.fixture
def phone_shop(phone_page: Page, prost_server: Server) -> Shop:
    return Shop(phone_page, prost_server)
