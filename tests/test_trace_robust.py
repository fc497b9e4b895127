"""A tracer that dies, stalls or is stopped must never hold the guest (issue: never freeze
the guest): on the real lab guest, through the gdbstub. The plugin lab runs the same checks
from ``test_trace_plugin.py``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenhpt.lab import machine

from .conftest import XENHPT, guest, run_xenhpt
from .test_trace import Trace, counts, guest_kept_busy, in_guest, records

pytestmark = pytest.mark.lab


def answers_within(seconds: float) -> bool:
    """The guest runs a command and answers in time (a held guest answers never)."""
    try:
        return machine.exec_in_guest("echo alive", timeout=seconds).stdout == "alive\n"
    except Exception:  # noqa: BLE001 - a timeout is the answer we test for
        return False


def start_tracer(*args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([XENHPT, "trace", "lab", "-v", "-o", os.devnull, *args],
                               stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    line = process.stderr.readline()
    assert "armed" in line, f"trace did not start: {line}{process.stderr.read()}"
    return process


@pytest.fixture()
def busy(lab: machine.LabState) -> Iterator[None]:
    with guest_kept_busy():
        yield


# --- a killed tracer ------------------------------------------------------------------------

def check_sigkill_leaves_the_guest_running_and_traceable(selection: list[str]) -> str:
    """SIGKILL a tracer mid-workload: the guest answers within 2 s, a new tracer captures
    calls. Returns what the killed tracer's guardian said."""
    with guest_kept_busy():
        process = start_tracer(*selection)
        time.sleep(3)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert answers_within(2.0), "the guest is held after its tracer was killed"
        assert process.stderr is not None
        said = process.stderr.read()  # the guardian writes to the same stderr
        trace = Trace("--duration", "4")
        _, err = trace.finish()
    assert counts(err)["captured"] > 0, f"a new tracer captured nothing after the kill: {err}"
    return said


@pytest.mark.parametrize("selection", [[], ["-e", "trace=wait4,openat"]],
                         ids=["full", "selective"])
def test_a_killed_tracer_leaves_the_guest_running_and_traceable(lab: machine.LabState,
                                                                selection: list[str]) -> None:
    said = check_sigkill_leaves_the_guest_running_and_traceable(selection)
    assert "guardian" in said and "removed its traps" in said, said


# --- output that stalls -----------------------------------------------------------------------

def check_a_stalled_reader_never_holds_the_guest() -> None:
    """``xenhpt trace lab | sleep 20``: nobody reads the pipe, yet the guest answers; when
    the reader goes away the trace ends with one line and its counts."""
    reader = subprocess.Popen(["sleep", "12"], stdin=subprocess.PIPE)
    with guest_kept_busy():
        process = subprocess.Popen([XENHPT, "trace", "lab", "-v", "--json"],
                                   stdout=reader.stdin, stderr=subprocess.PIPE, text=True)
        assert reader.stdin is not None
        reader.stdin.close()
        assert process.stderr is not None and "armed" in process.stderr.readline()
        time.sleep(2)  # by now the pipe (64 KiB) is full: --json lines of a busy guest
        answers = [answers_within(10.0) for _ in range(3)]
        reader.wait()
        _, err = process.communicate(timeout=120)
    assert all(answers), f"the guest was held while the output stalled: {answers}"
    errors = [line for line in err.splitlines() if line.startswith("xenhpt: error:")]
    assert process.returncode == 1 and len(errors) == 1, err
    assert "Broken pipe" in errors[0] and "calls captured" in errors[0], err
    assert "Traceback" not in err


def test_output_that_stalls_never_holds_the_guest(lab: machine.LabState) -> None:
    check_a_stalled_reader_never_holds_the_guest()


# --- the tree follows deaths --------------------------------------------------------------------

def _tree_pids(text: str) -> set[int]:
    return {int(pid) for pid in re.findall(r"\((\d+)\)", text)}


