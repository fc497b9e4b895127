"""Record a live trace's raw trap data, and replay it through the engine with no guest.

A recording holds every :class:`TrapRecord` the capture handed the engine, each with the
guest bytes the decoder read through its ``read`` while that record was being handled
(and the reads that failed), plus what the engine started from: the task list that seeded
the process tree, the call filter and the decoder's string limit. Replaying it through a
fresh :class:`SyscallEngine` (decode → pair → tree → output) prints what the live trace
printed, and measures that pipeline alone: no hypervisor, no trap.

File format: JSON Lines. The first line is the header::

    {"type": "xenhpt-recording", "version": 1, "string_limit": 32, "numbers": null,
     "pids": null, "comm": null, "follow": false, "tasks": [[pid, ppid, comm_hex,
     address, parent_address, uid], ...]}

then one line per trap record::

    {"kind": "entry", "ts": ..., "vcpu": 0, "task": [address, pid, tid, ppid, comm_hex],
     "abi": "x86_64", "mechanism": "syscall", "nr": 0, "args": [...], "ret": null,
     "sp": 140737..., "readable": true, "reads": [[address, size, hex or null], ...]}

(``null`` bytes: that read raised MemoryReadError; ``readable`` false: the record came
without a ``read`` at all.)
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ..errors import MemoryReadError, XenhptError
from ..linux.process_tree import ProcessTree
from ..linux.tasks import Task
from ..syscalls.decode import Decoder
from .engine import CallFilter, Sink, SyscallEngine
from .records import ReadMemory, TaskIdentity, TrapRecord

FORMAT = "xenhpt-recording"
VERSION = 1
# A recorded read: (address, size, the bytes, or None when it raised MemoryReadError).
Read = tuple[int, int, bytes | None]
# What one record's reads returned, by (address, size).
Memory = dict[tuple[int, int], bytes | None]


class RecordingError(XenhptError):
    """A recording file is missing, truncated or not a xenhpt recording."""


class RecordingEngine(SyscallEngine):
    """The engine, unchanged, that also writes each record it handles to a recording.

    Each record's ``read`` is wrapped to log what the decoder asked for and got; the
    record and its reads are written once the engine is done with it (a read is valid
    only during the engine call).
    """

    def __init__(self, recording: TextIO, decoder: Decoder, sink: Sink,
                 call_filter: CallFilter | None = None, tree: ProcessTree | None = None,
                 tasks: list[Task] | None = None) -> None:
        super().__init__(decoder, sink, call_filter, tree)
        self.recording = recording
        self.recorded = 0
        f = self.filter
        header = {"type": FORMAT, "version": VERSION, "string_limit": decoder.string_limit,
                  "numbers": None if f.numbers is None else
                  {abi: sorted(numbers) for abi, numbers in f.numbers.items()},
                  "pids": None if f.pids is None else sorted(f.pids),
                  "comm": None if f.comm is None else f.comm.hex(), "follow": f.follow,
                  "tasks": [[t.pid, t.ppid, t.comm.hex(), t.address, t.parent_address, t.uid]
                            for t in tasks or ()]}
        recording.write(json.dumps(header) + "\n")

    def feed(self, record: TrapRecord) -> bool:
        reads: list[Read] = []
        record.read = _logging_reader(record.read, reads)
        try:
            return super().feed(record)
        finally:
            self._write(record, reads)

    def _write(self, record: TrapRecord, reads: list[Read]) -> None:
        task = record.task
        self.recording.write(json.dumps({
            "kind": record.kind, "ts": record.ts, "vcpu": record.vcpu,
            "task": [task.task, task.pid, task.tid, task.ppid, task.comm.hex()],
            "abi": record.abi, "mechanism": record.mechanism, "nr": record.nr,
            "args": list(record.args), "ret": record.ret, "sp": record.stack_pointer,
            "readable": record.read is not None, "live": record.reads_live,
            "reads": [[a, s, None if data is None else data.hex()] for a, s, data in reads],
        }) + "\n")
        self.recorded += 1


def _logging_reader(read: ReadMemory | None, reads: list[Read]) -> ReadMemory | None:
    if read is None:
        return None

    def logged(address: int, size: int) -> bytes:
        try:
            data = read(address, size)
        except MemoryReadError:
            reads.append((address, size, None))
            raise
        reads.append((address, size, bytes(data)))
        return data

    return logged


# -- replay ------------------------------------------------------------------------------

@dataclass
class Recording:
    """A loaded recording: the engine's starting point and the trap records, parsed."""

    header: dict[str, Any]
    records: list[tuple[TrapRecord, Memory | None]]

    def call_filter(self) -> CallFilter:
        h = self.header
        numbers = None if h["numbers"] is None else {abi: set(n) for abi, n in
                                                      h["numbers"].items()}
        return CallFilter(numbers, None if h["pids"] is None else set(h["pids"]),
                          None if h["comm"] is None else bytes.fromhex(h["comm"]), h["follow"])

    def process_tree(self) -> ProcessTree:
        tasks = [Task(address=address, pid=pid, tid=pid, comm=bytes.fromhex(comm), state=0,
                      parent_address=parent, ppid=ppid, uid=uid, mm=0, pgd=0, start_time=0,
                      flags=0)
                 for pid, ppid, comm, address, parent, uid in self.header["tasks"]]
        tree = ProcessTree.from_tasks(tasks)
        tree.graph  # noqa: B018 - as in the live tracer: the networkx graph is kept in step
        return tree


