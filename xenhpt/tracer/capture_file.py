"""Save the capture plugin's records as they come, decode them later: a lossless trace.

The live decoder keeps up with about 140k records/s; a syscall storm makes several times
that, and a ring that fills drops records. Saving copies the ring's bytes to a file at
memory-copy speed instead (``xenhpt trace TARGET --save FILE``), so the ring never fills
because of us; ``xenhpt decode FILE`` later feeds the same records through the same path
as a live plugin trace (:class:`~.plugin_records.RecordFeeder` → engine → output).

File format (version 1): one JSON line, the header::

    {"type": "xenhpt-capture", "version": 1, "profile": "6.1.0-...json", "layout": 1,
     "string_limit": 32, "numbers": null, "pids": null, "comm": null, "follow": false,
     "tasks": [[pid, ppid, comm_hex, address, parent_address, uid], ...]}

(``layout``: the plugin's record layout version, ``vmi/qemu/plugin/channel_layout.h``;
the rest is what the engine starts from, as in a recording), then the plugin's ring
records byte for byte, padding records included, little-endian: each starts with its
size (u32) and kind (u8) and holds the registers, the caller and the copied regions.
A file cut short (the disk filled, the tracer was killed) decodes up to its last whole
record, and says where it stopped.
"""

from __future__ import annotations

import json
import mmap
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import BadUsage, MemoryReadError, XenhptError
from ..linux.kernel import Kernel
from ..linux.tasks import Task
from ..vmi.qemu.plugin_channel import (
    LAYOUT_VERSION,
    RECORD_LAYOUTS,
    ChannelError,
    PluginChannel,
    parse_records,
)
from ..vmi.qemu.target import QemuTarget
from .engine import CallFilter, SyscallEngine
from .plugin_capture import PluginCapture, build_config
from .plugin_records import RecordFeeder
from .recording import call_filter_of, process_tree_of, starting_point
from .source import CaptureReport

FORMAT = "xenhpt-capture"
VERSION = 1
_CHECK_EVERY = 4096  # records decoded between two looks at should_stop()
HEADER_LIMIT = 64 << 20  # bytes of JSON header at most (a task list of a big guest fits)


class CaptureFileError(XenhptError):
    """A capture file is missing, not one, or of another version."""


def file_header(kernel: Kernel, string_limit: int, engine: SyscallEngine, tasks: list[Task]
                ) -> bytes:
    """A capture file's first line: what the trace started from."""
    header = {"type": FORMAT, "version": VERSION, "profile": kernel.profile.path.name,
              "layout": LAYOUT_VERSION, **starting_point(string_limit, engine.filter, tasks)}
    return json.dumps(header).encode() + b"\n"


class SavingCapture(PluginCapture):
    """The plugin source, saving the ring's bytes to a file instead of decoding them."""

    spooling = False  # the file is written here, at ring speed, with nothing to decode

    def __init__(self, channel: PluginChannel, kernel: Kernel, engine: SyscallEngine,
                 target: QemuTarget, string_limit: int, numbers: dict[str, set[int]] | None,
                 tasks: list[Task], out: BinaryIO) -> None:
        super().__init__(channel, kernel, engine, target,
                         build_config(kernel, numbers, string_limit, engine.filter), string_limit)
        self.out = out
        self.saved = 0
        self.error: str | None = None
        self.description = f"capture plugin, saving to {getattr(out, 'name', 'a file')}"
        out.write(file_header(kernel, string_limit, engine, tasks))

    def run(self, should_stop: Callable[[], bool], poll: float = 0.005) -> None:
        super().run(lambda: should_stop() or self.error is not None, poll)

    def select(self, numbers: dict[str, set[int]] | None) -> None:
        raise BadUsage("a saved capture keeps the selection it started with (its decode "
                       "applies it); start another trace for other calls")

    def refilter(self) -> None:
        raise BadUsage("a saved capture keeps the processes it started with (its decode "
                       "applies the filter); start another trace for others")

    def drain_batch(self, limit: int = 16 << 20) -> int:
        """Append up to ``limit`` bytes of the ring's records to the file."""
        if self.error is not None:
            return 0  # what the ring still holds is counted as undecoded
        data, count = self.channel.read_bytes(limit)
        if data:
            try:
                self.out.write(data)
            except OSError as exc:
                self.error = f"cannot write {getattr(self.out, 'name', 'the capture file')}: " \
                             f"{exc.strerror or exc}"
                return 0
            self.saved += count
        self._update_counters()
        return count

    def stop(self, give_up: Callable[[], bool], grace: float | None = None) -> CaptureReport:
        """Save all the ring holds (at copy speed there is no need to give up early)."""
        report = super().stop(give_up, grace=None)
        try:
            self.out.flush()
        except OSError as exc:
            self.error = self.error or f"cannot write the capture file: {exc.strerror or exc}"
        report.error = self.error
        return report

    def _events(self) -> int:
        return self.saved


