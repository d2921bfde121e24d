"""Interleaved timing: run every case of a comparison once per repetition (A, B, C, A, B, C, ...).

Each case has an untimed ``before`` and ``after`` (setup, result checks, cleanup); only ``fn`` is timed,
unless ``seconds`` extracts the time from what ``fn`` returned (end-to-end runs time themselves).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Case:
    key: str
    label: str
    fn: Callable[[], Any]
    before: Callable[[], None] | None = None
    after: Callable[[Any], Any] | None = None
    seconds: Callable[[Any], float] | None = None


@dataclass
class Timing:
    key: str
    label: str
    times: list[float] = field(default_factory=list)
    infos: list[Any] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def as_json(self, n: int) -> dict[str, Any]:
        return {"label": self.label, "times_s": [round(t, 4) for t in self.times], "median_s": round(self.median, 4),
                "items_per_s": round(n / self.median, 1) if self.median else None, "infos": self.infos}


def interleave(cases: list[Case], runs: int, log: Callable[[str], None]) -> dict[str, Timing]:
    """Run ``cases`` interleaved ``runs`` times; return the timings by case key."""
    out = {c.key: Timing(c.key, c.label) for c in cases}
    for rep in range(runs):
        for case in cases:
            if case.before:
                case.before()
            t0 = time.perf_counter()
            result = case.fn()
            dt = time.perf_counter() - t0
            if case.seconds:
                dt = case.seconds(result)
            info = case.after(result) if case.after else None
            out[case.key].times.append(dt)
            out[case.key].infos.append(info)
            log(f"  run {rep + 1}/{runs} {case.label}: {fmt_s(dt)}")
    return out


def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s"


def fmt_rate(per_s: float | None) -> str:
    if not per_s:
        return "-"
    if per_s >= 1e6:
        return f"{per_s / 1e6:.2f} M/s"
    if per_s >= 1e3:
        return f"{per_s / 1e3:.1f} k/s"
    return f"{per_s:.0f}/s"
