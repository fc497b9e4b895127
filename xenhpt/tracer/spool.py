"""The live plugin trace's spool: the ring copied to disk at once, decoded at its own pace.

The plugin writes records faster than the decoder reads them in a syscall storm (≈ 650k
against ≈ 140k a second), and a full ring drops. A thread of the tracer therefore copies
the ring's bytes to a spool file as soon as they arrive (a memory copy: the ring never
fills because of the decoder), and the trace decodes from that file, as far behind the
guest as it has to be. The file is a capture file (``capture_file.py``): the header,
then the ring's records byte for byte; when a trace ends before everything was decoded
(Ctrl-C, a dead output) the file is kept and named, so nothing captured is lost, and
``xenhpt decode FILE`` prints it all. Otherwise it is removed.

Drops remain possible only when the disk is full (the copy stops, the ring fills, the
plugin counts what it drops) — they are then reported, never silent.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

from ..errors import OutputError
from ..vmi.qemu.plugin_channel import PluginChannel

# Where spool files go: on disk, not in RAM (/tmp may be a tmpfs); XENHPT_SPOOL_DIR wins.
DEFAULT_SPOOL_DIR = "/var/tmp"
_COPY_LIMIT = 16 << 20  # bytes of ring per copy
_IDLE_PAUSE = 0.002  # seconds between looks at an empty ring


def spool_dir() -> Path:
    return Path(os.environ.get("XENHPT_SPOOL_DIR") or DEFAULT_SPOOL_DIR)


class Spool:
    """Copies a plugin ring to a file from a thread; hands its bytes out in order."""

    def __init__(self, channel: PluginChannel, header: bytes) -> None:
        self.channel = channel
        try:
            handle, name = tempfile.mkstemp(prefix="xenhpt-spool-", suffix=".xcap",
                                            dir=spool_dir())
        except OSError as exc:
            raise OutputError(f"cannot create a spool file in {spool_dir()}: "
                              f"{exc.strerror or exc} (XENHPT_SPOOL_DIR names another "
                              "directory)") from None
        self.path = Path(name)
        self._fd = handle
        os.write(self._fd, header)
        self._read_at = len(header)
        self._written = len(header)  # bytes in the file; only whole records past the header
        self.records = 0  # records copied from the ring
        self.records_taken = 0  # records handed to the decoder
        self.error: str | None = None  # the disk failed: copying stopped
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._copy, name="xenhpt-spool", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _copy(self) -> None:
        while not self._stop.is_set():
            if not self.copy_once():
                time.sleep(_IDLE_PAUSE)

    def copy_once(self) -> int:
        """Move what the ring holds to the file; how many records that was."""
        if self.error is not None:
            return 0  # the ring fills, and the plugin counts what it drops
        data, count = self.channel.read_bytes(_COPY_LIMIT)
        if data:
            try:
                written = 0
                while written < len(data):
                    written += os.write(self._fd, data[written:])
            except OSError as exc:
                self.error = f"cannot write the spool file {self.path}: " \
                             f"{exc.strerror or exc}"
                return 0
            self._written += len(data)
            self.records += count
        return count

    def take(self, limit: int) -> bytes:
        """Up to about ``limit`` bytes of whole records not yet handed out (b"": none)."""
        end = self._written
        if end <= self._read_at:
            return b""
        data = os.pread(self._fd, min(limit, end - self._read_at), self._read_at)
        # Whole records only: walk their sizes (each starts with its u32 size).
        cut, at = 0, 0
        while at + 4 <= len(data):
            size = int.from_bytes(data[at:at + 4], "little")
            if size < 8 or at + size > len(data):
                break
            at += size
            cut = at
        if cut == 0 and end - self._read_at > len(data):
            # One record larger than the limit: take it whole.
            size = int.from_bytes(data[:4], "little")
            data = os.pread(self._fd, size, self._read_at)
            cut = len(data)
        self._read_at += cut
        return data[:cut]

    def backlog(self) -> bool:
        return self._read_at < self._written

    def finish_copy(self) -> None:
        """Stop the thread after a last copy of what the ring still holds."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        while self.copy_once():
            pass

    def close(self, keep: bool) -> Path | None:
        """Close the file; remove it unless ``keep`` (returns the path kept)."""
        os.close(self._fd)
        if keep:
            return self.path
        self.path.unlink(missing_ok=True)
        return None
