"""The kernel matrix: the tracer's and the process view's checks on other Debian kernels.

Each kernel is fetched with ``xenhpt lab up --kernel PACKAGE`` (a bullseye 5.10, the
bookworm default, a trixie 6.12: meta packages, resolved to whatever Debian ships when the
test runs) and booted once per capture mode; expectations come from the kernel booted.
Slow (a boot and the whole set of checks per kernel and mode): marked ``matrix``, run with
``make matrix`` (docs/lab.md), not in the default ``make test``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from xenhpt.lab import machine

from . import test_trace as checks
from .conftest import current_lab, guest
from .test_processes import _proc_name, guest_ps, ps_json

pytestmark = [pytest.mark.lab, pytest.mark.matrix]

KERNELS = {
    "5.10-bullseye": "linux-image-cloud-amd64/bullseye",
    "6.1-bookworm": None,  # the lab's default kernel
    "6.12-trixie": "linux-image-cloud-amd64/trixie",
}
BOOTED: dict[str, str] = {}  # the kernel key of the lab the module fixture booted
BOOTS = [(kernel, capture, "") for kernel in KERNELS for capture in ("gdbstub", "plugin")]
BOOTS.append(("6.12-trixie", "plugin", "pti=on"))


@pytest.fixture(scope="module", params=BOOTS,
                ids=[f"{k}-{c}{'-' + a if a else ''}" for k, c, a in BOOTS])
def matrix_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[machine.LabState]:
    kernel, capture, append = request.param
    with current_lab(tmp_path_factory.mktemp(f"matrix-{kernel}-{capture}"), capture=capture,
                     extra_append=append, kernel_package=KERNELS[kernel]) as state:
        BOOTED["kernel"] = kernel
        yield state


def test_the_guest_runs_the_kernel_asked_for(matrix_lab: machine.LabState) -> None:
    release = guest("uname -r").strip()
    assert release == matrix_lab.release
    # Each suite keeps one kernel series for its life (the key names it).
    assert release.startswith(BOOTED["kernel"].split("-")[0] + "."), (release, BOOTED)


def test_ps_equals_the_guests_own_ps(matrix_lab: machine.LabState) -> None:
    directory = machine.run_dir()
    inside = guest_ps(directory)
    names = {pid: comm for pid, _, comm in inside}
    outside = {(r["pid"], r["ppid"], _proc_name(r["pid"], r["ppid"], r["comm"], names))
               for r in ps_json("lab")}
    assert outside == inside, (f"only outside: {sorted(outside - inside)}\n"
                               f"only inside: {sorted(inside - outside)}")


def test_random_write_is_decoded(matrix_lab: machine.LabState) -> None:
    checks.test_random_write_is_decoded_with_path_flags_string_and_task(matrix_lab)


@pytest.mark.parametrize("mechanism", ["int80", "sysenter", "syscall"])
def test_32bit_mechanisms(matrix_lab: machine.LabState, mechanism: str) -> None:
    checks.test_32bit_programs_are_seen_through_their_mechanism(matrix_lab, mechanism)


def test_calls_agree_with_strace(matrix_lab: machine.LabState) -> None:
    checks.test_calls_agree_with_strace_inside_the_guest(matrix_lab)


def test_containers_fields_equal_the_guests_own_proc(matrix_lab: machine.LabState) -> None:
    from .test_containers_lab import json_rows, start_container

    facts = start_container(machine.run_dir())
    try:
        rows = {r["pid"]: r for r in json_rows("ps", "lab", "--containers", "--json")}
        mine = rows[facts["pid"]]
        assert facts["ns"] != facts["init_ns"]
        assert (mine["pidns"], mine["ns_pid"], mine["cgroup"]) == (
            facts["ns"], 1, facts["cgroup"])
        assert rows[1]["pidns"] == facts["init_ns"]
    finally:
        guest(f"kill -9 {facts['pid']}")


def test_psxview_finds_a_busy_loop_on_a_runqueue(matrix_lab: machine.LabState) -> None:
    from .test_containers_lab import json_rows
    from .test_psxview_lab import START

    pids = [int(p) for p in guest(START).split()]
    try:
        rows = json_rows("psxview", "lab", "--json")
        assert not any(r["flagged"] for r in rows)
        assert {r["pid"] for r in rows if r["found"]["runqueue"]} & set(pids), pids
    finally:
        guest("kill " + " ".join(map(str, pids)))
