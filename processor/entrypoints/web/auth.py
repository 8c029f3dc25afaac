"""People and services of the workbench: users with argon2 password hashes, API tokens, login
throttling, and the forms they submitted. Users live in PostgreSQL (migration 0011); the in-memory store
keeps the same contract for unit tests."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

ROLES = ("specialist", "supervisor", "auditor", "agency_coordinator")
ROLE_NAMES = {"specialist": "benefits accounts specialist", "supervisor": "supervisor", "auditor": "auditor",
              "agency_coordinator": "agency coordinator"}
LOGIN_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
PASSWORD_CHARS_MIN = 12
PASSWORD_CHARS_MAX = 1024
TOKEN_PREFIX = "blt"

_hasher = PasswordHasher()  # argon2id with the library's recommended parameters
# Verified when the login is unknown, so that an unknown login costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone's")


class UserError(ValueError):
    """A user, password or token that cannot be accepted; the message says why."""


@dataclass(frozen=True, slots=True)
class User:
    login: str
    display_name: str
    role: str
    agency_id: str | None = None
    active: bool = True
    via_token: bool = False  # a service authenticated by an API token

    @property
    def is_staff(self) -> bool:
        """Works the queue and enters events (specialist or supervisor)."""
        return self.role in ("specialist", "supervisor")

    @property
    def is_supervisor(self) -> bool:
        return self.role == "supervisor"

    @property
    def is_coordinator(self) -> bool:
        return self.role == "agency_coordinator"

    @property
    def role_name(self) -> str:
        return ROLE_NAMES[self.role]

    def sees_agency(self, agency_id: str | None) -> bool:
        """Coordinators see only their agency's items; everyone else sees everything."""
        return not self.is_coordinator or (agency_id is not None and agency_id == self.agency_id)


@dataclass(frozen=True, slots=True)
class Submission:
    """A form a person submitted: the event it became (published once per form token)."""

    token: str
    event_id: str
    event_type: str
    account_id: str
    discrepancy_id: str | None
    login: str
    body: bytes
    submitted_at: datetime


def check_user(login: str, display_name: str, role: str, agency_id: str | None) -> None:
    if not LOGIN_PATTERN.fullmatch(login):
        raise UserError(f"login {login!r}: 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit")
    if role not in ROLES:
        raise UserError(f"role {role!r}: one of {', '.join(ROLES)}")
    if (role == "agency_coordinator") != (agency_id is not None):
        raise UserError("an agency coordinator needs --agency, and only a coordinator has one")
    if not 0 < len(display_name) <= 100:
        raise UserError("the display name must be 1 to 100 characters")


def check_password(password: str) -> None:
    if not PASSWORD_CHARS_MIN <= len(password) <= PASSWORD_CHARS_MAX:
        raise UserError(f"a password must be {PASSWORD_CHARS_MIN} to {PASSWORD_CHARS_MAX} characters")


def hash_password(password: str) -> str:
    check_password(password)
    return _hasher.hash(password)


