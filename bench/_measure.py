"""Process accounting for the benchmarks: CPU seconds and resident memory of the processes that do the work.

Every benchmark charges CPU to the process that spent it: the worker under test (the ledger's processor,
the Faust worker, a replay process), the PostgreSQL server (its postmaster and every backend, including
those that exited during the run: their time is in the postmaster's ``children_*`` counters once reaped)
and the Tansu broker. The benchmark's own observer connection is left out.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# psutil reports these for the calling user's processes and for those of the embedded PostgreSQL's own
# OS user alike (/proc/PID/stat is world-readable on Linux).


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of one process (all its threads) and of its reaped children.

    The process's own time comes from its CPU-time clock (nanoseconds) where the OS has one: psutil's
    counters are in clock ticks (10 ms), and a history month's write is a few ticks of server time, so
    one tick more or less moved it by 15%. Reaped children only have the tick counters."""
    t = psutil.Process(pid).cpu_times()
    own = _cpu_clock_s(pid)
    return float((t.user + t.system if own is None else own) + t.children_user + t.children_system)


def _libc() -> ctypes.CDLL | None:
    """The C library, if it has clock_getcpuclockid (else the tick counters only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.clock_getcpuclockid  # noqa: B018 - raises AttributeError where it is missing
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def _cpu_clock_s(pid: int) -> float | None:
    """CPU seconds of a live process (all its threads) from its CPU-time clock; None where there is none."""
    if _LIBC is None:
        return None
    clock = ctypes.c_int()
    if _LIBC.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
        return None
    try:
        return time.clock_gettime(clock.value)
    except OSError:  # it exited since
        return None


def postmaster_pid(data_dir: Path) -> int:
    """The PostgreSQL postmaster of an embedded data directory (first line of postmaster.pid)."""
    return abs(int((data_dir / "postmaster.pid").read_text().splitlines()[0].strip()))


def postgres_cpu_s(postmaster: int, exclude: Iterable[int] = ()) -> float:
    """CPU seconds of the whole server: the postmaster, its live children (minus ``exclude``: the
    benchmark's own connections) and the children it has already reaped."""
    skip = set(exclude)
    total = process_cpu_s(postmaster)
    for child in psutil.Process(postmaster).children():
        if child.pid in skip:
            continue
        own = _cpu_clock_s(child.pid)
        if own is not None:
            total += own
            continue
        try:
            t = child.cpu_times()
        except psutil.NoSuchProcess:  # exited between listing and reading: the postmaster counts it now
            continue
        total += t.user + t.system
    return total


def server_children(postmaster: int) -> set[int]:
    return {c.pid for c in psutil.Process(postmaster).children()}


def await_reaped(postmaster: int, before: set[int], timeout_s: float = 2.0) -> None:
    """Wait (bounded) until the server processes started since ``before`` (the backends of connections a
    measurement opened and closed) have exited and been reaped: an exiting backend is neither a live
    child nor yet in the postmaster's reaped-children time, so reading then would drop its CPU."""
    deadline = time.monotonic() + timeout_s
    while server_children(postmaster) - before and time.monotonic() < deadline:
        time.sleep(0.01)


CpuSource = Callable[[], float]


class LoadWatch:
    """The machine's 1-minute load average at the start and end of a benchmark (two cores here, shared
    with other work: CPU seconds per event inflate too when the load is high, not only rates)."""

    def __init__(self) -> None:
        self.start = os.getloadavg()[0]

    def figures(self) -> dict[str, float]:
        return {"load_average_start": round(self.start, 2), "load_average_end": round(os.getloadavg()[0], 2),
                "cpus": float(os.cpu_count() or 0)}


@dataclass
class Sample:
    """One moment of a run: wall clock, how many records were done, CPU seconds per process."""

    at: float
    done: int
    cpu: dict[str, float]


def sample(done: int, sources: dict[str, CpuSource]) -> Sample:
    return Sample(time.perf_counter(), done, {name: read() for name, read in sources.items()})


@dataclass
class Interval:
    """What happened between two samples: the rate, and CPU microseconds per record per process."""

    records: int
    seconds: float
    cpu_us_per_event: dict[str, float] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {"events_per_second": round(self.events_per_second, 1), "records": self.records,
                "seconds": round(self.seconds, 3),
                "cpu_us_per_event": {k: round(v, 2) for k, v in self.cpu_us_per_event.items()}}


def between(first: Sample, last: Sample) -> Interval:
    records = last.done - first.done
    if records <= 0:
        raise ValueError(f"no records done between the samples ({first.done} -> {last.done})")
    return Interval(records, last.at - first.at,
                    {k: (last.cpu[k] - first.cpu[k]) / records * 1e6 for k in first.cpu})


def watch(done: Callable[[], int], expected: int, sources: dict[str, CpuSource], *, timeout_s: float,
          interval_s: float, alive: Callable[[], bool] = lambda: True, what: str = "run") -> Interval:
    """Poll ``done()`` until it first moves (the work has started: sample) and until it reaches
    ``expected`` (sample again); the interval between the two samples is the measurement, so start-up
    (imports, group join, the first batch) is not in it."""
    deadline = time.monotonic() + timeout_s
    first: Sample | None = None
    while True:
        count = done()
        if first is None and count > 0:
            first = sample(count, sources)
        if count >= expected:
            last = sample(count, sources)
            if first is None or first.done >= last.done:
                raise RuntimeError(f"{what}: all {expected} records were done before a first sample; "
                                   "too few records to measure")
            return between(first, last)
        if not alive():
            raise RuntimeError(f"{what}: the worker died with {count}/{expected} records done")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {count}/{expected} records after {timeout_s:.0f} s")
        time.sleep(interval_s)


class PeakRss:
    """Samples the summed resident set of some processes in a thread; ``peak_mb`` after ``stop()``."""

    def __init__(self, pids: Callable[[], Iterable[int]], interval_s: float = 0.05) -> None:
        self._pids = pids
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak_bytes = 0
        self.peak_each_bytes = 0
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in self._pids():
                try:
                    rss = psutil.Process(pid).memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                total += rss
                self.peak_each_bytes = max(self.peak_each_bytes, rss)
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20

    @property
    def peak_each_mb(self) -> float:
        return self.peak_each_bytes / 2**20
