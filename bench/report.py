"""Print the results with rich and write them as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cases import MAIN_RATIO, Section, Target
from harness import fmt_rate, fmt_s
from rich.console import Console
from rich.table import Table

#: Medians from /work/shared/reference/performance-baseline.md at the full sizes, for a feel of the
#: machine's state today. Methods differ in detail: the baseline's PostGIS rows aggregate server-side
#: (except overlay CTAS), its COPY went into an unindexed table, its read was raw psycopg + from_wkb.
BASELINE_S = {
    ("io", 100_000, "load_ours"): 0.893,
    ("io", 100_000, "load_gpd"): 5.073,
    ("io", 100_000, "read_ours"): 0.600,
    ("io", 100_000, "read_gpd"): 4.117,
    ("reproject", 1_000_000, "pg"): 0.355,
    ("reproject", 1_000_000, "raw_xy"): 0.156,
    ("reproject", 1_000_000, "raw_to_crs"): 0.629,
    ("buffer", 100_000, "pg"): 9.689,
    ("buffer", 100_000, "raw"): 12.65,
    ("overlay", 50_000, "pg"): 7.895,
    ("overlay", 50_000, "pg_par"): 4.569,
    ("overlay", 50_000, "raw"): 4.906,
}


def fmt_target(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "bool":
        return "yes" if value else "no"
    if unit == "x":
        return f"{value:,.2f}"
    if unit == "ms":
        return f"{value:,.2f} ms"
    return f"{value:,.0f} {unit}" if unit != "/s" else f"{value:,.0f}/s"


def _target_text(t: Target) -> str:
    return "yes" if t.unit == "bool" else f"{t.op} {fmt_target(t.limit, t.unit)}"


def _mark(t: Target) -> str:
    colour = {True: "green", False: "red", None: "yellow"}[t.ok]
    return f"[{colour}]{t.mark}[/]"


def tables(sections: list[Section]) -> list[Table]:
    main = Table(title="geoservice bench: medians (interleaved runs)")
    for col in ("section", "N", "case", "median", "runs", "items/s", "baseline doc"):
        main.add_column(col, justify="right" if col in ("N", "median", "items/s", "baseline doc") else "left")
    ratios = Table(title=f"ratios of medians (main ratio in bold: {MAIN_RATIO})")
    for col in ("section", "ratio", "value", "target", "mark"):
        ratios.add_column(col, justify="right" if col in ("value", "target") else "left")
    checks = Table(title="correctness cross-check (last run of each case)")
    for col in ("section", "case", "output rows", "checksum"):
        checks.add_column(col)
    for sec in sections:
        for key, t in sec.timings.items():
            runs = " / ".join(fmt_s(x) for x in t.times)
            base = BASELINE_S.get((sec.name, sec.n, key))
            main.add_row(sec.name, f"{sec.n:,}", t.label, fmt_s(t.median), runs, fmt_rate(sec.n / t.median),
                         fmt_s(base) if base else "")
        for label, value in sec.ratios:
            t = sec.target_for(label)
            ratios.add_row(sec.name, label, f"{value:,.2f}", _target_text(t) if t else "", _mark(t) if t else "",
                           style="bold" if label == MAIN_RATIO else None)
        for key, check in sec.checks.items():
            if isinstance(check, dict):
                value = check.get("check")
                shown = f"{value:,.6f}" if isinstance(value, float) and sec.checks["checksum"] == "sum_x" else (
                    f"{value:,.0f}" if isinstance(value, float) else str(value))
                checks.add_row(sec.name, key, str(check.get("rows")), f"{sec.checks['checksum']} = {shown}")
        main.add_section()
    return [main, ratios, targets_table(sections), details_table(sections), checks, e2e_table(sections),
            stage_table(sections)]


def targets_table(sections: list[Section]) -> Table:
    t = Table(title="targets (issue: analyses that scale); 'not at target N': measured at another N (e.g. --quick)")
    for col in ("section", "N", "what", "value", "target", "mark"):
        t.add_column(col, justify="right" if col in ("N", "value") else "left")
    for sec in sections:
        for tg in sec.targets:
            t.add_row(sec.name, f"{sec.n:,}", tg.label, fmt_target(tg.value, tg.unit), _target_text(tg), _mark(tg))
    return t


def details_table(sections: list[Section]) -> Table:
    t = Table(title="details (scaling, small tasks, 1M buffer) and notes")
    for col in ("section", "what", "value"):
        t.add_column(col)
    for sec in sections:
        for label, value in sec.facts:
            t.add_row(sec.name, label, value)
    return t


def e2e_table(sections: list[Section]) -> Table:
    t = Table(title="end-to-end runs: where the time goes (client polls every 50 ms; phases +-50 ms)")
    cols = ("section", "run", "total", "POST", "queue (started-created)", "loading", "computing", "storing",
            "completed_at->seen", "celery task", "deliveries", "worker peak RSS", "PG CPU", "worker CPU")
    for col in cols:
        t.add_column(col, justify="left" if col in ("section",) else "right")
    for sec in sections:
        for i, run in enumerate(sec.e2e_runs, 1):
            ph = run.phase_durations()
            usage = run.usage or {}
            t.add_row(sec.name, f"{i} {run.label}".strip(), fmt_s(run.total), fmt_s(run.submit),
                      fmt_s(run.server.get("queue_latency")),
                      fmt_s(ph.get("loading")), fmt_s(ph.get("computing")), fmt_s(ph.get("storing")),
                      fmt_s(run.server.get("completed_at_to_seen")), fmt_s(run.worker_task_s),
                      str(run.deliveries) if run.deliveries is not None else "-",
                      f"{run.peak_rss_mb:,.0f} MB" if run.peak_rss_mb else "-", _share(usage.get("pg_share")),
                      _share(usage.get("worker_share")))
    return t


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def stage_table(sections: list[Section]) -> Table:
    t = Table(title="worker steps run in-process once (same code as tasks.runner; store rolled back)")
    for col in ("section", "step", "time", "% of e2e median"):
        t.add_column(col, justify="left" if col in ("section", "step") else "right")
    for sec in sections:
        e2e = sec.timings.get("e2e")
        for name, value in sec.stages.items():
            if name.startswith("_"):
                continue
            share = f"{100 * value / e2e.median:.0f} %" if e2e else ""
            t.add_row(sec.name, name, fmt_s(value), share)
    return t


def print_all(console: Console, sections: list[Section]) -> None:
    for table in tables(sections):
        if table.row_count:
            console.print(table)


def section_json(sec: Section) -> dict[str, Any]:
    return {
        "n": sec.n,
        "unit": sec.unit,
        "cases": {k: t.as_json(sec.n) for k, t in sec.timings.items()},
        "ratios": {label: round(v, 3) for label, v in sec.ratios},
        "checks": sec.checks,
        "e2e_runs": [{**asdict(r), "phase_durations": r.phase_durations()} for r in sec.e2e_runs],
        "setup": sec.setup,
        "stages_s": sec.stages,
        "notes": sec.notes,
        "targets": [t.as_json() for t in sec.targets],
        "metrics": sec.metrics,
    }


def write_json(path: Path, meta: dict[str, Any], sections: list[Section], errors: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "sections": {s.name: section_json(s) for s in sections}, "errors": errors,
           "targets": [{"section": s.name, "n": s.n, **t.as_json()} for s in sections for t in s.targets]}
    path.write_text(json.dumps(doc, indent=2, default=str))
