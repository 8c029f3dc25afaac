"""bench/_measure.py: the benchmarks' CPU readings are precise enough for a month of history's write."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from bench._measure import _cpu_clock_s, postgres_cpu_s, process_cpu_s


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_process_cpu_reading_agrees_with_the_process_own_clock_to_well_under_a_clock_tick() -> None:
    # psutil's counters alone are in 10 ms ticks; the CPU-time clock is read where the OS has one
    _burn(0.013)
    reaped = psutil.Process().cpu_times()  # children this process already waited for count too (in ticks)
    before = time.process_time()
    reading = process_cpu_s(os.getpid()) - reaped.children_user - reaped.children_system
    after = time.process_time()
    assert before - 0.001 <= reading <= after + 0.001


def test_another_process_cpu_is_read_while_it_runs_and_grows_with_its_work() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                              "end = time.process_time() + 0.2\n"
                              "while time.process_time() < end: pass\n"
                              "print('done', flush=True)\nsys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "done"
        spent = process_cpu_s(child.pid)
        assert 0.2 <= spent < 5.0  # its burn, plus the interpreter's start
    finally:
        child.kill()
        child.wait()


def test_the_server_reading_counts_each_live_child_to_well_under_a_clock_tick() -> None:
    # postgres_cpu_s walks the postmaster's children: here an idle parent stands for the postmaster (a
    # process of its own, so nothing else it runs counts), with one child that burned CPU and then waits
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys\n"
                               "child = subprocess.Popen([sys.executable, '-c', 'import sys, time\\n"
                               "end = time.process_time() + 0.137\\n"
                               "while time.process_time() < end: pass\\n"
                               "print(1, flush=True)\\nsys.stdin.read()'], stdout=subprocess.PIPE,"
                               " stdin=subprocess.PIPE)\n"
                               "child.stdout.readline()\n"
                               "print(child.pid, flush=True)\n"
                               "sys.stdin.read()\n"
                               "child.kill()\n"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        reading = postgres_cpu_s(parent.pid)
        own, child = _cpu_clock_s(parent.pid), _cpu_clock_s(child_pid)
        assert own is not None and child is not None and child >= 0.137
        assert abs(reading - (own + child)) < 0.0005  # both wait: nothing moves between the readings
    finally:
        parent.kill()
        parent.wait()
