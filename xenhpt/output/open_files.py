"""``lsof``: each process's open descriptors, as text and JSON lines.

Names are guest bytes, escaped (``escape.py``); a name whose parent directories could not
be read starts with ``?``, a slot that could not be read at all is ``?`` with type ``?``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from ..linux.files import ProcessFiles
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
