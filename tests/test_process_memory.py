"""psaux, envars and maps on a synthetic guest: what they read, and hostile memory.

The guest is laid out by hand in sparse memory (``synthetic_kernel.py``): one process
with an ``mm_struct``, argv and environment on its stack pages, a maple tree of VMAs
(a file under a second mount, heap, stack, [vdso], anonymous memory), and dentries.
Each hostile case breaks one thing and checks the rows still come, with a marker.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from xenhpt.linux.dentry import DentryReader, PathRoot
from xenhpt.linux.maple_tree import ARANGE_64, LEAF_64, MapleTreeReader, TreeWalk
from xenhpt.linux.mm import MAX_AREA_BYTES, MmReader, process_strings
from xenhpt.linux.tasks import Task
from xenhpt.linux.vma import VmaReader, process_mappings
from xenhpt.output import process_memory as render

from .synthetic_kernel import SparseMemory, kernel, write_isf

PAGE = 4096
K = 0xFFFF_8880_0000_0000  # kernel objects live here
MM, TREE_ROOT, LEAF_A, LEAF_B = K + 0x1000, K + 0x2000, K + 0x2100, K + 0x2200
VMAS = K + 0x3000  # 0x100 apart
FILE, DENTRIES, MOUNTS, INODE, SB = K + 0x4000, K + 0x5000, K + 0x6000, K + 0x7000, K + 0x7800
NAMES, SPECIAL, FS, TASK = K + 0x8000, K + 0x9000, K + 0xA000, K + 0xB000
SPECIAL_OPS = 0xFFFF_FFFF_8200_0000
STACK_TOP = 0x7FFF_F000_0000
ARGS = STACK_TOP - 2 * PAGE + PAGE - 24  # argv crosses a page boundary
ARGV = [b"/usr/bin/tok\x1bsh", b"-c", b"sleep 600; : arg_tok77"]
ENV = [b"HOME=/", b"XENHPT_TOKEN=env_tok42"]

STRUCTS = {
    "task_struct": (0x100, {"fs": (0x10, "ptr")}),
    "fs_struct": (0x40, {"root": (0x18, ("struct", "path"))}),
    "mm_struct": (0x300, {
        "mm_mt": (0x0, ("struct", "maple_tree")), "arg_start": (0x100, "u64"),
        "arg_end": (0x108, "u64"), "env_start": (0x110, "u64"), "env_end": (0x118, "u64"),
        "start_brk": (0x120, "u64"), "brk": (0x128, "u64"), "start_stack": (0x130, "u64"),
        "context": (0x200, ("struct", "mm_context_t"))}),
    "mm_context_t": (0x20, {"vdso": (0x8, "ptr")}),
    "maple_tree": (0x18, {"ma_root": (0x8, "ptr"), "ma_flags": (0x10, "u32")}),
    "maple_node": (0x100, {"parent": (0, "ptr"), "mr64": (0, ("struct", "maple_range_64")),
                           "ma64": (0, ("struct", "maple_arange_64"))}),
    "maple_range_64": (0x100, {"parent": (0, "ptr"), "pivot": (8, ("array", 15)),
                               "slot": (128, ("array", 16))}),
    "maple_arange_64": (0x100, {"parent": (0, "ptr"), "pivot": (8, ("array", 9)),
                                "slot": (80, ("array", 10))}),
    "vm_area_struct": (0x100, {
        "vm_start": (0, "u64"), "vm_end": (8, "u64"), "vm_mm": (0x10, "ptr"),
        "vm_flags": (0x20, "u64"), "vm_ops": (0x60, "ptr"), "vm_pgoff": (0x68, "u64"),
        "vm_file": (0x70, "ptr"), "vm_private_data": (0x78, "ptr")}),
    "vm_special_mapping": (0x20, {"name": (0, "ptr")}),
    "file": (0x40, {"f_path": (0x10, ("struct", "path"))}),
    "path": (0x10, {"mnt": (0, "ptr"), "dentry": (8, "ptr")}),
    "dentry": (0x40, {"d_hash": (0x8, ("struct", "hlist_bl_node")), "d_parent": (0x18, "ptr"),
                      "d_name": (0x20, ("struct", "qstr")), "d_inode": (0x30, "ptr")}),
    "hlist_bl_node": (0x10, {"next": (0, "ptr"), "pprev": (8, "ptr")}),
    "qstr": (0x10, {"len": (4, "u32"), "name": (8, "ptr")}),
    "mount": (0x40, {"mnt_parent": (0x10, "ptr"), "mnt_mountpoint": (0x18, "ptr"),
                     "mnt": (0x20, ("struct", "vfsmount"))}),
    "vfsmount": (0x10, {"mnt_root": (0, "ptr")}),
    "inode": (0x50, {"i_sb": (0x28, "ptr"), "i_ino": (0x40, "u64")}),
    "super_block": (0x20, {"s_dev": (0x10, "u32")}),
}


def dentry(memory: SparseMemory, index: int, name: bytes, parent: int | None,
           inode: int = 0) -> int:
    at = DENTRIES + index * 0x40
    memory.u64(at + 0x18, at if parent is None else parent)  # a root is its own parent
    memory.u64(at + 0x10, 0xDEAD)  # d_hash.pprev: hashed (not deleted)
    memory.u32(at + 0x24, len(name))
    memory.u64(at + 0x28, NAMES + index * 0x40)
    memory.write(NAMES + index * 0x40, name + b"\0")
    memory.u64(at + 0x30, inode)
    return at


def mount(memory: SparseMemory, index: int, root: int, parent_index: int,
          mountpoint: int) -> int:
    """A struct mount; its vfsmount's address (what paths hold)."""
    at = MOUNTS + index * 0x40
    memory.u64(at + 0x10, MOUNTS + parent_index * 0x40)
    memory.u64(at + 0x18, mountpoint)
    memory.u64(at + 0x20, root)
    return at + 0x20


