"""CPU time and peak memory of the worker's and PostgreSQL's processes during one run, from /proc (no psutil).

CPU: a process tree's CPU time is the sum, over its live processes, of ``utime + stime + cutime + cstime``
(``/proc/<pid>/stat``; ``cutime``/``cstime`` hold the time of children that exited and were reaped). A
process that ends during the run moves its time into its parent's ``cutime``, so the difference between
a snapshot at the start and one at the end is exact, also for processes that start or end in between.

* PostgreSQL (server-wide): the postmaster and all its children (backends of every database, parallel
  workers, autovacuum, walwriter, checkpointer, ...). The postmaster is the parent of one of our backends.
* PostgreSQL (bench database only): backends whose command line names the bench database, and parallel
  workers serving them, sampled every ``interval`` seconds; a backend that ends loses its time after its
  last sample (a lower bound).
* Worker: every process in the worker's process group (the Celery main process, its pool processes and
  anything they start). API: the same for the ``geoservice api`` process group.

Shares are CPU seconds / (wall seconds x cores): 1.0 means every core busy for the whole run.

Memory: ``VmHWM`` (peak resident set) of every process in the worker's process group, reset through
``/proc/<pid>/clear_refs`` at the start and sampled every ``interval`` seconds (a process that ends
between two samples loses its peak after its last sample; the final read happens at the end).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

CLK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count() or 1


@dataclass
class Stat:
    ppid: int
    pgrp: int
    cpu_s: float  # utime + stime + cutime + cstime


def read_stat(pid: int) -> Stat | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    f = text.rsplit(")", 1)[1].split()
    return Stat(int(f[1]), int(f[2]), (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / CLK)


def scan() -> dict[int, Stat]:
    """One pass over /proc: every process's parent, process group and CPU time."""
    out = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (st := read_stat(int(entry.name))) is not None:
            out[int(entry.name)] = st
    return out


def read_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def group_pids(pgid: int, procs: dict[int, Stat] | None = None) -> list[int]:
    """Processes of process group ``pgid``."""
    procs = procs if procs is not None else scan()
    return sorted(pid for pid, st in procs.items() if st.pgrp == pgid)


def reset_peak_rss(pids: list[int]) -> None:
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            pass


def _tree_cpu(procs: dict[int, Stat], root: int) -> float:
    return sum(st.cpu_s for pid, st in procs.items() if pid == root or st.ppid == root)


def _group_cpu(procs: dict[int, Stat], pgid: int) -> float:
    return sum(st.cpu_s for st in procs.values() if st.pgrp == pgid)


