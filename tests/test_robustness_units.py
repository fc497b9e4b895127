"""What keeps a trace from holding the guest or failing badly, checked without a guest:
the output writer that never blocks, the tree that follows deaths from the task list, one
encoding of guest bytes in every output, and one line (exit status 2) for bad usage."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from xenhpt.linux.process_tree import ProcessTree
from xenhpt.linux.tasks import Task
from xenhpt.output.processes import ps_record, pstree_json, pstree_text
from xenhpt.output.stream import json_event, json_record, text_line
from xenhpt.output.writer import BackgroundWriter
from xenhpt.syscalls.decode import Decoder
from xenhpt.tracer.engine import SyscallEngine
from xenhpt.tracer.records import ProcessEvent, SyscallRecord
from xenhpt.vmi.qemu import plugin_channel as pc

from .conftest import XENHPT
from .test_plugin_channel import make_file, put, record_bytes


def task(pid: int, ppid: int, comm: bytes, address: int | None = None) -> Task:
    return Task(address=address or 0xFFFF_8880_0000_0000 + pid * 0x1000, pid=pid, tid=pid,
                comm=comm, state=0, parent_address=0, ppid=ppid, uid=0, mm=0, pgd=0,
                start_time=0, flags=0)


# --- the output writer ------------------------------------------------------------------

def _write_all(writer: BackgroundWriter, lines: list[str]) -> threading.Thread:
    thread = threading.Thread(target=lambda: [writer.write(line) for line in lines])
    thread.start()
    return thread


def test_writes_return_while_nobody_reads_and_arrive_in_order_later() -> None:
    read_end, write_end = os.pipe()
    writer = BackgroundWriter(os.fdopen(write_end, "wb"), "pipe", memory_limit=64 << 10)
    lines = [f"line {i:07d} {'x' * 90}\n" for i in range(40_000)]  # 4 MiB: 60 pipes full
    producer = _write_all(writer, lines)
    producer.join(timeout=120)
    # Nobody has read the pipe yet: had a write waited for the reader, it would still run.
    assert not producer.is_alive(), "a write blocked on a pipe nobody reads"
    assert writer.spilled_bytes > 0  # past the memory bound, the rest went to disk
    received = bytearray()
    reader = threading.Thread(target=lambda: received.extend(_read_all(read_end)))
    reader.start()
    assert writer.close(timeout=120)
    writer._out.close()
    reader.join(timeout=120)
    assert received.decode() == "".join(lines) and writer.lost_bytes == 0


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def test_a_broken_pipe_is_reported_once_and_what_was_lost_is_counted() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    writer = BackgroundWriter(os.fdopen(write_end, "wb"), "stdout")
    writer.write("a line\n")
    writer.close(timeout=30)
    writer.write("after the error\n")
    assert isinstance(writer.error, BrokenPipeError)
    assert writer.lost_bytes == len("a line\n") + len("after the error\n")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_is_an_error_not_a_hang() -> None:
    writer = BackgroundWriter(open("/dev/full", "wb"), "/dev/full")
    writer.write("x" * 100_000)
    writer.close(timeout=30)
    assert writer.error is not None and writer.error.errno == 28  # ENOSPC


# --- the tree follows deaths ----------------------------------------------------------------

class _Events:
    def __init__(self) -> None:
        self.events: list[ProcessEvent] = []

    def syscall(self, record: SyscallRecord) -> None:
        pass

    def process_event(self, event: ProcessEvent) -> None:
        self.events.append(event)


def test_processes_gone_from_the_task_list_leave_the_tree_with_an_exit_event() -> None:
    start = [task(0, 0, b"swapper/0"), task(1, 0, b"init"), task(50, 1, b"sh"),
             task(51, 50, b"sleep"), task(52, 50, b"sleep")]
    tree = ProcessTree.from_tasks(start)
    graph = tree.graph
    tree.fork(50, 53, b"sleep")  # seen by the tracer: its task address is not known
    sink = _Events()
    engine = SyscallEngine(Decoder(32), sink, tree=tree)
    # 51 was killed by a signal, 53 reaped; 52 lives on; 60 appeared without a traced fork.
    now = [task(0, 0, b"swapper/0"), task(1, 0, b"init"), task(50, 1, b"sh"),
           task(52, 50, b"sleep"), task(2, 0, b"kthreadd"), task(60, 2, b"kworker/0:2")]
    assert engine.reconcile(now, 1.0) == 2
    assert sorted((e.kind, e.pid, e.detail["seen"]) for e in sink.events) == [
        ("exit", 51, "task list"), ("exit", 53, "task list")]
    assert 51 not in tree and 53 not in tree and 51 not in graph
    assert 60 not in tree  # a periodic look only removes
    engine.reconcile(now, 2.0, complete=True)
    assert sorted(pid for pid, _ in tree.walk()) == [0, 1, 2, 50, 52, 60]
    assert tree.children(2) == [60] and sorted(graph.successors(2)) == [60]


def test_a_reused_pid_is_a_new_process() -> None:
    tree = ProcessTree.from_tasks([task(0, 0, b"swapper/0"), task(1, 0, b"init"),
                                   task(70, 1, b"old")])
    gone = tree.reconcile([task(0, 0, b"swapper/0"), task(1, 0, b"init"),
                           task(70, 1, b"new", address=0xFFFF_8880_1234_0000)], complete=True)
    assert gone == [(70, 1, b"old")] and tree.comm(70) == b"new"


# --- one encoding of guest bytes ------------------------------------------------------------

def test_a_non_utf8_name_reads_the_same_in_every_output() -> None:
    name = b"x\xffy\xc3\xa9\\"
    shown = "x\\xffy\\xc3\\xa9\\\\"
    record = SyscallRecord(ts=1.0, vcpu=0, pid=5, tid=5, ppid=1, comm=name, abi="x86_64",
                           mechanism="syscall", nr=39, name="getpid", args=(), decoded="getpid()",
                           ret=5, ret_text="5", errno=None, duration_us=1.0, finished=True)
    event = ProcessEvent("exec", 1.0, 5, 1, name, {"old_comm": name})
    tree = ProcessTree.from_tasks([task(0, 0, b"swapper/0"), task(5, 0, name)])
    assert f"[pid 5 {shown}]" in text_line(record)
    assert json.loads(json.dumps(json_record(record)))["comm"] == shown
    as_json = json.loads(json.dumps(json_event(event)))
    assert as_json["comm"] == shown and as_json["old_comm"] == shown
    assert ps_record(task(5, 1, name))["comm"] == shown
    assert json.loads(pstree_json(tree))[0]["children"][0]["comm"] == shown
    assert f"{shown}(5)" in pstree_text(tree)


# --- bad usage: one line, exit status 2 -----------------------------------------------------

@pytest.mark.parametrize("args", [
    ["-e", "trace=nosuchcall"], ["-e", "trace=%nosuchclass"], ["-e", "trace="],
    ["-s", "-5"], ["-s", "1000000000"], ["--duration", "nan"], ["--duration", "0"],
    ["-o", "/nonexistent-dir/x"], ["--bogus-option"],
], ids=lambda args: " ".join(args))
def test_bad_trace_arguments_get_one_line_and_status_2(args: list[str]) -> None:
    done = subprocess.run([XENHPT, "trace", "lab", *args], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("xenhpt: error: ")


def test_a_port_out_of_range_is_bad_usage_not_another_port() -> None:
    done = subprocess.run([XENHPT, "trace", "qemu:127.0.0.1:99999"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "65535" in done.stderr and len(done.stderr.splitlines()) == 1


# --- the capture file ---------------------------------------------------------------------

def test_an_empty_or_truncated_capture_file_is_one_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(pc.ChannelError, match="empty"):
        pc.PluginChannel(empty)
    truncated = tmp_path / "truncated"
    make_file(truncated)
    truncated.write_bytes(truncated.read_bytes()[:8192])
    with pytest.raises(pc.ChannelError, match="does not fit"):
        pc.PluginChannel(truncated)


def test_records_left_in_the_ring_are_counted_without_decoding(tmp_path: Path) -> None:
    path = tmp_path / "cap"
    make_file(path)
    blob = b"".join(record_bytes(1, 39, []) for _ in range(5))
    put(path, 0, len(blob), blob)
    channel = pc.PluginChannel(path)
    assert channel.pending_records() == 5
    channel.read(limit=2)
    assert channel.pending_records() == 3
    channel.close()
