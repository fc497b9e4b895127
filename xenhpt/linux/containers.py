"""Which container a task runs in: its pid namespace, its pid there, its cgroup.

These are what ``/proc/PID/ns/pid`` and ``/proc/PID/cgroup`` show, read from the task:

- the pid namespace is ``task_active_pid_ns()``: ``task->thread_pid->numbers[level].ns``,
  named by its inode number (``ns.inum``, the number in ``pid:[4026532114]``);
- the pid inside it is the same ``upid``'s ``nr``, taken from the thread-group leader's
  ``struct pid`` so that a thread shows its process's namespace pid, as ``ps`` would;
- the cgroup is the task's cgroup on the default (v2) hierarchy,
  ``task->cgroups->dfl_cgrp->kn``, named by walking the kernfs nodes up to the root.

A guest that never mounted cgroup2 (v1 only) keeps every task in the default
hierarchy's root, which the kernel itself does not show (``cgrp_dfl_visible`` is false):
there the cgroup is None and :attr:`ContainerReader.cgroup_v2` says why.

Guest memory is hostile: the namespace level is bounded (the kernel's own
``MAX_PID_NS_LEVEL``), the kernfs walk is bounded and cycle-checked, names are bounded,
and what cannot be read is None (the pid fields) or a path with ``?`` where the unread
part is, never an exception.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import MemoryReadError, ProfileError
from .kernel import Kernel

MAX_PID_NS_LEVEL = 32  # include/linux/pid_namespace.h
MAX_CGROUP_DEPTH = 64  # deeper than any real hierarchy; a longer chain is corrupt
NAME_MAX = 255  # a kernfs node's name is a file name

# What every reader needs from the profile: (struct, field) pairs, in one place so that
# an old profile is refused with the whole list at once.
FIELDS = (("task_struct", "thread_pid"), ("task_struct", "group_leader"),
          ("task_struct", "cgroups"), ("pid", "level"), ("pid", "numbers"), ("upid", "nr"),
          ("upid", "ns"), ("pid_namespace", "ns.inum"), ("css_set", "dfl_cgrp"),
          ("cgroup", "kn"), ("kernfs_node", "name"))


@dataclass(frozen=True)
class Container:
    """A task's pid namespace (inode number), its pid there, and its cgroup v2 path."""

    pidns: int | None  # None: unreadable
    ns_pid: int | None
    cgroup: str | None  # None: unreadable, or no cgroup v2 in the guest


class ContainerReader:
    """Reads :class:`Container` facts of tasks; ProfileError for a profile without them."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        p = kernel.profile
        missing = [f"{s}.{f}" for s, f in FIELDS if not p.has_field(s, f)]
        # kernfs_node.parent became __parent (RCU-protected) in 6.15.
        parent = next((f for f in ("parent", "__parent") if p.has_field("kernfs_node", f)),
                      None)
        if parent is None:
            missing.append("kernfs_node.parent")
        if missing:
            raise ProfileError(f"profile {p.path.name} lacks what the container fields need "
                               f"({', '.join(missing)}): a kernel before 4.19 or a stripped "
                               "profile; rebuild it with 'xenhpt profile build'")
        self.thread_pid = p.offset("task_struct", "thread_pid")
        self.group_leader = p.offset("task_struct", "group_leader")
        self.cgroups = p.offset("task_struct", "cgroups")
        self.pid_level = p.offset("pid", "level")
        self.pid_numbers = p.offset("pid", "numbers")
        self.upid_size = p.size("upid")
        self.upid_nr = p.offset("upid", "nr")
        self.upid_ns = p.offset("upid", "ns")
        self.ns_inum = p.offset("pid_namespace", "ns.inum")
        self.dfl_cgrp = p.offset("css_set", "dfl_cgrp")
        self.cgroup_kn = p.offset("cgroup", "kn")
        self.kn_name = p.offset("kernfs_node", "name")
        self.kn_parent = p.offset("kernfs_node", parent)
        self.cgroup_v2 = self._cgroup_v2_visible()

    def _cgroup_v2_visible(self) -> bool | None:
        """Whether the guest ever mounted cgroup2 (None: the profile cannot tell)."""
        if not self.kernel.has_symbol("cgrp_dfl_visible"):
            return None
        try:
            return self.kernel.read(self.kernel.symbol("cgrp_dfl_visible"), 1) != b"\0"
        except MemoryReadError:
            return None

    def read(self, task_address: int) -> Container:
        """The container facts of the task at ``task_address``, None where unreadable."""
        pidns, ns_pid = self._pid_namespace(task_address)
        cgroup = self._cgroup(task_address) if self.cgroup_v2 is not False else None
        return Container(pidns, ns_pid, cgroup)

    def _pid_namespace(self, task: int) -> tuple[int | None, int | None]:
        k = self.kernel
        try:
            leader = k.pointer(task + self.group_leader) or task
            pid = k.pointer(leader + self.thread_pid)
            if not pid:
                return None, None  # a task being torn down has detached its pid
            level = k.u32(pid + self.pid_level)
            if level > MAX_PID_NS_LEVEL:
                return None, None
            upid = k.read(pid + self.pid_numbers + level * self.upid_size, self.upid_size)
            nr = struct.unpack_from("<i", upid, self.upid_nr)[0]
            ns = k.pointer_at(upid, self.upid_ns)
            inum = k.u32(ns + self.ns_inum) if ns else None
        except MemoryReadError:
            return None, None
        return inum, nr

    def _cgroup(self, task: int) -> str | None:
        k = self.kernel
        try:
            css_set = k.pointer(task + self.cgroups)
            cgroup = k.pointer(css_set + self.dfl_cgrp) if css_set else 0
            node = k.pointer(cgroup + self.cgroup_kn) if cgroup else 0
        except MemoryReadError:
            return None
        if not node:
            return None
        return self.kernfs_path(node)

    def kernfs_path(self, node: int) -> str:
        """The path of a kernfs node below its root, as ``kernfs_path_from_node`` writes it
        (the root's own name is not part of it); ``?/`` before the part that was read
        when a parent could not be, or the chain is too deep or loops."""
        k = self.kernel
        names: list[str] = []
        seen: set[int] = set()
        for _ in range(MAX_CGROUP_DEPTH):
            if node in seen:
                break
            seen.add(node)
            try:
                parent = k.pointer(node + self.kn_parent)
                if not parent:  # the hierarchy's root: its name is not in the path
                    return "/" + "/".join(reversed(names))
                names.append(self._name(k.pointer(node + self.kn_name)))
            except MemoryReadError:
                break
            node = parent
        return "?/" + "/".join(reversed(names))

    def _name(self, address: int) -> str:
        """A node's name, bounded; kept as the bytes' escape-safe text for the renderers."""
        raw = b""
        # Read in two steps: a short name near the end of a page must not fail the read.
        for size in (64, NAME_MAX + 1):
            try:
                raw = self.kernel.read(address, size)
            except MemoryReadError:
                if size == 64:
                    raise
                break
            if b"\0" in raw:
                break
        return raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")

