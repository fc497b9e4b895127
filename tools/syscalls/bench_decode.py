#!/usr/bin/env python3
"""Micro-benchmark of the decoder: microseconds per entry+exit of typical calls.

Guest memory is a dict of 4 KiB pages (what a tracer with a page cache hands the decoder), so
the numbers are the decoder's own cost, not the hypervisor's.

    python tools/syscalls/bench_decode.py
"""

from __future__ import annotations

import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from xenhpt.errors import MemoryReadError  # noqa: E402
from xenhpt.syscalls.decode import Decoder  # noqa: E402
from xenhpt.syscalls.table import SyscallTable  # noqa: E402

U64 = (1 << 64) - 1
PAGE = 4096


class PagedMemory:
    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}

    def put(self, address: int, data: bytes) -> int:
        for offset, byte in enumerate(data):
            page = self.pages.setdefault((address + offset) // PAGE, bytearray(PAGE))
            page[(address + offset) % PAGE] = byte
        return address

    def read(self, address: int, size: int) -> bytes:
        out = bytearray()
        while size > 0:
            page = self.pages.get(address // PAGE)
            if page is None:
                raise MemoryReadError(address)
            start = address % PAGE
            piece = page[start:start + size]
            out += piece
            address += len(piece)
            size -= len(piece)
        return bytes(out)


def main() -> None:
    mem = PagedMemory()
    path = mem.put(0x10000, b"/usr/lib/x86_64-linux-gnu/libc.so.6\0")
    buf = mem.put(0x20000, b"\x7fELF\x02\x01\x01\x03" + bytes(824))
    text = mem.put(0x30000, b"hello, world\n")
    stat = mem.put(0x40000, struct.pack("<24xI12xQq", 0o100644, 0, 1926232) + bytes(88))
    strings = [mem.put(0x50000 + 0x20 * i, s + b"\0") for i, s in enumerate([b"ls", b"-l", b"/"])]
    argv = mem.put(0x51000, struct.pack("<4Q", *strings, 0))
    envp = mem.put(0x52000, struct.pack(f"<{21}Q", *([strings[0]] * 20), 0))
    table = SyscallTable.load("x86_64")
    cases = {
        "openat": ([U64 - 99, path, 0o2000000, 0], 3),
        "read": ([3, buf, 832], 832),
        "write": ([1, text, 13], 13),
        "close": ([3], 0),
        "newfstatat": ([3, mem.put(0x11000, b"\0"), stat, 0x1000], 0),
        "mmap": ([0, 1974096, 1, 0x802, 3, 0], 0x7F0000000000),
        "getpid": ([], 1234),
        "clone": ([0x1200011, 0, 0, 0x7F7C97DBCA10, 0], 4321),
        "execve": ([mem.put(0x12000, b"/bin/ls\0"), argv, envp], 0),
    }
    decoder = Decoder(32)
    rounds = 20000
    total = 0.0
    for name, (args, ret) in cases.items():
        template = table.by_name(name)
        assert template is not None
        decoder.decode(template, args, ret, mem.read)  # warm the per-template plan
        start = time.perf_counter()
        for _ in range(rounds):
            state = decoder.entry(template, args, mem.read)
            decoder.exit(state, ret, mem.read)
        micros = (time.perf_counter() - start) / rounds * 1e6
        total += micros
        print(f"{name:12} {micros:6.2f} us   {decoder.decode(template, args, ret, mem.read).line}")
    print(f"{'mean':12} {total / len(cases):6.2f} us")


if __name__ == "__main__":
    main()
