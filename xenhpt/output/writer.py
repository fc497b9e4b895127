"""Output that never holds the guest: the trace's text goes to its file from a thread.

A breakpoint tracer handles each trap while the guest is stopped. If it wrote its line
to a pipe nobody reads (``xenhpt trace lab | less`` left on a page, ``| sleep 20``) it
would block there, and the guest with it. So the tracer only hands its text to a
:class:`BackgroundWriter`, which keeps it in memory up to a bound, beyond that in an
unlinked temporary file (the *spill*), and writes it out in order from a thread of its
own. Memory stays bounded, nothing is dropped unless the spill's disk is full too (then
the loss is counted in bytes), and a broken pipe or a full output disk is noticed here
and reported once (:attr:`BackgroundWriter.error`) for the tracer to stop on.
"""

from __future__ import annotations

import os
import tempfile
import threading
from typing import BinaryIO

MEMORY_LIMIT = 32 << 20  # bytes kept in memory before the rest goes to the spill file
SPILL_CHUNK = 1 << 20  # bytes read back from the spill file at a time


class BackgroundWriter:
    """A write-only text stream whose ``write`` never waits for the reader."""

    def __init__(self, out: BinaryIO, name: str, memory_limit: int = MEMORY_LIMIT) -> None:
        self._out = out
        self.name = name  # for messages: "stdout" or the -o path
        self._memory_limit = memory_limit
        self._memory: list[bytes] = []
        self._memory_bytes = 0
        self._spill_fd: int | None = None
        self._spill_read = 0
        self._spill_write = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._closing = False
        self.error: OSError | None = None  # the first write that failed; nothing after it
        self.lost_bytes = 0  # bytes given up: after an error, or the spill's disk was full
        self.spilled_bytes = 0  # bytes that went through the spill file
        self._thread = threading.Thread(target=self._drain, name="xenhpt-writer", daemon=True)
        self._thread.start()

    # -- the tracer's side --------------------------------------------------------------

    def write(self, text: str) -> None:
        data = text.encode("utf-8", "surrogateescape")
        with self._lock:
            if self.error is not None or self._closing:
                self.lost_bytes += len(data)
                return
            spill_pending = self._spill_write > self._spill_read
            if not spill_pending and self._memory_bytes + len(data) <= self._memory_limit:
                self._memory.append(data)
                self._memory_bytes += len(data)
            else:
                self._spill(data)
            self._wake.notify()

    def flush(self) -> None:
        """Nothing to do: the thread writes as soon as it can (kept for file-like callers)."""

    @property
    def pending_bytes(self) -> int:
        with self._lock:
            return self._memory_bytes + self._spill_write - self._spill_read

    def close(self, timeout: float | None = None) -> bool:
        """Write out what is pending and stop the thread; False if ``timeout`` ran out first.

        The file itself is left open (it may be stdout); closing it is the caller's.
        """
        with self._lock:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        if self._spill_fd is not None:
            os.close(self._spill_fd)
            self._spill_fd = None
        return True

    def abandon(self) -> int:
        """Give up what is still pending (a second Ctrl-C); the bytes given up."""
        with self._lock:
            given_up = self._memory_bytes + self._spill_write - self._spill_read
            self._memory.clear()
            self._memory_bytes = 0
            self._spill_read = self._spill_write
            self.lost_bytes += given_up
            self._closing = True
            self._wake.notify()
        return given_up

    # -- under the lock -----------------------------------------------------------------

    def _spill(self, data: bytes) -> None:
        try:
            if self._spill_fd is None:
                self._spill_fd = _unlinked_temporary_file()
            os.pwrite(self._spill_fd, data, self._spill_write)
        except OSError:
            self.lost_bytes += len(data)  # the disk of the spill is full too: count it
            return
        self._spill_write += len(data)
        self.spilled_bytes += len(data)

    def _take(self) -> bytes | None:
        """The oldest pending bytes, or None when closing with nothing left."""
        while True:
            if self._memory:
                data = b"".join(self._memory)
                self._memory.clear()
                self._memory_bytes = 0
                return data
            if self._spill_write > self._spill_read and self._spill_fd is not None:
                size = min(SPILL_CHUNK, self._spill_write - self._spill_read)
                data = os.pread(self._spill_fd, size, self._spill_read)
                self._spill_read += len(data)
                if self._spill_read >= self._spill_write:
                    self._spill_read = self._spill_write = 0  # empty: memory takes over
                return data
            if self._closing:
                return None
            self._wake.wait()

    # -- the writer thread --------------------------------------------------------------

    def _drain(self) -> None:
        while True:
            with self._lock:
                data = self._take()
            if data is None:
                return
            try:
                self._out.write(data)
                self._out.flush()
            except OSError as exc:
                with self._lock:
                    self.error = exc
                    self.lost_bytes += len(data)
                    self.lost_bytes += self._memory_bytes + self._spill_write - self._spill_read
                    self._memory.clear()
                    self._memory_bytes = 0
                    self._spill_read = self._spill_write
                return
            except ValueError:  # the file was closed under us: the process is ending
                return


def _unlinked_temporary_file() -> int:
    fd, path = tempfile.mkstemp(prefix="xenhpt-spill-")
    os.unlink(path)
    return fd
