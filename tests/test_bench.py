"""The overhead benchmark (tools/bench.py) and the trace recording it replays.

The recording tests check the one promise a replay makes: fed the recorded trap records,
the engine prints exactly what it printed live. The benchmark test runs ``--quick`` with a
tiny duration and checks that it produces its table and JSON (no timing is asserted).
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from xenhpt.errors import MemoryReadError
from xenhpt.lab import machine
from xenhpt.linux.process_tree import ProcessTree
from xenhpt.linux.tasks import Task
from xenhpt.output.stream import StreamSink
from xenhpt.syscalls.decode import Decoder
from xenhpt.tracer.engine import SyscallEngine
from xenhpt.tracer.recording import RecordingEngine, RecordingError, load_recording, replay
from xenhpt.tracer.records import TaskIdentity, TrapRecord

from .test_trace import Trace, in_guest

ROOT = Path(__file__).resolve().parents[1]
SHELL = TaskIdentity(task=0xFFFF_8880_0100_0000, pid=90, tid=90, ppid=1, comm=b"sh")
CHILD = TaskIdentity(task=0xFFFF_8880_0200_0000, pid=91, tid=91, ppid=90, comm=b"sh")
PATH = 0x7FFF_0000_1000
BUFFER = 0x7FFF_0000_2000
ARGV = 0x7FFF_0000_3000


def _task(pid: int, ppid: int, comm: bytes, address: int) -> Task:
    return Task(address=address, pid=pid, tid=pid, comm=comm, state=0, parent_address=0,
                ppid=ppid, uid=0, mm=1, pgd=0, start_time=0, flags=0)


TASKS = [_task(0, 0, b"swapper/0", 0x1000), _task(1, 0, b"init", 0x2000),
         _task(90, 1, b"sh", SHELL.task)]


def _guest_memory(address: int, size: int) -> bytes:
    """A task's user memory with a path, a read buffer and an argv; anything else faults."""
    pages = {PATH: b"/etc/inittab\0", BUFFER: b"::sysinit:/etc/init.d/rcS\n",
             ARGV: struct.pack("<2Q", PATH, 0)}
    for base, data in pages.items():
        if base <= address and address + size <= base + 4096:
            return (data + bytes(4096))[address - base:address - base + size]
    raise MemoryReadError(address)


def _session() -> list[TrapRecord]:
    """openat, a read that fills a buffer, a failed stat, fork, exec, exit_group."""
    def entry(task: TaskIdentity, nr: int, *args: int, ts: float) -> TrapRecord:
        return TrapRecord("entry", ts, 0, task, "x86_64", "syscall", nr, args,
                          read=_guest_memory, stack_pointer=0x7FFF_0000_F000)

    def exit(task: TaskIdentity, ret: int, ts: float) -> TrapRecord:
        return TrapRecord("exit", ts, 0, task, None, None, -1, ret=ret, read=_guest_memory)

    return [
        entry(SHELL, 257, 0xFFFF_FF9C, PATH, 0, 0, 0, 0, ts=1.0), exit(SHELL, 3, ts=1.1),
        entry(SHELL, 0, 3, BUFFER, 64, 0, 0, 0, ts=1.2), exit(SHELL, 26, ts=1.3),
        entry(SHELL, 262, 0xFFFF_FF9C, 0xDEAD_0000, BUFFER, 0, 0, 0, ts=1.4),
        exit(SHELL, -2, ts=1.5),
        entry(SHELL, 57, ts=1.6), exit(SHELL, 91, ts=1.7),
        entry(CHILD, 59, PATH, ARGV, 0, 0, 0, 0, ts=1.8),
        exit(TaskIdentity(CHILD.task, 91, 91, 90, b"inittab"), 0, ts=1.9),
        entry(CHILD, 231, 0, ts=2.0),
    ]


def _json_sink() -> tuple[io.StringIO, StreamSink]:
    out = io.StringIO()
    return out, StreamSink(out, as_json=True)


def test_a_replayed_recording_prints_exactly_what_the_engine_printed_live(
        tmp_path: Path) -> None:
    live_out, live_sink = _json_sink()
    path = tmp_path / "calls.rec.jsonl"
    with open(path, "w") as recording:
        engine = RecordingEngine(recording, Decoder(32), live_sink,
                                 tree=ProcessTree.from_tasks(TASKS), tasks=TASKS)
        for record in _session():
            engine.feed(record)
        engine.finish()
    live_sink.close()
    replayed_out, replayed_sink = _json_sink()
    result = replay(load_recording(path), replayed_sink)
    replayed_sink.close()
    live = live_out.getvalue()
    assert 'openat(AT_FDCWD, \\"/etc/inittab' in live and "ENOENT" in live
    assert '"event": "fork"' in live and '"event": "exec"' in live
    assert replayed_out.getvalue() == live
    assert result.records == 11 and result.emitted == 6


