"""The workbench's commands: ``serve``, ``user ...`` and ``demo --serve`` (wired into processor/cli.py).

Exit codes: 0 done (``serve`` stopped by Ctrl-C or SIGTERM), 1 the processor failed while serving,
2 a usage error (a bad user, role or password, no broker to publish to).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from events.types import Event

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
DEMO_PEOPLE = (  # login, display name, role
    ("sam", "Sam Specialist", "specialist"),
    ("kim", "Kim Specialist", "specialist"),
    ("sue", "Sue Supervisor", "supervisor"),
    ("ava", "Ava Auditor", "auditor"),
)


def _settings(args: argparse.Namespace) -> Any:
    from processor.settings import Settings

    settings = Settings()
    web = settings.web.model_copy(update={k: v for k, v in (("host", getattr(args, "host", None)),
                                                            ("port", getattr(args, "port", None))) if v is not None})
    return settings.model_copy(update={"web": web})


class _Publisher:
    """The composition root's publisher, shared by the web app's threads: one event, sent and flushed."""

    def __init__(self, publisher: Any) -> None:
        self._publisher = publisher
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._publisher.publish([event])
            self._publisher.flush(timeout_s=30.0)

    def close(self) -> None:
        self._publisher.close()


@contextlib.contextmanager
def web_context(settings: Any, dsn: str, publisher: Any) -> Iterator[Any]:
    """A WebContext over PostgreSQL (``dsn``) that publishes with ``publisher``."""
    from processor.app import postgres_store
    from processor.entrypoints.web.auth import PostgresUserStore
    from processor.entrypoints.web.context import (
        ReplayCache,
        StorePool,
        WebContext,
        postgres_archive_reader,
        session_secret,
    )

    send = _Publisher(publisher)
    ctx = WebContext(
        settings=settings, stores=StorePool(lambda: postgres_store(dsn), settings.web.db_connections_max),
        users=PostgresUserStore(dsn), publish=send, read_archive=postgres_archive_reader(dsn),
        secret=session_secret(settings), replays=ReplayCache(settings.web.asof_cache_entries_max), dsn=dsn,
    )
    try:
        yield ctx
    finally:
        ctx.close()
        send.close()


def serve_app(ctx: Any, ledger: Any | None, *, ready: Callable[[str], None] | None = None) -> int:
    """uvicorn with the web app in this process until Ctrl-C or SIGTERM, with the processor and the relay
    beside it when ``ledger`` is given (one event loop; a failing batch stops the server)."""
    import uvicorn

    from processor.app import run_services
    from processor.entrypoints.web.app import create_app

    class Server(uvicorn.Server):
        """Returns on Ctrl-C or SIGTERM instead of raising them again, so that the processor, the relay and
        the stack stop in order after it."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                self._captured_signals.clear()

    web = ctx.settings.web
    server = Server(uvicorn.Config(create_app(ctx), host=web.host, port=web.port, log_level="warning",
                                           access_log=False, lifespan="off"))
    failure: list[BaseException] = []

    async def main() -> None:
        stop = asyncio.Event()
        services = asyncio.create_task(run_services(ledger, stop)) if ledger is not None else None

        def watch(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                failure.append(task.exception())  # type: ignore[arg-type]
                server.should_exit = True

        if services is not None:
            services.add_done_callback(watch)
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        if server.started and ready is not None:
            ready(f"http://{web.host}:{web.port}/")
        try:
            await serving
        finally:
            stop.set()
            if services is not None and not services.done():
                await services

    from processor.health import start_ops_server

    # /metrics, /livez and /readyz on LEDGER_METRICS_PORT, as the workers have them (compose healthcheck)
    ops = start_ops_server(ctx.settings, ctx.dsn, "web") if ctx.dsn is not None else None
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    finally:
        if ops is not None:
            ops.stop()
    if failure:
        print(f"error: the processor stopped: {type(failure[0]).__name__}: {failure[0]}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# -- serve ------------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from processor.app import open_ledger, open_store, running_embedded_broker
    from processor.embedded import sigterm_raises_systemexit
    from processor.settings import Settings

    settings: Settings = _settings(args)
    running = running_embedded_broker(settings) if settings.embedded_broker else None
    with_processor = args.with_processor or (settings.embedded_broker and running is None)

    def ready(url: str) -> None:
        what = "with the processor and relay" if with_processor else "publishing to " + str(
            settings.kafka_bootstrap_servers or running)
        print(f"benefits-ledger workbench on {url} ({what}); Ctrl-C stops it", file=sys.stderr)

    with sigterm_raises_systemexit():
        try:
            if with_processor:
                with open_ledger(settings, database=args.database) as ledger, \
                        web_context(settings, ledger.dsn, ledger.publisher()) as ctx:
                    return serve_app(ctx, ledger, ready=ready)
            from events.publisher import Publisher

            bootstrap = settings.kafka_bootstrap_servers or running
            assert bootstrap is not None
            with open_store(settings, database=args.database) as store, \
                    web_context(settings, store.dsn, Publisher(bootstrap, settings.topics,  # type: ignore[attr-defined]
                                                               settings.partitions)) as ctx:
                return serve_app(ctx, None, ready=ready)
        except SystemExit:
            return EXIT_OK


# -- users ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _users(args: argparse.Namespace) -> Iterator[Any]:
    from processor.app import open_store
    from processor.entrypoints.web.auth import PostgresUserStore

    with open_store(_settings(args), database=args.database) as store:
        users = PostgresUserStore(store.dsn)  # type: ignore[attr-defined]
        try:
            yield users
        finally:
            users.close()


def _password(args: argparse.Namespace) -> tuple[str, bool]:
    """The password from stdin (--password-stdin), or a new one to show once."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    return secrets.token_urlsafe(12), True


def _user_error(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from processor.entrypoints.web.auth import UserError

        try:
            return fn(args)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return run


@_user_error
def cmd_user_add(args: argparse.Namespace) -> int:
    password, generated = _password(args)
    with _users(args) as users:
        user = users.add_user(args.login, args.name or args.login, args.role, args.agency, password)
    out = {"login": user.login, "role": user.role, "agency_id": user.agency_id,
           "password": password if generated else None}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"added {user.login} ({user.role_name}{', ' + user.agency_id if user.agency_id else ''})")
        if generated:
            print(f"password (shown once): {password}")
    return EXIT_OK


@_user_error
def cmd_user_list(args: argparse.Namespace) -> int:
    with _users(args) as users:
        rows = users.users()
    if args.json:
        print(json.dumps([asdict(u) for u in rows]))
    else:
        for u in rows:
            print(f"{u.login:16} {u.role:18} {u.agency_id or '-':10} {'active' if u.active else 'disabled':8} "
                  f"{u.display_name}")
    return EXIT_OK


@_user_error
def cmd_user_passwd(args: argparse.Namespace) -> int:
    password, generated = _password(args)
    with _users(args) as users:
        users.set_password(args.login, password)
    print(json.dumps({"login": args.login, "password": password if generated else None}) if args.json else
          f"password of {args.login} changed" + (f"; new password (shown once): {password}" if generated else ""))
    return EXIT_OK


@_user_error
def cmd_user_disable(args: argparse.Namespace) -> int:
    with _users(args) as users:
        users.set_active(args.login, False)
    print(json.dumps({"login": args.login, "active": False}) if args.json else f"{args.login} can no longer log in")
    return EXIT_OK


@_user_error
def cmd_user_token(args: argparse.Namespace) -> int:
    with _users(args) as users:
        token = users.add_token(args.name, args.role, args.agency)
    print(json.dumps({"name": args.name, "role": args.role, "token": token}) if args.json else
          f"API token for {args.name} ({args.role}; shown once): {token}")
    return EXIT_OK


# -- demo --serve -----------------------------------------------------------------------------------


def demo_people(users: Any, agency: str | None) -> list[tuple[str, str, str, str | None]]:
    """The demo's logins with new passwords: (login, password, role, agency)."""
    from processor.entrypoints.web.auth import UserError

    people: list[tuple[str, str, str, str | None]] = [(login, name, role, None) for login, name, role in DEMO_PEOPLE]
    if agency is not None:
        people.append(("cora", f"Cora Coordinator ({agency})", "agency_coordinator", agency))
    out: list[tuple[str, str, str, str | None]] = []
    for login, name, role, agency_id in people:
        password = secrets.token_urlsafe(9)
        try:
            users.add_user(login, name, role, agency_id, password)
        except UserError:
            users.set_password(login, password)
        out.append((login, password, role, agency_id))
    return out


def cmd_demo_serve(args: argparse.Namespace, inner: Callable[[argparse.Namespace], int]) -> int:
    """``demo --serve``: the demo, then the stack and the web app stay up until Ctrl-C."""
    if not args.serve:
        return inner(args)
    from processor.entrypoints.demo import run_demo
    from processor.entrypoints.web.auth import PostgresUserStore

    settings = _settings(args).model_copy(update={"demo_clock": not getattr(args, "wall_clock", False)})
    status: list[int] = []

    def then(ledger: Any, report: Any) -> None:
        if args.json:
            print(json.dumps(asdict(report), default=str))
        else:
            print(f"demo: {report.events_applied:,} events applied, {report.discrepancies_detected} discrepancies"
                  f" (missed {report.missed}, spurious {report.spurious}, status mismatched"
                  f" {report.status_mismatched}), {report.elapsed_seconds} s")
        users = PostgresUserStore(ledger.dsn)
        try:
            agencies = ledger.store().agencies()
            busiest = max(agencies, key=lambda a: (a.open_discrepancies, a.agency_id), default=None)
            people = demo_people(users, busiest.agency_id if busiest else None)
        finally:
            users.close()

        def ready(url: str) -> None:
            print(f"\nthe workbench: {url}", file=sys.stderr)
            for login, password, role, agency in people:
                print(f"  {login:5} {password:14} {role.replace('_', ' ')}{' of ' + agency if agency else ''}",
                      file=sys.stderr)
            print("Ctrl-C stops the web app, the processor, the broker and PostgreSQL", file=sys.stderr)

        with web_context(settings, ledger.dsn, ledger.publisher()) as ctx:
            status.append(serve_app(ctx, ledger, ready=ready))

    report = run_demo(settings, members=args.members, months=args.months, seed=args.seed, then=then)
    return status[0] if status else (EXIT_OK if report.ok() else EXIT_FAILED)


# -- parser -----------------------------------------------------------------------------------------


def add_web_parsers(sub: Any, common: argparse.ArgumentParser, demo: argparse.ArgumentParser | None = None) -> None:
    """``serve`` and ``user``; ``--serve`` on the demo."""
    from processor.entrypoints.web.auth import ROLES

    serve = sub.add_parser("serve", parents=[common],
                           help="the workbench: work queue, entry forms, accounts and the JSON API (127.0.0.1:8000)")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1, LEDGER_WEB__HOST)")
    serve.add_argument("--port", type=int, help="port (default 8000, LEDGER_WEB__PORT)")
    serve.add_argument("--with-processor", action="store_true",
                       help="run the processor and relay in this process too (the default on the embedded stack"
                       " when `benefits-ledger up` is not running)")
    serve.set_defaults(fn=cmd_serve)

    user = sub.add_parser("user", parents=[common], help="people and services of the workbench")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", parents=[common], help="add a user (a password is made and shown once)")
    add.add_argument("login")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--agency", help="the agency of an agency coordinator")
    add.add_argument("--name", help="display name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    add.set_defaults(fn=cmd_user_add)
    lst = user_sub.add_parser("list", parents=[common], help="the users")
    lst.set_defaults(fn=cmd_user_list)
    pw = user_sub.add_parser("passwd", parents=[common], help="set a new password")
    pw.add_argument("login")
    pw.add_argument("--password-stdin", action="store_true")
    pw.set_defaults(fn=cmd_user_passwd)
    dis = user_sub.add_parser("disable", parents=[common], help="a user who may no longer log in")
    dis.add_argument("login")
    dis.set_defaults(fn=cmd_user_disable)
    tok = user_sub.add_parser("token", parents=[common], help="an API token for a service (shown once)")
    tok.add_argument("name")
    tok.add_argument("--role", required=True, choices=ROLES)
    tok.add_argument("--agency")
    tok.set_defaults(fn=cmd_user_token)

    if demo is not None:
        demo.add_argument("--serve", action="store_true",
                          help="then keep the stack and the workbench up until Ctrl-C (prints the URL and logins)")
        demo.add_argument("--host", help="--serve: address to listen on (default 127.0.0.1)")
        demo.add_argument("--port", type=int, help="--serve: port (default 8000)")
        inner = demo.get_default("fn")
        demo.set_defaults(fn=lambda args: cmd_demo_serve(args, inner))
