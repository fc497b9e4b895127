"""Open files of a process: its descriptor table (``task->files->fdt``), named as
``ls -l /proc/PID/fd`` names them.

``files_struct.fdt`` points at the ``fdtable`` in use: ``max_fds`` slots of ``struct
file *`` at ``fd``. Each open file is named from its path (``dentry.py``), except the
files of pseudo-filesystems whose dentry operations have a ``d_dname`` (the kernel names
them when asked): ``socket:[INODE]``, ``pipe:[INODE]``, ``anon_inode:[eventfd]`` (the
dentry's own name), ``/NAME (deleted)`` (``simple_dname``: memfd and the like),
``net:[INODE]`` and the other namespaces (``ns_dname``: the namespace type's name).

The guest sets ``max_fds``: the table read is bounded, and a slot whose file cannot be
read is a row with what is known (its number and address) and a marker.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import MemoryReadError
from .dentry import DentryReader, FileIdentity, PathRoot
from .kernel import Kernel
from .tasks import Task

PAGE = 4096
UNREAD = -1  # a descriptor slot on an unreadable page, after the first one
MAX_FDS = 1 << 16  # far above any default RLIMIT_NOFILE (1024 soft, 4096 … 1M hard)
NAME_MAX = 255
S_IFMT = 0o170000
FILE_TYPES = {0o140000: "SOCK", 0o120000: "LNK", 0o100000: "REG", 0o060000: "BLK",
              0o040000: "DIR", 0o020000: "CHR", 0o010000: "FIFO"}


@dataclass(frozen=True)
class OpenFile:
    """One descriptor of a process."""

    fd: int
    file: int  # address of the struct file
    name: bytes  # path or pseudo name; guest bytes, escape before printing
    kind: str  # REG, DIR, CHR, BLK, FIFO, SOCK, LNK, or "?" if the inode is unreadable
    inode: int
    device: int  # s_dev
    complete: bool = True  # False when part of the name could not be read


@dataclass(frozen=True)
class ProcessFiles:
    """A row group of ``lsof``: a process and its open files, or why they are missing."""

    task: Task
    files: list[OpenFile]
    unreadable: str | None = None


@dataclass
class FilesWalk:
    rows: list[ProcessFiles] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class FilesReader:
    """Reads descriptor tables and names their files through a kernel profile."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        p = kernel.profile
        self.task_files = p.offset("task_struct", "files")
        self.fdt = p.offset("files_struct", "fdt")
        self.max_fds = p.offset("fdtable", "max_fds")
        self.fd = p.offset("fdtable", "fd")
        self.d_op = p.offset("dentry", "d_op")
        self.d_dname = p.offset("dentry_operations", "d_dname")
        self.i_mode = p.offset("inode", "i_mode")
        self.f_inode = p.offset("file", "f_inode")
        self.dentries = DentryReader(kernel)
        self.dname = {kernel.symbol(name): name for name in (
            "sockfs_dname", "pipefs_dname", "anon_inodefs_dname", "simple_dname",
            "ns_dname") if kernel.has_symbol(name)}
        # ns_dname's namespace: d_fsdata -> proc_ns_operations before 6.9, then
        # inode->i_private -> ns_common whose ->ops is it (ns_common.stashed a pointer).
        self.ns_ops_name = p.offset("proc_ns_operations", "name") \
            if p.has_struct("proc_ns_operations") else None
        self.ns_via_inode = p.has_field("ns_common", "stashed") and \
            p.field_type("ns_common", "stashed").get("kind") == "pointer"
        self.d_fsdata = p.offset("dentry", "d_fsdata")
        self.i_private = p.offset("inode", "i_private")
        self.ns_common_ops = p.offset("ns_common", "ops") if p.has_struct("ns_common") else 0

    def open_files(self, task: Task, problems: list[str]) -> ProcessFiles:
        k = self.kernel
        try:
            files = k.pointer(task.address + self.task_files)
            if not files:
                return ProcessFiles(task, [])  # an exiting task, or a kernel thread's
            table = k.pointer(files + self.fdt)
            count = k.u32(table + self.max_fds)
            array = k.pointer(table + self.fd)
        except MemoryReadError as exc:
            return ProcessFiles(task, [], f"descriptor table unreadable ({exc})")
        if count > MAX_FDS:
            problems.append(f"pid {task.pid}: max_fds {count} > {MAX_FDS}; "
                            f"only the first {MAX_FDS} read")
            count = MAX_FDS
        try:
            width = k.pointer_size
            raw = k.read(array, count * width) if count else b""
            slots = tuple(k.pointer_at(raw, i) for i in range(0, len(raw), width))
        except MemoryReadError:
            slots = self._slots_by_page(array, count, task, problems)
        root = self.dentries.task_root(task.address)
        out = []
        strays = 0
        for fd, address in enumerate(slots):
            if address is None:  # the first slot of an unreadable stretch
                out.append(OpenFile(fd, 0, b"?", "?", 0, 0, complete=False))
            elif address == 0 or address == UNREAD:
                continue
            elif not self._is_file(address):
                strays += 1
            else:
                out.append(self._open_file(fd, address, root))
        if strays:
            problems.append(f"pid {task.pid}: {strays} descriptor slots do not point at a "
                            "struct file (smeared or corrupt table); skipped")
        return ProcessFiles(task, out)

    def _slots_by_page(self, array: int, count: int, task: Task,
                       problems: list[str]) -> list[int | None]:
        """The slots of a table that spans an unreadable page: the first slot of each
        unreadable stretch is None (a marked row), the rest of it UNREAD (no row)."""
        slots: list[int | None] = []
        k = self.kernel
        width = k.pointer_size
        at, end = array, array + count * width
        while at < end:
            size = min(end, (at | (PAGE - 1)) + 1) - at
            try:
                raw = k.read(at, size)
                slots += [k.pointer_at(raw, i) for i in range(0, size, width)]
            except MemoryReadError:
                first = len(slots)
                slots += [UNREAD] * (size // width)
                if first == 0 or slots[first - 1] != UNREAD:
                    slots[first] = None
                    problems.append(f"pid {task.pid}: descriptors from {first} unreadable "
                                    f"(fd array page {at & ~(PAGE - 1):#x})")
            at += size
        return slots

    def _is_file(self, address: int) -> bool:
        """A struct file's f_inode is its dentry's d_inode: garbage fails that."""
        k = self.kernel
        try:
            dentry = k.pointer(address + self.dentries.file_path + self.dentries.path_dentry)
            return dentry != 0 and k.pointer(address + self.f_inode) == \
                k.pointer(dentry + self.dentries.d_inode)
        except MemoryReadError:
            return False

    def _open_file(self, fd: int, address: int, root: PathRoot) -> OpenFile:
        k = self.kernel
        identity: FileIdentity = self.dentries.file(address, root)
        kind = "?"
        try:
            dentry = k.pointer(address + self.dentries.file_path + self.dentries.path_dentry)
            inode = k.pointer(dentry + self.dentries.d_inode)
            if inode:
                mode = struct.unpack("<H", k.read(inode + self.i_mode, 2))[0]
                kind = FILE_TYPES.get(mode & S_IFMT, "?")
            name = self._pseudo_name(dentry, inode, identity.inode)
        except MemoryReadError:
            name = None
        return OpenFile(fd, address, identity.path if name is None else name, kind,
                        max(identity.inode, 0), max(identity.device, 0),
                        identity.complete)

    def _pseudo_name(self, dentry: int, inode: int, ino: int) -> bytes | None:
        """The name the kernel's d_dname gives this dentry, or None for a real path."""
        k = self.kernel
        ops = k.pointer(dentry + self.d_op)
        if not ops:
            return None
        dname = k.pointer(ops + self.d_dname)
        if not dname:
            return None
        which = self.dname.get(dname)
        if which == "sockfs_dname":
            return b"socket:[%d]" % ino
        if which == "pipefs_dname":
            return b"pipe:[%d]" % ino
        if which == "anon_inodefs_dname":
            return b"anon_inode:" + self.dentries.name(dentry)
        if which == "simple_dname":
            return b"/" + self.dentries.name(dentry) + b" (deleted)"
        if which == "ns_dname" and self.ns_ops_name is not None:
            if self.ns_via_inode:
                ops_struct = k.pointer(k.pointer(inode + self.i_private) + self.ns_common_ops)
            else:
                ops_struct = k.pointer(dentry + self.d_fsdata)
            pointer = k.pointer(ops_struct + self.ns_ops_name)
            kind = k.read(pointer, 16).split(b"\0", 1)[0]
            return kind + b":[%d]" % ino
        return b"?d_dname@%x:[%d]" % (dname, ino)  # a d_dname this view does not know


def process_files(reader: FilesReader, tasks: Iterable[Task],
                  problems: list[str]) -> list[ProcessFiles]:
    """The open files of every process in ``tasks`` (thread-group leaders: threads share
    their leader's table unless created without CLONE_FILES)."""
    return [reader.open_files(task, problems) for task in tasks]
