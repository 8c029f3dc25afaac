"""Who may do what in the ledger's database: the ledger is not a superuser, and the archive is not its own.

- ``ledger_archivist`` (NOLOGIN) owns the archive table, its triggers' function, the chain function, the
  chain heads and the ``archive_json`` view. Nobody logs in as it and the ledger is not a member of it.
- the ledger's login role (``ledger_app`` unless told otherwise) owns every other table of the schema
  (projections, positions, outbox, dead letters, ``schema_migrations``), may SELECT and INSERT the
  archive and SELECT, INSERT and UPDATE the chain heads, and may create schemas (``rebuild``). It is not
  a superuser and owns neither the database nor the schema (a schema's owner may drop any table in it),
  so it cannot drop, disable or replace the archive's triggers, drop the archive, or UPDATE, DELETE or
  TRUNCATE it.
- ``ledger_auditor`` (NOLOGIN) reads every table and changes nothing.

``setup_sql(role)`` is the script an administrator runs in the ledger's database, after the migrations
(``benefits-ledger setup-roles`` applies both with an administrator's DSN, or prints the script). It is
idempotent and does nothing when everything is already in place. The embedded stack runs it at every
start and hands the ledger a DSN for its role.
"""

from __future__ import annotations

import re
from typing import Any

ARCHIVIST = "ledger_archivist"
AUDITOR = "ledger_auditor"
LEDGER_ROLE = "ledger_app"
# What the archivist owns (the rest of the schema belongs to the ledger).
ARCHIVE_TABLES = ("archive", "archive_chain_head")
ARCHIVE_VIEWS = ("archive_json",)
ARCHIVE_FUNCTIONS = ("archive_reject_change", "archive_chain_link")

_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class RoleSetupError(RuntimeError):
    """The roles cannot be set up as asked (the message says why and what to do)."""


