"""Issue 12, items 5 and 6: no local user but the ledger's reaches the embedded PostgreSQL, nothing
authenticates by trust, the server does not run with group 0, and the ledger's own role cannot drop,
disable or replace the archive's triggers nor change the archive; rebuild works under that role."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import make_conninfo

from processor.app import open_ledger
from processor.embedded import (
    EmbeddedBroker,
    EmbeddedPostgres,
    hba_trusts_anyone,
    postgres_bin_dir,
    private_directory,
    stop_postgres_in,
)
from processor.embedded_postgres import SERVER_USER
from processor.entrypoints.demo import generate, run_program
from processor.settings import Settings
from projections.roles import ARCHIVIST, AUDITOR, LEDGER_ROLE, setup_sql
from replay.rebuild import rebuild
from replay.verify import verify
from tests.conftest import ledger_keys_env, unique_topics
from tests.e2e.test_cli import cli_argv

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NOT_ROOT = "needs root: a second local user is created with useradd to try the socket (CI runs the suite as root)"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def other_user() -> Iterator[pwd.struct_passwd]:
    """An unprivileged local user of our own, removed afterwards."""
    if not IS_ROOT:
        pytest.skip(NOT_ROOT)
    name = f"ledger-probe-{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True,
                   capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


def psql_as(user: pwd.struct_passwd, dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(postgres_bin_dir() / "psql"), "-X", "-At", *args, dsn], user=user.pw_uid, group=user.pw_gid,
        extra_groups=[], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, cwd="/",
    )


def supplementary_groups(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Groups:"):
            return [int(g) for g in line.split()[1:]]
    raise AssertionError(f"no Groups line for pid {pid}")


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


LONG = "a-data-directory-whose-path-is-longer-than-a-unix-socket-path-may-be-" * 2


@pytest.mark.parametrize("depth", ["short", "long"])
def test_another_local_user_cannot_reach_the_embedded_server(
    other_user: pwd.struct_passwd, tmp_path: Path, depth: str,
) -> None:
    data_dir = (tmp_path / LONG / "postgres") if depth == "long" else (tmp_path / "postgres")
    assert (len(str(data_dir / ".s.PGSQL.5432")) > 107) == (depth == "long")
    pg = EmbeddedPostgres(data_dir)
    try:
        pg.start()
        socket_dir = pg.socket_dir
        assert socket_dir is not None and pg.pid is not None
        server = pwd.getpwnam(SERVER_USER)
        # never a world-writable place: a directory only the server's user may enter, whatever the length
        assert private_directory(socket_dir, server.pw_uid), oct(socket_dir.stat().st_mode)
        assert (socket_dir == data_dir) == (depth == "short")
        assert stat.S_IMODE((socket_dir / ".s.PGSQL.5432").stat().st_mode) == 0o700
        # the server runs as its own user, with its own group, no supplementary groups, never gid 0
        proc = psutil.Process(pg.pid)
        assert proc.uids().real == server.pw_uid and set(proc.gids()) == {server.pw_gid} and server.pw_gid != 0
        assert supplementary_groups(pg.pid) == []

        assert psql_as(other_user, "", "--version").returncode == 0, "the other user can run psql"
        for user in ("postgres", LEDGER_ROLE):
            attempt = psql_as(other_user, pg.dsn_for("postgres", user), "-c", "SELECT 1")
            assert attempt.returncode != 0 and "Permission denied" in attempt.stderr, attempt.stderr
        with psycopg.connect(pg.dsn) as conn:  # the ledger's own OS user still gets in
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
    finally:
        pg.stop()
        stop_postgres_in(data_dir)
    assert not socket_dir.exists() or socket_dir == data_dir, "a private socket directory is removed at stop"


def test_pg_hba_allows_peer_authentication_only(pg_server: EmbeddedPostgres) -> None:
    data_dir = pg_server.data_dir
    assert hba_trusts_anyone(data_dir) == []
    rules = [line.split() for line in (data_dir / "pg_hba.conf").read_text().splitlines()
             if line.split("#", 1)[0].strip()]
    assert rules and all(rule[0] == "local" and rule[3] == "peer" for rule in rules), rules
    me = pwd.getpwuid(os.geteuid()).pw_name
    mapped = {line.split()[1] for line in (data_dir / "pg_ident.conf").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert mapped == {me, SERVER_USER if IS_ROOT else me}
    with psycopg.connect(pg_server.dsn) as conn:
        methods = {r[0] for r in conn.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules")}
        assert methods == {"peer"}
        assert conn.execute("SHOW listen_addresses").fetchone() == ("",)


def test_a_data_dir_initialised_with_trust_is_peer_only_once_started(tmp_path: Path) -> None:
    """Data directories of earlier versions were initialised with trust: the first start fixes them."""
    data_dir = tmp_path / "postgres"
    pg = EmbeddedPostgres(data_dir)
    try:
        pg.start()
    finally:
        pg.stop()
    (data_dir / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    assert hba_trusts_anyone(data_dir) != []
    try:
        pg.start()
        assert hba_trusts_anyone(data_dir) == []
        with psycopg.connect(pg.dsn) as conn:
            assert {r[0] for r in conn.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules")} == {"peer"}
    finally:
        pg.stop()
        stop_postgres_in(data_dir)


@pytest.mark.skipif(not IS_ROOT, reason=NOT_ROOT)
def test_a_server_left_running_on_a_world_writable_socket_dir_is_restarted_privately(tmp_path: Path) -> None:
    """An earlier version's server outlives its process, with its socket in a mode-0777 directory."""
    data_dir = tmp_path / "postgres"
    pg = EmbeddedPostgres(data_dir)
    try:
        pg.start()
        pg.stop()
        open_dir = tmp_path / "open-socket-dir"
        open_dir.mkdir()
        open_dir.chmod(0o777)
        server = pwd.getpwnam(SERVER_USER)
        subprocess.run([str(postgres_bin_dir() / "pg_ctl"), "-D", str(data_dir), "-w", "-l", str(data_dir / "log"),
                        "-o", f"-h '' -k {open_dir}", "start"], check=True, capture_output=True,
                       user=server.pw_uid, group=server.pw_gid, extra_groups=[])
        old_pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        pg.start()
        assert pg.pid != old_pid and gone(old_pid), "the server on the open socket directory was stopped"
        assert pg.socket_dir is not None and private_directory(pg.socket_dir, server.pw_uid)
    finally:
        pg.stop()
        stop_postgres_in(data_dir)


