"""File paths from dentries: the kernel's ``d_path()``, done from outside.

A ``struct path`` is a (``vfsmount``, ``dentry``) pair. Its name is built from the leaf
up: each dentry's ``d_name``, then its ``d_parent``, until the root of that mount; there
the walk continues from the mount point in the parent mount (``struct mount`` wraps the
``vfsmount``: ``mnt_parent``, ``mnt_mountpoint``), and it stops at the task's root
(``task->fs->root``) or at the global root, whichever comes first, as ``prepend_path()``
does. A dentry no longer hashed (``d_hash.pprev`` NULL) that is not a root was unlinked:
its path gets `` (deleted)``, as in ``/proc/PID/maps``.

Hostile memory: the depth and every name's length are bounded, a (mount, dentry) pair
seen twice ends the walk, and an unreadable link gives the part of the path read so far
prefixed by ``?`` (``?/lib/libc.so.6``: the leaf is known, its parents are not).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MemoryReadError
from .kernel import Kernel

MAX_DEPTH = 256  # path components (PATH_MAX is 4096 bytes; deeper is a loop or a lie)
NAME_MAX = 255
UNKNOWN_PREFIX = b"?"


@dataclass(frozen=True)
class PathRoot:
    """Where a task's paths start: its ``fs->root`` (vfsmount, dentry), or (0, 0)."""

    vfsmount: int
    dentry: int


@dataclass(frozen=True)
class FileIdentity:
    """What ``/proc/PID/maps`` shows of a file besides its path."""

    path: bytes  # guest bytes: escape before printing
    inode: int  # -1 if unreadable
    device: int  # the superblock's s_dev (major << 20 | minor), -1 if unreadable
    complete: bool  # False when part of the path could not be read

    @property
    def major(self) -> int:
        return self.device >> 20 if self.device >= 0 else -1

    @property
    def minor(self) -> int:
        return self.device & 0xFFFFF if self.device >= 0 else -1


class DentryReader:
    """Turns ``struct file``s and ``struct path``s into names, through a kernel profile."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        p = kernel.profile
        self.file_path = p.offset("file", "f_path")
        self.path_mnt = p.offset("path", "mnt")
        self.path_dentry = p.offset("path", "dentry")
        self.d_parent = p.offset("dentry", "d_parent")
        self.d_name = p.offset("dentry", "d_name")
        self.qstr_len = p.offset("qstr", "len")
        self.qstr_name = p.offset("qstr", "name")
        self.d_inode = p.offset("dentry", "d_inode")
        self.d_hash_pprev = p.offset("dentry", "d_hash") + kernel.pointer_size  # .pprev
        self.mount_mnt = p.offset("mount", "mnt")
        self.mnt_parent = p.offset("mount", "mnt_parent")
        self.mnt_mountpoint = p.offset("mount", "mnt_mountpoint")
        self.mnt_root = p.offset("vfsmount", "mnt_root")
        self.i_ino = p.offset("inode", "i_ino")
        self.i_sb = p.offset("inode", "i_sb")
        self.s_dev = p.offset("super_block", "s_dev")
        self.task_fs = p.offset("task_struct", "fs")
        self.fs_root = p.offset("fs_struct", "root")

    def task_root(self, task_address: int) -> PathRoot:
        """The task's root directory; (0, 0), the global root, if it cannot be read."""
        k = self.kernel
        try:
            fs = k.pointer(task_address + self.task_fs)
            if not fs:
                return PathRoot(0, 0)
            root = fs + self.fs_root
            return PathRoot(k.pointer(root + self.path_mnt), k.pointer(root + self.path_dentry))
        except MemoryReadError:
            return PathRoot(0, 0)

    def file(self, file_address: int, root: PathRoot) -> FileIdentity:
        """Path, inode and device of the ``struct file`` at ``file_address``."""
        k = self.kernel
        try:
            vfsmount = k.pointer(file_address + self.file_path + self.path_mnt)
            dentry = k.pointer(file_address + self.file_path + self.path_dentry)
        except MemoryReadError:
            return FileIdentity(UNKNOWN_PREFIX, -1, -1, False)
        inode = device = -1
        try:
            node = k.pointer(dentry + self.d_inode)
            if node:
                inode = k.pointer(node + self.i_ino)
                device = k.u32(k.pointer(node + self.i_sb) + self.s_dev)
        except MemoryReadError:
            pass
        path, complete = self.path(vfsmount, dentry, root)
        return FileIdentity(path, inode, device, complete)

    def path(self, vfsmount: int, dentry: int, root: PathRoot) -> tuple[bytes, bool]:
        """(the path name, whether every part of it was readable)."""
        k = self.kernel
        names: list[bytes] = []
        seen: set[tuple[int, int]] = set()
        leaf = dentry
        try:
            for _ in range(MAX_DEPTH):
                if (vfsmount, dentry) == (root.vfsmount, root.dentry) or \
                        (vfsmount, dentry) in seen:
                    break
                seen.add((vfsmount, dentry))
                parent = k.pointer(dentry + self.d_parent)
                if dentry == k.pointer(vfsmount + self.mnt_root) or dentry == parent:
                    if dentry != k.pointer(vfsmount + self.mnt_root):
                        break  # a root dentry that is not its mount's root: detached
                    mount = vfsmount - self.mount_mnt
                    up = k.pointer(mount + self.mnt_parent)
                    if up == mount or not up:
                        break  # the global root
                    dentry = k.pointer(mount + self.mnt_mountpoint)
                    vfsmount = up + self.mount_mnt
                    continue
                names.append(self.name(dentry))
                dentry = parent
            path = b"/" + b"/".join(reversed(names))
            if self._unlinked(leaf):
                path += b" (deleted)"
            return path, True
        except MemoryReadError:
            return UNKNOWN_PREFIX + b"/" + b"/".join(reversed(names)), False

    def name(self, dentry: int) -> bytes:
        """One dentry's own name (at most NAME_MAX bytes)."""
        k = self.kernel
        length = min(k.u32(dentry + self.d_name + self.qstr_len), NAME_MAX)
        pointer = k.pointer(dentry + self.d_name + self.qstr_name)
        return k.read(pointer, length).split(b"\0", 1)[0] if length else b""

    def _unlinked(self, dentry: int) -> bool:
        """d_unlinked(): no longer in the dentry hash, and not a root."""
        k = self.kernel
        try:
            return (k.pointer(dentry + self.d_hash_pprev) == 0
                    and k.pointer(dentry + self.d_parent) != dentry)
        except MemoryReadError:
            return False
