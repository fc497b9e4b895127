"""The backend on a real Xen: tools/xenlab/run.sh boots Xen + dom0 + an HVM domU in the
lab's patched QEMU and runs the QEMU lab's trace checks inside dom0 with INT3 traps
(slow, and the first run builds QEMU; `pytest -m xen`, or `make xen-lab`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.xen

RUN = Path(__file__).resolve().parent.parent / "tools" / "xenlab" / "run.sh"


def test_qemu_lab_checks_pass_inside_dom0_against_an_hvm_domu_with_int3():
    done = subprocess.run([str(RUN)], capture_output=True, text=True, timeout=3600)
    output = done.stdout
    summary = re.findall(r"xenlab: (\d+) passed, (\d+) failed", output)
    assert summary, f"dom0 never reported:\n{done.stderr[-2000:]}"
    passed, failed = map(int, summary[-1])
    assert failed == 0 and passed > 0, output
    # Each check by name (the QEMU lab's tests, run in dom0 against xen:lab).
    for name in ("ps equals the domU's own ps", "random write", "mech32 through int 0x80",
                 "mech32 through sysenter", "mech32 through 32-bit syscall",
                 "strace cross-check", "Ctrl-C mid-trace leaves no trap byte"):
        assert re.search(r"XENLAB-CHECK ok: " + re.escape(name), output), name
    assert "XENLAB-GUEST-OOPS" not in output and "XENLAB-DOMU-CRASHED" not in output
    assert done.returncode == 0, output