# -- the ledger's role ----------------------------------------------------------------------------------

FORBIDDEN = (
    "UPDATE archive SET body = body",
    "DELETE FROM archive",
    "TRUNCATE archive",
    "ALTER TABLE archive DISABLE TRIGGER archive_no_update_delete",
    "ALTER TABLE archive DISABLE TRIGGER ALL",
    "DROP TRIGGER archive_no_update_delete ON archive",
    "DROP TABLE archive",
    "DROP TABLE archive CASCADE",
    "ALTER TABLE archive RENAME TO archive_old",
    "ALTER TABLE archive OWNER TO ledger_app",
    "CREATE OR REPLACE FUNCTION archive_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN OLD; END$$",
    "CREATE TRIGGER t BEFORE INSERT ON archive FOR EACH ROW EXECUTE FUNCTION archive_reject_change()",
    "DROP SCHEMA public CASCADE",
    "SET session_replication_role = replica",
    f"SET ROLE {ARCHIVIST}",
    f"GRANT {ARCHIVIST} TO {LEDGER_ROLE}",
    "ALTER ROLE ledger_app SUPERUSER",
    "COPY (SELECT 1) TO PROGRAM 'id'",  # what a superuser could do as the server's OS user
    "UPDATE archive_chain_head SET partition = partition WHERE false",  # allowed: the heads move (anchored)
)


def assert_cannot_touch_the_archive(ledger_dsn: str) -> None:
    with psycopg.connect(ledger_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT current_user, usesuper FROM pg_user WHERE usename = current_user"
                            ).fetchone() == (LEDGER_ROLE, False)
        before = conn.execute("SELECT count(*), max(seq) FROM archive").fetchone()
        for statement in FORBIDDEN:
            if statement.startswith("UPDATE archive_chain_head"):
                conn.execute(statement)
                continue
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)
        assert conn.execute("SELECT count(*), max(seq) FROM archive").fetchone() == before
        triggers = conn.execute("SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'archive'::regclass"
                                " AND NOT tgisinternal ORDER BY 1").fetchall()
        assert triggers == [("archive_no_truncate", "O"), ("archive_no_update_delete", "O")]
        assert conn.execute("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'archive'::regclass"
                            ).fetchone() == (ARCHIVIST,)


def embedded_settings(broker: EmbeddedBroker, data_dir: Path) -> Settings:
    return Settings(kafka_bootstrap_servers=broker.bootstrap, topics=unique_topics(), partitions=4,
                    data_dir=data_dir, consumer_group=f"faults-{uuid.uuid4().hex[:8]}")


