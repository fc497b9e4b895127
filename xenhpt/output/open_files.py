"""``lsof`` and ``sockstat``: each process's open descriptors and sockets, as text and
JSON lines.

Names are guest bytes, escaped (``escape.py``); a name whose parent directories could not
be read starts with ``?``, a slot that could not be read at all is ``?`` with type ``?``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from ..linux.files import ProcessFiles
from ..linux.sockets import ProcessSockets
from .escape import escape_text


def lsof_table(rows: Iterable[ProcessFiles]) -> str:
    lines = [f"{'PID':>7} {'COMM':<16} {'FD':>5} {'TYPE':<4} {'DEVICE':>6} {'INODE':>10}  NAME"]
    for row in rows:
        head = f"{row.task.pid:>7} {escape_text(row.task.comm):<16} "
        for f in row.files:
            device = f"{f.device >> 20:02x}:{f.device & 0xFFFFF:02x}"
            lines.append(head + f"{f.fd:>5} {f.kind:<4} {device:>6} {f.inode:>10}  "
                         f"{escape_text(f.name)}")
        if row.unreadable:
            lines.append(head + f"<{row.unreadable}>")
    return "\n".join(lines) + "\n"


def lsof_json(rows: Iterable[ProcessFiles]) -> str:
    out = []
    for row in rows:
        base = {"pid": row.task.pid, "comm": escape_text(row.task.comm)}
        for f in row.files:
            out.append(json.dumps({**base, "fd": f.fd, "type": f.kind,
                                   "major": f.device >> 20, "minor": f.device & 0xFFFFF,
                                   "inode": f.inode, "name": escape_text(f.name),
                                   "complete": f.complete, "file": f"{f.file:#x}"}) + "\n")
        if row.unreadable:
            out.append(json.dumps({**base, "fd": None, "unreadable": row.unreadable}) + "\n")
    return "".join(out)


def _endpoint(address: bytes, port: int | None) -> str:
    text = escape_text(address) if address else "-"
    return text if port is None else f"{text}:{port}"


def sockstat_table(rows: Iterable[ProcessSockets]) -> str:
    lines = [f"{'PID':>7} {'COMM':<16} {'FD':>4} {'FAMILY':<9} {'TYPE':<9} {'PROTO':<5} "
             f"{'STATE':<12} {'INODE':>8}  LOCAL -> REMOTE"]
    for row in rows:
        head = f"{row.task.pid:>7} {escape_text(row.task.comm):<16} "
        for s in row.sockets:
            lines.append(head + f"{s.fd:>4} {s.family:<9} {s.type:<9} {s.protocol:<5} "
                         f"{s.state:<12} {s.inode:>8}  {_endpoint(s.local, s.local_port)} -> "
                         f"{_endpoint(s.remote, s.remote_port)}"
                         + ("" if s.complete else " <unreadable>"))
        if row.unreadable:
            lines.append(head + f"<{row.unreadable}>")
    return "\n".join(lines) + "\n"


def sockstat_json(rows: Iterable[ProcessSockets]) -> str:
    out = []
    for row in rows:
        base = {"pid": row.task.pid, "comm": escape_text(row.task.comm)}
        for s in row.sockets:
            out.append(json.dumps({
                **base, "fd": s.fd, "inode": s.inode, "family": s.family, "type": s.type,
                "protocol": s.protocol, "state": s.state, "local": escape_text(s.local),
                "local_port": s.local_port, "remote": escape_text(s.remote),
                "remote_port": s.remote_port, "complete": s.complete}) + "\n")
        if row.unreadable:
            out.append(json.dumps({**base, "fd": None, "unreadable": row.unreadable}) + "\n")
    return "".join(out)