def load_recording(path: Path) -> Recording:
    """Parse a recording into memory (so a timed replay measures the pipeline, not JSON)."""
    try:
        lines = iter(path.open())
        header = json.loads(next(lines))
        if header.get("type") != FORMAT or header.get("version") != VERSION:
            raise RecordingError(f"{path} is not a version-{VERSION} xenhpt recording")
        records = [_parse(json.loads(line)) for line in lines if line.strip()]
    except OSError as exc:
        raise RecordingError(f"cannot read recording {path}: {exc.strerror}") from None
    except (StopIteration, ValueError, KeyError, TypeError) as exc:
        raise RecordingError(f"{path} is truncated or corrupt ({exc})") from None
    return Recording(header, records)


def _parse(item: dict[str, Any]) -> tuple[TrapRecord, Memory | None]:
    task, pid, tid, ppid, comm = item["task"]
    record = TrapRecord(item["kind"], item["ts"], item["vcpu"],
                        TaskIdentity(task, pid, tid, ppid, bytes.fromhex(comm)), item["abi"],
                        item["mechanism"], item["nr"], tuple(item["args"]), item["ret"],
                        stack_pointer=item["sp"], reads_live=bool(item.get("live", False)))
    if not item["readable"]:
        return record, None
    return record, {(a, s): None if data is None else bytes.fromhex(data)
                    for a, s, data in item["reads"]}


def _replay_reader(memory: Memory | None) -> ReadMemory | None:
    """Guest memory as the decoder saw it at this trap; anything it did not read fails."""
    if memory is None:
        return None

    def read(address: int, size: int) -> bytes:
        data = memory.get((address, size))
        if data is None:
            raise MemoryReadError(address, "not in the recording")
        return data

    return read


@dataclass
class ReplayResult:
    records: int  # trap records fed to the engine
    emitted: int  # syscall records the engine handed the sink
    seconds: float  # wall time of the pipeline (engine + sink), parsing excluded
    cpu_seconds: float  # CPU time of this process over the same span

    @property
    def us_per_record(self) -> float:
        return self.seconds * 1e6 / max(self.records, 1)

    @property
    def us_per_call(self) -> float:
        return self.seconds * 1e6 / max(self.emitted, 1)

    @property
    def cpu_us_per_record(self) -> float:
        return self.cpu_seconds * 1e6 / max(self.records, 1)


def replay(recording: Recording, sink: Sink) -> ReplayResult:
    """Feed every recorded trap through a fresh engine into ``sink``, as the live run did."""
    h = recording.header
    engine = SyscallEngine(Decoder(h["string_limit"]), sink, recording.call_filter(),
                           recording.process_tree())
    fed = list(_with_readers(recording))
    started, cpu_started = time.perf_counter(), time.process_time()
    for record in fed:
        engine.feed(record)
    engine.finish()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return ReplayResult(len(fed), engine.stats.emitted, seconds, cpu)


def _with_readers(recording: Recording) -> Iterator[TrapRecord]:
    """Fresh copies (the engine keeps entry records while calls are pending)."""
    for record, memory in recording.records:
        yield TrapRecord(record.kind, record.ts, record.vcpu, record.task, record.abi,
                         record.mechanism, record.nr, record.args, record.ret,
                         read=_replay_reader(memory), stack_pointer=record.stack_pointer,
                         reads_live=record.reads_live)