def test_the_recording_keeps_the_bytes_read_and_the_reads_that_failed(tmp_path: Path) -> None:
    path = tmp_path / "calls.rec.jsonl"
    with open(path, "w") as recording:
        engine = RecordingEngine(recording, Decoder(32), StreamSink(io.StringIO()),
                                 tasks=TASKS)
        for record in _session()[:6]:
            engine.feed(record)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["type"] == "xenhpt-recording" and len(lines[0]["tasks"]) == 3
    reads = [read for line in lines[1:] for read in line["reads"]]
    assert any(data and bytes.fromhex(data).startswith(b"/etc/inittab\0") for _, _, data in reads)
    assert any(a == 0xDEAD_0000 and data is None for a, _, data in reads)


def test_the_engine_without_recording_prints_the_same(tmp_path: Path) -> None:
    plain_out, plain_sink = _json_sink()
    engine = SyscallEngine(Decoder(32), plain_sink, tree=ProcessTree.from_tasks(TASKS))
    for record in _session():
        engine.feed(record)
    engine.finish()
    recorded_out, recorded_sink = _json_sink()
    with open(tmp_path / "r.jsonl", "w") as recording:
        engine = RecordingEngine(recording, Decoder(32), recorded_sink,
                                 tree=ProcessTree.from_tasks(TASKS), tasks=TASKS)
        for record in _session():
            engine.feed(record)
        engine.finish()
    assert recorded_out.getvalue() == plain_out.getvalue()


def test_a_truncated_recording_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.rec.jsonl"
    path.write_text('{"type": "xenhpt-recording", "version": 1}\n{"kind": "entry", "ts"')
    with pytest.raises(RecordingError, match="truncated or corrupt"):
        load_recording(path)
    with pytest.raises(RecordingError, match="not a version-1"):
        path.write_text('{"type": "something else"}\n')
        load_recording(path)


# -- on the lab guest ----------------------------------------------------------------------

@pytest.mark.lab
def test_a_recorded_live_trace_replays_to_the_same_json(lab: machine.LabState,
                                                        tmp_path: Path) -> None:
    recording = tmp_path / "live.rec.jsonl"
    trace = Trace("--json", "--record", str(recording), "--duration", "25")
    in_guest("cat /etc/inittab > /tmp/copy; /opt/xenhpt/bin/mech32 int80; ls /nonexistent")
    out, _ = trace.finish()
    replayed, sink = _json_sink()
    result = replay(load_recording(recording), sink)
    sink.close()
    assert '\\"/etc/inittab\\"' in out and '"mechanism": "int80"' in out
    assert result.emitted > 20
    assert replayed.getvalue() == out


@pytest.mark.lab
def test_quick_benchmark_prints_the_table_and_json(tmp_path: Path) -> None:
    results = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "bench.py"), "--quick",
                           "--duration", "0.3", "--reps", "1", "--json", str(results)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert "| workload | condition |" in done.stdout and "µs/record" in done.stdout
    document = json.loads(results.read_text())
    conditions = {"untraced", "xenhpt-full", "xenhpt-selective", "strace-full",
                  "strace-selective", "plugin-untraced", "xenhpt-plugin-full",
                  "xenhpt-plugin-selective"}
    assert set(document["summary"]) == {"syscall", "shell", "arithmetic", "spawn"}
    for workload, by_condition in document["summary"].items():
        assert set(by_condition) == conditions, workload
        assert by_condition["untraced"]["ratio"]["median"] == 1.0
        assert by_condition["xenhpt-full"]["traps_per_s"]["median"] > 0
        assert by_condition["plugin-untraced"]["ratio"]["median"] == 1.0
        assert by_condition["xenhpt-plugin-full"]["dropped_total"] >= 0
        for condition in conditions:
            row = next(line for line in done.stdout.splitlines()
                       if line.startswith(f"| {workload} | {condition} |"))
            assert "—" not in row.split("|")[3], row  # a score was measured
    assert len(document["runs"]) == 32
    assert document["pipeline"]["text"]["us_per_record"] > 0