def check_the_tree_follows_deaths_and_equals_ps(count: int = 30) -> None:
    """A fork storm, then ``kill`` of the sleeps it left: no killed pid stays in the tree,
    each gets an exit event, and at the end the tree equals the guest's own task list."""
    started = in_guest(f"for i in $(seq {count}); do sleep 1000 > /dev/null 2>&1 & done; "
                       "jobs -p").stdout.split()
    sleeps = {int(pid) for pid in started}
    assert len(sleeps) == count
    trace = Trace("-e", "trace=%process", "--json", "--tree", "--duration", "15")
    in_guest(f"kill {' '.join(map(str, sorted(sleeps)))}")
    out, _ = trace.finish()
    tree = _tree_pids(trace.stdout)
    assert not sleeps & tree, f"killed processes still in the tree: {sorted(sleeps & tree)}"
    exits = {e["pid"] for e in records(out) if e.get("type") == "process"
             and e["event"] == "exit"}
    assert sleeps <= exits, f"no exit event for {sorted(sleeps - exits)}"
    ps = {row["pid"]: row["comm"] for row in map(json.loads, run_xenhpt(
        "ps", "lab", "--json").stdout.splitlines())}
    # Only kernel workers may come or go between the trace's end and this ps (which,
    # unlike the tree, leaves out the idle task, pid 0).
    differ = {pid: ps.get(pid, "(in the tree only)") for pid in (tree - {0}) ^ set(ps)}
    assert all(name.startswith("kworker") for name in differ.values()), differ


def test_the_live_tree_follows_deaths_by_signal(lab: machine.LabState) -> None:
    check_the_tree_follows_deaths_and_equals_ps()


# --- names and errors -----------------------------------------------------------------------------

def check_a_non_utf8_name_reads_the_same_everywhere() -> None:
    script = "/tmp/x$(printf '\\377')y"
    in_guest(f"printf '#!/bin/sh\\nsleep 1000\\n' > {script}; chmod +x {script}")
    trace = Trace("-e", "trace=execve,wait4", "--json", "--duration", "12")
    pid = int(in_guest(f"{script} > /dev/null 2>&1 & echo $!").stdout)
    out, _ = trace.finish()
    shown = "x\\xffy"
    ps = [json.loads(line) for line in run_xenhpt("ps", "lab", "--json").stdout.splitlines()]
    tree = json.loads(run_xenhpt("pstree", "lab", "--json").stdout)
    in_guest(f"kill {pid}")
    assert {row["comm"] for row in ps if row["pid"] == pid} == {shown}, ps
    events = [e for e in records(out) if e.get("type") == "process" and e["pid"] == pid]
    assert any(e["event"] == "exec" and e["comm"] == shown for e in events), events
    nodes, in_tree = list(tree), []
    while nodes:
        node = nodes.pop()
        nodes += node["children"]
        in_tree += [node["comm"]] if node["pid"] == pid else []
    assert in_tree == [shown], in_tree


def test_a_non_utf8_name_reads_the_same_in_every_output(lab: machine.LabState) -> None:
    check_a_non_utf8_name_reads_the_same_everywhere()


def test_a_full_output_disk_ends_the_trace_with_one_line(lab: machine.LabState,
                                                         busy: None) -> None:
    done = run_xenhpt("trace", "lab", "-o", "/dev/full", "--duration", "5", check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("xenhpt: error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], done.stderr
    assert answers_within(5.0)


def test_a_pid_that_matches_nothing_is_said(lab: machine.LabState) -> None:
    done = run_xenhpt("trace", "lab", "-p", "999999", "--duration", "1", "-o", os.devnull)
    assert "-p 999999: no such process" in done.stderr


def test_an_empty_capture_file_is_one_line(lab: machine.LabState, tmp_path: Path) -> None:
    empty = tmp_path / "capture"
    empty.write_bytes(b"")
    done = run_xenhpt("trace", "lab", "--capture-file", str(empty), "--duration", "1",
                      check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [f"xenhpt: error: {empty} is empty: not a xenhpt "
                                         "capture file"]
    assert answers_within(5.0), "the failed start left the guest held"


def test_the_guardian_does_nothing_after_a_clean_stop(lab: machine.LabState) -> None:
    done = run_xenhpt("trace", "lab", "--duration", "2", "-o", os.devnull)
    assert "guardian" not in done.stderr
    assert guest("echo alive") == "alive\n"