def password_matches(stored_hash: str | None, password: str) -> bool:
    """argon2 verification; an unknown user (None) costs the same time and never matches."""
    if len(password) > PASSWORD_CHARS_MAX:
        return False
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_token() -> tuple[str, str, bytes]:
    """A new API token: (token shown once, its id, the SHA-256 of its secret that is stored)."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return f"{TOKEN_PREFIX}_{token_id}_{secret}", token_id, hashlib.sha256(secret.encode()).digest()


def split_token(token: str) -> tuple[str, bytes] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or len(token) > 200:
        return None
    return parts[1], hashlib.sha256(parts[2].encode()).digest()


class UserStore(Protocol):
    def add_user(self, login: str, display_name: str, role: str, agency_id: str | None, password: str) -> User: ...
    def set_password(self, login: str, password: str) -> None: ...
    def set_active(self, login: str, active: bool) -> None: ...
    def user(self, login: str) -> User | None: ...
    def users(self) -> list[User]: ...
    def authenticate(self, login: str, password: str) -> User | None: ...
    def add_token(self, name: str, role: str, agency_id: str | None) -> str: ...
    def token_user(self, token: str) -> User | None: ...
    def failures_since(self, login: str, remote: str, since: datetime) -> tuple[int, int]: ...
    def record_failure(self, login: str, remote: str, at: datetime, forget_before: datetime) -> None: ...
    def clear_failures(self, login: str) -> None: ...
    def add_submission(self, submission: Submission) -> Submission: ...
    def submission(self, token: str) -> Submission | None: ...
    def submissions(self, *, account_id: str | None = None, discrepancy_id: str | None = None,
                    login: str | None = None, event_id: str | None = None, limit: int = 100) -> list[Submission]: ...
    def close(self) -> None: ...


class MemoryUserStore:
    """UserStore in memory (unit tests); the same rules as the PostgreSQL one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, tuple[User, str]] = {}
        self._tokens: dict[str, tuple[bytes, User]] = {}
        self._failures: list[tuple[str, str, datetime]] = []
        self._submissions: dict[str, Submission] = {}

    def add_user(self, login: str, display_name: str, role: str, agency_id: str | None, password: str) -> User:
        check_user(login, display_name, role, agency_id)
        with self._lock:
            if login in self._users:
                raise UserError(f"user {login} exists already")
            user = User(login, display_name, role, agency_id)
            self._users[login] = (user, hash_password(password))
            return user

    def set_password(self, login: str, password: str) -> None:
        with self._lock:
            user, _ = self._known(login)
            self._users[login] = (user, hash_password(password))

    def set_active(self, login: str, active: bool) -> None:
        with self._lock:
            user, pw = self._known(login)
            self._users[login] = (replace(user, active=active), pw)

    def _known(self, login: str) -> tuple[User, str]:
        if login not in self._users:
            raise UserError(f"no user {login}")
        return self._users[login]

    def user(self, login: str) -> User | None:
        found = self._users.get(login)
        return found[0] if found else None

    def users(self) -> list[User]:
        return [u for u, _ in sorted(self._users.values(), key=lambda x: x[0].login)]

    def authenticate(self, login: str, password: str) -> User | None:
        found = self._users.get(login)
        ok = password_matches(found[1] if found else None, password)
        return found[0] if ok and found and found[0].active else None

    def add_token(self, name: str, role: str, agency_id: str | None) -> str:
        check_user("token", name, role, agency_id)
        token, token_id, digest = new_token()
        self._tokens[token_id] = (digest, User(f"token:{name}", name, role, agency_id, via_token=True))
        return token

    def token_user(self, token: str) -> User | None:
        parts = split_token(token)
        found = self._tokens.get(parts[0]) if parts else None
        if parts is None or found is None or not hmac.compare_digest(found[0], parts[1]):
            return None
        return found[1]

    def failures_since(self, login: str, remote: str, since: datetime) -> tuple[int, int]:
        recent = [f for f in self._failures if f[2] >= since]
        return sum(1 for f in recent if f[0] == login), sum(1 for f in recent if f[1] == remote)

    def record_failure(self, login: str, remote: str, at: datetime, forget_before: datetime) -> None:
        with self._lock:
            self._failures = [f for f in self._failures if f[2] >= forget_before] + [(login, remote, at)]

    def clear_failures(self, login: str) -> None:
        with self._lock:
            self._failures = [f for f in self._failures if f[0] != login]

    def add_submission(self, submission: Submission) -> Submission:
        with self._lock:
            return self._submissions.setdefault(submission.token, submission)

    def submission(self, token: str) -> Submission | None:
        return self._submissions.get(token)

    def submissions(self, *, account_id: str | None = None, discrepancy_id: str | None = None,
                    login: str | None = None, event_id: str | None = None, limit: int = 100) -> list[Submission]:
        rows = [s for s in self._submissions.values()
                if (account_id is None or s.account_id == account_id)
                and (event_id is None or s.event_id == event_id)
                and (discrepancy_id is None or s.discrepancy_id == discrepancy_id)
                and (login is None or s.login == login)]
        rows.sort(key=lambda s: (s.submitted_at, s.token), reverse=True)
        return rows[:limit]

    def close(self) -> None:
        return None


_SUBMISSION_COLUMNS = "token, event_id, event_type, account_id, discrepancy_id, login, body, submitted_at"


def _submission(row: Any) -> Submission:
    return Submission(token=row[0], event_id=row[1], event_type=row[2], account_id=row[3], discrepancy_id=row[4],
                      login=row[5], body=bytes(row[6]), submitted_at=row[7])