@dataclass
class Usage:
    """What a ``ProcWatch`` saw (seconds; shares of wall x cores; MB)."""

    wall_s: float
    cores: int
    pg_cpu_s: float | None = None
    pg_db_cpu_s: float | None = None
    worker_cpu_s: float | None = None
    api_cpu_s: float | None = None
    #: Per worker process: pid -> {"role": main|pool|other, "peak_rss_mb": ..., "exited": bool}.
    worker_processes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def share(self, cpu_s: float | None) -> float | None:
        return None if cpu_s is None or self.wall_s <= 0 else round(cpu_s / (self.wall_s * self.cores), 4)

    @property
    def pg_share(self) -> float | None:
        return self.share(self.pg_cpu_s)

    @property
    def pg_db_share(self) -> float | None:
        return self.share(self.pg_db_cpu_s)

    @property
    def worker_share(self) -> float | None:
        return self.share(self.worker_cpu_s)

    @property
    def api_share(self) -> float | None:
        return self.share(self.api_cpu_s)

    @property
    def peak_rss_mb(self) -> float | None:
        peaks = [p["peak_rss_mb"] for p in self.worker_processes.values() if p["peak_rss_mb"] is not None]
        return max(peaks) if peaks else None

    def as_json(self) -> dict[str, Any]:
        return {"wall_s": round(self.wall_s, 3), "cores": self.cores, "pg_cpu_s": _r(self.pg_cpu_s),
                "pg_share": self.pg_share, "pg_db_cpu_s": _r(self.pg_db_cpu_s), "pg_db_share": self.pg_db_share,
                "worker_cpu_s": _r(self.worker_cpu_s), "worker_share": self.worker_share,
                "api_cpu_s": _r(self.api_cpu_s), "api_share": self.api_share,
                "worker_peak_rss_mb": self.peak_rss_mb, "worker_processes": self.worker_processes}


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class ProcWatch:
    """Watch the worker's process group and PostgreSQL during one run: ``start()``, then ``stop()``."""

    def __init__(self, worker_pid: int | None, postmaster_pid: int | None, db_name: str,
                 interval: float = 0.5, api_pid: int | None = None) -> None:
        self.worker_pid = worker_pid
        self.api_pid = api_pid
        self.postmaster = postmaster_pid
        self.db_marker = f" {db_name} "
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ours: dict[int, bool] = {}  # postgres child pid -> serves the bench database
        self._db_first: dict[int, float] = {}
        self._db_last: dict[int, float] = {}
        self._rss: dict[int, dict[str, Any]] = {}
        self._t0 = 0.0
        self._start: dict[int, Stat] = {}

    def start(self) -> ProcWatch:
        procs = scan()
        if self.worker_pid is not None:
            reset_peak_rss(group_pids(self.worker_pid, procs))
        self._start = procs
        self._sample(procs, first=True)
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, name="procwatch", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample(scan())

    def _is_ours(self, pid: int) -> bool:
        if pid not in self._ours:
            cmd = read_cmdline(pid)
            ours = self.db_marker in f" {cmd} "
            if not ours and "parallel worker for PID " in cmd:
                leader = cmd.rsplit("parallel worker for PID ", 1)[1].split()[0]
                ours = leader.isdigit() and self._ours.get(int(leader), False)
            self._ours[pid] = ours
        return self._ours[pid]

    def _sample(self, procs: dict[int, Stat], first: bool = False) -> None:
        if self.postmaster is not None:
            for pid, st in procs.items():
                if st.ppid == self.postmaster and self._is_ours(pid):
                    if pid not in self._db_first:
                        self._db_first[pid] = st.cpu_s if first else 0.0
                    self._db_last[pid] = st.cpu_s
        if self.worker_pid is not None:
            for pid, st in procs.items():
                if st.pgrp != self.worker_pid:
                    continue
                kb = status_kb(pid, "VmHWM")
                role = "main" if pid == self.worker_pid else ("pool" if st.ppid == self.worker_pid else "other")
                entry = self._rss.setdefault(pid, {"role": role, "peak_rss_mb": None, "exited": False})
                if kb is not None:
                    mb = round(kb / 1024, 1)
                    entry["peak_rss_mb"] = max(entry["peak_rss_mb"] or 0.0, mb)

    def stop(self) -> Usage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        procs = scan()
        wall = time.perf_counter() - self._t0
        self._sample(procs)
        usage = Usage(wall_s=wall, cores=CORES)
        if self.postmaster is not None and self.postmaster in procs:
            usage.pg_cpu_s = _tree_cpu(procs, self.postmaster) - _tree_cpu(self._start, self.postmaster)
            usage.pg_db_cpu_s = sum(self._db_last[p] - self._db_first[p] for p in self._db_last)
        if self.worker_pid is not None:
            usage.worker_cpu_s = _group_cpu(procs, self.worker_pid) - _group_cpu(self._start, self.worker_pid)
            for pid, entry in self._rss.items():
                entry["exited"] = pid not in procs
            usage.worker_processes = {str(pid): self._rss[pid] for pid in sorted(self._rss)}
        if self.api_pid is not None:
            usage.api_cpu_s = _group_cpu(procs, self.api_pid) - _group_cpu(self._start, self.api_pid)
        return usage
