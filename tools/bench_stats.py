"""The overhead benchmark's arithmetic (``tools/bench.py``): from runs to the summary table.

Pure functions on measured numbers, no guest: the rate a run scored by the host's clock, the
tracer's counts read off its ``-v`` report, and the per-workload, per-condition summary
(overhead ratio = baseline score / condition score, each run paired with the baseline run
of its own group, the runs made back to back with it; median, min and max; traps/s, tracer
CPU per trap, dropped records).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

Spread = dict[str, float | None]


@dataclass
class Run:
    workload: str
    condition: str
    repetition: int
    count: int
    guest_seconds: float
    guest_score: float
    wall_seconds: float
    wall_score: float
    traps: int | None = None  # breakpoint stops, or records read from the plugin's ring
    dropped: int | None = None  # plugin records lost to a full ring
    trace_seconds: float | None = None  # tracer armed → stopped
    tracer_cpu: float | None = None  # host CPU s of the tracer while armed
    # Runs of one group ran back to back: a ratio pairs a run with its group's baseline run.
    # (This host's speed drifts by up to 2x over tens of seconds; adjacent runs share it.)
    group: int = -1  # -1: the repetition is the group
    # The group's runs took turns on one host CPU (bench.Turns): scores by the guest's clock.
    interleaved: bool = False


def wall_rate(count: int, seconds: float, per_minute: bool = False) -> float:
    """The workload's score by the host's clock: ``count`` per second (or per minute)."""
    return count * (60.0 if per_minute else 1.0) / seconds


def tracer_counts(report: str) -> tuple[int, int | None] | None:
    """(traps or records, dropped or None) from ``xenhpt trace -v``'s closing report."""
    match = re.search(r"(\d+) (?:traps|records)\b", report)
    if not match:
        return None
    dropped = re.search(r"(\d+) dropped, \d+ undecoded", report)
    return int(match.group(1)), int(dropped.group(1)) if dropped else None


def spread(values: list[float]) -> Spread:
    """Median, min and max of the finite values (None when there are none)."""
    finite = [v for v in values if v == v and v != float("inf")]
    if not finite:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(finite), "min": min(finite), "max": max(finite)}


def ratio(base: float, score: float) -> float:
    """The overhead: how many times slower than the baseline (inf when nothing was done)."""
    return base / score if score > 0 else float("inf")


def _group(run: Run) -> int:
    return run.repetition if run.group < 0 else run.group


def summarise(runs: list[Run], baselines: Mapping[str, str], units: Mapping[str, str],
              plain: Mapping[str, str] | None = None
              ) -> dict[str, dict[str, dict[str, object]]]:
    """``summary[workload][condition]``: scores, ratios against ``baselines[condition]`` (the
    untraced condition of the same lab, same group), and the tracer-side numbers;
    ``plain[condition]``, if given, is a second baseline from another lab (QEMU without
    the plugin) and gives ``plain_ratio``."""
    by: dict[tuple[str, str, int], Run] = {(r.workload, r.condition, _group(r)): r
                                           for r in runs}
    summary: dict[str, dict[str, dict[str, object]]] = {}
    for workload in dict.fromkeys(r.workload for r in runs):
        summary[workload] = {}
        for condition in dict.fromkeys(r.condition for r in runs):
            mine = [r for r in runs if r.workload == workload and r.condition == condition]
            bases = [by.get((workload, baselines[condition], _group(r))) for r in mine]
            entry: dict[str, object] = {
                "unit": units[workload],
                "wall_score": spread([r.wall_score for r in mine]),
                "guest_score": spread([r.guest_score for r in mine]),
                "ratio": spread([ratio(b.wall_score, r.wall_score)
                                 for b, r in zip(bases, mine, strict=True) if b]),
                "guest_ratio": spread([ratio(b.guest_score, r.guest_score)
                                       for b, r in zip(bases, mine, strict=True) if b]),
            }
            if plain and condition in plain:
                others = [by.get((workload, plain[condition], _group(r))) for r in mine]
                entry["plain_ratio"] = spread([ratio(b.wall_score, r.wall_score)
                                               for b, r in zip(others, mine, strict=True) if b])
            traced = [r for r in mine if r.traps is not None]
            if traced:
                entry["traps_per_s"] = spread([r.traps / r.trace_seconds for r in traced
                                               if r.trace_seconds])
                entry["tracer_cpu_ms_per_trap"] = spread(
                    [1e3 * r.tracer_cpu / r.traps for r in traced if r.traps])
                entry["tracer_cpu_share"] = spread([r.tracer_cpu / r.trace_seconds
                                                    for r in traced if r.trace_seconds])
            drops = [r.dropped for r in traced if r.dropped is not None]
            if drops:
                entry["dropped_total"] = sum(drops)
            summary[workload][condition] = entry
    return summary


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    if value >= 1e5:
        return f"{value:.3g}"
    return f"{value:.{digits}f}" if value < 1000 else f"{value:.0f}"


def _range(values: Spread, digits: int = 2) -> str:
    return (f"{_fmt(values['median'], digits)} [{_fmt(values['min'], digits)}–"
            f"{_fmt(values['max'], digits)}]")


def table(summary: dict[str, dict[str, dict[str, object]]]) -> str:
    """The summary as a Markdown table, one row per workload × condition."""
    lines = ["| workload | condition | score, wall clock: median [min–max] | unit | "
             "ratio (wall) median [min–max] | ratio (guest clock) | vs QEMU 10 without plugin "
             "| traps/s | tracer CPU ms/trap | dropped |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for workload, conditions in summary.items():
        for condition, e in conditions.items():
            traps = e.get("traps_per_s")
            cpu = e.get("tracer_cpu_ms_per_trap")
            lines.append(
                f"| {workload} | {condition} | {_range(e['wall_score'])} | {e['unit']} | "
                f"{_range(e['ratio'])} | {_fmt(e['guest_ratio']['median'])} | "
                f"{_range(e['plain_ratio']) if 'plain_ratio' in e else ''} | "
                f"{_fmt(traps['median'], 0) if traps else ''} | "
                f"{_fmt(cpu['median'], 3) if cpu else ''} | {e.get('dropped_total', '')} |")
    return "\n".join(lines)
