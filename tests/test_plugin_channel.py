"""The plugin's ring and configuration on synthetic files, and the capture reader's rules.

The real plugin is exercised by test_trace_plugin.py; these check the Python side of the
layout byte by byte (wrap-around padding, regions, config table) without a guest.
"""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path

import pytest

from xenhpt.errors import MemoryReadError
from xenhpt.syscalls.reads import PATH_BYTES
from xenhpt.syscalls.structs import STAT_LAYOUT
from xenhpt.syscalls.table import SyscallTable
from xenhpt.tracer.plugin_capture import capture_rules
from xenhpt.tracer.plugin_records import RecordFeeder
from xenhpt.vmi.qemu import plugin_channel as pc

RING = 1 << 12
X86_64 = pc.KernelView(word_size=8, kernel_start=1 << 63, first_argument="rdi",
                       percpu_register="gs",
                       arguments={("syscall", "x86_64"): ("rdi", "rsi", "rdx", "r10", "r8", "r9")})


def make_file(path: Path, ring_size: int = RING) -> None:
    data = bytearray(4096 + (1 << 20) + ring_size)
    struct.pack_into("<8sII5QQ", data, 0, pc.MAGIC, pc.LAYOUT_VERSION, 4096, 4096, 1 << 20,
                     4096 + (1 << 20), ring_size, 1, 0)
    path.write_bytes(bytes(data))


def record_bytes(kind: int, nr: int, regions: list[tuple[int, int, bytes]], task: int = 0xFFFF1,
                 flags: int = 0, comm: bytes = b"sh") -> bytes:
    body = b""
    for address, region_flags, data in regions:
        body += pc._REGION.pack(address, len(data), region_flags)
        body += data + bytes(-len(data) % 8)
    size = pc._RECORD.size + len(body)
    head = pc._RECORD.pack(size, kind, 0, 1, len(regions), 0, flags, 1_700_000_000_000_000_000,
                           task, 42, 43, 1, 0, comm, nr, 1, 2, 3, 4, 5, 6, -2, 0x401000,
                           0x7FFD0000, 0x1000)
    return head + body