def vma(memory: SparseMemory, index: int, start: int, end: int, flags: int,
        file: int = 0, pgoff: int = 0, ops: int = 0, private: int = 0) -> int:
    at = VMAS + index * 0x100
    memory.u64(at, start, end, MM)
    memory.u64(at + 0x20, flags)
    memory.u64(at + 0x60, ops, pgoff, file, private)
    return at


@pytest.fixture
def guest(tmp_path: Path) -> dict:
    memory = SparseMemory()
    isf = write_isf(tmp_path / "synthetic.json", STRUCTS,
                    {"special_mapping_vmops": SPECIAL_OPS})
    # Dentries: / (rootfs) with tmp/ on it; a tmpfs mounted on /tmp with d_x/f in it.
    root = dentry(memory, 0, b"/", None)
    tmp = dentry(memory, 1, b"tmp", root)
    tmpfs_root = dentry(memory, 2, b"/", None)
    directory = dentry(memory, 3, b"d_x", tmpfs_root)
    leaf = dentry(memory, 4, b"f", directory, inode=INODE)
    memory.u64(INODE + 0x28, SB)
    memory.u64(INODE + 0x40, 3)
    memory.u32(SB + 0x10, 0x16)  # 00:16
    rootfs = mount(memory, 0, root, 0, root)  # its own parent: the global root
    tmp_mount = mount(memory, 1, tmpfs_root, 0, tmp)
    memory.u64(FILE + 0x10, tmp_mount, leaf)
    memory.u64(FS + 0x18, rootfs, root)
    memory.u64(TASK + 0x10, FS)
    memory.u64(SPECIAL, NAMES + 0x400)
    memory.write(NAMES + 0x400, b"[vdso]\0")
    # The process's memory: argv and environment on the stack pages.
    args = b"".join(a + b"\0" for a in ARGV)
    env = b"".join(e + b"\0" for e in ENV)
    memory.write(ARGS, args + env)
    memory.u64(MM + 0x100, ARGS, ARGS + len(args), ARGS + len(args),
               ARGS + len(args) + len(env))
    heap = 0x0200_0000
    memory.u64(MM + 0x120, heap, heap + 0x2000, STACK_TOP - PAGE)
    # VMAs, in a tree of one allocation-range root over two leaves.
    vmas = [vma(memory, 0, 0x40_0000, 0x40_1000, 0x75, file=FILE, pgoff=0),      # r-x
            vma(memory, 1, 0x40_1000, 0x40_3000, 0x73, file=FILE, pgoff=1),      # rw-
            vma(memory, 2, heap, heap + 0x2000, 0x73),                            # [heap]
            vma(memory, 3, 0x7F00_0000_0000, 0x7F00_0000_1000, 0xFB),            # shared
            vma(memory, 4, STACK_TOP - 0x2_0000, STACK_TOP, 0x173),              # [stack]
            vma(memory, 5, STACK_TOP + PAGE, STACK_TOP + 3 * PAGE, 0x75,
                ops=SPECIAL_OPS, private=SPECIAL)]                                # [vdso]
    # Encoded as the kernel does: node | type << 3 | MAPLE_ENODE_NULL (4); the root is
    # also marked MAPLE_ROOT_NODE (2), the children in its slots are not.
    memory.u64(MM + 0x8, TREE_ROOT | (ARANGE_64 << 3) | 4 | 2)
    memory.u64(TREE_ROOT, MM | 1)  # the root's parent is the tree
    memory.u64(TREE_ROOT + 8, heap + 0x2000 - 1)  # pivot 0: leaf A up to the heap's end
    memory.u64(TREE_ROOT + 80, LEAF_A | (LEAF_64 << 3) | 4, LEAF_B | (LEAF_64 << 3) | 4)
    leaf_entries = {LEAF_A: [(0x3F_FFFF, 0), (0x40_0FFF, vmas[0]), (0x40_2FFF, vmas[1]),
                             (heap - 1, 0), (heap + 0x2000 - 1, vmas[2])],
                    LEAF_B: [(0x7F00_0000_0000 - 1, 0), (0x7F00_0000_0FFF, vmas[3]),
                             (STACK_TOP - 0x2_0000 - 1, 0), (STACK_TOP - 1, vmas[4]),
                             (STACK_TOP + PAGE - 1, 0), (STACK_TOP + 3 * PAGE - 1, vmas[5])]}
    for node, entries in leaf_entries.items():
        memory.u64(node, TREE_ROOT)
        for i, (pivot, entry) in enumerate(entries):
            memory.u64(node + 8 + 8 * i, pivot)
            memory.u64(node + 128 + 8 * i, entry)
    task = Task(address=TASK, pid=77, tid=77, comm=b"tok\x1bsh", state=1, parent_address=0,
                ppid=1, uid=1000, mm=MM, pgd=0x1000, start_time=0, flags=0)
    return {"memory": memory, "kernel": kernel(memory, isf), "task": task, "vmas": vmas,
            "leaf": leaf, "tmp_mount": tmp_mount, "root": PathRoot(rootfs, root)}


