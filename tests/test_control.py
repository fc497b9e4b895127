"""Steering a running trace (no VM): the commands, the socket, and what each changes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from xenhpt.errors import BadUsage, XenhptError
from xenhpt.syscalls.decode import Decoder
from xenhpt.syscalls.table import SyscallTable
from xenhpt.tracer.control import ControlServer, TraceControl, send_command
from xenhpt.tracer.engine import CallFilter, SyscallEngine

X64 = SyscallTable.load("x86_64")
OPENAT, WRITE = X64.by_name("openat").nr, X64.by_name("write").nr


class Sink:
    def syscall(self, record: object) -> None:
        pass

    def process_event(self, event: object) -> None:
        pass


class Source:
    """A capture source that remembers what it was asked to capture."""

    description = "test source"
    plugin_file = None

    def __init__(self, refuse: bool = False) -> None:
        self.selected: list[object] = []
        self.refuse = refuse

    def select(self, numbers: dict[str, set[int]] | None) -> None:
        if self.refuse:
            raise BadUsage("this source cannot")
        self.selected.append(numbers)

    def refilter(self) -> None:
        if self.refuse:
            raise BadUsage("this source cannot")
        self.selected.append("refilter")


def control(numbers: dict[str, set[int]] | None, source: Source | None = None
            ) -> TraceControl:
    engine = SyscallEngine(Decoder(32), Sink(), CallFilter(numbers))
    return TraceControl(engine, source or Source())


def test_add_and_remove_change_the_source_and_the_filter() -> None:
    c = control({"x86_64": {OPENAT}, "i386": set()})
    answer = c.apply({"command": "add", "expression": "trace=write"})
    assert answer["ok"] and "write" in answer["selection"]["x86_64"]
    assert c.engine.filter.wants_call("x86_64", WRITE)
    assert c.source.selected[-1]["x86_64"] == {OPENAT, WRITE}
    c.apply({"command": "remove", "expression": "write"})
    assert not c.engine.filter.wants_call("x86_64", WRITE)
    assert c.engine.filter.wants_call("x86_64", OPENAT)


def test_a_source_that_cannot_change_leaves_everything_as_it_was() -> None:
    c = control({"x86_64": {OPENAT}, "i386": set()}, Source(refuse=True))
    with pytest.raises(BadUsage, match="cannot"):
        c.apply({"command": "add", "expression": "trace=write"})
    assert not c.engine.filter.wants_call("x86_64", WRITE)


def test_bad_commands_are_one_clear_error_and_change_nothing() -> None:
    c = control(None)
    for request, message in (({"command": "explode"}, "unknown command"),
                             ({"command": "add", "expression": "trace=nosuchcall"},
                              "nosuchcall"),
                             ({"command": "remove", "expression": "all"}, "use pause"),
                             ({"command": "filter", "pids": ["x"]}, "process ids")):
        with pytest.raises(BadUsage, match=message):
            c.apply(request)
    assert c.engine.filter.numbers is None and c.source.selected == []


def test_pause_resume_and_the_pid_filter() -> None:
    c = control(None)
    assert c.apply({"command": "pause"})["paused"] is True
    assert not c.engine.filter.wants_call("x86_64", OPENAT)
    c.apply({"command": "resume"})
    assert c.engine.filter.wants_call("x86_64", OPENAT)
    assert c.apply({"command": "filter", "pids": [412]})["pids"] == [412]
    assert c.source.selected == ["refilter"]  # the plugin filters tasks too
    assert c.apply({"command": "filter", "pids": []})["pids"] is None
    # A source that cannot change its task filter: one error, the filter as it was.
    c = control(None, Source(refuse=True))
    with pytest.raises(BadUsage, match="cannot"):
        c.apply({"command": "filter", "pids": [412]})
    assert c.engine.filter.pids is None


def test_the_socket_answers_from_the_tracers_loop(tmp_path: Path) -> None:
    path = tmp_path / "t.sock"
    server = ControlServer(path)
    c = control({"x86_64": {OPENAT}, "i386": set()})
    stop = threading.Event()

    def loop() -> None:  # the tracer's run loop, asking should_stop() often
        while not stop.is_set():
            server.serve(c.apply)
            time.sleep(0.01)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        assert send_command(path, {"command": "status"})["selection"]["x86_64"] == ["openat"]
        added = send_command(path, {"command": "add", "expression": "write"})
        assert added["ok"] and sorted(added["selection"]["x86_64"]) == ["openat", "write"]
        refused = send_command(path, {"command": "add", "expression": "nosuchcall"})
        assert refused["ok"] is False and "nosuchcall" in refused["error"]
    finally:
        stop.set()
        thread.join()
        server.close()
    assert not path.exists()
    with pytest.raises(XenhptError, match="no trace listens"):
        send_command(path, {"command": "status"})


def test_a_live_socket_is_not_taken_over_and_a_dead_ones_is(tmp_path: Path) -> None:
    path = tmp_path / "t.sock"
    first = ControlServer(path)
    try:
        with pytest.raises(BadUsage, match="another trace listens"):
            ControlServer(path)
    finally:  # it dies without removing its socket file, like a killed tracer
        first._closing.set()
        first._thread.join()
        first._socket.close()
    assert path.exists()
    second = ControlServer(path)
    second.close()
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadUsage, match="not a socket"):
        ControlServer(tmp_path / "file")
