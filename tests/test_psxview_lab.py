"""psxview's runqueue view and memory scan on the real lab guest: a busy process is seen
on a runqueue, and one hidden from the task list, the process tree and the pid IDR at once
(a snapshot copy edited as a rootkit would edit the kernel) is still found there, and
flagged; a sleeping process hidden the same way is on no runqueue, and only the scan of
physical memory finds it.

The lab guest has one vCPU; two busy shell loops make sure one is ``rq->curr`` or on the
fair scheduler's tree when the guest is stopped, whichever it was.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenhpt.lab import machine
from xenhpt.lab.qmp import Qmp

from .conftest import current_lab, run_xenhpt

pytestmark = pytest.mark.lab

START = """
(sh -c 'while :; do :; done' > /dev/null 2>&1 &)
(sh -c 'while :; do :; done' > /dev/null 2>&1 &)
sleep 1
for p in $(pidof sh); do grep -q 'while :' /proc/$p/cmdline && echo $p; done
true
"""


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A raw snapshot of the lab guest with two busy loops; their pids."""
    directory = tmp_path_factory.mktemp("psxview")
    with current_lab(directory / "lab", kaslr=True) as state:
        out = machine.exec_in_guest(START, directory=directory / "lab").stdout.split()
        pids = [int(p) for p in out]
        with Qmp("127.0.0.1", state.qmp_port) as qmp:
            qmp.execute("stop")
        raw = machine.snapshot(directory / "busy.raw", directory / "lab")
        with Qmp("127.0.0.1", state.qmp_port) as qmp:
            qmp.execute("cont")
        isf = machine.profile_path(state.release)
    try:
        yield {"raw": raw, "isf": isf, "pids": pids}
    finally:
        raw.unlink(missing_ok=True)


def rows(target: Path, isf: Path, check: bool = True) -> tuple[int, list[dict]]:
    done = run_xenhpt("psxview", str(target), "--json", "--profile", str(isf), check=check)
    assert done.stderr == "", done.stderr
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def test_a_busy_process_is_on_a_runqueue_and_nothing_is_flagged(busy: dict) -> None:
    status, found = rows(busy["raw"], busy["isf"])
    assert status == 0 and not any(r["flagged"] for r in found)
    assert len(busy["pids"]) == 2
    running = {r["pid"] for r in found if r["found"]["runqueue"]}
    assert running & set(busy["pids"]), (running, busy["pids"])
    # A sleeping process is on no runqueue, and that is not suspicious.
    [init] = [r for r in found if r["pid"] == 1]
    assert not init["found"]["runqueue"] and not init["flagged"]


def hide(snapshot: Path, isf: Path, copy: Path, choose: object) -> int:
    """Copy ``snapshot`` with the first process ``choose(row)`` accepts unlinked from the
    task list, its parent's children and its struct pid (as a rootkit hiding it from all
    three would edit the kernel); its pid."""
    from xenhpt.linux.cross_view import cross_view
    from xenhpt.linux.kernel import Kernel
    from xenhpt.linux.tasks import TaskReader
    from xenhpt.vmi.snapshot.target import open_snapshot

    shutil.copyfile(snapshot, copy)
    with open_snapshot(copy) as target:
        kernel = Kernel.open(target, isf)
        reader = TaskReader(kernel)
        task = next(r.task for r in cross_view(reader).rows if choose(r))  # type: ignore[operator]
        p = kernel.profile
        writes = []
        for link in ("tasks", "sibling"):  # the task list and the parent's children
            node = task.address + p.offset("task_struct", link)
            after, before = kernel.u64(node), kernel.u64(node + 8)
            writes += [(kernel.physical(before), after), (kernel.physical(after + 8), before)]
        # The pid IDR still holds its struct pid: empty its tasks[PIDTYPE_PID].
        pid = kernel.u64(task.address + p.offset("task_struct", "thread_pid"))
        writes.append((kernel.physical(pid + p.offset("pid", "tasks")), 0))
    with open(copy, "r+b") as f:
        for at, value in writes:
            f.seek(at)
            f.write(struct.pack("<Q", value))
    return task.pid


def test_a_process_hidden_from_every_list_is_found_on_its_runqueue(busy: dict,
                                                                   tmp_path: Path) -> None:
    copy = tmp_path / "hidden.raw"
    try:
        pid = hide(busy["raw"], busy["isf"], copy,
                   lambda r: r.found["runqueue"] and r.task.pid in busy["pids"])
        status, found = rows(copy, busy["isf"], check=False)
        assert status == 3
        flagged = [r for r in found if r["flagged"]]
        assert [(r["pid"], r["found"]) for r in flagged] == [
            (pid, {"tasks": False, "children": False, "pid idr": False, "runqueue": True})]
        text = run_xenhpt("psxview", str(copy), "--profile", str(busy["isf"]),
                          check=False).stdout
        assert "1 missing from a view" in text
    finally:
        copy.unlink(missing_ok=True)


def test_a_sleeping_process_hidden_from_every_list_is_found_by_the_memory_scan(
        busy: dict, tmp_path: Path) -> None:
    copy = tmp_path / "hidden-sleeper.raw"
    try:
        pid = hide(busy["raw"], busy["isf"], copy,
                   lambda r: not r.found["runqueue"] and r.task.pid > 1 and r.task.mm)
        status, found = rows(copy, busy["isf"], check=False)
        assert pid not in [r["pid"] for r in found]  # no view without the scan finds it
        done = run_xenhpt("psxview", str(copy), "--scan", "--json", "--profile",
                          str(busy["isf"]), check=False)
        assert done.returncode == 3, done.stderr
        scanned = [json.loads(line) for line in done.stdout.splitlines()]
        assert [(r["pid"], r["found"]) for r in scanned if r["flagged"]] == [
            (pid, {"tasks": False, "children": False, "pid idr": False, "runqueue": False,
                   "memory scan": True})]
        # Everything the lists hold is in memory too: the scan misses nothing else.
        assert all(r["found"]["memory scan"] for r in scanned)
    finally:
        copy.unlink(missing_ok=True)
