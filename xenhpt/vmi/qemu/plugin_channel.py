"""The shared file between QEMU's xenhpt_capture plugin and the tracer: a ring and a config.

The plugin (``plugin/xenhpt_capture.c``) creates the file when QEMU starts; the tracer
maps it, writes a :class:`CaptureConfig` and reads :class:`RawRecord` objects from the
ring. The C side of this layout is ``plugin/channel_layout.h``; ``tests/test_plugin_layout.py``
compiles it and compares every offset, size and constant with this module.

The guest never waits for us: when the ring is full the plugin drops the record and counts
it (``dropped``), and when the tracer stops sending heartbeats the plugin stops capturing
by itself.

This module knows bytes and offsets only; what to capture for which call is decided by
the tracer (``tracer/plugin_capture.py``).
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import XenhptError

MAGIC = b"XHPTCAP1"
# Of the shared file (2: the configuration tells the kernel's architecture; 3: the handler
# mode is told which pt_regs field is which argument, and i386 kernels have it too).
LAYOUT_VERSION = 4
RECORD_LAYOUTS = (1, 2, 3, 4)  # layouts whose records read alike: a capture saved under any decodes
MAX_NR = 1024
MAX_RULES = 8192
ABI_INDEX = {"x86_64": 0, "i386": 1}
ABI_NAMES = ("x86_64", "i386")
MECHANISMS = (None, "syscall", "sysenter", "int80")
_KINDS = (None, "entry", "exit", "refresh")

# Capture rules (struct rule in channel_layout.h): when, and how the length is found.
WHEN_ENTRY, WHEN_EXIT = 1, 2
HOW_CSTRING, HOW_FIXED, HOW_BY_ARG, HOW_BY_RET, HOW_BY_DEREF, HOW_STRINGS, HOW_STACK = range(1, 8)

FLAG_TASK_UNKNOWN, FLAG_RETRY_AT_EXIT = 1, 2
CALL_SELECTED, CALL_REREAD_AT_EXIT, CALL_FORKS, CALL_NO_RETURN = 1, 2, 4, 8
REGION_CUT = 1  # an unreadable page ended the copy
REGION_TERMINATED = 2  # a string whose NUL was copied
REGION_FULL = 4  # the record's size cap ended the copy

# struct header: what the plugin fills in once, its counters, the tracer's words.
_HEADER = struct.Struct("<8sII5QQ")  # magic .. max_vcpus, reserved0
_HEAD = 64  # the first counter
_COUNTERS = struct.Struct("<9Q")  # head .. truncated, at _HEAD
_APPLIED_GEN = _HEAD + 3 * 8
_TAIL, _CONFIG_GEN, _HEARTBEAT, _OWNER = 256, 264, 272, 280
IDENTITY_POINTS = 3
_CONFIG_HEAD = struct.Struct("<IIQQ4I4IQ3QQIIII")  # struct config up to calls (112 bytes)
_CALL = struct.Struct("<BBH")
_RULE = struct.Struct("<BBBBIII")
# struct handler_config, after the rule table: selective tracing at the handlers.
MAX_HANDLERS, MAX_STUBS = 2048, 8
_HANDLER_HEAD = struct.Struct(f"<4IQQ4I{len(ABI_NAMES) * 6}I")  # .. reserved, regs_arguments
_STUB = struct.Struct("<QII")
# struct task_filter, after the handler configuration: -p / --comm / -f in the plugin.
MAX_FILTER_PIDS = 64
_TASK_FILTER = struct.Struct(f"<4I16s{MAX_FILTER_PIDS}i")
_HANDLER_CONFIG_SIZE = _HANDLER_HEAD.size + MAX_STUBS * _STUB.size + MAX_HANDLERS * 8
# struct kernel_view, after the task filter: what tells an x86-64 kernel from an i386 one.
# Registers by their number in the plugin (REG_*), in x86-64's names whatever the target.
REGISTERS = (None, "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10")
ARG_AT = 0x80  # with a register's number: the 32-bit word at its address ("[rbp]")
PERCPU_REGISTERS = ("gs", "fs")
_KERNEL_VIEW = struct.Struct(f"<4IQQ{len(MECHANISMS) * len(ABI_NAMES) * 6}B")
_RECORD = struct.Struct("<IBBBBIIQQiiii16sQ6QqQQQ")
_REGION = struct.Struct("<QII")
_WORD = struct.Struct("Q")  # one shared 64-bit word, native and aligned (see _set_u64)
assert sys.byteorder == "little", "the capture file is little-endian, like x86"
_SIZE_KIND = struct.Struct("<IB")
assert _CONFIG_HEAD.size == 112 and _RECORD.size == 152


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


class ChannelError(XenhptError):
    """The capture file is missing, not the plugin's, or the plugin does not answer."""


