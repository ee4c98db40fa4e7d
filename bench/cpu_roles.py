"""CPU time of this machine's processes by role (worker, PostgreSQL, emulator, Redis), over time.

A sampler thread reads ``/proc`` every ``interval`` seconds: each process's user+system
ticks, put in a role by its command line (the worker: the process tree of a given pid).
:meth:`CpuRoles.between` gives the CPU seconds each role used between two wall-clock
times, from the samples around them: a process started meanwhile counts from zero, one
that ended meanwhile up to the last sample it was seen in. The machine's own busy time comes from
``/proc/stat``, so "other" is everything no role claims (the benchmark itself included).
"""

from __future__ import annotations

import os
import threading
import time
from bisect import bisect_left, bisect_right
from pathlib import Path

import benchlib as bl

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
MACHINE = "machine"
# Role by command line, first match wins; the worker is found by its pid tree instead.
ROLES: tuple[tuple[str, str], ...] = (
    ("postgres", "postgres"),
    ("redis", "redis-server"),
    ("emulator", " emulator "),
)


def _machine_ticks() -> int:
    with open("/proc/stat") as handle:
        fields = handle.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    return user + nice + system + irq + softirq


def _process_ticks() -> dict[int, tuple[str, int]]:
    found: dict[int, tuple[str, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            command = raw.replace(b"\0", b" ").decode("utf-8", "replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[int(entry.name)] = (command, int(fields[11]) + int(fields[12]))
    return found


class CpuRoles:
    """Samples CPU ticks by role in a thread; ``with CpuRoles(worker_pid) as cpu:``."""

    def __init__(self, worker_pid: int, interval: float = 0.25) -> None:
        self.worker_pid = worker_pid
        self.interval = interval
        self._times: list[float] = []
        self._samples: list[dict[str, dict[int, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-roles", daemon=True)

    def __enter__(self) -> CpuRoles:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        workers = set(bl.tree_pids(self.worker_pid))
        by_role: dict[str, dict[int, int]] = {MACHINE: {0: _machine_ticks()}}
        for pid, (command, ticks) in _process_ticks().items():
            role = "worker" if pid in workers else _role(command)
            if role is not None:
                by_role.setdefault(role, {})[pid] = ticks
        self._times.append(time.time())
        self._samples.append(by_role)

    def between(self, start: float, end: float) -> dict[str, float]:
        """CPU seconds by role (and the machine's busy seconds) between two times.

        Read from the samples just outside the span and scaled to it, so a span shorter
        than the sampling interval (a quick run's) still gets the rate around it.
        """
        if len(self._samples) < 2 or end <= start:
            return {}
        first = max(0, bisect_right(self._times, start) - 1)
        last = min(len(self._times) - 1, max(first + 1, bisect_left(self._times, end)))
        scale = (end - start) / (self._times[last] - self._times[first])
        before = self._samples[first]
        # Each process's ticks at the last sample it was seen in: one that ended within the
        # span (a pooled connection's backend closed) counts up to then; one that started
        # within it counts from zero.
        seen: dict[str, dict[int, int]] = {}
        for sample in self._samples[first + 1 : last + 1]:
            for role, ticks_by_pid in sample.items():
                seen.setdefault(role, {}).update(ticks_by_pid)
        used: dict[str, float] = {}
        for role, now in sorted(seen.items()):
            was = before.get(role, {})
            ticks = sum(t - was.get(pid, 0) for pid, t in now.items())
            used[role] = round(ticks / TICKS_PER_SECOND * scale, 4)
        return used


def _role(command: str) -> str | None:
    for role, marker in ROLES:
        if marker in f" {command} ":
            return role
    return None


def per_item_ms(cpu_seconds: dict[str, float], items: float) -> dict[str, float]:
    """CPU milliseconds per item by role, the machine's total first."""
    if items <= 0:
        return {}
    ordered = [MACHINE, *sorted(r for r in cpu_seconds if r != MACHINE)]
    return {r: round(cpu_seconds[r] / items * 1000, 3) for r in ordered if r in cpu_seconds}
