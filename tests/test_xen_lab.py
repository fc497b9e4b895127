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
    # {command: exit status}; the serial console ends lines with \r\n
    steps = {command.strip(): rc
             for rc, command in re.findall(r"XENLAB-RC (\d+) \(\d+s\) (.+)", output)}
    assert steps, f"dom0 never ran xenhpt:\n{done.stderr[-2000:]}"
    assert steps.get("xenhpt ps xen:lab") == "0", output
    # PID 1 of the domU (its /init exec()s sh), seen from outside
    assert re.search(r"^\s*1\s+0\s+\d+\s+0x[0-9a-f]+\s+sh\s*$", output, re.M), output
    full = "xenhpt trace xen:lab --duration 15 -v -o /tmp/trace.txt"
    assert steps.get(full) == "0", output
    assert steps.get("xenhpt trace xen:lab --duration 10 -e trace=openat,execve,write -v "
                     "-o /tmp/sel.txt") == "0", output
    assert steps.get("xenhpt trace xen:lab --duration 10 -v -c -o /tmp/summary.txt") == "0"
    # Names, decoded arguments and return values, as the QEMU-gdbstub lab checks them.
    assert "XENLAB-CHECK FAIL" not in output, output
    assert 'openat(AT_FDCWD, "/proc/version", O_RDONLY) = 3' in output, output
    assert " 0 traps" not in output and "XENLAB-DOMU-CRASHED" not in output, output
    assert "XENLAB-GUEST-OOPS" not in output, output  # the domU's console (xenconsoled log)
    assert done.returncode == 0, output
