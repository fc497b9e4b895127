"""xenhpt's process view against the forensic peers, and against hostile snapshots.

On a raw snapshot of the real lab guest (nokaslr and KASLR boots), LibVMI file mode
(given our ISF through :func:`~xenhpt.profile.libvmi_isf.libvmi_copy`) and Volatility 3
``linux.pslist``/``linux.pstree`` (given our ISF as it is) must list the processes
``xenhpt ps``/``pstree`` list. The hostile-input tests need no lab: they build a tiny
synthetic guest (page tables, banner, a task list) and a matching ISF, then break it.

Column semantics, checked here: xenhpt's PID is ``task_struct.tgid`` and its PPID is
``real_parent->tgid`` (what ``getppid()`` returns). Volatility's PID is ``tgid`` and its
PPID is ``task.get_parent_pid()`` = ``real_parent->tgid`` too (not ``parent``, the
ptracer); its pstree links a process to that PPID and leaves out ``swapper/0``, which
xenhpt's tree keeps as the root. LibVMI's ``linux_pid`` offset is ``task_struct.pid``
(the thread id), equal to ``tgid`` on the thread-group leaders that ``init_task.tasks``
links.
"""

from __future__ import annotations

import base64
import json
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenhpt.profile import Profile
from xenhpt.profile.libvmi_isf import convert, libvmi_copy

from .conftest import TREE_SCRIPT, XENHPT, run_xenhpt

VOL = str(Path(sys.executable).with_name("vol"))


