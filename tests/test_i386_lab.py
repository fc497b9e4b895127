"""The process view on a 32-bit guest: Debian's i386 (686-pae) kernel with a 32-bit
busybox userland under qemu-system-i386, read from outside live and from a snapshot, and
its calls traced and compared with the guest's own (i386) strace.

The kernels are bookworm's ``linux-image-686-pae`` (PAE paging, 3 levels) and
``linux-image-686`` (32-bit paging, 2 levels) meta packages, resolved to whatever Debian
ships when the test runs; each profile comes from the -dbg package (no BTF on i386), which
the first boot fetches (≈ 750 MB each, cached). Each is booted once per capture: the
system's QEMU traced through its gdbstub, and QEMU 10's qemu-system-i386 with the capture
plugin; ``check-syscalls`` reads its 32-bit dispatch (live and from a snapshot). Slow:
marked ``matrix`` (``make matrix``).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenhpt.lab import machine
from xenhpt.linux.kernel import Kernel
from xenhpt.vmi.snapshot.target import open_snapshot

from . import test_trace as checks
from . import test_trace_plugin as plugin_checks
from .conftest import current_lab, guest, kallsyms, run_xenhpt
from .test_processes import _proc_name, guest_ps, ps_json
from .test_trace import Trace, counts, in_guest, records

pytestmark = [pytest.mark.lab, pytest.mark.matrix]

# package -> the paging levels its kernel runs with
I386_KERNELS = {"linux-image-686-pae/bookworm": 3, "linux-image-686/bookworm": 2}
BOOTS = [(package, capture) for package in sorted(I386_KERNELS)
         for capture in ("gdbstub", "plugin")]
BOOTED: dict[str, str] = {}  # the package and capture of the lab the module fixture booted


@pytest.fixture(scope="module", params=BOOTS,
                ids=[f"{p.split('/')[0]}-{c}" for p, c in BOOTS])
def i386_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[machine.LabState]:
    package, capture = request.param
    with current_lab(tmp_path_factory.mktemp("i386"), kernel_package=package,
                     capture=capture) as state:
        guest("sleep 1000 >/dev/null 2>&1 & sleep 1001 >/dev/null 2>&1 & true")
        BOOTED.update(package=package, capture=capture)
        yield state


def _outside(rows: list[dict], inside: set[tuple[int, int, str]]) -> set[tuple[int, int, str]]:
    names = {pid: comm for pid, _, comm in inside}
    return {(r["pid"], r["ppid"], _proc_name(r["pid"], r["ppid"], r["comm"], names))
            for r in rows}


def _tree_edges(nodes: list[dict], parent: int = 0) -> set[tuple[int, int, str]]:
    edges = set()
    for node in nodes:
        edges.add((node["pid"], parent, node["comm"]))
        edges |= _tree_edges(node["children"], node["pid"])
    return edges


def test_the_guest_is_a_32bit_kernel_with_a_32bit_userland(i386_lab: machine.LabState) -> None:
    assert guest("uname -m").strip() in ("i686", "i586", "i386")
    assert guest("uname -r").strip() == i386_lab.release
    assert guest("head -c 5 /bin/busybox | tail -c 1 | od -An -tx1").strip() == "01"  # ELF32
    info = run_xenhpt("info", "lab").stdout
    levels = I386_KERNELS[BOOTED["package"]]
    assert "32-bit protected mode" in info and f"{levels}-level" in info, info
    cmdline = Path(f"/proc/{i386_lab.pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[0].endswith(b"qemu-system-i386")
    assert any(b"xenhpt_capture" in word for word in cmdline) == (BOOTED["capture"] == "plugin")


def test_ps_equals_the_guests_own_ps(i386_lab: machine.LabState) -> None:
    inside = guest_ps(machine.run_dir())
    rows = ps_json("lab")
    outside = _outside(rows, inside)
    assert outside == inside, (f"only outside: {sorted(outside - inside)}\n"
                               f"only inside: {sorted(inside - outside)}")
    # Task addresses are 32-bit kernel (lowmem) addresses.
    assert all(0xC000_0000 <= int(r["task"], 16) < 1 << 32 for r in rows)
    assert {r["comm"] for r in rows} >= {"busybox", "sleep", "xenhpt-agent"}  # (init: busybox)


def test_pstree_has_the_guests_parent_links(i386_lab: machine.LabState) -> None:
    inside = guest_ps(machine.run_dir())
    tree = json.loads(run_xenhpt("pstree", "lab", "--json").stdout)
    edges = _outside([{"pid": p, "ppid": pp, "comm": c} for p, pp, c in _tree_edges(tree)
                      if p != 0], inside)
    assert edges == inside, (f"only in the tree: {sorted(edges - inside)}\n"
                             f"only inside: {sorted(inside - edges)}")
    text = run_xenhpt("pstree", "lab").stdout
    assert "busybox(1)" in text and "sleep(" in text


def test_ps_on_a_snapshot_equals_the_guests_own_ps(i386_lab: machine.LabState,
                                                    tmp_path: Path) -> None:
    inside = guest_ps(machine.run_dir())
    raw = machine.snapshot(tmp_path / "i386.raw")
    outside = _outside(ps_json(str(raw)), inside)
    assert outside == inside, (f"only in the snapshot: {sorted(outside - inside)}\n"
                               f"only inside: {sorted(inside - outside)}")
    assert "sleep(" in run_xenhpt("pstree", str(raw)).stdout


@pytest.mark.parametrize("mechanism", ["int80", "sysenter"])
def test_32bit_mechanisms_are_traced_with_exact_returns(i386_lab: machine.LabState,
                                                        mechanism: str) -> None:
    # (a 32-bit kernel has no 32-bit `syscall` path: the AMD model's instruction faults)
    checks.test_32bit_programs_are_seen_through_their_mechanism(i386_lab, mechanism)


@pytest.mark.parametrize("selective", [False, True], ids=["full", "selective"])
def test_random_write_is_decoded(i386_lab: machine.LabState, selective: bool) -> None:
    path = f"/tmp/xenhpt-{secrets.token_hex(4)}"
    text = secrets.token_urlsafe(12)
    trace = Trace(*(["-e", "trace=openat,write"] if selective else []), "--json",
                  "--duration", "20")
    result = in_guest(f"echo $$; echo {text} > {path}")
    out, err = trace.finish()
    shell = int(result.stdout.split()[0])
    calls = [r for r in records(out) if r.get("type") == "syscall" and r["pid"] == shell]
    opens = [r for r in calls if r["name"] == "openat" and f'"{path}"' in r["decoded"]]
    assert opens, f"no openat of {path} in {calls}"
    assert "O_WRONLY|O_CREAT|O_TRUNC" in opens[0]["decoded"]
    assert opens[0]["ret"] >= 0 and opens[0]["errno"] is None
    writes = [r for r in calls if r["name"] == "write" and f'"{text}\\n"' in r["decoded"]]
    assert writes, f"no write of {text!r} in {calls}"
    assert writes[0]["ret"] == len(text) + 1
    for record in (opens[0], writes[0]):
        assert record["comm"] == "sh" and record["tid"] == shell and record["ppid"] > 0
        # i386 numbers: write 4, openat 295; busybox's libc enters through the vDSO.
        assert record["abi"] == "i386" and record["nr"] in (4, 295)
        assert record["mechanism"] in ("sysenter", "int80")
    assert counts(err)["captured"] == counts(err)["printed"]
    # The trace took the lab's capture: the plugin's records, or breakpoints' traps.
    source = re.search(r"\(\d+ (traps|records)\b", err)
    assert source and source[1] == ("records" if BOOTED["capture"] == "plugin" else "traps"), err


def test_a_selected_call_is_trapped_at_the_i386_kernels_own_handler(
        i386_lab: machine.LabState) -> None:
    """The i386 table names a 64-bit kernel's compat handler first; an i386 kernel calls
    another one for some calls (clone: __ia32_sys_clone, not __ia32_compat_sys_ia32_clone).
    Selecting such a call must trap where it goes, not at sys_ni_syscall."""
    trace = Trace("-e", "trace=clone", "--json", "--duration", "20")
    result = in_guest("echo $$; sleep 0 & wait")
    out, err = trace.finish()
    shell = int(result.stdout.split()[0])
    clones = [r for r in records(out) if r.get("type") == "syscall" and r["pid"] == shell]
    assert clones, f"no clone of the shell {shell}: {err}"
    assert all(r["name"] == "clone" and r["nr"] == 120 for r in clones), clones
    assert clones[0]["ret"] > 0 and clones[0]["errno"] is None


@pytest.mark.parametrize("selection", [["-e", "trace=openat"], []], ids=["selective", "full"])
def test_unselected_calls_never_enter_the_plugin(i386_lab: machine.LabState,
                                                 selection: list[str]) -> None:
    """The plugin's handler mode on the i386 kernel: a selective trace instruments the
    selected calls' __ia32_sys_* handlers (pt_regs in eax, 4-byte fields), not the syscall
    instructions, so the syscall loop's calls never enter the plugin (its count of the
    instructions it was called for stays put) and the openat made afterwards is still
    traced; a full trace is called for every instruction."""
    if BOOTED["capture"] != "plugin":
        pytest.skip("the plugin's own counter: breakpoints have none")
    plugin_checks.test_unselected_calls_never_enter_the_plugin(i386_lab, selection)


def test_maps_equals_the_guests_own_proc_maps(i386_lab: machine.LabState) -> None:
    """A process's mappings read from outside (its maple tree in 4-byte words, VMAs of
    4-byte fields, user space below the kernel's 3 GiB) are its /proc/PID/maps, line for
    line: range, permissions, offset, device, inode, name."""
    pid = int(guest("pidof sleep").split()[0])
    inside = []
    for line in guest(f"cat /proc/{pid}/maps").splitlines():
        fields = line.split(None, 5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        major, minor = (int(x, 16) for x in fields[3].split(":"))
        inside.append((start, end, fields[1], int(fields[2], 16), major, minor,
                       int(fields[4]), fields[5].strip() if len(fields) > 5 else ""))
    done = run_xenhpt("maps", "lab", "--json", "-p", str(pid))
    assert done.stderr == "", done.stderr
    outside = [(int(r["start"], 16), int(r["end"], 16), r["permissions"], r["offset"],
                r["major"], r["minor"], r["inode"], r["name"])
               for r in map(json.loads, done.stdout.splitlines()) if r["pid"] == pid]
    assert outside == inside
    assert any(name == "[stack]" for *_, name in outside) and inside[-1][1] <= 0xC000_0000


def test_psxview_memory_scan_finds_every_process(i386_lab: machine.LabState) -> None:
    """The scan for task_structs in 4-byte words (a leader's group_leader is PAGE_OFFSET
    plus its physical address) finds every process the kernel's lists hold, and a clean
    guest has nothing flagged."""
    done = run_xenhpt("psxview", "lab", "--scan", "--json", check=False)
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0 and rows, done.stderr
    assert [r for r in rows if not r["found"]["memory scan"] or r["flagged"]] == []
    assert {"busybox", "sleep"} <= {r["comm"] for r in rows}


def test_calls_agree_with_strace(i386_lab: machine.LabState) -> None:
    # Debian's strace:i386 runs inside the guest. Every call is compared, not a list of
    # names: the i386 ABI names its calls its own way (mmap2, fcntl64, sendfile64, statx
    # or fstatat64...), and which of them busybox makes depends on its libc's release.
    checks.test_calls_agree_with_strace_inside_the_guest(i386_lab, names=None)


def _hooked_copy(raw: Path, copy: Path) -> dict:
    """A copy of a snapshot with three hooks written as a rootkit would: sys_call_table's
    read (3) and the int 0x80 gate lead to sys_getpid, and entry_SYSENTER_32 starts with
    ``mov eax, imm32; jmp eax`` to an address outside the kernel text."""
    shutil.copyfile(raw, copy)
    module = 0xF800_1000
    with open_snapshot(copy) as target:
        kernel = Kernel.open(target)
        getpid = kernel.symbol("__ia32_sys_getpid")
        gate = kernel.read(kernel.symbol("idt_table") + 0x80 * 8, 8)
        writes = {
            kernel.physical(kernel.symbol("sys_call_table") + 3 * 4): struct.pack("<I", getpid),
            kernel.physical(kernel.symbol("idt_table") + 0x80 * 8):
                struct.pack("<H", getpid & 0xFFFF) + gate[2:6] + struct.pack("<H", getpid >> 16),
            kernel.physical(kernel.symbol("entry_SYSENTER_32")):
                b"\xb8" + struct.pack("<I", module) + b"\xff\xe0"}
    with open(copy, "r+b") as f:
        for offset, data in writes.items():
            f.seek(offset)
            f.write(data)
    return {"raw": copy, "getpid": getpid, "module": module}


def _check_syscalls(target: str) -> list[dict]:
    done = run_xenhpt("check-syscalls", target, "--all", "--json", check=False)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_check_syscalls_is_clean_live_and_on_a_snapshot(i386_lab: machine.LabState,
                                                        tmp_path: Path) -> None:
    """The i386 dispatch read from outside: sys_call_table in 4-byte entries of the i386
    ABI (``__ia32_sys_*``, no ia32_sys_call_table), 8-byte IDT gates with int 0x80 at
    ``entry_INT80_32``, the 32-bit entry code. On the clean guest every finding is ok; the
    MSRs alone are not checked (the gdbstub and a memory image have none), saying why. A
    copy of the snapshot with a table entry, the int 0x80 gate and an entry's first
    instruction rewritten has exactly those three findings."""
    live = _check_syscalls("lab")
    raw = machine.snapshot(tmp_path / "i386.raw")
    try:
        saved = _check_syscalls(str(raw))
        hooked = _hooked_copy(raw, tmp_path / "hooked.raw")
        try:
            done = run_xenhpt("check-syscalls", str(hooked["raw"]), "--json", check=False)
        finally:
            hooked["raw"].unlink(missing_ok=True)
    finally:
        raw.unlink(missing_ok=True)
    assert done.returncode == 3, done.stderr
    found = [json.loads(line) for line in done.stdout.splitlines()]
    getpid, module = hooked["getpid"], hooked["module"]
    assert [(f["check"], f["index"], f["name"], int(f["address"], 16), f["expected"],
             f["verdict"]) for f in found] == [
        ("sys_call_table", 3, "read", getpid, "__ia32_sys_read", "wrong function"),
        ("entry code", -1, "entry_SYSENTER_32", module, "entry_SYSENTER_32", "inline hook"),
        ("idt", 0x80, "vector 0x80", getpid, "entry_INT80_32", "wrong function")]
    int80 = kallsyms("entry_INT80_32")
    for findings in (live, saved):
        assert [f for f in findings if f["verdict"] not in ("ok", "not checked")] == []
        [skipped] = [f for f in findings if f["verdict"] == "not checked"]
        assert skipped["check"] == "msr" and skipped["expected"]
        table = [f for f in findings if f["check"] == "sys_call_table"]
        assert len(table) > 400 and [f["index"] for f in table] == list(range(len(table)))
        assert (table[3]["name"], table[3]["points_at"]) == ("read", "__ia32_sys_read")
        assert not [f for f in findings if f["check"] == "ia32_sys_call_table"]
        [gate] = [f for f in findings if f["check"] == "idt" and f["index"] == 0x80]
        assert (gate["points_at"], int(gate["address"], 16)) == ("entry_INT80_32", int80)
        assert {"entry_INT80_32", "entry_SYSENTER_32", "do_int80_syscall_32"} <= \
            {f["name"] for f in findings if f["check"] == "entry code"}
        assert all(int(f["address"], 16) < 1 << 32 for f in findings)
    without_msrs = [[f for f in findings if f["check"] != "msr"] for findings in (live, saved)]
    assert without_msrs[0] == without_msrs[1]  # the snapshot is the live guest
    assert "gdbstub" in next(f for f in live if f["check"] == "msr")["expected"]
    text = run_xenhpt("check-syscalls", "lab").stdout
    assert "sys_call_table: " in text and "ia32_sys_call_table" not in text
    assert text.endswith("clean: nothing leads outside the kernel text or to the wrong "
                         "function\n"), text