def maps_of(guest: dict) -> tuple[list, list[str]]:
    k = guest["kernel"]
    problems: list[str] = []
    rows = process_mappings(VmaReader(k), MmReader(k), [guest["task"]], problems)
    return rows[0].mappings, problems


# -- what they read --------------------------------------------------------------------------

def test_psaux_reads_argv_across_a_page_boundary_and_escapes_it(guest: dict) -> None:
    rows = process_strings(MmReader(guest["kernel"]), [guest["task"]], "arguments")
    assert rows[0].strings.strings == tuple(ARGV) and rows[0].strings.complete
    line = render.psaux_table(rows).splitlines()[1]
    assert line.split() == ["77", "1", "1000", "tok\\x1bsh", "/usr/bin/tok\\x1bsh", "-c",
                            "sleep", "600;", ":", "arg_tok77"]
    assert "\x1b" not in render.psaux_json(rows)


def test_envars_lists_each_variable_as_key_and_value(guest: dict) -> None:
    rows = process_strings(MmReader(guest["kernel"]), [guest["task"]], "environment")
    assert rows[0].strings.strings == tuple(ENV)
    assert '"key": "XENHPT_TOKEN", "value": "env_tok42"' in render.envars_json(rows)


def test_kernel_thread_shows_its_name_in_brackets_and_no_environment(guest: dict) -> None:
    thread = Task(address=TASK, pid=2, tid=2, comm=b"kthreadd", state=1, parent_address=0,
                  ppid=0, uid=0, mm=0, pgd=0, start_time=0, flags=0)
    reader = MmReader(guest["kernel"])
    assert render.psaux_table(process_strings(reader, [thread], "arguments")) \
        .splitlines()[1].endswith(" [kthreadd]")
    assert render.envars_table(process_strings(reader, [thread], "environment")) \
        .splitlines()[1:] == []