class SavedCapture:
    """A capture file as a capture source: its records, fed to the engine, in order."""

    def __init__(self, path: Path, engine: SyscallEngine, header: dict[str, Any],
                 body: bytes | memoryview) -> None:
        self.path = path
        self.engine = engine
        self.header = header
        self._body = body
        self.feeder = RecordFeeder(engine, _not_captured)
        self.description = f"capture file {path}"
        self.plugin_file = None
        self.fault_entry: int | None = None
        self.problem: str | None = None  # where a damaged file stopped being readable

    def start(self) -> None:
        pass

    def select(self, numbers: dict[str, set[int]] | None) -> None:
        raise BadUsage("a capture file's records are fixed")

    def refilter(self) -> None:
        raise BadUsage("a capture file's records are fixed")

    def run(self, should_stop: Callable[[], bool]) -> None:
        try:
            for count, raw in enumerate(parse_records(self._body), 1):
                self.feeder.feed(raw)
                if count % _CHECK_EVERY == 0 and should_stop():
                    return
        except ChannelError as exc:
            self.problem = f"{self.path}: {exc}; decoded up to there"

    def stop(self, give_up: Callable[[], bool], grace: float | None = None) -> CaptureReport:
        self.feeder.finish()
        f = self.feeder
        return CaptureReport("capture file", events=f.records, unknown_task=f.unknown_task,
                             late_reads=f.late_reads)


def open_capture_file(path: Path, engine_for: Callable[[dict[str, Any]], SyscallEngine]
                      ) -> SavedCapture:
    """Read a capture file; ``engine_for(header)`` builds the engine it will feed (with
    :func:`engine_start` the filter and tree the trace started from)."""
    try:
        with open(path, "rb") as f:
            # Mapped, not read: a storm saves hundreds of MB a second.
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise CaptureFileError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise CaptureFileError(f"{path} is empty: not a xenhpt capture file") from None
    end = data.find(b"\n", 0, HEADER_LIMIT)
    first = data[:end] if end >= 0 else b""
    body = memoryview(data)[end + 1:] if end >= 0 else memoryview(b"")
    try:
        header = json.loads(first)
        if not isinstance(header, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError):
        raise CaptureFileError(f"{path} is not a xenhpt capture file") from None
    if header.get("type") != FORMAT or header.get("version") != VERSION:
        raise CaptureFileError(f"{path} is not a version-{VERSION} xenhpt capture file")
    if header.get("layout") not in RECORD_LAYOUTS:
        raise CaptureFileError(f"{path} holds plugin records of layout {header.get('layout')}"
                               f", this xenhpt reads layout {LAYOUT_VERSION}")
    try:
        engine = engine_for(header)
    except (KeyError, TypeError, ValueError):
        raise CaptureFileError(f"{path}: its header is incomplete or corrupt") from None
    return SavedCapture(path, engine, header, body)


def engine_start(header: dict[str, Any]) -> tuple[int, CallFilter, Any]:
    """(-s, the call filter, the process tree) a saved trace started from."""
    return int(header["string_limit"]), call_filter_of(header), process_tree_of(header)


def _not_captured(cr3: int, address: int, size: int) -> bytes:
    raise MemoryReadError(address, "not in the capture file (no guest to read it from)")