# -- the lab snapshot ------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["nokaslr", "kaslr"])
def snapshot(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A raw snapshot of a lab guest running a known tree (shell with two sleeps)."""
    from xenhpt.lab import machine
    from xenhpt.lab.qmp import Qmp

    directory = tmp_path_factory.mktemp(f"peers-{request.param}")
    lab = directory / "lab"
    state = machine.up(directory=lab, kaslr=request.param == "kaslr")
    try:
        shell, *sleeps = map(int, machine.exec_in_guest(TREE_SCRIPT, directory=lab).stdout.split())
        # QMP serves one client at a time: close ours before machine.snapshot opens its own.
        with Qmp("127.0.0.1", state.qmp_port) as qmp:
            qmp.execute("stop")
        raw = machine.snapshot(directory / "lab.raw", lab)
        with Qmp("127.0.0.1", state.qmp_port) as qmp:
            qmp.execute("cont")
    finally:
        machine.down(lab)
    symbols = directory / "symbols"  # Volatility's -s: a directory holding only our ISF
    symbols.mkdir()
    isf = machine.profile_path(state.release)
    shutil.copy(isf, symbols / isf.name)
    try:
        yield {"raw": raw, "isf": isf, "symbols": symbols, "dir": directory,
               "shell": shell, "sleeps": tuple(sleeps), "kaslr": state.kaslr}
    finally:
        raw.unlink(missing_ok=True)  # 512 MiB: do not leave it in pytest's kept tmp dirs


def xenhpt_ps(snap: dict) -> list[dict]:
    out = run_xenhpt("ps", str(snap["raw"]), "--json", "--profile", str(snap["isf"])).stdout
    return [json.loads(line) for line in out.splitlines()]


def assert_has_known_tree(rows: set[tuple[int, int, str]], snap: dict) -> None:
    """Guards against two lists agreeing because both are empty or wrong."""
    assert any(pid == snap["shell"] and comm == "sh" for pid, _, comm in rows)
    for sleep in snap["sleeps"]:
        assert (sleep, snap["shell"], "sleep") in rows


# -- LibVMI file mode ------------------------------------------------------------------------

def libvmi_processes(raw: Path, ist: Path) -> tuple[list[tuple[int, int, str]], dict[str, int]]:
    """(pid, ppid, comm) of every task on init_task.tasks, read only through LibVMI's API
    (its symbol lookup, its offsets, its page tables), and the offsets it found."""
    from libvmi import INIT_DOMAINNAME, Libvmi, VMIConfig, VMIMode

    config = {"ostype": "Linux", "volatility_ist": str(ist)}
    with Libvmi(str(raw), INIT_DOMAINNAME, mode=VMIMode.FILE,
                config_mode=VMIConfig.DICT, config=config) as vmi:
        found = {name: vmi.get_offset(name) for name in (
            "linux_tasks", "linux_name", "linux_pid", "linux_mm", "linux_pgd", "linux_kaslr")}
        tasks, name, pid = found["linux_tasks"], found["linux_name"], found["linux_pid"]
        real_parent = vmi.get_kernel_struct_offset("task_struct", "real_parent")
        tgid = vmi.get_kernel_struct_offset("task_struct", "tgid")
        head = vmi.translate_ksym2v("init_task") + tasks
        rows = []
        node = vmi.read_addr_va(head, 0)
        while node != head and len(rows) < 10_000:
            task = node - tasks
            assert vmi.read_32_va(task + tgid, 0) == vmi.read_32_va(task + pid, 0)  # leaders
            parent = vmi.read_addr_va(task + real_parent, 0)
            rows.append((vmi.read_32_va(task + pid, 0), vmi.read_32_va(parent + tgid, 0),
                         vmi.read_str_va(task + name, 0)))
            node = vmi.read_addr_va(node, 0)
    return rows, found


@pytest.mark.lab
def test_libvmi_file_mode_with_our_isf_lists_the_processes_xenhpt_ps_lists(
        snapshot: dict, tmp_path: Path) -> None:
    ours = [(r["pid"], r["ppid"], r["comm"]) for r in xenhpt_ps(snapshot)]
    theirs, found = libvmi_processes(snapshot["raw"], libvmi_copy(snapshot["isf"], tmp_path))
    assert theirs == ours  # same tasks, same order (both walk init_task.tasks)
    assert_has_known_tree(set(ours), snapshot)
    profile = Profile.load(snapshot["isf"])
    assert found["linux_tasks"] == profile.offset("task_struct", "tasks")
    assert found["linux_name"] == profile.offset("task_struct", "comm")
    assert found["linux_pgd"] == profile.offset("mm_struct", "pgd")
    info = run_xenhpt("info", str(snapshot["raw"]), "--profile", str(snapshot["isf"])).stdout
    slide = next(line for line in info.splitlines() if line.startswith("kaslr slide:"))
    assert found["linux_kaslr"] == int(slide.split()[2], 16)
    assert (found["linux_kaslr"] != 0) == snapshot["kaslr"]


@pytest.mark.lab
def test_libvmi_minimal_copy_lists_the_same_processes(snapshot: dict, tmp_path: Path) -> None:
    minimal = libvmi_copy(snapshot["isf"], tmp_path, minimal=True)
    assert minimal.stat().st_size < 200_000
    theirs, _ = libvmi_processes(snapshot["raw"], minimal)
    assert theirs == [(r["pid"], r["ppid"], r["comm"]) for r in xenhpt_ps(snapshot)]


@pytest.mark.lab
def test_libvmi_needs_signed_addresses_and_phys_startup_64(snapshot: dict,
                                                           tmp_path: Path) -> None:
    """Why the copy exists. If this fails because LibVMI accepted one of the broken
    variants, a newer wheel fixed json-c or LibVMI: the conversion can shrink."""
    if snapshot["kaslr"]:
        pytest.skip("checks the ISF, not the boot: once is enough (a failed search costs 5 s)")
    from libvmi import LibvmiError

    isf = json.loads(snapshot["isf"].read_text())
    converted = convert(isf, snapshot["isf"])
    unsigned = {**converted, "symbols": {**converted["symbols"], **{
        name: {"address": sym["address"] & (1 << 64) - 1}
        for name, sym in converted["symbols"].items()}}}
    no_phys = {**converted, "symbols": {name: sym for name, sym in converted["symbols"].items()
                                        if name != "phys_startup_64"}}
    variants = {"standard ISF": snapshot["isf"]}
    for label, content in (("unsigned addresses", unsigned), ("no phys_startup_64", no_phys)):
        variants[label] = tmp_path / f"{label.replace(' ', '_')}.json"
        variants[label].write_text(json.dumps(content))
    for label, path in variants.items():
        try:
            libvmi_processes(snapshot["raw"], path)
        except LibvmiError:
            continue
        pytest.fail(f"LibVMI file mode accepted the {label}")
    assert libvmi_processes(snapshot["raw"], libvmi_copy(snapshot["isf"], tmp_path))[0]


# -- Volatility 3 ----------------------------------------------------------------------------

def volatility(snap: dict, plugin: str) -> list[dict]:
    """Volatility 3's JSON rows for ``plugin`` on the snapshot, with our ISF only."""
    if not Path(VOL).exists():
        pytest.skip("volatility3 is not installed (pip install -e .[dev])")
    cache = snap["dir"] / "volatility-cache"
    cache.mkdir(exist_ok=True)
    done = subprocess.run([VOL, "-q", "--offline", "--cache-path", str(cache),
                           "-f", str(snap["raw"]), "-s", str(snap["symbols"]),
                           "-r", "json", plugin],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"vol {plugin} failed:\n{done.stderr}"
    return json.loads(done.stdout)


def flatten(nodes: list[dict], parent: int | None = None) -> Iterator[tuple[int | None, dict]]:
    for node in nodes:
        yield parent, node
        yield from flatten(node.get("__children") or node.get("children") or [],
                           node.get("PID", node.get("pid")))


@pytest.mark.lab
def test_volatility_pslist_agrees_with_xenhpt_ps(snapshot: dict) -> None:
    rows = [row for _, row in flatten(volatility(snapshot, "linux.pslist"))]
    theirs = {(r["PID"], r["PPID"], r["COMM"]) for r in rows}
    ours = {(r["pid"], r["ppid"], r["comm"]) for r in xenhpt_ps(snapshot)}
    assert theirs == ours, (f"only Volatility: {sorted(theirs - ours)}\n"
                            f"only xenhpt: {sorted(ours - theirs)}")
    assert len(rows) == len(theirs) and all(r["TID"] == r["PID"] for r in rows)
    assert_has_known_tree(ours, snapshot)


@pytest.mark.lab
def test_volatility_pstree_agrees_with_xenhpt_pstree(snapshot: dict) -> None:
    theirs = {(parent, row["PID"], row["COMM"])
              for parent, row in flatten(volatility(snapshot, "linux.pstree"))}
    tree = json.loads(run_xenhpt("pstree", str(snapshot["raw"]), "--json",
                                 "--profile", str(snapshot["isf"])).stdout)
    assert [(n["pid"], n["comm"]) for n in tree] == [(0, "swapper/0")]
    # Volatility leaves swapper/0 out: its roots are swapper's children.
    ours = {(None if parent == 0 else parent, node["pid"], node["comm"])
            for parent, node in flatten(tree[0]["children"], 0)}
    assert theirs == ours, (f"only Volatility: {sorted(theirs - ours, key=str)}\n"
                            f"only xenhpt: {sorted(ours - theirs, key=str)}")
    shell, (a, b) = snapshot["shell"], snapshot["sleeps"]
    assert {(shell, a, "sleep"), (shell, b, "sleep")} <= ours


# -- hostile input: a real snapshot with a corrupted task list --------------------------------

@pytest.mark.lab
def test_cycle_in_a_real_snapshots_task_list_is_reported_and_the_walk_stops(
        snapshot: dict, tmp_path: Path) -> None:
    from xenhpt.linux.kernel import Kernel
    from xenhpt.linux.tasks import TaskReader
    from xenhpt.vmi.snapshot.target import open_snapshot

    corrupt = tmp_path / "cycle.raw"
    shutil.copyfile(snapshot["raw"], corrupt)
    with open_snapshot(corrupt) as target:
        kernel = Kernel.open(target, snapshot["isf"])
        reader = TaskReader(kernel)
        tasks = reader.processes().tasks
        offset = reader.off["tasks"]
        # The 20th task's tasks.next now points back at the 5th task's list node.
        at = kernel.physical(tasks[19].address + offset)
        back = tasks[4].address + offset
    with open(corrupt, "r+b") as f:
        f.seek(at)
        f.write(struct.pack("<Q", back))
    started = time.monotonic()
    done = run_xenhpt("ps", str(corrupt), "--json", "--profile", str(snapshot["isf"]),
                      check=False, timeout=60)
    assert time.monotonic() - started < 10
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["pid"] for line in done.stdout.splitlines()] == \
        [t.pid for t in tasks[:20]]
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("xenhpt: warning: ") and "cycle" in done.stderr
    corrupt.unlink()


# -- hostile input: a synthetic guest (no lab) -----------------------------------------------

KBASE = 0xFFFF_FFFF_8100_0000  # link address of the synthetic kernel image
IMAGE = 0x20_0000  # its physical address: one 2 MiB page
MEMORY = 0x40_0000
PML4, BANNER, PDPT, PD, CRED, TASKS = 0x1000, 0x2000, 0x3000, 0x4000, 0x5000, 0x1_0000
TASK_SIZE = 0x200
TASK_FIELDS = {"__state": 0x0, "flags": 0x4, "tasks": 0x10, "pid": 0x20, "tgid": 0x24,
               "real_parent": 0x28, "children": 0x30, "sibling": 0x40, "mm": 0x50,
               "start_time": 0x58, "cred": 0x60, "thread_group": 0x68, "comm": 0x80}
LIST_FIELDS = ("tasks", "children", "sibling", "thread_group")
POINTERS = ("real_parent", "mm", "cred")
BANNER_TEXT = "Linux version 6.1.0-synthetic (xenhpt@tests) (gcc 12.2.0) #1 SMP PREEMPT_DYNAMIC"
# (pid, comm, index of the parent in this list); index 0 is init_task.
GUEST_TASKS = [(0, "swapper/0", 0), (1, "init", 0), (2, "kthreadd", 0), (3, "kworker/0:0", 2),
               (40, "sh", 1), (41, "sleep", 4), (42, "sleep", 4)]


def task_va(index: int) -> int:
    return KBASE + TASKS + index * TASK_SIZE


def synthetic_memory(cycle_back_to: int | None = None) -> bytes:
    """Flat physical memory of a tiny x86-64 Linux: kernel page tables mapping KBASE,
    a banner, and GUEST_TASKS linked on init_task.tasks; with ``cycle_back_to``, the last
    task's ``tasks.next`` points back at that earlier task instead of at init_task."""
    memory = bytearray(MEMORY)

    def put(offset: int, fmt: str, *values: object) -> None:
        struct.pack_into(fmt, memory, IMAGE + offset, *values)

    put(PML4 + 511 * 8, "<Q", IMAGE + PDPT | 0x3)  # present, writable
    put(PDPT + ((KBASE >> 30) & 0x1FF) * 8, "<Q", IMAGE + PD | 0x3)
    put(PD + ((KBASE >> 21) & 0x1FF) * 8, "<Q", IMAGE | 0x83)  # a 2 MiB page
    banner = (BANNER_TEXT + "\n\0").encode()
    put(BANNER, f"{len(banner)}s", banner)
    count = len(GUEST_TASKS)
    for index, (pid, comm, parent) in enumerate(GUEST_TASKS):
        base = TASKS + index * TASK_SIZE
        va = task_va(index)
        nxt = (index + 1) % count
        if cycle_back_to is not None and index == count - 1:
            nxt = cycle_back_to
        put(base + TASK_FIELDS["tasks"], "<QQ", task_va(nxt) + TASK_FIELDS["tasks"],
            task_va((index - 1) % count) + TASK_FIELDS["tasks"])
        for name in ("children", "sibling", "thread_group"):  # empty lists
            put(base + TASK_FIELDS[name], "<QQ", va + TASK_FIELDS[name], va + TASK_FIELDS[name])
        put(base + TASK_FIELDS["pid"], "<ii", pid, pid)
        put(base + TASK_FIELDS["real_parent"], "<Q", task_va(parent))
        put(base + TASK_FIELDS["cred"], "<Q", KBASE + CRED)
        put(base + TASK_FIELDS["comm"], "16s", comm.encode())
    return bytes(memory)


def synthetic_isf(banner: str = BANNER_TEXT) -> dict:
    """A minimal ISF for the synthetic guest: the symbols and fields xenhpt ps reads."""
    def base(name: str) -> dict:
        return {"kind": "base", "name": name}

    def field_type(name: str) -> dict:
        if name in LIST_FIELDS:
            return {"kind": "struct", "name": "list_head"}
        if name in POINTERS:
            return {"kind": "pointer", "subtype": base("void")}
        if name == "comm":
            return {"kind": "array", "count": 16, "subtype": base("char")}
        return base("int")

    return {
        "metadata": {"format": "6.2.0", "producer": {"name": "xenhpt-tests"}},
        "base_types": {"int": {"kind": "int", "size": 4, "signed": True, "endian": "little"},
                       "char": {"kind": "char", "size": 1, "signed": True, "endian": "little"},
                       "pointer": {"kind": "int", "size": 8, "signed": False,
                                   "endian": "little"}},
        "user_types": {
            "task_struct": {"kind": "struct", "size": TASK_SIZE, "fields": {
                name: {"offset": offset, "type": field_type(name)}
                for name, offset in TASK_FIELDS.items()}},
            "list_head": {"kind": "struct", "size": 16, "fields": {
                "next": {"offset": 0, "type": field_type("mm")},
                "prev": {"offset": 8, "type": field_type("mm")}}},
            "mm_struct": {"kind": "struct", "size": 0x100,
                          "fields": {"pgd": {"offset": 0x48, "type": field_type("mm")}}},
            "cred": {"kind": "struct", "size": 0x20,
                     "fields": {"uid": {"offset": 4, "type": base("int")}}},
        },
        "enums": {},
        "symbols": {
            "init_task": {"address": task_va(0), "type": {"kind": "struct",
                                                          "name": "task_struct"}},
            "init_top_pgt": {"address": KBASE + PML4},
            "linux_banner": {"address": KBASE + BANNER, "constant_data": base64.b64encode(
                (banner + "\n\0").encode()).decode()},
        },
    }


@pytest.fixture
def guest(tmp_path: Path) -> dict:
    """Paths of the synthetic snapshot, its profile and a profile of another kernel."""
    raw = tmp_path / "guest.raw"
    raw.write_bytes(synthetic_memory())
    isf = tmp_path / "synthetic.json"
    isf.write_text(json.dumps(synthetic_isf()))
    other = tmp_path / "other-kernel.json"
    other.write_text(json.dumps(synthetic_isf(BANNER_TEXT.replace("synthetic", "other"))))
    return {"raw": raw, "isf": isf, "other": other, "dir": tmp_path}


def xenhpt(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    done = subprocess.run([XENHPT, *args], capture_output=True, text=True, timeout=60)
    return done, time.monotonic() - started


def assert_one_line_error(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("xenhpt: error: ") and "Traceback" not in done.stderr


def test_synthetic_guest_lists_its_processes(guest: dict) -> None:
    """The fixture is sound: without damage, ps reads every task and warns about nothing."""
    done, _ = xenhpt("ps", str(guest["raw"]), "--json", "--profile", str(guest["isf"]))
    assert done.returncode == 0 and done.stderr == "", done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["pid"], r["ppid"], r["comm"]) for r in rows] == [
        (pid, GUEST_TASKS[parent][0], comm) for pid, comm, parent in GUEST_TASKS[1:]]


def test_cycle_in_the_task_list_prints_what_was_read_and_one_warning(guest: dict) -> None:
    guest["raw"].write_bytes(synthetic_memory(cycle_back_to=2))
    for command in ("ps", "pstree"):
        done, elapsed = xenhpt(command, str(guest["raw"]), "--profile", str(guest["isf"]))
        assert done.returncode == 0, done.stderr
        assert elapsed < 10
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("xenhpt: warning: ") \
            and "cycle" in lines[0], done.stderr
        for pid, comm, _ in GUEST_TASKS[1:]:
            assert f"{comm}({pid})" in done.stdout if command == "pstree" \
                else f" {comm}" in done.stdout


def test_truncated_raw_snapshot_is_one_error_line(guest: dict) -> None:
    """Cut after the page tables and banner but before init_task: nothing to list."""
    guest["raw"].write_bytes(synthetic_memory()[:IMAGE + TASKS])
    done, _ = xenhpt("ps", str(guest["raw"]), "--profile", str(guest["isf"]))
    assert_one_line_error(done)
    guest["raw"].write_bytes(synthetic_memory()[:IMAGE])  # not even the kernel image
    done, _ = xenhpt("ps", str(guest["raw"]), "--profile", str(guest["isf"]))
    assert_one_line_error(done)


def elf_core(memory: bytes) -> bytes:
    """An ELF64 x86-64 core with one PT_LOAD holding ``memory`` at physical 0."""
    data_at = 0x1000
    header = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), 4, 62, 1,
                         0, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    load = struct.pack("<IIQQQQQQ", 1, 6, data_at, 0, 0, len(memory), len(memory), 0x1000)
    return (header + load).ljust(data_at, b"\0") + memory


