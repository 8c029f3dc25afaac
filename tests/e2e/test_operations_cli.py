"""The CLI as an operator meets it: exit codes, one-line errors within seconds, read commands that never
change a database, every global option on every command, strict dates, tables, --version."""

from __future__ import annotations

import argparse
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from processor.cli import build_parser
from processor.embedded import EmbeddedPostgres
from tests.conftest import ledger_keys_env
from tests.e2e.test_cli import base_env, run_cli


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _one_error_line(stderr: str, *, waited: bool = False) -> str:
    """The one line an expected failure ends with; ``waited``: `up` may say first what it waits for."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if waited:
        assert all("waiting for" in line for line in lines[:-1]), stderr
        lines = lines[-1:]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# -- the parser --------------------------------------------------------------------------------------

# a minimal valid command line for every (sub)command, positional arguments filled in
_REQUIRED = {"publish": ["events.jsonl"], "balance": ["M1"], "fsa": ["M1"], "ingest": ["a.834"],
             "worksheet": ["--payer", "AG-1", "--month", "2026-03"], "notices": ["--payer", "AG-1", "--out", "n"],
             "setup-roles": ["--admin-dsn", "postgresql://admin@db/x"]}
_REQUIRED_NESTED = {("user", "add"): ["sam", "--role", "specialist"], ("user", "passwd"): ["sam"],
                    ("user", "disable"): ["sam"], ("user", "token"): ["svc", "--role", "auditor"]}


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = list(_commands(sub, (*prefix, name)))
                yield from nested or [(*prefix, name)]


def test_every_global_option_applies_to_every_command() -> None:
    parser = build_parser()
    commands = list(_commands(parser))
    assert ("up",) in commands and ("migrate",) in commands and ("deadletter", "retry") in commands
    for cmd in commands:
        rest = [*cmd, *_REQUIRED_NESTED.get(cmd, _REQUIRED.get(cmd[0], []))]
        for argv in (["--json", "--database", "other_db", *rest], [*rest, "--json", "--database", "other_db"]):
            args = parser.parse_args(argv)
            assert args.database == "other_db" and args.json is True, (cmd, argv)
        plain = parser.parse_args(rest)
        assert plain.database is None and plain.json is False, cmd


def test_positional_arguments_have_help() -> None:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for arg in sub._actions:
                    if not arg.option_strings and not isinstance(arg, argparse._SubParsersAction):
                        assert arg.help, f"{name} {arg.dest}"


def test_version(tmp_path: Path) -> None:
    run = run_cli(["--version"], base_env(tmp_path), tmp_path, timeout=60)
    assert run.returncode == 0
    assert run.stdout.strip().startswith("benefits-ledger 0.")


def test_an_impossible_month_is_a_usage_error(tmp_path: Path) -> None:
    for option in ("--through", "--known-at"):
        for value in ("2026-13", "2026-00"):
            run = run_cli(["replay", option, value], base_env(tmp_path), tmp_path, timeout=60)
            assert run.returncode == 2, (option, value, run.stdout, run.stderr)
            assert f"{value} is not a month" in _one_error_line(run.stderr)


# -- services down -----------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["summary"], ["balance", "M1"], ["discrepancies"], ["replay"], ["up"],
                                  ["migrate"]])
def test_database_down_is_one_line_and_exit_3_within_seconds(argv: list[str], tmp_path: Path) -> None:
    port = _closed_port()
    env = base_env(tmp_path, LEDGER_DATABASE_URL=f"postgresql://ledger@127.0.0.1:{port}/benefits_ledger",
                   LEDGER_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{_closed_port()}" if argv == ["up"] else "",
                   # `up` waits for a service that is not there yet, bounded; reading commands do not wait
                   LEDGER_OUTAGE_RETRY_SECONDS_MAX="2")
    if argv != ["up"]:
        del env["LEDGER_KAFKA_BOOTSTRAP_SERVERS"]
    started = time.monotonic()
    run = run_cli(argv, env, tmp_path, timeout=60)
    elapsed = time.monotonic() - started
    assert run.returncode == 3, run.stderr
    line = _one_error_line(run.stderr, waited=argv == ["up"])
    assert "unreachable" in line and ("LEDGER_DATABASE_URL" in line or "LEDGER_KAFKA_BOOTSTRAP_SERVERS" in line)
    assert elapsed < 15, f"took {elapsed:.1f} s"


def test_broker_down_is_one_line_and_exit_3_within_seconds(pg_dsn: str, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("")
    port = _closed_port()
    env = base_env(tmp_path, LEDGER_DATABASE_URL=pg_dsn, LEDGER_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
                   LEDGER_OUTAGE_RETRY_SECONDS_MAX="2")
    for argv in (["up"], ["publish", str(events)]):
        started = time.monotonic()
        run = run_cli(argv, env, tmp_path, timeout=60)
        assert run.returncode == 3, (argv, run.stderr)
        line = _one_error_line(run.stderr, waited=argv == ["up"])
        assert f"LEDGER_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{port}" in line
        assert time.monotonic() - started < 15


# -- reading never changes the schema ----------------------------------------------------------------


def _databases(server_dsn: str) -> set[str]:
    with psycopg.connect(server_dsn) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}


def _tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()}


def test_read_commands_never_create_or_migrate_and_migrate_does(pg_server: EmbeddedPostgres, tmp_path: Path) -> None:
    name = f"ops_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = pg_server.dsn_for(name)
    env = base_env(tmp_path, LEDGER_DATABASE_URL=dsn)
    try:
        for argv in (["summary"], ["balance", "M1"], ["discrepancies"], ["deadletter", "list"], ["verify-archive"]):
            run = run_cli(argv, env, tmp_path, timeout=60)
            assert run.returncode == 2, (argv, run.stderr)
            line = _one_error_line(run.stderr)
            assert "has no ledger schema" in line and "benefits-ledger migrate" in line
        assert _tables(dsn) == set(), "a read command created tables"

        missing = f"nosuch_{uuid.uuid4().hex[:8]}"
        run = run_cli(["--database", missing, "summary"], env, tmp_path, timeout=60)
        assert run.returncode == 2
        assert f"'{missing}' does not exist" in _one_error_line(run.stderr)
        assert missing not in _databases(pg_server.dsn), "summary created a database"

        migrated = run_cli(["migrate", "--json"], env, tmp_path, timeout=60)
        assert migrated.returncode == 0, migrated.stderr
        assert migrated.json()["database"] == name and "0050_outbox_created_at" in migrated.json()["migrations"]
        summary = run_cli(["summary"], env, tmp_path, timeout=60)
        assert summary.returncode == 0, summary.stderr
        assert "ledger totals" in summary.stdout and "received" in summary.stdout and "{" not in summary.stdout
        assert "Counts(" not in summary.stdout
    finally:
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# -- progress on a terminal only ---------------------------------------------------------------------


def test_publish_and_ingest_draw_a_progress_bar_on_a_terminal_only(broker: Any, tmp_path: Path) -> None:
    import os
    import pty
    import subprocess
    import sys

    from events import codec
    from processor.settings import Settings, TopicSettings
    from processor.topics import ensure_topics
    from tests.e2e.test_cli import cli_argv
    from tests.unit.builders import enroll

    suffix = uuid.uuid4().hex[:12]
    defaults = TopicSettings()
    topics = TopicSettings(**{f: f"{getattr(defaults, f)}.{suffix}" for f in TopicSettings.model_fields})
    ensure_topics(broker.bootstrap, Settings(kafka_bootstrap_servers=broker.bootstrap, topics=topics,
                                             database_url="postgresql:///unused", data_dir=tmp_path))
    env = base_env(tmp_path, LEDGER_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, COLUMNS="120", **ledger_keys_env(),
                   **{f"LEDGER_TOPICS__{k.upper()}": v for k, v in topics.model_dump().items()})
    path = tmp_path / "events.jsonl"
    path.write_text("".join(codec.encode(enroll(event_id=f"{suffix}-{i}", account=f"PB-{i}")).decode() + "\n"
                            for i in range(50)))
    assert sys.executable
    for argv, label in ((["publish", str(path)], "publishing events"), (["ingest", str(path)], "publishing events")):
        master, slave = pty.openpty()
        proc = subprocess.Popen(cli_argv(*argv), env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(60)
        os.close(master)
        terminal = b"".join(chunks).decode(errors="replace")
        assert proc.returncode == 0, terminal
        assert label in terminal and "50/50" in terminal and "\x1b[" in terminal, terminal
        piped = run_cli(argv, env, tmp_path, timeout=60)
        assert piped.returncode == 0, piped.stderr
        assert label not in piped.stderr and "\x1b" not in piped.stderr + piped.stdout


def test_demo_refuses_to_recreate_the_ledgers_own_database(tmp_path: Path) -> None:
    run = run_cli(["--database", "benefits_ledger", "demo", "--members", "5"], base_env(tmp_path), tmp_path,
                  timeout=60)
    assert run.returncode == 2
    assert "the ledger's own database" in _one_error_line(run.stderr)
    assert not (tmp_path / "postgres").exists(), "nothing was started"


def test_up_refuses_the_demo_only_clock(tmp_path: Path) -> None:
    run = run_cli(["up"], base_env(tmp_path, LEDGER_DEMO_CLOCK="true"), tmp_path, timeout=60)
    assert run.returncode == 2
    assert "LEDGER_DEMO_CLOCK is a demo-only setting" in _one_error_line(run.stderr)
    assert not (tmp_path / "postgres").exists(), "nothing was started"


def test_with_json_logs_even_the_final_error_is_a_json_line(tmp_path: Path) -> None:
    import json

    port = _closed_port()
    env = base_env(tmp_path, LEDGER_DATABASE_URL=f"postgresql://ledger@127.0.0.1:{port}/x",
                   LEDGER_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{_closed_port()}", LEDGER_OUTAGE_RETRY_SECONDS_MAX="2")
    for argv in (["up", "--json"], ["up"]):
        run_env = env if argv == ["up", "--json"] else {**env, "LEDGER_LOG_FORMAT": "json"}
        run = run_cli(argv, run_env, tmp_path, timeout=60)
        assert run.returncode == 3
        *waiting, last = [json.loads(x) for x in run.stderr.splitlines() if x.strip()]  # every line is JSON
        assert all(r["level"] == "WARNING" and "waiting for" in r["message"] for r in waiting), waiting
        assert last["level"] == "ERROR" and "unreachable" in last["message"]