def check_role_name(role: str) -> str:
    if not _ROLE_NAME.fullmatch(role) or role in (ARCHIVIST, AUDITOR, "postgres", "public"):
        raise RoleSetupError(
            f"ledger role {role!r}: use a plain lower-case name (letters, digits, _), not {ARCHIVIST},"
            f" {AUDITOR}, postgres or public"
        )
    return role


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# One DO block, so that it runs as one statement from psql or psycopg; every step checks first, so a
# second run changes nothing and takes no lock.
_SETUP = r"""
-- benefits-ledger: roles and ownership (projections/roles.py). Run as an administrator in the ledger's
-- database after the migrations; idempotent. The ledger then connects as the role named below.
DO $setup$
DECLARE
    ledger   name := __LEDGER__;
    sch      name := current_schema();
    sch_oid  oid;
    ledger_oid oid;
    archivist_oid oid;
    privileges text[] := ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'];
    r        record;
BEGIN
    IF current_setting('server_version_num')::int >= 170000 THEN
        privileges := privileges || 'MAINTAIN'::text;
    END IF;
    IF sch IS NULL THEN
        RAISE EXCEPTION 'no current schema: check the search_path';
    END IF;
    IF current_user = ledger THEN
        RAISE EXCEPTION 'run this as an administrator, not as the ledger role %', ledger;
    END IF;
    IF to_regclass(format('%I.archive', sch)) IS NULL THEN
        RAISE EXCEPTION 'schema % has no archive table: apply the migrations first', sch;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_archivist') THEN
        CREATE ROLE ledger_archivist NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ledger_auditor') THEN
        CREATE ROLE ledger_auditor NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = ledger) THEN
        EXECUTE format('CREATE ROLE %I LOGIN', ledger);
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = ledger
               AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls)) THEN
        EXECUTE format('ALTER ROLE %I NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS', ledger);
    END IF;
    SELECT oid INTO ledger_oid FROM pg_roles WHERE rolname = ledger;
    SELECT oid INTO archivist_oid FROM pg_roles WHERE rolname = 'ledger_archivist';
    SELECT oid INTO sch_oid FROM pg_namespace WHERE nspname = sch;
    IF pg_has_role(ledger, 'ledger_archivist', 'MEMBER') THEN
        EXECUTE format('REVOKE ledger_archivist FROM %I', ledger);
        IF pg_has_role(ledger, 'ledger_archivist', 'MEMBER') THEN
            RAISE EXCEPTION '% is a member of ledger_archivist through another role: revoke that membership', ledger;
        END IF;
    END IF;
    -- The owner of the database owns its public schema, and a schema's owner may drop any table in it.
    IF (SELECT pg_has_role(ledger, datdba, 'MEMBER') FROM pg_database WHERE datname = current_database()) THEN
        EXECUTE format('ALTER DATABASE %I OWNER TO %I', current_database(), current_user);
        RAISE NOTICE 'database % now belongs to %, no longer to the ledger', current_database(), current_user;
    END IF;
    IF (SELECT pg_has_role(ledger, nspowner, 'MEMBER') FROM pg_namespace WHERE oid = sch_oid)
       AND (SELECT nspowner FROM pg_namespace WHERE oid = sch_oid) <> 'pg_database_owner'::regrole THEN
        EXECUTE format('ALTER SCHEMA %I OWNER TO %I', sch, current_user);
        RAISE NOTICE 'schema % now belongs to %, no longer to the ledger', sch, current_user;
    END IF;
    -- (has_*_privilege with a list is true when ANY of them is held: so one by one)
    IF NOT (has_database_privilege(ledger, current_database(), 'CONNECT')
            AND has_database_privilege(ledger, current_database(), 'CREATE')
            AND has_database_privilege(ledger, current_database(), 'TEMPORARY')) THEN
        EXECUTE format('GRANT CONNECT, CREATE, TEMPORARY ON DATABASE %I TO %I', current_database(), ledger);
    END IF;
    IF NOT (has_schema_privilege(ledger, sch, 'USAGE') AND has_schema_privilege(ledger, sch, 'CREATE')) THEN
        EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO %I', sch, ledger);
    END IF;
    IF NOT has_schema_privilege('ledger_auditor', sch, 'USAGE') THEN
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO ledger_auditor', sch);
    END IF;
    IF has_schema_privilege('public', sch, 'CREATE') THEN  -- servers before 15 let everybody create in public
        EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', sch);
    END IF;

    -- Owners: the archivist's objects, and the ledger's (every other table and view of the schema).
    FOR r IN SELECT c.relname, c.relkind, c.relowner FROM pg_class c
             WHERE c.relnamespace = sch_oid AND c.relkind IN ('r', 'p', 'v', 'm', 'f') LOOP
        IF r.relname IN (__ARCHIVE_RELATIONS__) THEN
            IF r.relowner <> archivist_oid THEN
                EXECUTE format('ALTER %s %I.%I OWNER TO ledger_archivist',
                               CASE WHEN r.relkind = 'v' THEN 'VIEW' ELSE 'TABLE' END, sch, r.relname);
            END IF;
        ELSIF r.relowner <> ledger_oid THEN
            EXECUTE format('ALTER %s %I.%I OWNER TO %I',
                           CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                          WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, sch, r.relname, ledger);
        END IF;
    END LOOP;
    FOR r IN SELECT p.oid, p.proname, p.proowner FROM pg_proc p WHERE p.pronamespace = sch_oid LOOP
        IF r.proname IN (__ARCHIVE_FUNCTIONS__) THEN
            IF r.proowner <> archivist_oid THEN
                EXECUTE format('ALTER ROUTINE %s OWNER TO ledger_archivist', r.oid::regprocedure);
            END IF;
        ELSIF r.proowner <> ledger_oid THEN
            EXECUTE format('ALTER ROUTINE %s OWNER TO %I', r.oid::regprocedure, ledger);
        END IF;
    END LOOP;

    -- The ledger appends to the archive and reads it; it moves the chain heads; nothing more.
    FOR r IN SELECT t.name, t.allowed FROM (VALUES
                 ('archive', ARRAY['SELECT', 'INSERT']),
                 ('archive_chain_head', ARRAY['SELECT', 'INSERT', 'UPDATE']),
                 ('archive_json', ARRAY['SELECT'])) AS t(name, allowed) LOOP
        IF EXISTS (SELECT FROM unnest(privileges) AS p(priv)
                   WHERE has_table_privilege(ledger, format('%I.%I', sch, r.name), p.priv)
                         <> (p.priv = ANY (r.allowed))) THEN
            EXECUTE format('REVOKE ALL ON %I.%I FROM PUBLIC', sch, r.name);
            EXECUTE format('REVOKE ALL ON %I.%I FROM %I', sch, r.name, ledger);
            EXECUTE format('GRANT %s ON %I.%I TO %I', array_to_string(r.allowed, ', '), sch, r.name, ledger);
        END IF;
    END LOOP;
    IF has_table_privilege(ledger, format('%I.archive', sch), 'UPDATE, DELETE, TRUNCATE, TRIGGER') THEN  -- any
        RAISE EXCEPTION '% may still change the archive through another role: revoke that grant', ledger;
    END IF;

    -- The auditor reads everything, also tables the ledger creates later (migrations, rebuilds).
    FOR r IN SELECT c.relname FROM pg_class c
             WHERE c.relnamespace = sch_oid AND c.relkind IN ('r', 'p', 'v', 'm')
               AND NOT has_table_privilege('ledger_auditor', c.oid, 'SELECT') LOOP
        EXECUTE format('GRANT SELECT ON %I.%I TO ledger_auditor', sch, r.relname);
    END LOOP;
    IF NOT EXISTS (SELECT FROM pg_default_acl d
                   WHERE d.defaclrole = ledger_oid AND d.defaclnamespace = 0 AND d.defaclobjtype = 'r'
                     AND 'ledger_auditor=r/' || ledger = ANY (d.defaclacl::text[])) THEN
        EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %I GRANT SELECT ON TABLES TO ledger_auditor', ledger);
    END IF;
END
$setup$;
"""


