"""What processes hold in memory: ``psaux``, ``envars`` and ``maps``, as text and JSON lines.

Every guest string goes through ``escape.py``. A row whose memory could not all be read
is still printed, with what was read and a marker: ``<unreadable at 0x...>`` where
reading stopped, ``<truncated>`` past the length bound, ``?`` at the front of a path
whose parents were unreadable. JSON says the same in fields (``unreadable_at``,
``truncated``, ``complete``); addresses are hex strings (JSON numbers lose bits).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from ..linux.containers import Container
from ..linux.mm import ProcessStrings, UserStrings
from ..linux.vma import Mapping, ProcessMappings
from . import containers as columns
from .escape import escape_text


def _markers(strings: UserStrings) -> list[str]:
    out = []
    if strings.unreadable_at is not None:
        out.append(f"<unreadable at {strings.unreadable_at:#x}>")
    if strings.truncated:
        out.append("<truncated>")
    return out


def _marker_fields(strings: UserStrings | None) -> dict[str, object]:
    if strings is None:
        return {}
    out: dict[str, object] = {}
    if strings.unreadable_at is not None:
        out["unreadable_at"] = f"{strings.unreadable_at:#x}"
    if strings.truncated:
        out["truncated"] = True
    return out


# -- psaux -----------------------------------------------------------------------------------

def command_line(row: ProcessStrings) -> str:
    """The arguments as ps prints them; ``[comm]`` for a kernel thread, as ps does."""
    if row.strings is None:
        return f"[{escape_text(row.task.comm)}]"
    return " ".join([escape_text(arg) for arg in row.strings.strings] + _markers(row.strings))


def psaux_table(rows: Iterable[ProcessStrings],
                containers: dict[int, Container] | None = None) -> str:
    """With ``containers`` (task address → facts), the container columns before COMM."""
    extra = "" if containers is None else columns.HEAD
    lines = [f"{'PID':>7} {'PPID':>7} {'UID':>6} {extra}{'COMM':<16} ARGS"]
    for row in rows:
        t = row.task
        cells = "" if containers is None else columns.container_cells(containers.get(t.address))
        lines.append(f"{t.pid:>7} {t.ppid:>7} {t.uid:>6} {cells}{escape_text(t.comm):<16} "
                     f"{command_line(row)}")
    return "\n".join(lines) + "\n"


def psaux_json(rows: Iterable[ProcessStrings],
               containers: dict[int, Container] | None = None) -> str:
    out = []
    for row in rows:
        t = row.task
        args = None if row.strings is None else [escape_text(a) for a in row.strings.strings]
        extra = {} if containers is None else columns.container_fields(
            containers.get(t.address))
        out.append(json.dumps({"pid": t.pid, "ppid": t.ppid, "uid": t.uid,
                               "comm": escape_text(t.comm), "task": f"{t.address:#x}",
                               **extra, "args": args, **_marker_fields(row.strings)}) + "\n")
    return "".join(out)


# -- envars ----------------------------------------------------------------------------------

def split_variable(variable: bytes) -> tuple[str, str]:
    """(key, value) of ``KEY=VALUE``; a string without ``=`` is all key."""
    key, _, value = variable.partition(b"=")
    return escape_text(key), escape_text(value)


def envars_table(rows: Iterable[ProcessStrings]) -> str:
    lines = [f"{'PID':>7} {'PPID':>7} {'COMM':<16} VARIABLE"]
    for row in rows:
        if row.strings is None:
            continue
        t = row.task
        head = f"{t.pid:>7} {t.ppid:>7} {escape_text(t.comm):<16} "
        lines += [head + escape_text(variable) for variable in row.strings.strings]
        lines += [head + marker for marker in _markers(row.strings)]
    return "\n".join(lines) + "\n"


def envars_json(rows: Iterable[ProcessStrings]) -> str:
    """One object per variable; a process whose area ended unreadable adds one object
    with ``key`` null and the marker fields."""
    out = []
    for row in rows:
        if row.strings is None:
            continue
        t = row.task
        base = {"pid": t.pid, "ppid": t.ppid, "comm": escape_text(t.comm)}
        for variable in row.strings.strings:
            key, value = split_variable(variable)
            out.append(json.dumps({**base, "key": key, "value": value}) + "\n")
        if not row.strings.complete:
            out.append(json.dumps({**base, "key": None, "value": None,
                                   **_marker_fields(row.strings)}) + "\n")
    return "".join(out)


# -- maps ------------------------------------------------------------------------------------

def mapping_line(m: Mapping) -> str:
    """``start-end perms offset major:minor inode name``, as /proc/PID/maps writes it."""
    name = escape_text(m.name)
    return (f"{m.start:08x}-{m.end:08x} {m.permissions} {m.offset:08x} "
            f"{m.device >> 20:02x}:{m.device & 0xFFFFF:02x} {m.inode:<10} {name}").rstrip()


def maps_table(rows: Iterable[ProcessMappings]) -> str:
    """Per process, its mappings; a process whose mm was unreadable gets a marker line."""
    lines = [f"{'PID':>7} {'COMM':<16} MAPPING"]
    for row in rows:
        head = f"{row.task.pid:>7} {escape_text(row.task.comm):<16} "
        lines += [head + mapping_line(m) for m in row.mappings]
        if row.unreadable:
            lines.append(head + f"<{row.unreadable}>")
    return "\n".join(lines) + "\n"


def maps_json(rows: Iterable[ProcessMappings]) -> str:
    out = []
    for row in rows:
        base = {"pid": row.task.pid, "comm": escape_text(row.task.comm)}
        for m in row.mappings:
            out.append(json.dumps({
                **base, "start": f"{m.start:#x}", "end": f"{m.end:#x}",
                "permissions": m.permissions, "flags": f"{m.flags:#x}",
                "offset": m.offset, "major": m.device >> 20, "minor": m.device & 0xFFFFF,
                "inode": m.inode, "kind": m.kind, "name": escape_text(m.name),
                "complete": m.complete, "vma": f"{m.address:#x}"}) + "\n")
        if row.unreadable:
            out.append(json.dumps({**base, "start": None, "unreadable": row.unreadable}) + "\n")
    return "".join(out)