class PostgresUserStore:
    """UserStore on PostgreSQL: one connection, a short transaction per call, a lock for threads."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self._dsn = dsn
        self._lock = threading.RLock()
        self._conn = self._connect()

    def _connect(self) -> Any:
        conn = self._psycopg.connect(self._dsn, autocommit=False)
        conn.execute("SET TIME ZONE 'UTC'")
        conn.commit()
        return conn

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._lock:
            if self._conn.broken:
                self._conn = self._connect()
            with self._conn.transaction():
                yield self._conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def add_user(self, login: str, display_name: str, role: str, agency_id: str | None, password: str) -> User:
        check_user(login, display_name, role, agency_id)
        hashed = hash_password(password)
        with self._tx() as conn:
            row = conn.execute(
                "INSERT INTO web_user (login, display_name, role, agency_id, password_hash) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (login) DO NOTHING RETURNING login", (login, display_name, role, agency_id, hashed),
            ).fetchone()
        if row is None:
            raise UserError(f"user {login} exists already")
        return User(login, display_name, role, agency_id)

    def set_password(self, login: str, password: str) -> None:
        hashed = hash_password(password)
        with self._tx() as conn:
            if conn.execute("UPDATE web_user SET password_hash = %s WHERE login = %s", (hashed, login)).rowcount != 1:
                raise UserError(f"no user {login}")

    def set_active(self, login: str, active: bool) -> None:
        with self._tx() as conn:
            if conn.execute("UPDATE web_user SET active = %s WHERE login = %s", (active, login)).rowcount != 1:
                raise UserError(f"no user {login}")

    def _row(self, login: str) -> tuple[User, str] | None:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT login, display_name, role, agency_id, active, password_hash FROM web_user WHERE login = %s",
                (login,),
            ).fetchone()
        return None if row is None else (User(row[0], row[1], row[2], row[3], row[4]), row[5])

    def user(self, login: str) -> User | None:
        found = self._row(login)
        return found[0] if found else None

    def users(self) -> list[User]:
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT login, display_name, role, agency_id, active FROM web_user ORDER BY login").fetchall()
        return [User(*r) for r in rows]

    def authenticate(self, login: str, password: str) -> User | None:
        found = self._row(login) if LOGIN_PATTERN.fullmatch(login) else None
        ok = password_matches(found[1] if found else None, password)
        return found[0] if ok and found and found[0].active else None

    def add_token(self, name: str, role: str, agency_id: str | None) -> str:
        check_user("token", name, role, agency_id)
        token, token_id, digest = new_token()
        with self._tx() as conn:
            conn.execute("INSERT INTO web_api_token (token_id, secret_sha256, name, role, agency_id)"
                         " VALUES (%s, %s, %s, %s, %s)", (token_id, digest, name, role, agency_id))
        return token

    def token_user(self, token: str) -> User | None:
        parts = split_token(token)
        if parts is None:
            return None
        with self._tx() as conn:
            row = conn.execute("SELECT secret_sha256, name, role, agency_id FROM web_api_token"
                               " WHERE token_id = %s AND revoked_at IS NULL", (parts[0],)).fetchone()
        if row is None or not hmac.compare_digest(bytes(row[0]), parts[1]):
            return None
        return User(f"token:{row[1]}", row[1], row[2], row[3], via_token=True)

    def failures_since(self, login: str, remote: str, since: datetime) -> tuple[int, int]:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT count(*) FILTER (WHERE login = %s), count(*) FILTER (WHERE remote = %s)"
                " FROM web_login_failure WHERE failed_at >= %s AND (login = %s OR remote = %s)",
                (login, remote, since, login, remote),
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def record_failure(self, login: str, remote: str, at: datetime, forget_before: datetime) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM web_login_failure WHERE failed_at < %s", (forget_before,))
            conn.execute("INSERT INTO web_login_failure (login, remote, failed_at) VALUES (%s, %s, %s)",
                         (login[:100], remote[:100], at))

    def clear_failures(self, login: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM web_login_failure WHERE login = %s", (login,))

    def add_submission(self, submission: Submission) -> Submission:
        s = submission
        with self._tx() as conn:
            conn.execute(
                f"INSERT INTO web_submission ({_SUBMISSION_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (token) DO NOTHING",
                (s.token, s.event_id, s.event_type, s.account_id, s.discrepancy_id, s.login, s.body, s.submitted_at),
            )
        stored = self.submission(s.token)
        assert stored is not None
        return stored

    def submission(self, token: str) -> Submission | None:
        with self._tx() as conn:
            row = conn.execute(f"SELECT {_SUBMISSION_COLUMNS} FROM web_submission WHERE token = %s",
                               (token,)).fetchone()
        return None if row is None else _submission(row)

    def submissions(self, *, account_id: str | None = None, discrepancy_id: str | None = None,
                    login: str | None = None, event_id: str | None = None, limit: int = 100) -> list[Submission]:
        where, params = [], []
        for column, value in (("account_id", account_id), ("discrepancy_id", discrepancy_id), ("login", login),
                              ("event_id", event_id)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT {_SUBMISSION_COLUMNS} FROM web_submission {clause}"
                " ORDER BY submitted_at DESC, token DESC LIMIT %s".encode(), [*params, limit],
            ).fetchall()
        return [_submission(r) for r in rows]
