"""The backend on a real Xen: tools/xenlab/run.sh boots Xen + dom0 + a PVH domU in QEMU
and runs xenhpt inside dom0 (slow; `pytest -m xen`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.xen

RUN = Path(__file__).resolve().parent.parent / "tools" / "xenlab" / "run.sh"


def test_ps_and_trace_work_inside_dom0_of_the_xen_lab():
    done = subprocess.run([str(RUN)], capture_output=True, text=True, timeout=1800)
    output = done.stdout
    steps = dict(re.findall(r"XENLAB-RC (\d+) \(\d+s\) (.+)", output))
    assert steps, f"dom0 never ran xenhpt:\n{done.stderr[-2000:]}"
    assert steps.get("xenhpt ps xen:lab") == "0", output
    assert re.search(r"^\s*1\s+0\s.*init", output, re.M), output  # PID 1 seen from outside
    assert steps.get("xenhpt trace xen:lab --duration 10 -v -c") == "0", output
    assert " 0 traps" not in output and "XENLAB-DOMU-CRASHED" not in output, output
    assert done.returncode == 0, output
