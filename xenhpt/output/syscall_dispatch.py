"""``check-syscalls``: a summary per check, then the suspicious findings (or all of them)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..linux.syscall_dispatch import NOT_CHECKED, Finding

CHECKS = ("sys_call_table", "ia32_sys_call_table", "entry code", "idt", "msr")


def _row(f: Finding) -> str:
    index = "" if f.index < 0 else str(f.index)
    return (f"{f.check:<19} {index:>5}  {f.name:<22} {f.address:#018x}  "
            f"{f.points_at or '-':<32} {f.expected:<26} {f.verdict}")


def findings_text(findings: Sequence[Finding], show_all: bool = False,
                  notes: Sequence[str] = ()) -> str:
    lines = []
    for check in CHECKS:
        mine = [f for f in findings if f.check == check]
        skipped = [f for f in mine if f.verdict == NOT_CHECKED]
        if skipped:
            lines.append(f"{check}: not checked: {skipped[0].expected}")
        elif mine:
            bad = sum(f.suspicious for f in mine)
            lines.append(f"{check}: {len(mine)} checked, {bad} suspicious")
    lines += [f"note: {note}" for note in notes]
    shown = [f for f in findings if (show_all or f.suspicious) and f.verdict != NOT_CHECKED]
    if shown:
        lines.append("")
        lines.append(f"{'CHECK':<19} {'INDEX':>5}  {'NAME':<22} {'ADDRESS':<18}  "
                     f"{'POINTS AT':<32} {'EXPECTED':<26} VERDICT")
        lines += [_row(f) for f in shown]
    if not any(f.suspicious for f in findings):
        lines.append("clean: nothing leads outside the kernel text or to the wrong function")
    return "\n".join(lines) + "\n"


def findings_json(findings: Sequence[Finding], show_all: bool = False) -> str:
    return "".join(json.dumps({
        "check": f.check, "index": f.index, "name": f.name, "address": f"{f.address:#x}",
        "points_at": f.points_at, "expected": f.expected, "verdict": f.verdict}) + "\n"
        for f in findings if show_all or f.suspicious)