def test_truncated_elf_snapshot_is_one_error_line(guest: dict) -> None:
    elf = guest["dir"] / "guest.elf"
    whole = elf_core(synthetic_memory())
    elf.write_bytes(whole)
    done, _ = xenhpt("ps", str(elf), "--profile", str(guest["isf"]))
    assert done.returncode == 0, done.stderr  # the intact core reads fine
    elf.write_bytes(whole[: len(whole) // 2])
    done, _ = xenhpt("ps", str(elf), "--profile", str(guest["isf"]))
    assert_one_line_error(done)
    assert "truncated" in done.stderr


def test_profile_of_another_kernel_is_one_error_line(guest: dict) -> None:
    for command in ("ps", "pstree", "process_trace"):
        done, _ = xenhpt(command, str(guest["raw"]), "--profile", str(guest["other"]))
        assert_one_line_error(done)
        assert "does not match" in done.stderr and "6.1.0-synthetic" in done.stderr


def test_libvmi_copy_has_int64_addresses_and_phys_startup_64_and_follows_the_isf(
        tmp_path: Path) -> None:
    isf = synthetic_isf()
    isf["symbols"]["startup_64"] = {"address": 0xFFFF_FFFF_8100_0000}
    path = tmp_path / "kernel.json"
    path.write_text(json.dumps(isf))
    copy = libvmi_copy(path, tmp_path / "cache")
    symbols = json.loads(copy.read_text())["symbols"]
    assert symbols["init_task"]["address"] == task_va(0) - (1 << 64)  # negative, same bits
    assert symbols["phys_startup_64"]["address"] == 0x100_0000
    assert "type" not in symbols["init_task"] and "constant_data" in symbols["linux_banner"]
    assert libvmi_copy(path, tmp_path / "cache") == copy  # cached
    isf["symbols"]["startup_64"]["address"] += 0x20_0000  # the ISF is rebuilt (and grows:
    isf["symbols"]["_stext"] = {"address": 0xFFFF_FFFF_8120_0000}  # mtime may not tick)
    path.write_text(json.dumps(isf))
    fresh = libvmi_copy(path, tmp_path / "cache")
    assert fresh != copy and not copy.exists()
    assert json.loads(fresh.read_text())["symbols"]["phys_startup_64"]["address"] == 0x120_0000