def test_maps_walks_the_maple_tree_and_names_each_mapping(guest: dict) -> None:
    mappings, problems = maps_of(guest)
    assert problems == []
    assert [(m.start, m.permissions, m.offset, m.kind, m.name) for m in mappings] == [
        (0x40_0000, "r-xp", 0, "file", b"/tmp/d_x/f"),
        (0x40_1000, "rw-p", PAGE, "file", b"/tmp/d_x/f"),
        (0x0200_0000, "rw-p", 0, "heap", b"[heap]"),
        (0x7F00_0000_0000, "rw-s", 0, "anonymous", b""),
        (STACK_TOP - 0x2_0000, "rw-p", 0, "stack", b"[stack]"),
        (STACK_TOP + PAGE, "r-xp", 0, "special", b"[vdso]")]
    assert (mappings[0].inode, mappings[0].device) == (3, 0x16)
    assert render.mapping_line(mappings[0]) == \
        "00400000-00401000 r-xp 00000000 00:16 3          /tmp/d_x/f"


# -- hostile memory --------------------------------------------------------------------------

def test_unreadable_page_ends_argv_with_a_marker_and_the_row_stays(guest: dict) -> None:
    guest["memory"].unmap(ARGS + 24)  # the second page of argv
    rows = process_strings(MmReader(guest["kernel"]), [guest["task"]], "arguments")
    strings = rows[0].strings
    assert strings.unreadable_at == (ARGS + 24) & ~(PAGE - 1)
    assert strings.strings[0] == ARGV[0][:len(strings.strings[0])]
    text = render.psaux_table(rows).splitlines()[1]
    assert text.startswith("     77") and text.endswith(f"<unreadable at {ARGS + 24:#x}>")
    assert '"unreadable_at": "0x' in render.psaux_json(rows)


def test_unreadable_mm_struct_is_a_row_with_a_marker(guest: dict) -> None:
    guest["memory"].unmap(MM + 0x100)
    rows = process_strings(MmReader(guest["kernel"]), [guest["task"]], "arguments")
    assert rows[0].strings.unreadable_at == MM
    mappings = process_mappings(VmaReader(guest["kernel"]), MmReader(guest["kernel"]),
                                [guest["task"]], [])
    assert mappings[0].unreadable == f"mm_struct unreadable at {MM:#x}"
    assert render.maps_table(mappings).splitlines()[1].endswith(f"<mm_struct unreadable at "
                                                                f"{MM:#x}>")


def test_huge_argv_area_is_read_only_up_to_the_bound(guest: dict) -> None:
    guest["memory"].u64(MM + 0x108, ARGS + (1 << 40))  # arg_end a terabyte away
    reader = MmReader(guest["kernel"])
    strings = process_strings(reader, [guest["task"]], "arguments")[0].strings
    assert strings.truncated and strings.unreadable_at is not None  # stopped, not looped
    assert strings.unreadable_at - ARGS <= MAX_AREA_BYTES


def test_maple_node_that_does_not_point_back_at_its_parent_is_skipped(guest: dict) -> None:
    guest["memory"].u64(LEAF_B, LEAF_A)  # leaf B claims another parent
    mappings, problems = maps_of(guest)
    assert [m.kind for m in mappings] == ["file", "file", "heap"]  # leaf A still read
    assert len(problems) == 1 and "does not point back" in problems[0]


