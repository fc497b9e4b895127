"""KPTI guests: the lab booted with ``pti=on``, traced through the capture plugin.

With page-table isolation the user page tables do not map the per-CPU current task at
the ``syscall`` instruction; the plugin names such a caller at the kernel's first C
function of the entry path instead. The tracer's checks of ``test_trace.py`` must give
the same results here, and no record may be left without its task.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from xenhpt.lab import machine

from . import test_trace as checks
from .conftest import current_lab, guest

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def kpti_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[machine.LabState]:
    with current_lab(tmp_path_factory.mktemp("kpti-lab"), capture="plugin",
                     extra_append="pti=on") as state:
        yield state


def test_the_guest_really_runs_with_page_table_isolation(kpti_lab: machine.LabState) -> None:
    # The lab's CPU model is not vulnerable to Meltdown, so pti=on forces isolation on.
    assert " pti" in guest("grep -m1 '^flags' /proc/cpuinfo")
    assert "isolation: force enabled" in guest("dmesg | grep -i 'page tables isolation'")


def test_every_call_is_attributed_to_its_task(kpti_lab: machine.LabState) -> None:
    trace = checks.Trace("--json", "--duration", "12")
    shell = int(checks.in_guest("echo $$; cat /etc/inittab > /dev/null").stdout.split()[0])
    out, err = trace.finish()
    calls = [r for r in checks.records(out) if r.get("type") == "syscall"]
    assert calls and all(r["pid"] > 0 and r["comm"] != "?" for r in calls), \
        [r for r in calls if r["pid"] <= 0][:3]
    assert any(r["pid"] == shell and r["comm"] == "sh" and r["ppid"] > 0 for r in calls)
    assert "0 of unknown task" in err, err


def test_random_write_is_decoded(kpti_lab: machine.LabState) -> None:
    checks.test_random_write_is_decoded_with_path_flags_string_and_task(kpti_lab)


@pytest.mark.parametrize("mechanism", ["int80", "sysenter", "syscall"])
def test_32bit_mechanisms(kpti_lab: machine.LabState, mechanism: str) -> None:
    checks.test_32bit_programs_are_seen_through_their_mechanism(kpti_lab, mechanism)


def test_calls_agree_with_strace(kpti_lab: machine.LabState) -> None:
    checks.test_calls_agree_with_strace_inside_the_guest(kpti_lab)


def test_the_gdbstub_capture_attributes_kpti_calls_too(kpti_lab: machine.LabState) -> None:
    trace = checks.Trace("--capture", "breakpoints", "-e", "trace=openat", "--json",
                         "--duration", "15")
    shell = int(checks.in_guest("echo $$; cat /etc/inittab > /dev/null").stdout.split()[0])
    out, _ = trace.finish()
    opens = [r for r in checks.records(out) if r.get("name") == "openat"
             and "/etc/inittab" in r["decoded"]]
    assert opens and opens[0]["ppid"] == shell and opens[0]["pid"] > shell