@dataclass(frozen=True)
class Rule:
    """One piece of guest memory to copy for a call (see the C file's HOW_* list)."""

    when: int
    how: int
    arg: int
    max: int
    len_arg: int = 0
    count: int = 0


@dataclass(frozen=True)
class KernelView:
    """What tells an x86-64 kernel from an i386 one, in the plugin's terms
    (``struct kernel_view``); the tracer reads it in the kernel's profile."""

    word_size: int  # 8 or 4: pointers and pt_regs fields
    kernel_start: int  # the lowest kernel address (a task pointer is above it)
    first_argument: str  # the register holding a kernel C function's first argument
    percpu_register: str  # "gs" (x86-64) or "fs" (i386): the per-CPU base's segment
    # (mechanism, ABI) -> where arguments 1..6 are at its instruction: "rbx", or "[rbp]"
    # for the 32-bit word at that register; a path missing here is not the kernel's.
    arguments: dict[tuple[str, str], tuple[str, ...]]
    percpu_selector: int = 0  # "fs": the selector FS holds while it is the per-CPU base
    percpu_offsets: int = 0  # the per-CPU bases by CPU number (__per_cpu_offset), or 0


@dataclass
class CaptureConfig:
    exit_address: int
    current_offset: int  # per-CPU offset of the current task pointer
    task_pid: int
    task_tgid: int
    task_comm: int
    task_real_parent: int
    regs_orig_ax: int
    regs_ax: int
    # The code segment of 32-bit user code: a `syscall` from it is the i386 ABI. The guest
    # OS's choice (Linux: ``xenhpt/linux/segments.py``), so there is no default here.
    user32_cs: int = field(kw_only=True)
    kernel: KernelView = field(kw_only=True)
    calls: dict[tuple[int, int], list[Rule]] = field(default_factory=dict)  # wanted ones
    # Calls whose caller is read again at exit (exec: the exit carries the new name).
    reread_at_exit: set[tuple[int, int]] = field(default_factory=set)
    unknown_selected: bool = True  # numbers past the tables (x32, garbage) are recorded
    max_record: int = 64 << 10
    heartbeat_timeout_ms: int = 5000
    enabled: bool = True
    refresh_address: int = 0  # bprm_execve: execve's strings, copied again once faulted in
    # The first kernel code of each entry path, on kernel page tables: where an entry
    # whose caller was unreadable at the instruction (KPTI) is named (at most 3).
    identity_addresses: tuple[int, ...] = ()
    handlers: HandlerConfig | None = None  # selective: trap the handlers, not instructions
    # __switch_to(prev, next) and the register holding next ("rsi", "rdx"...): what each
    # vCPU runs, followed there (full and selective tracing; the handler mode needs it).
    switch_address: int = 0
    switch_next: str | None = None
    task_filter: TaskFilter | None = None  # -p / --comm / -f applied in the plugin
    # Calls that make a child (fork, clone...): with -f, the child is followed.
    forks: set[tuple[int, int]] = field(default_factory=set)
    # Calls that never return (exit, exit_group): the plugin keeps no exit waiting.
    no_return: set[tuple[int, int]] = field(default_factory=set)