def test_maple_tree_slot_pointing_back_at_the_root_does_not_loop(guest: dict) -> None:
    memory = guest["memory"]
    memory.u64(TREE_ROOT + 88, TREE_ROOT | (ARANGE_64 << 3) | 4)  # slot 1 → the root
    walk = TreeWalk()
    entries = list(MapleTreeReader(guest["kernel"]).entries(MM, walk))
    assert [(first, last) for first, last, _ in entries] == [  # leaf A's non-empty slots
        (0x40_0000, 0x40_0FFF), (0x40_1000, 0x40_2FFF), (0x0200_0000, 0x0200_1FFF)]
    assert walk.problems and "twice" in walk.problems[0]


def test_vma_of_another_process_in_the_tree_is_not_a_row(guest: dict) -> None:
    guest["memory"].u64(guest["vmas"][3] + 0x10, MM + 0x1000)  # vm_mm: someone else's
    mappings, problems = maps_of(guest)
    assert 0x7F00_0000_0000 not in [m.start for m in mappings] and len(mappings) == 5
    assert "not a mapping of this process" in problems[0]


def test_dentry_cycle_ends_the_path_walk(guest: dict) -> None:
    memory = guest["memory"]
    directory = DENTRIES + 3 * 0x40
    memory.u64(directory + 0x18, guest["leaf"])  # d_x's parent is f, f's parent is d_x
    path, _ = DentryReader(guest["kernel"]).path(guest["tmp_mount"], guest["leaf"],
                                                 guest["root"])
    assert path.endswith(b"d_x/f") and len(path) < 2 * 256 * 4


def test_unreadable_parent_dentry_gives_the_known_tail_with_a_question_mark(
        guest: dict) -> None:
    guest["memory"].unmap(DENTRIES + 3 * 0x40)  # d_x (and the dentries beside it)
    identity = DentryReader(guest["kernel"]).file(FILE, guest["root"])
    assert identity.path.startswith(b"?") and not identity.complete
    mappings, _ = maps_of(guest)
    assert mappings[0].name.startswith(b"?") and not mappings[0].complete


def test_unlinked_file_is_marked_deleted(guest: dict) -> None:
    guest["memory"].u64(guest["leaf"] + 0x10, 0)  # d_hash.pprev: unhashed
    assert maps_of(guest)[0][0].name == b"/tmp/d_x/f (deleted)"


# -- lsof ------------------------------------------------------------------------------------

FILES_STRUCT, FDTABLE, FD_ARRAY = K + 0xC000, K + 0xC100, K + 0xD000
SOCKET_FILE, SOCKET_DENTRY, SOCKET_INODE, DENTRY_OPS = (K + 0xE000, K + 0xE100, K + 0xE200,
                                                        K + 0xE300)
SOCKFS_DNAME = 0xFFFF_FFFF_8100_0000
LSOF_STRUCTS = {
    **STRUCTS,
    "task_struct": (0x100, {"fs": (0x10, "ptr"), "files": (0x18, "ptr")}),
    "files_struct": (0x40, {"fdt": (0x20, "ptr")}),
    "file": (0x40, {"f_path": (0x10, ("struct", "path")), "f_inode": (0x20, "ptr")}),
    "fdtable": (0x10, {"max_fds": (0, "u32"), "fd": (8, "ptr")}),
    "dentry": (0x80, {**STRUCTS["dentry"][1], "d_op": (0x60, "ptr"),
                      "d_fsdata": (0x78, "ptr")}),
    "dentry_operations": (0x80, {"d_dname": (0x48, "ptr")}),
    "inode": (0x300, {**STRUCTS["inode"][1], "i_mode": (0, "u32"),
                      "i_private": (0x270, "ptr")}),
}


