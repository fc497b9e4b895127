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
without a ``read`` at all), and, where the trace read a task's container facts (JSON
records carry them), one line per task and change, before the record that used them::

    {"type": "container", "task": [address, tid], "facts": [pidns, ns_pid, cgroup]}
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..errors import MemoryReadError, XenhptError
from ..linux.containers import Container
from ..linux.process_tree import ProcessTree
from ..linux.tasks import Task
from ..syscalls.decode import Decoder
from .containers import ContainerCache
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
        self.recording = recording
        super().__init__(decoder, sink, call_filter, tree)
        self.recorded = 0
        header = {"type": FORMAT, "version": VERSION,
                  **starting_point(decoder.string_limit, self.filter, tasks or [])}
        recording.write(json.dumps(header) + "\n")

    @property
    def containers(self) -> Any:
        return self._containers

    @containers.setter
    def containers(self, cache: Any) -> None:
        # The container facts come from the guest too: they are recorded as read.
        self._containers = None if cache is None else _LoggedContainers(cache,
                                                                         self.recording)

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


class _LoggedContainers:
    """A trace's container cache whose answers are written to the recording, one line
    per task and change (``{"type": "container", "task": [address, tid], "facts": [...]}``),
    just before the record whose output used them."""

    def __init__(self, cache: ContainerCache, recording: TextIO) -> None:
        self.cache = cache
        self.recording = recording
        self._written: dict[tuple[int, int], Container] = {}

    def of(self, task: TaskIdentity) -> Container | None:
        found = self.cache.of(task)
        key = (task.task, task.tid)
        if found is not None and self._written.get(key) != found:
            self._written[key] = found
            self.recording.write(json.dumps({"type": "container", "task": list(key),
                                             "facts": [found.pidns, found.ns_pid,
                                                       found.cgroup]}) + "\n")
        return found

    def forget(self, task_address: int) -> None:
        self.cache.forget(task_address)

    def detach(self) -> None:
        self.cache.detach()


class _ReplayedContainers:
    """The container facts a recorded trace read, answered in the order it read them."""

    def __init__(self) -> None:
        self.known: dict[tuple[int, int], Container] = {}

    def of(self, task: TaskIdentity) -> Container | None:
        return self.known.get((task.task, task.tid))

    def forget(self, task_address: int) -> None:
        pass  # (the recorded lines already say when a task's facts changed)

    def detach(self) -> None:
        pass  # (a replay never reads a guest)


# -- replay ------------------------------------------------------------------------------

@dataclass
class Recording:
    """A loaded recording: the engine's starting point and the trap records, parsed."""

    header: dict[str, Any]
    records: list[tuple[TrapRecord, Memory | None]]
    # (records before it, task key, facts): a container read, in the order it happened.
    containers: list[tuple[int, tuple[int, int], Container]] = field(default_factory=list)

    def call_filter(self) -> CallFilter:
        return call_filter_of(self.header)

    def process_tree(self) -> ProcessTree:
        return process_tree_of(self.header)


def starting_point(string_limit: int, call_filter: CallFilter, tasks: list[Task]
                   ) -> dict[str, Any]:
    """What an engine started from, as JSON: ``-s``, the filter, the seed task list
    (shared by recordings and saved captures)."""
    f = call_filter
    return {"string_limit": string_limit,
            "numbers": None if f.numbers is None else
            {abi: sorted(numbers) for abi, numbers in f.numbers.items()},
            "pids": None if f.pids is None else sorted(f.pids),
            "comm": None if f.comm is None else f.comm.hex(), "follow": f.follow,
            "tasks": [[t.pid, t.ppid, t.comm.hex(), t.address, t.parent_address, t.uid]
                      for t in tasks]}


def call_filter_of(header: dict[str, Any]) -> CallFilter:
    h = header
    numbers = None if h["numbers"] is None else {abi: set(n) for abi, n in
                                                  h["numbers"].items()}
    return CallFilter(numbers, None if h["pids"] is None else set(h["pids"]),
                      None if h["comm"] is None else bytes.fromhex(h["comm"]), h["follow"])


def process_tree_of(header: dict[str, Any]) -> ProcessTree:
    tasks = [Task(address=address, pid=pid, tid=pid, comm=bytes.fromhex(comm), state=0,
                  parent_address=parent, ppid=ppid, uid=uid, mm=0, pgd=0, start_time=0,
                  flags=0)
             for pid, ppid, comm, address, parent, uid in header["tasks"]]
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
        records = []
        containers = []
        for line in lines:
            if not line.strip():
                continue
            item = json.loads(line)
            if item.get("type") == "container":
                containers.append((len(records), (item["task"][0], item["task"][1]),
                                   Container(*item["facts"])))
            else:
                records.append(_parse(item))
    except OSError as exc:
        raise RecordingError(f"cannot read recording {path}: {exc.strerror}") from None
    except (StopIteration, ValueError, KeyError, TypeError) as exc:
        raise RecordingError(f"{path} is truncated or corrupt ({exc})") from None
    return Recording(header, records, containers)


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
    replayed = _ReplayedContainers()
    if recording.containers:
        engine.containers = replayed  # type: ignore[assignment]
    reads = iter(recording.containers)
    pending = next(reads, None)
    started, cpu_started = time.perf_counter(), time.process_time()
    for index, record in enumerate(fed):
        while pending is not None and pending[0] <= index:
            replayed.known[pending[1]] = pending[2]
            pending = next(reads, None)
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