@dataclass(frozen=True)
class TaskFilter:
    """Which tasks' calls the plugin records (``struct task_filter``), as the tracer's
    CallFilter chooses them; the tracer still applies its own filter after."""

    pids: tuple[int, ...] = ()  # -p (empty: any)
    comm: bytes | None = None  # --comm
    follow: bool = False  # -f


@dataclass(frozen=True)
class HandlerConfig:
    """Selective tracing at the selected calls' kernel handlers (``struct
    handler_config``): calls outside the selection never enter the plugin."""

    handlers: tuple[int, ...]  # handler entry addresses
    stubs: tuple[tuple[int, int, int], ...]  # (start, MECHANISMS index, ABI index), sorted
    stub_span: int  # a return address this far past a stub's start is not in it
    regs_size: int  # sizeof(struct pt_regs)
    regs_sp: int  # offsets in pt_regs of the caller's stack pointer and return address
    regs_ip: int
    # ABI -> offsets in pt_regs of arguments 1..6, for each ABI the stubs name.
    regs_arguments: dict[str, tuple[int, ...]]


@dataclass
class RawRecord:
    kind: str  # "entry" / "exit" / "refresh" (an entry's missing memory, copied later)
    abi: str
    mechanism: str | None
    vcpu: int
    task_known: bool
    ts: float
    task: int
    pid: int
    tid: int
    ppid: int
    comm: bytes
    nr: int
    args: tuple[int, ...]
    ret: int
    pc: int
    sp: int
    cr3: int
    regions: list[tuple[int, int, bytes]]  # (address, flags, bytes)
    # An entry whose argument memory was not mapped yet at the call: its exit record
    # carries a copy taken at the return (the kernel faulted the pages in meanwhile).
    retry_at_exit: bool = False


@dataclass
class ChannelCounters:
    records: int  # written by the plugin since QEMU started
    dropped: int  # lost to a full ring
    instructions: int  # syscall instructions that entered the plugin (full tracing)
    read_failures: int
    stale_stops: int
    flushes: int
    truncated: int


