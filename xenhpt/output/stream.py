"""Renderers for the syscall stream: strace-like text, JSON Lines, and the -c summary.

Text lines look like strace's, prefixed by who made the call:
``[pid 97 sh] openat(AT_FDCWD, "/tmp/x", O_WRONLY|O_CREAT|O_TRUNC, 0644) = 3``.
The JSON schema is documented in docs/tracing.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TextIO

from ..tracer.records import ProcessEvent, SyscallRecord
from .containers import container_fields, container_label
from .escape import escape_text


def text_line(record: SyscallRecord, show_time: bool = False,
              containers: bool = False) -> str:
    # Like strace -f, the number is the thread's id (equal to the pid for a main thread).
    where = container_label(record.container) if containers else ""
    who = f"[pid {record.tid} {escape_text(record.comm)}{where}]"
    if not record.finished:
        return f"{who} {record.decoded} <unfinished ...>"
    line = f"{who} {record.decoded} = {record.ret_text}"
    if show_time and record.duration_us is not None:
        line += f" <{record.duration_us / 1e6:.6f}>"
    return line


def json_record(record: SyscallRecord, containers: bool = False) -> dict[str, object]:
    """One call as JSON; ``containers`` adds ``pidns``, ``ns_pid``, ``cgroup`` (null when
    unknown)."""
    out: dict[str, object] = {
        "type": "syscall", "ts": round(record.ts, 6), "vcpu": record.vcpu,
        "pid": record.pid, "tid": record.tid, "ppid": record.ppid,
        "comm": escape_text(record.comm), "abi": record.abi,
        "mechanism": record.mechanism, "nr": record.nr, "name": record.name,
        "args": list(record.args), "decoded": record.decoded, "ret": record.ret,
        "ret_text": record.ret_text,
        "errno": record.errno,
        "duration_us": None if record.duration_us is None else round(record.duration_us, 1),
        "finished": record.finished,
    }
    if containers:
        out.update(container_fields(record.container))
    return out


def json_event(event: ProcessEvent) -> dict[str, object]:
    detail = {key: escape_text(value) if isinstance(value, bytes) else value
              for key, value in event.detail.items()}
    return {"type": "process", "event": event.kind, "ts": round(event.ts, 6),
            "pid": event.pid, "ppid": event.ppid, "comm": escape_text(event.comm), **detail}


@dataclass
class _Row:
    calls: int = 0
    errors: int = 0
    total_us: float = 0.0


class StreamSink:
    """Writes records as they come (flushed per line: a killed trace loses nothing)."""

    def __init__(self, out: TextIO, as_json: bool = False, summary: bool = False,
                 show_time: bool = False, containers: bool = False) -> None:
        self.out = out
        # Each record carries its container facts: shown with --containers, and in JSON
        # always (the schema has the fields; null where nothing was read).
        self.containers = containers or as_json
        self.as_json = as_json
        self.summary = summary
        self.show_time = show_time
        self.printed = 0
        self.rows: dict[str, _Row] = {}

    def syscall(self, record: SyscallRecord) -> None:
        if self.summary:
            row = self.rows.setdefault(record.name, _Row())
            row.calls += 1
            row.errors += record.errno is not None
            row.total_us += record.duration_us or 0.0
        else:
            line = (json.dumps(json_record(record, self.containers)) if self.as_json
                    else text_line(record, self.show_time, self.containers))
            self.out.write(line + "\n")
            self.out.flush()
        self.printed += 1

    def process_event(self, event: ProcessEvent) -> None:
        if self.as_json and not self.summary:
            self.out.write(json.dumps(json_event(event)) + "\n")
            self.out.flush()

    def close(self) -> None:
        if self.summary:
            self.out.write(summary_table(self.rows))
        self.out.flush()


def summary_table(rows: dict[str, _Row]) -> str:
    """strace -c's table: share of time, seconds, usecs/call, calls, errors, syscall."""
    total = sum(r.total_us for r in rows.values()) or 1.0
    lines = ["% time     seconds  usecs/call     calls    errors syscall",
             "------ ----------- ----------- --------- --------- ----------------"]
    ordered = sorted(rows.items(), key=lambda item: (-item[1].total_us, item[0]))
    for name, r in ordered:
        lines.append(f"{100 * r.total_us / total:6.2f} {r.total_us / 1e6:11.6f} "
                     f"{int(r.total_us / max(r.calls, 1)):11d} {r.calls:9d} "
                     f"{r.errors if r.errors else '':>9} {name}")
    calls = sum(r.calls for r in rows.values())
    errors = sum(r.errors for r in rows.values())
    seconds = sum(r.total_us for r in rows.values()) / 1e6
    lines += ["------ ----------- ----------- --------- --------- ----------------",
              f"100.00 {seconds:11.6f} {int(seconds * 1e6 / max(calls, 1)):11d} "
              f"{calls:9d} {errors if errors else '':>9} total"]
    return "\n".join(lines) + "\n"