def test_the_embedded_ledger_runs_as_a_role_that_cannot_touch_the_archive_and_still_rebuilds(
    broker: EmbeddedBroker, tmp_path: Path,
) -> None:
    settings = embedded_settings(broker, tmp_path)
    assert settings.embedded_database
    try:
        with open_ledger(settings) as ledger:
            asyncio.run(run_program(ledger, generate(members=25, months=3, seed=4)))
            ledger_dsn = ledger.dsn
            assert_cannot_touch_the_archive(ledger_dsn)
            report = rebuild(ledger_dsn, settings.plan, stamp="faults")
            assert report.switched and report.mismatches == [] and report.events_replayed > 0
            assert verify(ledger_dsn, settings.plan).ok
            assert_cannot_touch_the_archive(ledger_dsn)  # the rebuild moved projections, not the archive
            admin = make_conninfo(ledger_dsn, user="postgres")
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"SET ROLE {AUDITOR}")
                assert conn.execute("SELECT count(*) > 0 FROM member_month").fetchone() == (True,)
                assert conn.execute("SELECT count(*) > 0 FROM archive").fetchone() == (True,)
                with pytest.raises(errors.InsufficientPrivilege):
                    conn.execute("UPDATE member_month SET paid_cents = 0")
            # the ledger goes on after the rebuild, as its own role
            asyncio.run(run_program(ledger, generate(members=25, months=3, seed=9)))
            assert verify(ledger_dsn, settings.plan).ok
    finally:
        stop_postgres_in(tmp_path / "postgres")


def run_setup_roles(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update({"PYTHONPATH": str(REPO_ROOT), **ledger_keys_env(), **extra})
    return subprocess.run(cli_argv("setup-roles", *args), env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, check=False)


def test_setup_roles_prepares_a_configured_server_for_an_unprivileged_ledger(
    pg_dsn: str, settings_factory: Callable[..., Settings],
) -> None:
    printed = run_setup_roles("--print")
    assert printed.returncode == 0 and printed.stdout == setup_sql(LEDGER_ROLE)
    assert "trust" not in printed.stdout.lower()

    applied = run_setup_roles("--admin-dsn", pg_dsn, "--json")
    assert applied.returncode == 0, applied.stderr
    doc = json.loads(applied.stdout)
    assert doc["superuser"] is False and doc["member_of_archivist"] is False
    assert doc["archive_owner"] == ARCHIVIST and sorted(doc["archive_privileges"]) == ["INSERT", "SELECT"]
    again = run_setup_roles("--admin-dsn", pg_dsn, "--json", "--ledger-password-env", "APP_DB_PASSWORD",
                            APP_DB_PASSWORD="a password for tcp logins")  # idempotent; sets a SCRAM password
    assert again.returncode == 0 and json.loads(again.stdout)["notices"] == []
    with psycopg.connect(pg_dsn) as conn:
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (LEDGER_ROLE,)).fetchone()
    assert stored is not None and stored[0].startswith("SCRAM-SHA-256$")

    ledger_dsn = make_conninfo(pg_dsn, user=LEDGER_ROLE)
    settings = settings_factory(database_url=ledger_dsn)
    with open_ledger(settings) as ledger:
        asyncio.run(run_program(ledger, generate(members=20, months=3, seed=6)))
    assert verify(ledger_dsn, settings.plan).ok
    assert_cannot_touch_the_archive(ledger_dsn)
    assert rebuild(ledger_dsn, settings.plan, stamp="cfg").switched
    assert_cannot_touch_the_archive(ledger_dsn)

    refused = run_setup_roles("--admin-dsn", ledger_dsn)
    assert refused.returncode == 1 and "administrator" in refused.stderr


def test_the_archive_index_for_replay_is_built_by_the_administrator_and_the_ledger_is_told_it_needs_one(
    pg_dsn: str,
) -> None:
    from projections.postgres import MigrationNeedsAdmin, PostgresStore
    from projections.roles import apply_setup

    apply_setup(pg_dsn)
    index = "SELECT indexdef FROM pg_indexes WHERE indexname = 'archive_partition_account_seq_idx'"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        (definition,) = conn.execute(index).fetchone() or ("",)
        assert "(partition, account_id, seq)" in definition
        # as before this migration: without the index and its record
        conn.execute("DROP INDEX archive_partition_account_seq_idx")
        conn.execute("DELETE FROM schema_migrations WHERE version = '0070_archive_partition_account_idx'")
    ledger = PostgresStore(make_conninfo(pg_dsn, user=LEDGER_ROLE))
    try:
        with pytest.raises(MigrationNeedsAdmin, match=r"0070_archive_partition_account_idx.*setup-roles"):
            ledger.migrate()  # the archive is not the ledger's: it may not index it
    finally:
        ledger.close()
    apply_setup(pg_dsn)  # the administrator migrates
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        assert conn.execute(index).fetchone() is not None