def put(path: Path, offset: int, head: int, blob: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(4096 + (1 << 20) + offset)
        f.write(blob)
        f.seek(64)
        f.write(struct.pack("<Q", head))


def test_records_are_read_with_their_regions_and_padding_skipped(tmp_path: Path) -> None:
    path = tmp_path / "cap"
    make_file(path)
    channel = pc.PluginChannel(path)
    first = record_bytes(1, 257, [(0x1000, pc.REGION_TERMINATED, b"/etc/x\0")])
    put(path, 0, len(first), first)
    [entry] = channel.read()
    assert (entry.kind, entry.abi, entry.mechanism, entry.nr) == ("entry", "x86_64", "syscall",
                                                                   257)
    assert (entry.pid, entry.tid, entry.ppid, entry.comm) == (42, 43, 1, b"sh")
    assert entry.args == (1, 2, 3, 4, 5, 6) and entry.ret == -2 and entry.task_known
    assert entry.regions == [(0x1000, pc.REGION_TERMINATED, b"/etc/x\0")]
    # The next record does not fit before the ring's end: the plugin pads, wraps to 0.
    pad_at = RING - 64
    pad = struct.pack("<IB", 64, 0).ljust(64, b"\0")
    second = record_bytes(2, 257, [], flags=pc.FLAG_TASK_UNKNOWN)
    with open(path, "r+b") as f:
        f.seek(4096 + (1 << 20) + pad_at)
        f.write(pad)
    channel._tail = pad_at  # as if everything before the pad had been read
    put(path, 0, RING + len(second), second)
    [exit_record] = channel.read()
    assert exit_record.kind == "exit" and not exit_record.task_known
    assert channel.read() == []
    channel.close()


def test_configure_writes_the_call_table_and_waits_for_the_plugin(tmp_path: Path) -> None:
    path = tmp_path / "cap"
    make_file(path)
    channel = pc.PluginChannel(path)

    def plugin() -> None:  # acknowledges like check_config() in the C file
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            generation = channel._u64(264)
            if generation:
                channel._set_u64(64 + 24, generation)
                return
            time.sleep(0.001)

    thread = threading.Thread(target=plugin)
    thread.start()
    rules = [pc.Rule(pc.WHEN_ENTRY, pc.HOW_CSTRING, 1, PATH_BYTES)]
    channel.configure(pc.CaptureConfig(0xFFFFFFFF81000000, 0x1F000, 1, 2, 3, 4, 5, 6,
                                       user32_cs=0x23, kernel=X86_64,
                                       calls={(0, 257): rules, (1, 5): []}))
    thread.join()
    base = channel.config_offset
    enabled, _, exit_address = struct.unpack_from("<IIQ", channel._map, base)
    assert enabled == 1 and exit_address == 0xFFFFFFFF81000000
    table = base + 112
    assert struct.unpack_from("<BBH", channel._map, table + 257 * 4) == (1, 1, 0)
    assert struct.unpack_from("<BBH", channel._map, table + (1024 + 5) * 4) == (1, 0, 1)
    assert struct.unpack_from("<BBH", channel._map, table + 0) == (0, 0, 0)  # not selected
    rule_at = table + 2 * 1024 * 4
    assert struct.unpack_from("<BBBBI", channel._map, rule_at) == (1, 1, 1, 0, PATH_BYTES)
    channel.close()


def test_a_plugin_that_never_answers_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cap"
    make_file(path)
    channel = pc.PluginChannel(path)
    with pytest.raises(pc.ChannelError, match="did not take its configuration"):
        channel.configure(pc.CaptureConfig(1, 2, 3, 4, 5, 6, 7, 8, user32_cs=0x23,
                                           kernel=X86_64), timeout=0.05)
    channel.close()


def test_not_a_capture_file(tmp_path: Path) -> None:
    path = tmp_path / "cap"
    path.write_bytes(bytes(8192))
    with pytest.raises(pc.ChannelError,
                       match=f"not a version-{pc.LAYOUT_VERSION} xenhpt capture file"):
        pc.PluginChannel(path)


class _Memory:
    def __init__(self) -> None:
        self.reads: list[tuple[int, int]] = []

    def read_virtual(self, dtb: int, address: int, size: int) -> bytes:
        self.reads.append((address, size))
        return b"L" * size


def test_reader_serves_captured_bytes_and_counts_late_reads() -> None:
    memory = _Memory()
    feeder = RecordFeeder(None, memory.read_virtual)  # only the reader is under test
    raw = pc.RawRecord("entry", "x86_64", "syscall", 0, True, 0.0, 1, 2, 2, 1, b"sh", 0,
                       (0,) * 6, 0, 0, 0, 0x1000, [])
    regions = [(0x1000, pc.REGION_TERMINATED, b"abc\0"), (0x2000, pc.REGION_CUT, b"xy"),
               (0x3000, 0, b"0123456789")]
    read = feeder._reader(raw, regions)
    assert read(0x1000, 4) == b"abc\0"
    assert read(0x1000, 8) == b"abc\0\0\0\0\0"  # past a string's NUL: zeros
    assert read(0x3002, 3) == b"234"
    with pytest.raises(MemoryReadError):
        read(0x2000, 4)  # the page after "xy" was unreadable at the call
    assert read(0x2000, 2) == b"xy"
    assert feeder.late_reads == 0 and memory.reads == []
    assert read(0x1004, 2) == b"LL"  # the next string (argv): not this region's
    assert read(0x3008, 4) == b"LLLL"  # runs past a complete copy: read the guest now
    assert feeder.late_reads == 2 and memory.reads == [(0x1004, 2), (0x3008, 4)]


def test_capture_rules_follow_the_templates() -> None:
    table = SyscallTable.load("x86_64")
    openat = capture_rules(table.by_name("openat"), 32)
    assert pc.Rule(pc.WHEN_ENTRY, pc.HOW_CSTRING, 1, PATH_BYTES) in openat
    write = capture_rules(table.by_name("write"), 32)
    assert write == [pc.Rule(pc.WHEN_ENTRY, pc.HOW_BY_ARG, 1, 32, 2, 1)]
    read = capture_rules(table.by_name("read"), 64)
    assert read == [pc.Rule(pc.WHEN_EXIT, pc.HOW_BY_RET, 1, 64, 0, 1)]
    execve = capture_rules(table.by_name("execve"), 32)
    assert [r.how for r in execve] == [pc.HOW_CSTRING, pc.HOW_STRINGS, pc.HOW_FIXED]
    fstat = capture_rules(table.by_name("newfstatat"), 32)
    # The bytes of struct stat the printer reads (syscalls/structs.py), at exit.
    assert pc.Rule(pc.WHEN_EXIT, pc.HOW_FIXED, 2, STAT_LAYOUT["stat_out"][8].size) in fstat
    assert capture_rules(table.by_name("getpid"), 32) == []


def test_one_tracer_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "cap"
    make_file(path)
    first, second = pc.PluginChannel(path), pc.PluginChannel(path)
    first.claim()
    first._set_u64(280, 1)  # pid 1 (init) is alive and is not us: a live owner
    with pytest.raises(pc.ChannelError, match="another tracer \\(pid 1\\)"):
        second.claim()
    first._set_u64(280, 2**22 + 7)  # above pid_max: no such process, a stale claim
    second.claim()
    second.release()
    assert second._u64(280) == 0


def test_the_spool_copies_the_ring_and_hands_out_whole_records(tmp_path: Path,
                                                               monkeypatch) -> None:
    """The live trace decodes from a spool file the ring is copied into; records come
    out whole and in order however the reads are cut, the ring is emptied as it is
    copied (so it cannot fill because of the decoder), and the file is removed when all
    was decoded, kept (a capture file that `xenhpt decode` reads) when not."""
    from xenhpt.tracer.spool import Spool

    monkeypatch.setenv("XENHPT_SPOOL_DIR", str(tmp_path))
    path = tmp_path / "cap"
    make_file(path, ring_size=1 << 16)
    channel = pc.PluginChannel(path)
    blobs = [record_bytes(1, nr, [(0x1000, pc.REGION_TERMINATED, b"x" * nr + b"\0")])
             for nr in range(1, 40)]
    ring = b"".join(blobs)
    put(path, 0, len(ring), ring)
    spool = Spool(channel, b'{"header": 1}\n')
    assert spool.copy_once() == len(blobs)
    assert channel.pending_records() == 0  # the ring is free again
    taken = []
    while data := spool.take(300):  # smaller than most records: each still comes whole
        taken += [raw.nr for raw in pc.parse_records(data)]
    assert taken == list(range(1, 40)) and not spool.backlog()
    kept = spool.close(keep=True)
    assert kept is not None and kept.read_bytes() == b'{"header": 1}\n' + ring
    spool = Spool(channel, b"{}\n")
    spool.finish_copy()
    assert spool.close(keep=False) is None
    assert list(tmp_path.glob("xenhpt-spool-*")) == [kept]
    channel.close()


def test_the_plugin_gets_the_task_filter_of_the_trace() -> None:
    """-p / --comm / -f go to the plugin as the tracer's CallFilter holds them (the C side
    applies them in CallFilter.wants_task's order); a filter the plugin cannot hold (more
    pids than it has room for) stays the tracer's alone."""
    from xenhpt.tracer.engine import CallFilter
    from xenhpt.tracer.plugin_capture import plugin_task_filter

    assert plugin_task_filter(None) is None
    assert plugin_task_filter(CallFilter(follow=True)) is None  # every task: no filter
    assert plugin_task_filter(CallFilter(pids={9, 3}, follow=True)) == pc.TaskFilter(
        (3, 9), None, True)
    assert plugin_task_filter(CallFilter(comm=b"sh")) == pc.TaskFilter((), b"sh", False)
    too_many = set(range(1, pc.MAX_FILTER_PIDS + 2))
    assert plugin_task_filter(CallFilter(pids=too_many)) is None


def test_a_spool_directory_that_cannot_be_written_is_one_clear_error(tmp_path: Path,
                                                                     monkeypatch) -> None:
    from xenhpt.errors import OutputError
    from xenhpt.tracer.spool import Spool

    monkeypatch.setenv("XENHPT_SPOOL_DIR", str(tmp_path / "missing"))
    path = tmp_path / "cap"
    make_file(path)
    channel = pc.PluginChannel(path)
    with pytest.raises(OutputError, match="cannot create a spool file in .*missing"):
        Spool(channel, b"{}\n")
    channel.close()
