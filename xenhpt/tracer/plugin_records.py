"""From the capture plugin's records to the engine's: one path for a live ring and a file.

The plugin writes an entry, an exit and (for an exec) a refresh record per call, each with
copies of the memory its printers read. This turns them into :class:`TrapRecord` objects
whose ``read`` answers from those copies, and holds an entry whose memory was not mapped
at the call until its exit brings a second copy. Used by the live plugin source
(``plugin_capture.py``) and by the replay of a saved capture (``capture_file.py``): they
differ only in what a read the copies do not cover does (the guest as it is now, or an
error: a saved capture has no guest).
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import MemoryReadError
from ..syscalls.render import signed
from ..vmi.qemu.plugin_channel import REGION_CUT, REGION_TERMINATED, RawRecord
from .engine import SyscallEngine
from .records import TaskIdentity, TrapRecord

MASK32 = 0xFFFF_FFFF
UNKNOWN_TASK = TaskIdentity(task=0, pid=-1, tid=-1, ppid=-1, comm=b"?")
# A read the copies do not cover: (cr3 of the call, address, size) -> bytes.
LateRead = Callable[[int, int, int], bytes]


class RecordFeeder:
    """Feeds plugin records to the engine; counts records, unknown tasks, late reads."""

    def __init__(self, engine: SyscallEngine, late_read: LateRead) -> None:
        self.engine = engine
        self.late_read = late_read
        self.records = 0
        self.unknown_task = 0
        self.late_reads = 0
        # Entries waiting for their exit record's second copy of argument memory.
        self._held: dict[int, RawRecord] = {}

    def feed(self, raw: RawRecord) -> None:
        self.records += 1
        if not raw.task_known:
            self.unknown_task += 1
        if raw.kind == "refresh":
            held = self._held.get(raw.task)
            if held is not None:
                held.regions = held.regions + raw.regions
            return
        held = self._held.pop(raw.task, None) if raw.task_known else None
        if raw.kind == "entry":
            if held is not None:  # its exit never came: the engine reports it unfinished
                self._feed_entry(held, held.regions)
            if raw.retry_at_exit and raw.task_known:
                self._held[raw.task] = raw
            else:
                self._feed_entry(raw, raw.regions)
            return
        if held is not None:
            self._feed_entry(held, held.regions + raw.regions)
        self.engine.feed(TrapRecord("exit", raw.ts, raw.vcpu, _identity(raw), None, None,
                                    signed(raw.nr, 64), ret=raw.ret,
                                    read=self._reader(raw, raw.regions)))

    def finish(self) -> None:
        """Hand over the entries still waiting for an exit that will not come now."""
        for held in list(self._held.values()):
            self._feed_entry(held, held.regions)
        self._held.clear()

    def _feed_entry(self, raw: RawRecord, regions: list[tuple[int, int, bytes]]) -> None:
        self.engine.feed(TrapRecord("entry", raw.ts, raw.vcpu, _identity(raw), raw.abi,
                                    raw.mechanism, raw.nr, raw.args,
                                    read=self._reader(raw, regions), stack_pointer=raw.sp))

    def _reader(self, raw: RawRecord, regions: list[tuple[int, int, bytes]]
                ) -> Callable[[int, int], bytes]:
        cr3 = raw.cr3

        def late(address: int, size: int) -> bytes:
            self.late_reads += 1
            return self.late_read(cr3, address, size)

        return region_reader(regions, MASK32 if raw.abi == "i386" else (1 << 64) - 1, late)


def _identity(raw: RawRecord) -> TaskIdentity:
    if not raw.task_known:
        return UNKNOWN_TASK
    return TaskIdentity(raw.task, raw.pid, raw.tid, raw.ppid, raw.comm)


def region_reader(regions: list[tuple[int, int, bytes]], mask: int,
                  late: Callable[[int, int], bytes]) -> Callable[[int, int], bytes]:
    """``read(address, size)`` answered from the regions the plugin copied at the call;
    what they do not hold goes to ``late`` (the guest as it is now)."""

    def read(address: int, size: int) -> bytes:
        address &= mask
        for start, flags, data in regions:
            offset = address - start
            if offset < 0 or offset >= len(data):
                continue  # (the next string of an argv starts right after this one)
            if offset + size <= len(data):
                return data[offset:offset + size]
            if flags & REGION_TERMINATED:
                # Past a string's NUL: what follows did not matter to anyone.
                return data[offset:] + bytes(offset + size - len(data))
            if flags & REGION_CUT:
                raise MemoryReadError(start + len(data), "unreadable at the call")
        return late(address, size)

    return read
