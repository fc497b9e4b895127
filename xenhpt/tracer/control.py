"""Steering a running trace, as the paper's QEMU monitor commands did.

``xenhpt trace ... --control SOCKET`` listens on a Unix socket; ``xenhpt control SOCKET
COMMAND`` sends one command and prints the answer. Commands:

    status                       counters, the selection, the filters, paused or not
    pause / resume               stop / restart taking new calls (the guest runs on)
    add -e trace=SET             trace these calls too, from the guest's next call on
    remove -e trace=SET          stop tracing these calls
    filter -p PID [-p PID...]    only these processes (no -p: every process again)

The protocol is one JSON object per connection each way (``{"command": "add",
"expression": "trace=write"}`` → ``{"ok": true, ...}`` or ``{"ok": false, "error":
"..."}``). A thread only accepts and queues; every change is applied by the tracer's own
loop between two calls (:meth:`ControlServer.serve`), so the engine and the capture
source never change under each other. A command that cannot be applied changes nothing.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BadUsage, XenhptError
from ..syscalls.table import ABIS, SelectionError, SyscallTable, parse_selection
from .engine import SyscallEngine
from .source import CaptureSource

REQUEST_LIMIT = 4096  # bytes of one command at most
ANSWER_TIMEOUT = 10.0  # seconds a client waits for the tracer's loop to answer
COMMANDS = ("status", "pause", "resume", "add", "remove", "filter")

Request = dict[str, Any]
Answer = dict[str, Any]


class TraceControl:
    """Applies commands to one trace: its engine's filter and its capture source."""

    def __init__(self, engine: SyscallEngine, source: CaptureSource) -> None:
        self.engine = engine
        self.source = source

    def apply(self, request: Request) -> Answer:
        command = request.get("command")
        f = self.engine.filter
        if command == "status":
            pass
        elif command in ("pause", "resume"):
            f.paused = command == "pause"
        elif command in ("add", "remove"):
            self._change_selection(command, str(request.get("expression", "")))
        elif command == "filter":
            pids = request.get("pids") or []
            if not all(isinstance(p, int) and p >= 0 for p in pids):
                raise BadUsage("filter -p takes process ids")
            before, f.pids = f.pids, set(pids) or None
            try:
                self.source.refilter()  # the plugin filters tasks too
            except BadUsage:
                f.pids = before  # a bad command changes nothing
                raise
        else:
            raise BadUsage(f"unknown command {command!r} (one of {', '.join(COMMANDS)})")
        return {"ok": True, **self.status()}

    def _change_selection(self, command: str, expression: str) -> None:
        try:
            change = parse_selection(expression)
        except SelectionError as exc:
            raise BadUsage(str(exc)) from None
        current = self.engine.filter.numbers
        if change is None:  # all
            if command == "remove":
                raise BadUsage("remove -e trace=all would trace nothing: use pause")
            wanted = None
        elif current is None:
            if command == "add":
                return  # every call is traced already
            wanted = {abi: {t.nr for t in SyscallTable.load(abi)} - change[abi] for abi in ABIS}
        elif command == "add":
            wanted = {abi: current.get(abi, set()) | change[abi] for abi in ABIS}
        else:
            wanted = {abi: current.get(abi, set()) - change[abi] for abi in ABIS}
        self.source.select(wanted)  # first: if the source cannot, nothing has changed
        self.engine.filter.numbers = wanted

    def status(self) -> Answer:
        f, stats = self.engine.filter, self.engine.stats
        selection: Any = "all"
        if f.numbers is not None:
            selection = {abi: sorted(_names(abi, numbers)) for abi, numbers in f.numbers.items()}
        return {"source": self.source.description, "paused": f.paused,
                "selection": selection, "pids": None if f.pids is None else sorted(f.pids),
                "comm": None if f.comm is None else f.comm.decode(errors="replace"),
                "captured": stats.captured, "decoded": stats.emitted,
                "unfinished": stats.unfinished}


def _names(abi: str, numbers: set[int]) -> list[str]:
    table = SyscallTable.load(abi)
    return [getattr(table.by_number(nr), "name", str(nr)) for nr in numbers]


class ControlServer:
    """The socket side: accepts commands on a thread, answers them from the tracer's loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        _remove_stale_socket(path)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._socket.bind(str(path))
        except OSError as exc:
            self._socket.close()
            raise BadUsage(f"cannot listen on {path}: {exc.strerror}") from None
        os.chmod(path, 0o600)  # who may steer the trace: its owner
        self._socket.listen(4)
        self._socket.settimeout(0.2)
        self._pending: queue.Queue[tuple[Request, queue.Queue[Answer]]] = queue.Queue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="xenhpt-control",
                                        daemon=True)
        self._thread.start()

    def serve(self, apply: Callable[[Request], Answer]) -> None:
        """Answer the commands waiting (called from the tracer's loop, often)."""
        while True:
            try:
                request, answer = self._pending.get_nowait()
            except queue.Empty:
                return
            try:
                answer.put(apply(request))
            except XenhptError as exc:
                answer.put({"ok": False, "error": str(exc)})

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=2)
        self._socket.close()
        try:
            self.path.unlink()
        except OSError:
            pass

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with connection:
                connection.settimeout(ANSWER_TIMEOUT)
                try:
                    self._handle(connection)
                except OSError:
                    pass  # the client went away: nothing to answer

    def _handle(self, connection: socket.socket) -> None:
        data = b""
        while b"\n" not in data and len(data) < REQUEST_LIMIT:
            chunk = connection.recv(REQUEST_LIMIT)
            if not chunk:
                break
            data += chunk
        try:
            request = json.loads(data.split(b"\n", 1)[0])
            if not isinstance(request, dict):
                raise ValueError
        except ValueError:
            connection.sendall(b'{"ok": false, "error": "not a command"}\n')
            return
        answer: queue.Queue[Answer] = queue.Queue(maxsize=1)
        self._pending.put((request, answer))
        try:
            reply = answer.get(timeout=ANSWER_TIMEOUT)
        except queue.Empty:
            reply = {"ok": False, "error": "the trace did not answer (ending?)"}
        connection.sendall(json.dumps(reply).encode() + b"\n")


def send_command(path: Path, request: Request, timeout: float = ANSWER_TIMEOUT + 5) -> Answer:
    """One command to a trace's control socket; its answer."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(timeout)
    try:
        client.connect(str(path))
        client.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = client.recv(65536)
            if not chunk:
                break
            data += chunk
    except FileNotFoundError:
        raise XenhptError(f"{path}: no trace listens there") from None
    except ConnectionRefusedError:
        raise XenhptError(f"{path}: no trace listens there any more") from None
    except OSError as exc:
        raise XenhptError(f"{path}: {exc.strerror or exc}") from None
    finally:
        client.close()
    try:
        answer = json.loads(data)
    except ValueError:
        raise XenhptError(f"{path}: the trace gave no answer") from None
    return answer


def _remove_stale_socket(path: Path) -> None:
    """A socket left by a trace that died may be replaced; a live one or a file may not."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise BadUsage(f"{path} exists and is not a socket: choose another --control path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody listens: a dead trace's
        return
    finally:
        probe.close()
    raise BadUsage(f"{path}: another trace listens there")