@pytest.fixture
def lsof_guest(guest: dict, tmp_path: Path) -> dict:
    from xenhpt.linux.files import FilesReader

    memory = guest["memory"]
    isf = write_isf(tmp_path / "lsof.json", LSOF_STRUCTS,
                    {"special_mapping_vmops": SPECIAL_OPS, "sockfs_dname": SOCKFS_DNAME})
    memory.u64(TASK + 0x18, FILES_STRUCT)
    memory.u64(FILES_STRUCT + 0x20, FDTABLE)
    memory.u32(FDTABLE, 4)
    memory.u64(FDTABLE + 8, FD_ARRAY)
    memory.u64(FD_ARRAY, FILE, 0, SOCKET_FILE, 0)  # fd 0: the file, fd 2: a socket
    memory.write(INODE, (0o100644).to_bytes(2, "little"))
    memory.u64(FILE + 0x20, INODE)  # f_inode, as the dentry's
    # A socket: sockfs's dentry has d_op->d_dname = sockfs_dname; its inode is 4242.
    memory.u64(SOCKET_FILE + 0x10, guest["tmp_mount"], SOCKET_DENTRY, SOCKET_INODE)
    memory.u64(SOCKET_DENTRY + 0x18, SOCKET_DENTRY)
    memory.u64(SOCKET_DENTRY + 0x30, SOCKET_INODE)
    memory.u64(SOCKET_DENTRY + 0x60, DENTRY_OPS)
    memory.u64(DENTRY_OPS + 0x48, SOCKFS_DNAME)
    memory.write(SOCKET_INODE, (0o140777).to_bytes(2, "little"))
    memory.u64(SOCKET_INODE + 0x28, SB)
    memory.u64(SOCKET_INODE + 0x40, 4242)
    return {**guest, "reader": FilesReader(kernel(memory, isf))}


def test_lsof_names_a_path_and_a_socket_as_proc_does(lsof_guest: dict) -> None:
    row = lsof_guest["reader"].open_files(lsof_guest["task"], [])
    assert [(f.fd, f.kind, f.name, f.inode) for f in row.files] == [
        (0, "REG", b"/tmp/d_x/f", 3), (2, "SOCK", b"socket:[4242]", 4242)]
    from xenhpt.output.open_files import lsof_table

    assert lsof_table([row]).splitlines()[2].endswith(" 2 SOCK  00:16       4242  socket:[4242]")


def test_lsof_huge_max_fds_is_bounded_and_an_unreadable_stretch_is_one_marked_row(
        lsof_guest: dict) -> None:
    from xenhpt.linux.files import MAX_FDS

    memory = lsof_guest["memory"]
    memory.u32(FDTABLE, 0xFFFF_FFFF)  # max_fds: 4 billion, so the table runs on into
    problems: list[str] = []  # the pages after it (other objects), then unmapped ones
    row = lsof_guest["reader"].open_files(lsof_guest["task"], problems)
    assert "max_fds" in problems[0] and str(MAX_FDS) in problems[0]
    assert [(f.fd, f.name) for f in row.files] == [
        (0, b"/tmp/d_x/f"), (2, b"socket:[4242]"), (0x400, b"?")]  # K+0xF000: unmapped
    assert any("do not point at a struct file" in p for p in problems)  # the pages between
    assert any("descriptors from 1024 unreadable" in p for p in problems)


def test_random_corruption_never_raises_from_any_view(lsof_guest: dict) -> None:
    """Overwrite random words of the kernel objects with random values, pointers into
    them, small numbers or zero: every view still returns rows (a corrupt guest is not
    an exception), and quickly."""
    import random
    import time

    from xenhpt.linux.files import FilesReader

    memory, task = lsof_guest["memory"], lsof_guest["task"]
    pristine = {page: bytes(data) for page, data in memory.pages.items()}
    k = lsof_guest["reader"].kernel
    rng = random.Random(14)
    started = time.monotonic()
    for _ in range(300):
        memory.pages = {page: bytearray(data) for page, data in pristine.items()}
        for _ in range(rng.randrange(1, 12)):
            at = K + rng.randrange(0, 0xE400, 8)
            memory.u64(at, rng.choice([rng.getrandbits(64), K + rng.randrange(0, 0xE400, 8),
                                       rng.randrange(0, 4096), 0, at]))
        mm = MmReader(k)
        process_strings(mm, [task], "arguments")
        process_strings(mm, [task], "environment")
        process_mappings(VmaReader(k), mm, [task], [])
        FilesReader(k).open_files(task, [])
    assert time.monotonic() - started < 60