class PluginChannel:
    def __init__(self, path: Path) -> None:
        try:
            with open(path, "r+b") as f:
                self._map = mmap.mmap(f.fileno(), 0)
        except OSError as exc:
            raise ChannelError(f"cannot open the capture file {path}: {exc.strerror}") from None
        except ValueError:  # mmap of an empty file
            raise ChannelError(f"{path} is empty: not a xenhpt capture file") from None
        if len(self._map) < 4096:
            self._map.close()
            raise ChannelError(f"{path} is too short to be a xenhpt capture file")
        magic, version, _, config_offset, _, ring_offset, ring_size, vcpus, _ = \
            _HEADER.unpack_from(self._map, 0)
        if magic != MAGIC or version != LAYOUT_VERSION:
            self._map.close()
            raise ChannelError(f"{path} is not a version-{LAYOUT_VERSION} xenhpt capture file")
        if (not ring_size or ring_size & (ring_size - 1) or ring_offset + ring_size > len(self._map)
                or config_offset >= ring_offset):
            self._map.close()
            raise ChannelError(f"{path}: its layout does not fit the file (corrupt?)")
        self.path = path
        self.config_offset = config_offset
        self.ring_offset = ring_offset
        self.ring_size = ring_size
        self.max_vcpus = vcpus
        self._tail = self._u64(_TAIL)

    # -- small accessors ----------------------------------------------------------------

    def _u64(self, offset: int) -> int:
        return _WORD.unpack_from(self._map, offset)[0]

    def _set_u64(self, offset: int, value: int) -> None:
        # Native packing ("Q") stores the word with one 8-byte copy; "<Q" and "=Q" go
        # through a byte-wise conversion that the plugin, reading concurrently, was seen
        # to catch half done (a heartbeat read as 0 made it stop capturing).
        _WORD.pack_into(self._map, offset, value)

    def counters(self) -> ChannelCounters:
        _, records, dropped, _, instructions, failures, stale, flushes, truncated = \
            _COUNTERS.unpack_from(self._map, _HEAD)
        return ChannelCounters(records, dropped, instructions, failures, stale, flushes,
                               truncated)

    def claim(self) -> None:
        """Become the one reader of this ring; another live tracer holding it is an error."""
        owner = self._u64(_OWNER)
        if owner and owner != os.getpid() and _process_alive(owner):
            raise ChannelError(f"another tracer (pid {owner}) is reading this capture plugin")
        self._set_u64(_OWNER, os.getpid())

    def release(self) -> None:
        if self._u64(_OWNER) == os.getpid():
            self._set_u64(_OWNER, 0)

    def heartbeat(self) -> None:
        self._set_u64(_HEARTBEAT, time.monotonic_ns())

    # -- configuration ------------------------------------------------------------------

    def configure(self, config: CaptureConfig, timeout: float = 10.0) -> None:
        """Hand the plugin a configuration and wait until it took it.

        The plugin takes it at its next syscall instruction or idle moment; a guest that
        is paused (gdbstub) cannot, so call this while the guest runs.
        """
        calls = {key: rules for key, rules in config.calls.items() if key[1] < MAX_NR}
        n_rules = sum(len(rules) for rules in calls.values())
        if n_rules > MAX_RULES:
            raise ChannelError(f"{n_rules} capture rules: the plugin takes {MAX_RULES}")
        if len(config.identity_addresses) > IDENTITY_POINTS:
            raise ChannelError(f"the plugin takes {IDENTITY_POINTS} identity points")
        identity = (tuple(config.identity_addresses) + (0,) * IDENTITY_POINTS)[:IDENTITY_POINTS]
        base = self.config_offset
        table = base + _CONFIG_HEAD.size
        rules_at = table + len(ABI_NAMES) * MAX_NR * _CALL.size
        self._map[table:rules_at] = bytes(rules_at - table)
        index = 0
        for (abi, nr), rules in sorted(calls.items()):
            flags = (CALL_SELECTED
                     | (CALL_REREAD_AT_EXIT if (abi, nr) in config.reread_at_exit else 0)
                     | (CALL_FORKS if (abi, nr) in config.forks else 0)
                     | (CALL_NO_RETURN if (abi, nr) in config.no_return else 0))
            _CALL.pack_into(self._map, table + (abi * MAX_NR + nr) * _CALL.size, flags,
                            len(rules), index)
            for rule in rules:
                _RULE.pack_into(self._map, rules_at + index * _RULE.size, rule.when, rule.how,
                                rule.arg, rule.len_arg, rule.max, rule.count, 0)
                index += 1
        _CONFIG_HEAD.pack_into(
            self._map, base, int(config.enabled), config.max_record, config.exit_address,
            config.current_offset, config.task_pid, config.task_tgid, config.task_comm,
            config.task_real_parent, config.regs_orig_ax, config.regs_ax, config.user32_cs,
            int(config.unknown_selected), config.refresh_address, *identity,
            config.switch_address, REGISTERS.index(config.switch_next), 0, n_rules,
            config.heartbeat_timeout_ms)
        handlers_at = rules_at + MAX_RULES * _RULE.size
        self._pack_handlers(config.handlers, handlers_at)
        tasks_at = handlers_at + _HANDLER_CONFIG_SIZE
        self._pack_task_filter(config.task_filter, tasks_at)
        self._pack_kernel_view(config.kernel, tasks_at + _TASK_FILTER.size)
        self._publish(timeout)

    def _pack_kernel_view(self, kernel: KernelView, at: int) -> None:
        sources = bytearray(len(MECHANISMS) * len(ABI_NAMES) * 6)
        for (mechanism, abi), registers in kernel.arguments.items():
            if len(registers) != 6:
                raise ChannelError(f"{mechanism}/{abi}: 6 argument registers, not "
                                   f"{len(registers)}")
            at_slot = (MECHANISMS.index(mechanism) * len(ABI_NAMES) + ABI_INDEX[abi]) * 6
            for i, name in enumerate(registers):
                word_at = name.startswith("[")
                sources[at_slot + i] = (REGISTERS.index(name.strip("[]"))
                                        | (ARG_AT if word_at else 0))
        _KERNEL_VIEW.pack_into(self._map, at, kernel.word_size,
                               REGISTERS.index(kernel.first_argument),
                               PERCPU_REGISTERS.index(kernel.percpu_register),
                               kernel.percpu_selector, kernel.kernel_start,
                               kernel.percpu_offsets, *sources)

    def _pack_task_filter(self, tasks: TaskFilter | None, at: int) -> None:
        if tasks is not None and len(tasks.pids) > MAX_FILTER_PIDS:
            raise ChannelError(f"the plugin filters at most {MAX_FILTER_PIDS} pids")
        pids = list(tasks.pids) if tasks is not None else []
        comm = tasks.comm if tasks is not None and tasks.comm is not None else b""
        _TASK_FILTER.pack_into(self._map, at, int(tasks is not None),
                               int(tasks is not None and tasks.follow), len(pids),
                               int(bool(comm)), comm[:15],
                               *(pids + [0] * (MAX_FILTER_PIDS - len(pids))))

    def _pack_handlers(self, handlers: HandlerConfig | None, at: int) -> None:
        if handlers is None:
            self._map[at:at + _HANDLER_HEAD.size] = bytes(_HANDLER_HEAD.size)
            return
        if len(handlers.handlers) > MAX_HANDLERS or len(handlers.stubs) > MAX_STUBS:
            raise ChannelError(f"the plugin takes {MAX_HANDLERS} handlers, {MAX_STUBS} stubs")
        arguments = [0] * (len(ABI_NAMES) * 6)
        for abi, offsets in handlers.regs_arguments.items():
            if len(offsets) != 6:
                raise ChannelError(f"{abi}: 6 argument offsets in pt_regs, not {len(offsets)}")
            start = ABI_INDEX[abi] * 6
            arguments[start:start + 6] = offsets
        addresses = sorted(set(handlers.handlers))
        _HANDLER_HEAD.pack_into(self._map, at, 1, len(addresses), len(handlers.stubs),
                                handlers.regs_size, 0, handlers.stub_span, 0, handlers.regs_sp,
                                handlers.regs_ip, 0, *arguments)
        stubs_at = at + _HANDLER_HEAD.size
        for i, stub in enumerate(sorted(handlers.stubs)):
            _STUB.pack_into(self._map, stubs_at + i * _STUB.size, *stub)
        table = stubs_at + MAX_STUBS * _STUB.size
        for i, address in enumerate(addresses):
            _WORD.pack_into(self._map, table + 8 * i, address)

    def disable(self, timeout: float = 2.0) -> bool:
        """Stop capture (the guest runs on untouched); False if the plugin did not confirm."""
        struct.pack_into("<I", self._map, self.config_offset, 0)
        try:
            self._publish(timeout)
        except ChannelError:
            return False
        return True

    def _publish(self, timeout: float) -> None:
        self.heartbeat()
        generation = self._u64(_CONFIG_GEN) + 1
        self._set_u64(_CONFIG_GEN, generation)
        deadline = time.monotonic() + timeout
        while self._u64(_APPLIED_GEN) != generation:
            if time.monotonic() > deadline:
                raise ChannelError("the capture plugin did not take its configuration "
                                   f"within {timeout:.0f} s (is the guest paused?)")
            time.sleep(0.002)

    # -- records ------------------------------------------------------------------------

    def skip_pending(self) -> None:
        """Forget what is in the ring (records of an earlier trace)."""
        self._tail = self._u64(_HEAD)
        self._set_u64(_TAIL, self._tail)

    def pending_records(self) -> int:
        """How many records the ring holds that nobody has read (padding not counted)."""
        head = self._u64(_HEAD)
        tail = self._tail
        mask = self.ring_size - 1
        count = 0
        while tail < head:
            size, kind = _SIZE_KIND.unpack_from(self._map, self.ring_offset + (tail & mask))
            if size == 0:
                break  # torn or corrupt: never loop on it
            tail += size
            count += kind != 0
        return count

    def read(self, limit: int = 4096) -> list[RawRecord]:
        """Up to ``limit`` records, oldest first (empty: nothing new)."""
        head = self._u64(_HEAD)
        tail = self._tail
        out: list[RawRecord] = []
        mask = self.ring_size - 1
        ring = self.ring_offset
        buf = self._map
        while tail < head and len(out) < limit:
            at = ring + (tail & mask)
            size, kind = _SIZE_KIND.unpack_from(buf, at)
            tail += size
            if kind != 0:  # (0: padding to the ring's end, as short as 8 bytes)
                out.append(_parse_record(buf, at, kind))
        self._tail = tail
        self._set_u64(_TAIL, tail)
        return out

    def read_bytes(self, limit: int = 16 << 20) -> tuple[bytes, int]:
        """The ring's unread records as they lie, up to about ``limit`` bytes (whole
        records, padding included), and how many records that is (padding not counted):
        what a capture file saves, at memory-copy speed."""
        head = min(self._u64(_HEAD), self._tail + limit)
        tail = self._tail
        mask = self.ring_size - 1
        pieces = []
        count = 0
        while tail < head:
            start = tail & mask
            # Up to the ring's end at most: no record wraps (the plugin pads instead).
            end = min(start + (head - tail), self.ring_size)
            # Stop at a record boundary: walk the sizes of this stretch.
            at, stop = start, start
            while at < end:
                size, kind = _SIZE_KIND.unpack_from(self._map, self.ring_offset + at)
                if size == 0 or at + size > end:
                    break  # torn or corrupt, or past what was asked: end here
                at += size
                stop = at
                count += kind != 0
            if stop == start:
                break
            pieces.append(self._map[self.ring_offset + start:self.ring_offset + stop])
            tail += stop - start
        self._tail = tail
        self._set_u64(_TAIL, tail)
        return b"".join(pieces), count

    def close(self) -> None:
        self._map.close()


