"""Saved captures (``trace --save`` / ``xenhpt decode``) without a guest: the ring's bytes
as they lie, read back by the same parser and decoded by the same path as a live trace."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from xenhpt.syscalls.table import SyscallTable
from xenhpt.vmi.qemu import plugin_channel as pc

from .test_plugin_channel import RING, make_file, put

OPENAT = SyscallTable.load("x86_64").by_name("openat")
AT_FDCWD = (1 << 64) - 100
XENHPT = [sys.executable, "-c", "import sys; from xenhpt.cli.main import main; "
          "sys.argv[0] = 'xenhpt'; main()"]


def record(kind: int, nr: int, args: tuple[int, ...], ret: int = 0,
           regions: tuple[tuple[int, int, bytes], ...] = (), pid: int = 42) -> bytes:
    body = b""
    for address, flags, data in regions:
        body += pc._REGION.pack(address, len(data), flags) + data + bytes(-len(data) % 8)
    size = pc._RECORD.size + len(body)
    return pc._RECORD.pack(size, kind, 0, 1, len(regions), 0, 0, 1_700_000_000_000_000_000,
                           0xFFFF_8880_0000_1000 + pid, pid, pid, 1, 0, b"cat", nr, *args,
                           ret, 0x401000, 0x7FFD_0000, 0x1000) + body


def openat_pair(path: bytes, fd: int, pid: int = 42) -> bytes:
    args = (AT_FDCWD, 0x4000, 0, 0, 0, 0)
    return (record(1, OPENAT.nr, args, regions=((0x4000, pc.REGION_TERMINATED, path + b"\0"),),
                   pid=pid)
            + record(2, OPENAT.nr, args, ret=fd, pid=pid))


def capture_file(path: Path, body: bytes, **header: object) -> Path:
    head = {"type": "xenhpt-capture", "version": 1, "profile": "test.json",
            "layout": pc.LAYOUT_VERSION, "string_limit": 32, "numbers": None, "pids": None,
            "comm": None, "follow": False, "tasks": [[42, 1, b"cat".hex(), 0, 0, 0]]}
    head.update(header)
    path.write_bytes(json.dumps(head).encode() + b"\n" + body)
    return path


def decode(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*XENHPT, "decode", *args], capture_output=True, text=True,
                          timeout=60)


def test_the_ring_bytes_saved_read_back_as_the_records_the_channel_reads(tmp_path: Path
                                                                           ) -> None:
    ring = tmp_path / "ring"
    make_file(ring)
    channel = pc.PluginChannel(ring)
    # Records up to a pad at the ring's end, then one wrapped to the start.
    first = openat_pair(b"/etc/hostname", 3)
    pad_at = RING - 64
    channel._tail = pad_at - len(first)
    with open(ring, "r+b") as f:
        f.seek(4096 + (1 << 20) + pad_at - len(first))
        f.write(first + struct_pad(64))
    second = openat_pair(b"/etc/passwd", 4)
    put(ring, 0, RING + len(second), second)
    data, count = channel.read_bytes()
    assert count == 4
    saved = [(r.kind, r.nr, r.ret, r.regions) for r in pc.parse_records(data)]
    assert saved == [("entry", OPENAT.nr, 0, [(0x4000, pc.REGION_TERMINATED, b"/etc/hostname\0")]),
                     ("exit", OPENAT.nr, 3, []),
                     ("entry", OPENAT.nr, 0, [(0x4000, pc.REGION_TERMINATED, b"/etc/passwd\0")]),
                     ("exit", OPENAT.nr, 4, [])]
    assert channel.read_bytes() == (b"", 0)
    channel.close()


def struct_pad(size: int) -> bytes:
    return pc._SIZE_KIND.pack(size, 0).ljust(size, b"\0")


def test_decode_prints_the_saved_calls_as_a_live_trace_would(tmp_path: Path) -> None:
    path = capture_file(tmp_path / "t.xcap", openat_pair(b"/etc/hostname", 3))
    done = decode(str(path), "-v")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('[pid 42 cat] openat(AT_FDCWD, "/etc/hostname", O_RDONLY)')
    assert done.stdout.rstrip().endswith("= 3")
    assert "1 calls captured, 1 decoded, 1 printed" in done.stderr


def test_decode_applies_the_saved_filter(tmp_path: Path) -> None:
    body = openat_pair(b"/etc/hostname", 3, pid=42) + openat_pair(b"/etc/shadow", 4, pid=7)
    path = capture_file(tmp_path / "t.xcap", body, pids=[7])
    done = decode(str(path), "--json")
    calls = [json.loads(line) for line in done.stdout.splitlines()]
    assert [c["pid"] for c in calls if c.get("type") == "syscall"] == [7]


def test_a_truncated_capture_decodes_what_is_whole_and_says_where_it_stopped(tmp_path: Path
                                                                              ) -> None:
    body = openat_pair(b"/etc/hostname", 3) + openat_pair(b"/etc/passwd", 4)
    path = capture_file(tmp_path / "t.xcap", body[:-20])
    done = decode(str(path))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert '"/etc/hostname"' in done.stdout  # the whole records before the cut
    errors = [line for line in done.stderr.splitlines() if line.startswith("xenhpt: error:")]
    assert len(errors) == 1 and "decoded up to there" in errors[0], done.stderr


def test_a_file_that_is_no_capture_is_one_clear_error(tmp_path: Path) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    done = decode(str(other))
    assert done.returncode == 1 and done.stderr.strip().startswith("xenhpt: error:")
    assert "not a xenhpt capture file" in done.stderr and "Traceback" not in done.stderr
    newer = capture_file(tmp_path / "v2.xcap", b"", version=2)
    assert "not a version-1 xenhpt capture file" in decode(str(newer)).stderr
    empty = tmp_path / "empty.xcap"
    empty.write_bytes(b"")
    assert "is empty" in decode(str(empty)).stderr
