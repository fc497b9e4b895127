"""Two vCPUs, two busy processes at once, traced through the capture plugin.

The plugin names each call's caller per vCPU: from the task the vCPU's last context
switch named, else its per-CPU current task. With two processes running side by side
on two vCPUs, every call must still carry the pid of the process that made it: each
shell writes its own pid, so a record whose pid differs from the text it wrote names
the wrong task. Full tracing (every syscall instruction) and selective tracing (the
handlers of the selected calls) name the caller at different points: both are checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from xenhpt.lab import machine

from .conftest import current_lab
from .test_trace import Trace, counts, in_guest, records

pytestmark = pytest.mark.lab

WRITES = 300  # per shell
PID_WRITE = re.compile(r'write\(1, "(\d+)\\n", ')


@pytest.fixture(scope="module")
def smp_plugin_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[machine.LabState]:
    with current_lab(tmp_path_factory.mktemp("smp-plugin-lab"), capture="plugin",
                     smp=2) as state:
        yield state


@pytest.mark.parametrize("selection", [[], ["-e", "trace=write"]], ids=["full", "selective"])
def test_each_call_names_its_own_process_on_two_vcpus(smp_plugin_lab: machine.LabState,
                                                      selection: list[str]) -> None:
    assert in_guest("grep -c ^processor /proc/cpuinfo").stdout.strip() == "2"
    trace = Trace(*selection, "--json", "--duration", "300")
    # Each shell writes its pid WRITES times; they start together and run on both vCPUs.
    loop = f"i=0; while [ $i -lt {WRITES} ]; do echo $$ > /dev/null; i=$((i + 1)); done"
    result = in_guest(f"sh -c '{loop}' & sh -c '{loop}' & wait; echo done")
    assert result.stdout.strip().endswith("done")
    out, err = trace.interrupt()
    by_text: dict[int, list[dict]] = {}
    for record in records(out):
        if record.get("type") == "syscall" and record["name"] == "write":
            written = PID_WRITE.match(record["decoded"])
            if written:
                by_text.setdefault(int(written[1]), []).append(record)
    pids = [pid for pid, found in by_text.items() if len(found) == WRITES]
    assert len(pids) == 2, ({pid: len(found) for pid, found in by_text.items()}, err)
    wrong = [r for pid in pids for r in by_text[pid] if r["pid"] != pid or r["tid"] != pid]
    assert not wrong, wrong[:3]
    assert all(r["comm"] == "sh" and r["ppid"] > 0 for pid in pids for r in by_text[pid])
    # Both vCPUs ran them (else this checked nothing about two vCPUs).
    assert {r["vcpu"] for pid in pids for r in by_text[pid]} == {0, 1}
    assert counts(err)["dropped"] == 0 and "0 of unknown task" in err, err
