"""The process view on the real lab guest: ps, pstree, process_trace, live and on snapshots,
with KASLR and with two vCPUs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenhpt.lab import machine
from xenhpt.lab.qmp import Qmp

from .conftest import TREE_SCRIPT, run_xenhpt

pytestmark = pytest.mark.lab



@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module", params=["default", "kaslr", "smp2"])
def booted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           monkeypatch_module: pytest.MonkeyPatch) -> Iterator[dict]:
    """A lab guest per configuration, running a known little process tree."""
    directory = tmp_path_factory.mktemp(f"lab-{request.param}")
    monkeypatch_module.setenv("XENHPT_LAB_DIR", str(directory))
    state = machine.up(directory=directory, kaslr=request.param == "kaslr",
                       smp=2 if request.param == "smp2" else 1)
    try:
        out = machine.exec_in_guest(TREE_SCRIPT, directory=directory).stdout
        shell, sleep_a, sleep_b = map(int, out.split())
        yield {"state": state, "dir": directory, "shell": shell, "sleeps": (sleep_a, sleep_b)}
    finally:
        machine.down(directory)


def ps_json(target: str, *extra: str) -> list[dict]:
    out = run_xenhpt("ps", target, "--json", *extra).stdout
    return [json.loads(line) for line in out.splitlines()]


def guest_ps(directory: Path) -> set[tuple[int, int, str]]:
    """What the guest's own ps says, minus the shell and the ps that ask."""
    out = machine.exec_in_guest("echo $$; ps -o pid,ppid,comm", directory=directory)
    lines = out.stdout.splitlines()
    me = int(lines[0])
    rows = set()
    for line in lines[2:]:
        pid, ppid, comm = line.split(None, 2)
        if me not in (int(pid), int(ppid)):
            rows.add((int(pid), int(ppid), comm))
    return rows


def test_ps_lists_the_known_tree_with_pids_ppids_and_names(booted: dict) -> None:
    rows = {r["pid"]: r for r in ps_json("lab")}
    shell, (a, b) = booted["shell"], booted["sleeps"]
    assert rows[shell]["comm"] == "sh"
    for sleep in (a, b):
        assert rows[sleep]["comm"] == "sleep" and rows[sleep]["ppid"] == shell
        assert rows[sleep]["tid"] == sleep and rows[sleep]["uid"] == 0
        assert rows[sleep]["task"].startswith("0xffff")


def _proc_name(pid: int, ppid: int, comm: str, inside: dict[int, str]) -> str:
    """The name /proc shows for a task: for a workqueue worker the kernel's wq_worker_comm()
    appends "-" and its current workqueue to task_struct.comm (cut to 15 bytes)."""
    seen = inside.get(pid, "")
    if comm.startswith("kworker/") and seen.startswith(comm + "-"):
        return seen
    return comm


def test_ps_equals_the_guests_own_ps(booted: dict) -> None:
    inside = guest_ps(booted["dir"])
    names = {pid: comm for pid, _, comm in inside}
    outside = {(r["pid"], r["ppid"], _proc_name(r["pid"], r["ppid"], r["comm"], names))
               for r in ps_json("lab")}
    assert outside == inside, (f"only outside: {sorted(outside - inside)}\n"
                               f"only inside: {sorted(inside - outside)}")


def test_ps_threads_lists_every_thread_of_a_process(booted: dict) -> None:
    rows = ps_json("lab", "--threads")
    # busybox is single-threaded: one row per process, tid == pid for every leader.
    assert {r["tid"] for r in rows if r["comm"] == "sleep"} == set(booted["sleeps"])
    assert all(r["tid"] == r["pid"] for r in rows if r["comm"] == "sleep")


def _find(nodes: list[dict], pid: int) -> dict | None:
    for node in nodes:
        if node["pid"] == pid:
            return node
        hit = _find(node["children"], pid)
        if hit:
            return hit
    return None


def test_pstree_and_process_trace_show_the_tree(booted: dict) -> None:
    shell, (a, b) = booted["shell"], booted["sleeps"]
    tree = run_xenhpt("pstree", "lab").stdout
    assert tree.startswith("swapper/0(0)")
    assert f"sh({shell})─┬─sleep({a})" in tree and f"└─sleep({b})" in tree
    node = _find(json.loads(run_xenhpt("pstree", "lab", "--json").stdout), shell)
    assert node is not None and sorted(c["pid"] for c in node["children"]) == [a, b]
    dump = run_xenhpt("process_trace", "lab").stdout.splitlines()
    assert dump[0].startswith("# Linux version")
    root = dump[2].split()
    assert root[2] == "0" and root[4] == "swapper/0"  # the root comes first
    shell_row = next(line.split() for line in dump[2:] if line.split()[2] == str(shell))
    assert shell_row[3] == "2" and shell_row[4] == "sh"  # two children


def test_raw_and_elf_snapshots_give_the_live_process_list(booted: dict, tmp_path: Path) -> None:
    state = booted["state"]
    # QMP serves one client at a time: stop, then snapshot (its own connection), then cont.
    with Qmp("127.0.0.1", state.qmp_port) as qmp:
        qmp.execute("stop")  # one instant for both files
    try:
        raw = machine.snapshot(tmp_path / "lab.raw", booted["dir"])
        elf = machine.snapshot(tmp_path / "lab.elf", booted["dir"])
    finally:
        with Qmp("127.0.0.1", state.qmp_port) as qmp:
            qmp.execute("cont")
    live = ps_json("lab")
    assert ps_json(str(raw)) == live
    assert ps_json(str(elf)) == live
    assert f"sh({booted['shell']})" in run_xenhpt("pstree", str(raw)).stdout


def test_info_reports_the_kaslr_slide_and_the_profile(booted: dict) -> None:
    info = run_xenhpt("info", "lab").stdout
    slide = next(line for line in info.splitlines() if line.startswith("kaslr slide:"))
    value = int(slide.split()[2], 16)
    assert (value != 0) == booted["state"].kaslr
    assert value % 0x20_0000 == 0
    assert "6.1.0" in next(line for line in info.splitlines() if line.startswith("profile:"))