# -- sockstat --------------------------------------------------------------------------------

SOCKET, SOCK, UNIX_ADDR = K + 0xF000, K + 0xF100, K + 0xF800
SOCKET_FILE_OPS = 0xFFFF_FFFF_8200_1000
SOCK_STRUCTS = {
    **LSOF_STRUCTS,
    "file": (0x100, {"f_path": (0x10, ("struct", "path")), "f_inode": (0x20, "ptr"),
                     "f_op": (0x28, "ptr"), "private_data": (0xC8, "ptr")}),
    "socket": (0x30, {"state": (0, "u32"), "sk": (0x18, "ptr")}),
    "sock_common": (0x60, {"skc_daddr": (0, "u32"), "skc_rcv_saddr": (4, "u32"),
                           "skc_dport": (12, "u32"), "skc_num": (14, "u32"),
                           "skc_family": (16, "u32"), "skc_state": (18, "u32")}),
    "sock": (0x400, {"sk_type": (0x202, "u32"), "sk_protocol": (0x204, "u32")}),
    "unix_sock": (0x400, {"addr": (0x308, "ptr"), "peer": (0x360, "ptr")}),
    "unix_address": (0x10, {"len": (4, "u32"), "name": (8, ("struct", "sockaddr_un"))}),
    "sockaddr_un": (0x70, {"sun_path": (2, ("array", 108))}),
}


def socket_reader(lsof_guest: dict, tmp_path: Path) -> object:
    from xenhpt.linux.sockets import SocketReader

    isf = write_isf(tmp_path / "sock.json", SOCK_STRUCTS,
                    {"special_mapping_vmops": SPECIAL_OPS, "sockfs_dname": SOCKFS_DNAME,
                     "socket_file_ops": SOCKET_FILE_OPS})
    memory = lsof_guest["memory"]
    memory.u64(SOCKET_FILE + 0x20, SOCKET_INODE, SOCKET_FILE_OPS)  # f_inode, f_op
    memory.u64(SOCKET_FILE + 0xC8, SOCKET)
    memory.u32(SOCKET, 3)  # SS_CONNECTED
    memory.u64(SOCKET + 0x18, SOCK)
    return SocketReader(kernel(memory, isf))


def test_sockstat_reads_an_ipv4_connection(lsof_guest: dict, tmp_path: Path) -> None:
    from xenhpt.linux.files import OpenFile

    reader = socket_reader(lsof_guest, tmp_path)
    memory = lsof_guest["memory"]
    memory.write(SOCK, bytes([10, 0, 0, 2]) + bytes([127, 0, 0, 1]))  # daddr, rcv_saddr
    memory.write(SOCK + 12, (8080).to_bytes(2, "big") + (43572).to_bytes(2, "little"))
    memory.write(SOCK + 16, (2).to_bytes(2, "little") + bytes([1]))  # AF_INET, ESTABLISHED
    memory.write(SOCK + 0x202, (1).to_bytes(2, "little") + (6).to_bytes(2, "little"))
    found = reader.socket(OpenFile(2, SOCKET_FILE, b"socket:[4242]", "SOCK", 4242, 0))
    assert (found.family, found.type, found.protocol, found.state, found.local,
            found.local_port, found.remote, found.remote_port) == (
        "AF_INET", "STREAM", "TCP", "ESTABLISHED", b"127.0.0.1", 43572, b"10.0.0.2", 8080)
    regular = OpenFile(0, FILE, b"/tmp/d_x/f", "REG", 3, 0)
    assert reader.socket(regular) is None  # f_op is not socket_file_ops


