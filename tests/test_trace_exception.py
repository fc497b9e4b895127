"""The exception trap (``--capture exception``) on a real guest with two vCPUs.

EFER.SCE is cleared on every vCPU, so each ``syscall`` faults (#UD); the tracer records the
call at the kernel's #UD entry and sets the vCPU up as ``syscall`` would have, so the guest
never sees the fault (``tracer/exception_capture.py``). Checked here: the calls are
decoded as with breakpoints and say their mechanism; 32-bit programs (``syscall`` through
the same fault, ``sysenter`` and ``int 0x80`` through breakpoints); EFER.SCE is set again
after a normal end and after a Ctrl-C; a SIGKILLed tracer's guardian restores it, and no
process of the guest died of a fault meant for us (the kernel logs each user #UD it turns
into SIGILL: "trap invalid opcode").
"""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenhpt.lab import machine
from xenhpt.vmi.qemu.target import QemuTarget

from . import test_trace as checks
from .conftest import current_lab, guest
from .test_trace_robust import answers_within, start_tracer

pytestmark = pytest.mark.lab
EXCEPTION = ("--capture", "exception")


@pytest.fixture(scope="module")
def smp_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[machine.LabState]:
    with current_lab(tmp_path_factory.mktemp("exception-lab"), smp=2) as state:
        yield state


def _sce_on_every_vcpu(state: machine.LabState) -> list[bool]:
    target = QemuTarget("127.0.0.1", state.gdb_port, ram_file=Path(state.ram_file))
    try:
        target.pause()
        return [bool(target.registers(v)["efer"] & 1) for v in range(target.vcpu_count)]
    finally:
        target.close()


def _invalid_opcode_kills() -> int:
    return int(guest("dmesg | grep -c 'trap invalid opcode' || true").strip() or 0)


def test_calls_are_decoded_through_the_fault(smp_lab: machine.LabState) -> None:
    path = f"/tmp/xenhpt-{secrets.token_hex(4)}"
    text = secrets.token_urlsafe(12)
    kills = _invalid_opcode_kills()
    trace = checks.Trace(*EXCEPTION, "-e", "trace=openat,write", "--json", "--duration", "25")
    result = checks.in_guest(f"echo $$; echo {text} > {path}")
    out, err = trace.finish()
    shell = int(result.stdout.split()[0])
    calls = [r for r in checks.records(out) if r.get("type") == "syscall"
             and r["pid"] == shell]
    opens = [r for r in calls if r["name"] == "openat" and f'"{path}"' in r["decoded"]]
    writes = [r for r in calls if r["name"] == "write" and f'"{text}\\n"' in r["decoded"]]
    assert opens and writes, calls
    assert opens[0]["ret"] >= 0 and writes[0]["ret"] == len(text) + 1
    assert {r["mechanism"] for r in opens + writes} == {"syscall"}
    assert _sce_on_every_vcpu(smp_lab) == [True, True], "EFER.SCE left cleared"
    assert _invalid_opcode_kills() == kills, "a process died of a fault meant for us"


def test_32bit_programs_through_each_mechanism(smp_lab: machine.LabState) -> None:
    # Ended by Ctrl-C once the three programs have run, not by --duration: every call of
    # every vCPU traps here, and on a loaded host three runs did not fit in 40 s.
    trace = checks.Trace(*EXCEPTION, "--comm", "mech32", "--json")
    said = {m: checks.in_guest(f"/opt/xenhpt/bin/mech32 {m}").stdout
            for m in ("syscall", "sysenter", "int80")}
    out, _ = trace.interrupt()
    for mechanism, text in said.items():
        pid = int(dict(line.split("=") for line in text.splitlines() if "=" in line)["getpid"])
        calls = [r for r in checks.records(out) if r.get("type") == "syscall"
                 and r["pid"] == pid and r["abi"] == "i386" and r["mechanism"] == mechanism]
        getpid = [r for r in calls if r["name"] == "getpid"]
        assert getpid and getpid[0]["ret"] == pid, (mechanism, calls)
        assert any(r["name"] == "write" and f"hello from {mechanism}" in r["decoded"]
                   for r in calls), (mechanism, calls)


def test_ctrl_c_restores_efer_and_leaves_no_trap(smp_lab: machine.LabState) -> None:
    with checks.guest_kept_busy():
        trace = checks.Trace(*EXCEPTION, "--json")
        time.sleep(4)
        out, err = trace.interrupt()
    c = checks.counts(err)
    assert c["captured"] > 0 and c["captured"] == c["printed"]
    assert _sce_on_every_vcpu(smp_lab) == [True, True]
    assert checks._no_trap_fires(smp_lab, 3), "a breakpoint survived the interrupted trace"
    assert guest("echo alive") == "alive\n"


def test_a_killed_tracer_leaves_syscalls_working(smp_lab: machine.LabState) -> None:
    """SIGKILL mid-trace: the guardian sets EFER.SCE again before anything resumes the
    guest (a vCPU caught at the fault gets its syscall back), so no process is killed."""
    kills = _invalid_opcode_kills()
    with checks.guest_kept_busy():
        process = start_tracer(*EXCEPTION)
        time.sleep(3)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert answers_within(5.0), "the guest is held after its tracer was killed"
        assert process.stderr is not None
        said = process.stderr.read()
        trace = checks.Trace(*EXCEPTION, "--duration", "4")
        _, err = trace.finish()
    assert checks.counts(err)["captured"] > 0, f"a new trace captured nothing: {err}"
    assert "guardian" in said and "removed its traps" in said, said
    assert "SYSENTER_CS" in said  # what the gdbstub cannot make fault, said in one line
    assert _sce_on_every_vcpu(smp_lab) == [True, True], "EFER.SCE left cleared"
    assert _invalid_opcode_kills() == kills, "a process died of a fault meant for us"
