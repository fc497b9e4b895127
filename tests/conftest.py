"""Shared fixtures: a real lab guest per test session, in a run directory of its own."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from xenhpt.lab import machine
from xenhpt.lab.kernel import GuestKernel, find_cached

XENHPT = str(Path(sys.executable).with_name("xenhpt"))

# A known little process tree for the guest: a shell with two sleeps. The command prints
# "SHELL_PID SLEEP_A SLEEP_B" once all three exist, and leaves them running.
TREE_SCRIPT = """
cat > /tmp/tree.sh <<'END'
sleep 300 & a=$!
sleep 301 & b=$!
echo $$ $a $b > /tmp/tree.pids
wait
END
rm -f /tmp/tree.pids
sh /tmp/tree.sh > /dev/null 2>&1 &
while [ ! -s /tmp/tree.pids ]; do sleep 0.1; done
cat /tmp/tree.pids
"""


@pytest.fixture(scope="session", autouse=True)
def spool_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Plugin traces the tests interrupt keep their spool files (nothing captured is
    lost: by design); they go to the session's temporary directory, not /var/tmp."""
    directory = tmp_path_factory.mktemp("spool")
    os.environ.setdefault("XENHPT_SPOOL_DIR", str(directory))
    return directory


def lab_kernel() -> GuestKernel:
    """The kernel the lab fetched (whatever release Debian ships today).

    Absent, the tests that read it skip, unless CI=true: there ``make test`` has just
    fetched it, so an absent kernel is a broken set-up and must fail, not hide.
    """
    kernel = find_cached()
    if kernel is None:
        message = "no lab kernel in the cache ('make setup' fetches it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return kernel


@pytest.fixture(scope="session")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory private to this test session; xenhpt finds it via XENHPT_LAB_DIR."""
    directory = tmp_path_factory.mktemp("lab")
    os.environ["XENHPT_LAB_DIR"] = str(directory)
    return directory


@pytest.fixture(scope="session")
def lab(lab_dir: Path) -> Iterator[machine.LabState]:
    """The default lab guest (1 vCPU, nokaslr), booted once for the session."""
    state = machine.up(directory=lab_dir)
    try:
        yield state
    finally:
        machine.down(lab_dir)


@contextmanager
def current_lab(directory: Path, **boot: object) -> Iterator[machine.LabState]:
    """Boot a lab in ``directory`` and make it the one ``lab`` means until the block ends."""
    previous = os.environ.get("XENHPT_LAB_DIR")
    os.environ["XENHPT_LAB_DIR"] = str(directory)
    try:
        state = machine.up(directory=directory, **boot)  # type: ignore[arg-type]
        try:
            yield state
        finally:
            machine.down(directory)
    finally:
        if previous is None:
            os.environ.pop("XENHPT_LAB_DIR", None)
        else:
            os.environ["XENHPT_LAB_DIR"] = previous


def run_xenhpt(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real command line, as a user would."""
    done = subprocess.run([XENHPT, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"xenhpt {' '.join(args)} failed ({done.returncode}):\n"
                             f"{done.stdout}\n{done.stderr}")
    return done


def guest(command: str, timeout: float = 60) -> str:
    """stdout of a shell command run inside the lab guest (asserts it succeeded)."""
    result = machine.exec_in_guest(command, timeout=timeout)
    assert result.status == 0, f"guest command {command!r} failed: {result.stderr}"
    return result.stdout


def kallsyms(name: str) -> int:
    """A kernel symbol's address from the guest's own /proc/kallsyms (tests only)."""
    out = guest(f"grep -w {name} /proc/kallsyms")
    for line in out.splitlines():
        address, _, symbol = line.split()[:3]
        if symbol == name:
            return int(address, 16)
    raise AssertionError(f"{name} not in /proc/kallsyms")


def gcc_or_skip(purpose: str) -> str:
    """gcc's path. Without it the test skips here and fails in CI, whose machine the
    project's own setup provides with it (tools/setup.sh)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        reason = f"gcc not found: it compiles {purpose} (tools/setup.sh installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return gcc