def _parse_record(buf: bytes | memoryview | mmap.mmap, at: int, kind: int) -> RawRecord:
    fields = _RECORD.unpack_from(buf, at)
    regions = []
    offset = at + _RECORD.size
    for _ in range(fields[4]):
        address, length, flags = _REGION.unpack_from(buf, offset)
        offset += _REGION.size
        regions.append((address, flags, bytes(buf[offset:offset + length])))
        offset += (length + 7) & ~7
    return RawRecord(
        _KINDS[kind], ABI_NAMES[fields[2]], MECHANISMS[fields[3]],
        fields[5], not fields[6] & 1, fields[7] / 1e9, fields[8], fields[9], fields[10],
        fields[11], fields[13].split(b"\0", 1)[0], fields[14], fields[15:21],
        fields[21], fields[22], fields[23], fields[24], regions,
        bool(fields[6] & FLAG_RETRY_AT_EXIT))


def parse_records(data: bytes | memoryview) -> Iterator[RawRecord]:
    """The records in ring bytes saved by :meth:`PluginChannel.read_bytes`, in order.

    Raises ChannelError at a record that does not fit (a truncated or corrupt file),
    after yielding every whole record before it.
    """
    at, end = 0, len(data)
    while at < end:
        if end - at < _SIZE_KIND.size:
            raise ChannelError(f"a record is cut short at byte {at}")
        size, kind = _SIZE_KIND.unpack_from(data, at)
        if size < 8 or at + size > end or kind >= len(_KINDS):
            raise ChannelError(f"no valid record at byte {at} (truncated or corrupt)")
        if kind != 0:
            if size < _RECORD.size:
                raise ChannelError(f"record at byte {at} is shorter than its header")
            try:
                yield _parse_record(data, at, kind)
            except (struct.error, IndexError):
                raise ChannelError(f"record at byte {at} is corrupt") from None
        at += size