def setup_sql(role: str = LEDGER_ROLE) -> str:
    """The administrator's script for the ledger role ``role`` (in the schema first on the search_path)."""
    check_role_name(role)
    relations = ", ".join(_literal(n) for n in (*ARCHIVE_TABLES, *ARCHIVE_VIEWS))
    functions = ", ".join(_literal(n) for n in ARCHIVE_FUNCTIONS)
    return (_SETUP.replace("__LEDGER__", _literal(role)).replace("__ARCHIVE_RELATIONS__", relations)
            .replace("__ARCHIVE_FUNCTIONS__", functions).lstrip("\n"))


def apply_setup(admin_dsn: str, role: str = LEDGER_ROLE, *, migrate: bool = True, password: str | None = None,
                ) -> list[str]:
    """Migrate as the administrator (some migrations need more than the ledger may do), then run the
    script; returns the notices the server sent (what was changed beyond the grants). ``password`` sets
    the role's password (stored as SCRAM by the server) for a ledger that logs in over TCP."""
    import psycopg
    from psycopg import sql

    from projections.postgres import PostgresStore

    if migrate:
        store = PostgresStore(admin_dsn)
        try:
            store.migrate()
        finally:
            store.close()
    notices: list[str] = []
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        try:
            conn.execute(setup_sql(role).encode())
            if password is not None:
                conn.execute("SET password_encryption = 'scram-sha-256'")
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise RoleSetupError(f"{exc.diag.message_primary}: setup-roles needs an administrator's DSN") from exc
        except psycopg.errors.RaiseException as exc:
            raise RoleSetupError(str(exc.diag.message_primary)) from exc
    return notices


def role_report(dsn: str, role: str = LEDGER_ROLE) -> dict[str, Any]:
    """What the role may do to the archive (for ``setup-roles --json`` and the tests)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT r.rolsuper, pg_has_role(r.rolname, %s, 'MEMBER'),"
            " (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass('archive')),"
            " ARRAY(SELECT p FROM unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE','TRUNCATE','TRIGGER']) p"
            "       WHERE has_table_privilege(r.rolname, 'archive', p))"
            " FROM pg_roles r WHERE r.rolname = %s",
            (ARCHIVIST, role),
        ).fetchone()
    if row is None:
        raise RoleSetupError(f"role {role} does not exist")
    return {"role": role, "superuser": bool(row[0]), "member_of_archivist": bool(row[1]),
            "archive_owner": row[2], "archive_privileges": list(row[3])}


# -- benefits-ledger setup-roles ----------------------------------------------------------------------


def cmd_setup_roles(args: Any) -> int:
    """Print the administrator's script, or apply it (after the migrations) with an admin DSN."""
    import json
    import sys

    import psycopg

    try:
        role = check_role_name(args.ledger_role)
    except RoleSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_sql:
        sys.stdout.write(setup_sql(role))
        return 0
    if not args.admin_dsn:
        print("error: setup-roles needs --admin-dsn (an administrator of the ledger's database), or --print for"
              " the SQL; the embedded stack sets up its roles by itself", file=sys.stderr)
        return 2
    password = None
    if args.ledger_password_env:
        import os

        password = os.environ.get(args.ledger_password_env)
        if not password:
            print(f"error: --ledger-password-env {args.ledger_password_env}: that variable is not set", file=sys.stderr)
            return 2
    try:
        notices = apply_setup(args.admin_dsn, role, password=password)
        report = role_report(args.admin_dsn, role)
    except (RoleSetupError, psycopg.Error) as exc:
        print(f"error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}", file=sys.stderr)
        return 1
    report["notices"] = notices
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        for notice in notices:
            print(f"note: {notice}")
        print(f"archive owned by {report['archive_owner']}; {role} may {', '.join(report['archive_privileges'])} it"
              f" (superuser: {'yes' if report['superuser'] else 'no'}); point LEDGER_DATABASE_URL at a DSN for {role}")
    return 0


def add_setup_roles_parser(sub: Any, common: Any) -> None:
    """``benefits-ledger setup-roles`` (wired into processor/cli.py)."""
    p = sub.add_parser(
        "setup-roles", parents=[common],
        help="give the archive its own role and the ledger an unprivileged one (prints or applies the SQL)",
    )
    p.add_argument("--admin-dsn", metavar="DSN",
                   help="an administrator's DSN of the ledger's database: migrate, then apply the roles")
    p.add_argument("--ledger-role", default=LEDGER_ROLE, help=f"the ledger's login role (default {LEDGER_ROLE})")
    p.add_argument("--ledger-password-env", metavar="VAR",
                   help="set the ledger role's password (SCRAM) from this environment variable")
    p.add_argument("--print", dest="print_sql", action="store_true",
                   help="print the SQL for an administrator to run (after the migrations) instead of applying it")
    p.set_defaults(fn=cmd_setup_roles)
