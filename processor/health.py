"""Liveness, readiness and /metrics on one HTTP port (``LEDGER_METRICS_PORT``).

- ``GET /livez``: 200 while the service's loop keeps turning (a heartbeat younger than ``stall_s``);
  503 once it is stuck, so an orchestrator restarts it.
- ``GET /readyz``: 200 when the service is consuming (processor: its consumer has joined the group and
  fetches; relay: its producer is connected) and the database answered a ``SELECT 1`` within the last
  check; 503 with the reason otherwise.
- ``GET /metrics``: the Prometheus text format (prometheus-client's default registry).

The server runs in a daemon thread and never touches the services' state except through ``Health``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = logging.getLogger("benefits_ledger.health")

STALL_S = 120.0  # a loop silent this long is stuck (a batch commit of 100k records takes seconds)
DB_CHECK_S = 5.0


class Health:
    """What the services report, and what the endpoints answer."""

    def __init__(self, *, database_check: Callable[[], None] | None = None, stall_s: float = STALL_S,
                 db_check_s: float = DB_CHECK_S) -> None:
        self._lock = threading.Lock()
        self._beats: dict[str, float] = {}
        self._consuming: dict[str, bool] = {}
        self._passive: set[str] = set()
        self._database_check = database_check
        self.stall_s = stall_s
        self.db_check_s = db_check_s
        self._db_checked = 0.0
        self._db_error: str | None = "not checked yet"
        self.stopped: str | None = None  # why the service stopped on purpose

    def register(self, name: str, *, passive: bool = False) -> None:
        """A service that will beat. ``passive``: one that has no loop of its own (the web app answers
        requests): it counts as live and consuming while the process runs; readiness is its database."""
        with self._lock:
            if passive:
                self._passive.add(name)
            self._beats[name] = time.monotonic()
            self._consuming[name] = passive

    def beat(self, name: str, *, consuming: bool = True) -> None:
        """Called by a service's loop on every turn."""
        with self._lock:
            self._beats[name] = time.monotonic()
            self._consuming[name] = consuming

    def unregister(self, name: str) -> None:
        with self._lock:
            self._beats.pop(name, None)
            self._consuming.pop(name, None)

    def live(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        with self._lock:
            ages = {n: round(0.0 if n in self._passive else now - t, 3) for n, t in self._beats.items()}
        stuck = [n for n, age in ages.items() if age > self.stall_s]
        ok = not stuck and self.stopped is None
        return ok, {"live": ok, "heartbeat_age_s": ages, "stuck": stuck, "stopped": self.stopped}

    def _database(self) -> str | None:
        if self._database_check is None:
            return None
        now = time.monotonic()
        if now - self._db_checked >= self.db_check_s:
            try:
                self._database_check()
                self._db_error = None
            except Exception as exc:  # the endpoint reports any failure of the check as not ready
                self._db_error = " ".join(str(exc).split())[:300] or type(exc).__name__
            self._db_checked = now
        return self._db_error

    def ready(self) -> tuple[bool, dict[str, Any]]:
        live, detail = self.live()
        with self._lock:
            consuming = dict(self._consuming)
        db_error = self._database()
        not_consuming = [n for n, c in consuming.items() if not c]
        ok = live and bool(consuming) and not not_consuming and db_error is None
        return ok, {**detail, "ready": ok, "consuming": consuming, "database_error": db_error}


def database_check(dsn: str, timeout_s: float) -> Callable[[], None]:
    """A check that opens a connection and runs SELECT 1 (raises when the database does not answer)."""

    def check() -> None:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=max(1, round(timeout_s))) as conn:
            conn.execute("SELECT 1")

    return check


def _handler(health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path in ("/livez", "/readyz"):
                ok, detail = health.live() if path == "/livez" else health.ready()
                self._send(200 if ok else 503, json.dumps(detail).encode(), "application/json")
            else:
                self._send(404, b'{"error": "try /metrics, /livez or /readyz"}', "application/json")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes and probes every few seconds would drown the log

    return Handler


class OpsServer:
    """The HTTP endpoint in a daemon thread; ``port`` 0 picks a free one (tests)."""

    def __init__(self, health: Health, host: str, port: int) -> None:
        self.health = health
        self._server = ThreadingHTTPServer((host, port), _handler(health))
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="ledger-ops-http", daemon=True)

    def start(self) -> OpsServer:
        self._thread.start()
        log.info("metrics and health on http://%s:%s (/metrics, /livez, /readyz)",
                 self._server.server_address[0], self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_ops_server(settings: Any, dsn: str, name: str) -> OpsServer | None:
    """For a process without a service loop (``benefits-ledger serve``): /metrics, /livez and /readyz on
    LEDGER_METRICS_PORT (None when it is unset), ready while the database answers."""
    if settings.metrics_port is None:
        return None
    health = Health(database_check=database_check(dsn, settings.connect_timeout_s))
    health.register(name, passive=True)
    return OpsServer(health, settings.metrics_host, settings.metrics_port).start()
