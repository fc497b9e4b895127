"""A GDB remote-serial-protocol client, just enough for QEMU's gdbstub.

Packets are ``$payload#checksum``. After ``QStartNoAckMode`` no ``+`` acks are
exchanged, which halves the round trips. QEMU stops the whole VM when a client
connects and sends an unrequested stop reply (``T02``) that we discard.
"""

from __future__ import annotations

import socket
import time

from ...errors import TargetGone, TargetUnreachable, XenhptError

# QEMU's packet buffer is 4096 bytes of hex, so one 'm' answers at most 2047 bytes.
MAX_READ = 2047


class GdbError(XenhptError):
    """The stub answered a command with an error packet (``Exx``)."""


class GdbRemote:
    """One connection to a gdbstub. Not thread safe; the tracer owns it."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.address = f"{host}:{port}"
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise TargetUnreachable(f"cannot connect to gdbstub at {self.address}: {exc}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = bytearray()
        self._ack = True
        self.timeout = timeout
        self.running = False
        try:
            self._handshake()
        except TimeoutError:
            self._sock.close()
            raise TargetUnreachable(
                f"gdbstub at {self.address} does not answer (is another debugger attached?)"
            ) from None

    # -- framing ---------------------------------------------------------------------------

    def _handshake(self) -> None:
        reply = self.command("qSupported:swbreak+;vContSupported+", skip_stop_replies=True)
        if b"QStartNoAckMode+" in reply and self.command("QStartNoAckMode") == b"OK":
            self._ack = False

    def _fill(self, deadline: float | None) -> None:
        if deadline is None:
            self._sock.settimeout(None)
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self._sock.settimeout(remaining)
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            raise
        except OSError as exc:
            raise TargetGone(f"gdbstub connection lost: {exc}") from None
        if not data:
            raise TargetGone("the guest's gdbstub closed the connection (QEMU exited?)")
        self._buffer += data

    def send(self, payload: str | bytes) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        frame = b"$" + data + b"#" + f"{sum(data) & 0xFF:02x}".encode()
        try:
            self._sock.sendall(frame)
        except OSError as exc:
            raise TargetGone(f"gdbstub connection lost: {exc}") from None

    def send_interrupt(self) -> None:
        try:
            self._sock.sendall(b"\x03")
        except OSError as exc:
            raise TargetGone(f"gdbstub connection lost: {exc}") from None

    def receive(self, timeout: float | None) -> bytes | None:
        """Next packet payload, or None if ``timeout`` seconds pass with none complete."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            start = self._buffer.find(b"$")
            if start >= 0:
                end = self._buffer.find(b"#", start)
                if end >= 0 and len(self._buffer) >= end + 3:
                    payload = bytes(self._buffer[start + 1 : end])
                    del self._buffer[: end + 3]
                    if self._ack:
                        self._sock.sendall(b"+")
                    return _run_length_decode(payload)
            elif self._buffer:
                # Only acks ('+'/'-') live outside packets; drop them.
                self._buffer.clear()
            try:
                self._fill(deadline)
            except TimeoutError:
                return None

    def command(self, payload: str, skip_stop_replies: bool = False) -> bytes:
        """Send a command and return its reply (the guest must be stopped)."""
        self.send(payload)
        while True:
            reply = self.receive(self.timeout)
            if reply is None:
                raise TimeoutError(f"gdbstub did not answer {payload[:20]!r}")
            if skip_stop_replies and reply[:1] in (b"T", b"S"):
                continue
            return reply

    def checked(self, payload: str) -> bytes:
        """Like :meth:`command`, but an ``Exx`` reply raises :class:`GdbError`."""
        reply = self.command(payload)
        if len(reply) == 3 and reply[:1] == b"E":
            raise GdbError(f"gdbstub refused {payload.split(',')[0][:16]!r}: {reply.decode()}")
        return reply

    def close(self) -> None:
        try:
            self._sock.close()
        except OSError:
            pass


def _run_length_decode(payload: bytes) -> bytes:
    """Expand GDB run-length encoding (``x*N``); QEMU rarely uses it, but it may."""
    if b"*" not in payload:
        return payload
    out = bytearray()
    i = 0
    while i < len(payload):
        if payload[i : i + 1] == b"*" and out and i + 1 < len(payload):
            out += out[-1:] * (payload[i + 1] - 29)
            i += 2
        else:
            out.append(payload[i])
            i += 1
    return bytes(out)
