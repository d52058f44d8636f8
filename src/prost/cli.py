"""The `prost` command.

prost up [--distributed] [--replicas orders=2,...]   run the whole system
prost serve <service>                                 run one service (distributed mode)
prost migrate                                         apply every schema's migrations
prost users create-admin                              make sure an admin exists
prost dlq list|replay <service>                       dead letters
prost seed / prost demo                               demo data and a walkthrough
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Annotated

import typer
from rich.console import Console

from prost.kit.bus.base import DeadLetter, MessageBus
from prost.kit.logs import configure_logging
from prost.kit.settings import SERVICES, Settings

app = typer.Typer(help="prost: an event-driven e-commerce backend.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)


def _settings() -> Settings:
    return Settings()


async def _run_until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@app.command()
def up(
    distributed: Annotated[
        bool, typer.Option("--distributed", help="Run the gateway and every service as separate processes.")
    ] = False,
    replicas: Annotated[
        str, typer.Option(help="Replicas per service, e.g. orders=2,catalog=2 (distributed mode).")
    ] = "",
) -> None:
    """Start the whole system (embedded PostgreSQL and in-process bus unless configured)."""
    settings = _settings()
    configure_logging(settings.log_level)
    if distributed:
        from prost.runtime.distributed import run_distributed

        sys.exit(run_distributed(settings, replicas=replicas))
    from prost.runtime.loop import run

    run(_up(settings))


async def _up(settings: Settings) -> None:
    from prost.runtime.embedded import System
    from prost.runtime.loop import tune_collector

    system = System(settings)
    with console.status("starting prost", spinner="dots") as status:
        system.progress = lambda msg: status.update(f"prost: {msg}")
        try:
            await system.start()
        except BaseException:
            await system.stop()
            raise
    tune_collector()
    console.print(f"[bold green]prost is up[/] at [link={system.url}]{system.url}[/]")
    console.print(f"  storefront   {system.url}/")
    console.print(f"  API docs     {system.url}/docs")
    console.print(f"  health       {system.url}/health   ready {system.url}/ready   metrics {system.url}/metrics")
    console.print("  Ctrl-C stops it")
    try:
        waiter = asyncio.create_task(system.wait())
        signalled = asyncio.create_task(_run_until_signalled())
        await asyncio.wait({waiter, signalled}, return_when=asyncio.FIRST_COMPLETED)
        for task in (waiter, signalled):
            task.cancel()
    finally:
        console.print("prost: stopping")
        await system.stop()
        console.print("prost: stopped")


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="gateway, users, catalog, cart, orders or payments")],
) -> None:
    """Run one service (or the gateway) in this process, against PROST_DATABASE_URL and PROST_BROKER_URL."""
    from prost.runtime.distributed import ConfigurationError
    from prost.runtime.distributed import serve as serve_one
    from prost.runtime.loop import run as serve_loop

    settings = _settings()
    configure_logging(settings.log_level)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve_one(service, settings, stop)

    try:
        serve_loop(run())
    except ConfigurationError as exc:
        console.print(f"[red]prost serve {service}:[/] {exc}")
        raise typer.Exit(2) from exc


@app.command()
def migrate() -> None:
    """Apply every service's migrations to PROST_DATABASE_URL (safe to run twice, or from two processes)."""
    from prost.kit import migrations

    settings = _settings()
    if not settings.database_url:
        console.print("[red]PROST_DATABASE_URL is not set[/] (the embedded mode migrates by itself on `prost up`)")
        raise typer.Exit(2)
    url = settings.database_url

    async def run() -> None:
        await migrations.ensure_database(url)
        await migrations.upgrade(url)

    asyncio.run(run())
    console.print("migrations applied: " + ", ".join(SERVICES))


@app.command()
def makemigration(service: str, message: str) -> None:
    """Write a new Alembic revision for SERVICE from its tables (needs a scratch PROST_DATABASE_URL)."""
    from prost.kit import migrations

    url = _settings().database_url
    if not url:
        console.print("[red]PROST_DATABASE_URL (a scratch database) is required[/]")
        raise typer.Exit(2)
    asyncio.run(migrations.make_revision(url, service, message))


users_app = typer.Typer(help="User accounts.", no_args_is_help=True)
app.add_typer(users_app, name="users")


