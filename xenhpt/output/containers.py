"""The container columns (``--containers``): pid namespace, pid in it, cgroup.

One spelling for every view that has a row per task (``ps``, ``pstree``, ``psaux``,
``psxview``) and for the trace's records: JSON always carries all three keys when asked
(``pidns``, ``ns_pid``, ``cgroup``; null when unknown), text adds three columns before
the name. The cgroup path is guest text and goes through ``escape.py``.
"""

from __future__ import annotations

from ..linux.containers import Container
from .escape import escape_text

# Wide enough for a namespace inode (4026531836) and a typical systemd slice.
HEAD = f"{'PIDNS':>10} {'NSPID':>7} {'CGROUP':<24} "


def container_fields(container: Container | None) -> dict[str, object]:
    """The JSON keys, all three always (null when unknown)."""
    if container is None:
        return {"pidns": None, "ns_pid": None, "cgroup": None}
    return {"pidns": container.pidns, "ns_pid": container.ns_pid,
            "cgroup": None if container.cgroup is None else escape_text(container.cgroup)}


def container_cells(container: Container | None) -> str:
    """The three text columns, ``-`` where unknown, followed by one space."""
    c = container or Container(None, None, None)
    pidns = "-" if c.pidns is None else str(c.pidns)
    ns_pid = "-" if c.ns_pid is None else str(c.ns_pid)
    cgroup = "-" if c.cgroup is None else escape_text(c.cgroup)
    return f"{pidns:>10} {ns_pid:>7} {cgroup:<24} "


def container_label(container: Container | None) -> str:
    """A compact form for pstree and trace lines: ``{pidns 4026532114 pid 1 /box}``."""
    c = container or Container(None, None, None)
    pidns = "?" if c.pidns is None else str(c.pidns)
    ns_pid = "?" if c.ns_pid is None else str(c.ns_pid)
    cgroup = "" if c.cgroup is None else " " + escape_text(c.cgroup)
    return f"{{pidns {pidns} pid {ns_pid}{cgroup}}}"