def test_sockstat_unix_names_are_bounded_and_abstract_ones_marked(lsof_guest: dict,
                                                                  tmp_path: Path) -> None:
    from xenhpt.linux.files import OpenFile

    reader = socket_reader(lsof_guest, tmp_path)
    memory = lsof_guest["memory"]
    memory.write(SOCK + 16, (1).to_bytes(2, "little") + bytes([7]))  # AF_UNIX
    memory.write(SOCK + 0x202, (2).to_bytes(2, "little"))  # DGRAM
    memory.u64(SOCK + 0x308, UNIX_ADDR)
    memory.u32(UNIX_ADDR + 4, 0xFFFF_FFFF)  # a length the guest made up
    memory.write(UNIX_ADDR + 10, b"\0hidden\x1b" + b"A" * 200)
    found = reader.socket(OpenFile(2, SOCKET_FILE, b"socket:[4242]", "SOCK", 4242, 0))
    assert found.family == "AF_UNIX" and found.state == "CONNECTED"
    assert found.local.startswith(b"@hidden\x1b") and len(found.local) == 108
    from xenhpt.linux.sockets import ipv6_text

    assert ipv6_text(bytes(10) + b"\xff\xff" + bytes([127, 0, 0, 1])) == b"::ffff:127.0.0.1"
    assert ipv6_text(bytes(16)) == b"::"


# -- a 32-bit kernel's maple tree: 4-byte words, twice the slots -------------------------

I386_STRUCTS = {
    "maple_tree": (0xC, {"ma_root": (0x8, "ptr"), "ma_flags": (0x4, "u32")}),
    "maple_node": (0x100, {"parent": (0, "ptr")}),
    # include/linux/maple_tree.h without CONFIG_64BIT: MAPLE_RANGE64_SLOTS 32,
    # MAPLE_ARANGE64_SLOTS 21 (the pivots one fewer), in the same 256-byte node.
    "maple_range_64": (0x100, {"parent": (0, "ptr"), "pivot": (4, ("array", 31)),
                               "slot": (128, ("array", 32))}),
    "maple_arange_64": (0x100, {"parent": (0, "ptr"), "pivot": (4, ("array", 20)),
                                "slot": (84, ("array", 21))}),
}


def test_a_32_bit_maple_tree_is_walked_in_4_byte_words(tmp_path: Path) -> None:
    """An i386 guest's VMAs: the same tree with 4-byte pivots, slots and parent; the last
    slot runs up to ULONG_MAX of that kernel, 0xffffffff."""
    m = SparseMemory()
    tree, root, leaf_a, leaf_b = 0xC100_0000, 0xC100_1000, 0xC100_1100, 0xC100_1200
    vma_a, vma_b, vma_c = 0xC200_0000, 0xC200_0100, 0xC200_0200
    word = "<{}I".format

    def words(address: int, *values: int) -> None:
        m.write(address, struct.pack(word(len(values)), *values))

    words(tree + 0x8, root | (ARANGE_64 << 3) | 4 | 2)
    words(root, tree | 1)
    words(root + 4, 0x0804_9FFF)  # pivot 0: leaf A up to the end of the program
    words(root + 84, leaf_a | (LEAF_64 << 3) | 4, leaf_b | (LEAF_64 << 3) | 4)
    words(leaf_a, root)
    words(leaf_a + 4, 0x0804_7FFF, 0x0804_8FFF, 0x0804_9FFF)
    words(leaf_a + 128, 0, vma_a, vma_b)
    words(leaf_b, root)
    words(leaf_b + 4, 0xBFFD_EFFF, 0xBFFF_FFFF)
    words(leaf_b + 128, 0, vma_c)
    isf = write_isf(tmp_path / "i386.json", I386_STRUCTS, {"_text": 0xC100_0000},
                    pointer_size=4)
    walk = TreeWalk()
    found = list(MapleTreeReader(kernel(m, isf)).entries(tree, walk))
    assert walk.problems == []
    assert found == [(0x0804_8000, 0x0804_8FFF, vma_a), (0x0804_9000, 0x0804_9FFF, vma_b),
                     (0xBFFD_F000, 0xBFFF_FFFF, vma_c)]