@users_app.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option(help="The admin's email.")],
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="Prompted for when not given.")
    ],
) -> None:
    """Make sure an admin account with this email and password exists (creates, promotes or resets it).

    Uses PROST_DATABASE_URL, else the embedded PostgreSQL under PROST_DATA_DIR (also while `prost up` runs)."""
    settings = _settings()
    try:
        action, user_id = asyncio.run(_create_admin(settings, email, password))
    except ValueError as exc:
        console.print(f"[red]prost users create-admin:[/] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"admin {email}: {action.replace('_', ' ')} (id {user_id})")


async def _create_admin(settings: Settings, email: str, password: str) -> tuple[str, str]:
    from prost.kit import migrations
    from prost.kit.db import create_engine
    from prost.runtime.embedded_pg import EmbeddedPostgres
    from prost.users.admin import ensure_admin
    from prost.users.passwords import PasswordHasher

    pg: EmbeddedPostgres | None = None
    if settings.database_url:
        url = settings.database_url
    else:
        pg = EmbeddedPostgres(settings.data_dir)
        url = await pg.start()
    hasher = PasswordHasher(settings.bcrypt_rounds, threads=1)
    try:
        await migrations.ensure_database(url)
        await migrations.upgrade(url)
        engine = create_engine(url, pool_size=1)
        try:
            result = await ensure_admin(engine, hasher, email=email, password=password, reset_password=True)
        finally:
            await engine.dispose()
    finally:
        hasher.close()
        if pg is not None:
            await pg.stop()
    return result.action, str(result.user.id)


dlq_app = typer.Typer(help="Dead letters: messages parked after max delivery attempts.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


def _dlq_bus() -> MessageBus:
    from prost.kit import dlq

    try:
        return dlq.broker_bus(_settings())
    except LookupError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc


@dlq_app.command("list")
def dlq_list(service: Annotated[str, typer.Argument(help="the service whose <service>.dead queue to read")]) -> None:
    """List SERVICE's dead letters (the queue is left as it was)."""
    from rich.table import Table

    from prost.kit import dlq

    bus = _dlq_bus()

    async def run() -> list[DeadLetter]:
        await bus.connect()
        try:
            return await dlq.list_dead(bus, service)
        finally:
            await bus.close()

    dead = asyncio.run(run())
    table = Table(title=f"{service}.dead: {len(dead)} message(s)")
    for column in ("id", "event_type", "event_id", "attempts", "parked_at", "reason"):
        table.add_column(column)
    for d in dead:
        table.add_row(
            d.id, d.envelope.event_type, str(d.envelope.event_id), str(d.attempts), d.parked_at.isoformat(), d.reason
        )
    Console().print(table)


@dlq_app.command("replay")
def dlq_replay(
    service: Annotated[str, typer.Argument(help="the service whose dead letters to send back to its queue")],
    ids: Annotated[
        list[str] | None, typer.Option("--id", help="a dead-letter id or event id (repeatable); none = all")
    ] = None,
) -> None:
    """Send SERVICE's dead letters back to its queue, with a fresh attempt count."""
    from prost.kit import dlq

    bus = _dlq_bus()

    async def run() -> int:
        await bus.connect()
        try:
            return await dlq.replay(bus, service, ids or None)
        finally:
            await bus.close()

    console.print(f"replayed {asyncio.run(run())} message(s) to {service}")


# `prost seed` and `prost demo` are clients of a running prost: they use only the public API.
UrlOption = Annotated[str, typer.Option(help="The gateway of a running prost.")]
AdminEmailOption = Annotated[str | None, typer.Option(envvar="PROST_ADMIN_EMAIL", help="An admin's email.")]
AdminPasswordOption = Annotated[
    str | None, typer.Option(envvar="PROST_ADMIN_PASSWORD", help="That admin's password.", show_default=False)
]


def _admin_credentials(email: str | None, password: str | None) -> tuple[str, str]:
    if not email or not password:
        console.print(
            "[red]an admin account is needed:[/] --admin-email and --admin-password, "
            "or PROST_ADMIN_EMAIL and PROST_ADMIN_PASSWORD"
        )
        raise typer.Exit(2)
    return email, password


@app.command()
def seed(
    url: UrlOption = "http://127.0.0.1:8000",
    admin_email: AdminEmailOption = None,
    admin_password: AdminPasswordOption = None,
) -> None:
    """Load the demo catalog (categories, products with stock) into a running prost; running it twice adds nothing."""
    from prost.runtime.demo import run_seed

    email, password = _admin_credentials(admin_email, admin_password)
    raise typer.Exit(asyncio.run(run_seed(url, admin_email=email, admin_password=password)))


@app.command()
def demo(
    url: UrlOption = "http://127.0.0.1:8000",
    admin_email: AdminEmailOption = None,
    admin_password: AdminPasswordOption = None,
    shoppers: Annotated[int, typer.Option(min=1, max=200, help="Shoppers racing for the last units.")] = 8,
    units: Annotated[int, typer.Option(min=1, max=100, help="Units on hand in the race.")] = 3,
    wait: Annotated[float, typer.Option(min=1, help="Seconds to wait for an order's final status.")] = 30.0,
) -> None:
    """Walk through a checkout, a declined card and a race for the last units against a running prost.

    Seeds the demo catalog first. Exits 1 if anything differs from what the API promises."""
    from prost.runtime.demo import run_demo

    email, password = _admin_credentials(admin_email, admin_password)
    code = asyncio.run(
        run_demo(url, admin_email=email, admin_password=password, shoppers=shoppers, units=units, wait_seconds=wait)
    )
    raise typer.Exit(code)


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        app()


if __name__ == "__main__":
    main()
