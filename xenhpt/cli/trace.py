"""``xenhpt trace TARGET``: the guest's system calls, live, strace-style, from outside."""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import BinaryIO

import click

from ..errors import BadUsage, OutputError, ProfileError, TargetGone, XenhptError
from ..linux.containers import ContainerReader
from ..linux.kernel import Kernel
from ..linux.process_tree import ProcessTree
from ..linux.tasks import Task
from ..output.processes import pstree_text
from ..output.stream import StreamSink
from ..output.writer import BackgroundWriter
from ..syscalls.decode import Decoder
from ..syscalls.table import SelectionError, parse_selection
from ..tracer.choose_source import MODES, choose_source, plugin_file_for
from ..tracer.containers import ContainerCache
from ..tracer.control import ControlServer, TraceControl
from ..tracer.engine import CallFilter, EngineStats, SyscallEngine
from ..tracer.exception_capture import NOT_BY_EXCEPTION
from ..tracer.recording import RecordingEngine
from ..tracer.source import STOP_GRACE_SECONDS, CaptureReport, CaptureSource
from .guardian import Guardian
from .process import containers_option, profile_option, read_processes, scan_progress
from .targets import open_target

# -s above this is a typo, not a wish: the plugin copies at most 64 KiB per call anyway.
MAX_STRING_LIMIT = 1 << 20


class StopFlag:
    """Ctrl-C, SIGTERM and SIGHUP end the trace cleanly instead of interrupting a packet
    exchange; a second one also gives up decoding what is still waiting (what was already
    written stays written)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.reason: str | None = None
        self.hurry = False
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.reason is None:
            self.reason = signal.Signals(signum).name
        else:
            self.hurry = True

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _selection(expression: str | None) -> dict[str, set[int]] | None:
    if expression is None:
        return None
    try:
        return parse_selection(expression)
    except SelectionError as exc:
        raise BadUsage(str(exc)) from None


def _positive_seconds(ctx: click.Context, param: click.Parameter, value: float | None
                      ) -> float | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"{value} is not a number of seconds above 0")
    return value


def open_output(path: Path | None) -> tuple[BinaryIO, str]:
    if path is None:
        sys.stdout.flush()
        return sys.stdout.buffer, "stdout"
    try:
        return open(path, "wb"), str(path)
    except OSError as exc:
        raise BadUsage(f"cannot write the trace to {path}: {exc.strerror}") from None


def _warn_if_nothing_matches(tasks: list[Task], pids: tuple[int, ...], comm: str | None
                             ) -> None:
    """-p/--comm that match nothing now may match later (a pid reused, a program started):
    say so rather than trace in silence."""
    running = {task.pid for task in tasks}
    for pid in pids:
        if pid not in running:
            click.echo(f"xenhpt: warning: -p {pid}: no such process in the guest now; "
                       "nothing is traced for it unless it appears", err=True)
    if comm is not None and comm.encode() not in {task.comm for task in tasks}:
        click.echo(f"xenhpt: warning: --comm {comm}: no process of that name in the guest "
                   "now; its calls are traced once one runs", err=True)


class TaskListWatch:
    """Keeps the live tree honest about deaths the call stream does not show.

    Every ``interval`` seconds (and once at the end) the kernel's task list is read and
    handed to the engine (:meth:`SyscallEngine.reconcile`). A walk that met a problem
    (a cycle, an unreadable link) is not trusted to say who died.

    The walk runs between two traps, while the guest is still held at the last one, so
    a slow walk is a guest standing still: the next one waits at least ``cost_ratio``
    times as long as this one took (the Xen lab's nested dom0 needs seconds per walk,
    and with a walk every second its domU hardly ran: 36 traps in 30 s).
    """

    def __init__(self, kernel: Kernel, engine: SyscallEngine, interval: float = 1.0,
                 cost_ratio: float = 20.0) -> None:
        self.kernel = kernel
        self.engine = engine
        self.interval = interval
        self.cost_ratio = cost_ratio
        self._next = time.monotonic() + interval

    def maybe_check(self) -> None:
        if time.monotonic() >= self._next:
            start = time.monotonic()
            self.check(complete=False)
            now = time.monotonic()
            self._next = now + max(self.interval, (now - start) * self.cost_ratio)

    def check(self, complete: bool) -> None:
        try:
            walk = read_processes(self.kernel)
        except XenhptError:
            return  # the guest is gone or mid-change: the next look will tell
        if not walk.problems:
            self.engine.reconcile(walk.tasks, time.time(), complete=complete)


@click.command()
@click.argument("target", metavar="TARGET")
@click.option("-e", "expression", metavar="trace=SET",
              help="Calls to trace: names and classes %file %process %network %memory "
                   "(e.g. -e trace=openat,%process). Only these cost a trap.")
@click.option("-p", "pids", type=int, multiple=True, help="Only this process (all threads).")
@click.option("--comm", help="Only processes with this name.")
@click.option("-f", "follow", is_flag=True, help="Follow the descendants of -p/--comm.")
@click.option("-s", "string_limit", default=32, show_default=True,
              type=click.IntRange(0, MAX_STRING_LIMIT),
              help="Print at most this many bytes of each string.")
@click.option("-o", "output", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the trace here instead of stdout.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per call/event.")
@click.option("-c", "summary", is_flag=True, help="Print a summary table at the end.")
@click.option("-T", "show_time", is_flag=True, help="Show the time spent in each call.")
@click.option("--duration", type=float, callback=_positive_seconds,
              help="Stop after this many seconds.")
@click.option("--tree", is_flag=True, help="Print the process tree when the trace ends.")
@click.option("-v", "verbose", is_flag=True, help="Print trap and event counts at the end.")
@click.option("--record", "record_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Also save every trap record with the guest bytes the decoder read, "
                   "for a replay without the guest (tools/bench.py measures the pipeline).")
@click.option("--save", "save_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Save the capture plugin's records to this file as they come, at ring "
                   "speed, instead of decoding them (nothing is dropped for want of time); "
                   "'xenhpt decode FILE' prints the trace later.")
@click.option("--control", "control_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Listen on this Unix socket for 'xenhpt control' commands (status, "
                   "pause, resume, add/remove -e, filter -p) while the trace runs.")
@click.option("--capture", "capture_mode", type=click.Choice(MODES),
              default="auto", show_default=True,
              help="plugin: QEMU's in-VMM capture plugin (fast; the lab has it after "
                   "'lab up --capture plugin'); breakpoints: trap through the gdbstub or "
                   "LibVMI; exception: clear EFER.SCE so that every syscall faults, and "
                   "catch the #UD (QEMU gdbstub only; sysenter and int 0x80 stay on "
                   "breakpoints); auto: the plugin when the target has one.")
@click.option("--capture-file", type=click.Path(path_type=Path, dir_okay=False),
              help="The plugin's shared file (shm=PATH given to -plugin) for a QEMU "
                   "started by hand.")
@containers_option
@profile_option
def trace(target: str, expression: str | None, pids: tuple[int, ...], comm: str | None,
          follow: bool, string_limit: int, output: Path | None, as_json: bool, summary: bool,
          show_time: bool, duration: float | None, tree: bool, verbose: bool,
          record_path: Path | None, save_path: Path | None, control_path: Path | None,
          capture_mode: str, capture_file: Path | None, with_containers: bool,
          profile_path: Path | None) -> None:
    """Trace the system calls of TARGET (a live guest) from outside.

    \b
    Examples:
      xenhpt trace lab --duration 5
      xenhpt trace lab -e trace=%file,%process -p 412 -f -o calls.jsonl --json
      xenhpt trace lab -c --duration 10
      xenhpt trace lab --save busy.xcap --duration 10; xenhpt decode busy.xcap
      xenhpt trace lab -e trace=openat --control /tmp/t.sock &
      xenhpt control /tmp/t.sock add -e trace=write
      xenhpt trace lab -e trace=%process --containers

    JSON records always carry pidns, ns_pid and cgroup (the caller's pid namespace, its
    pid there, its cgroup v2 path); --containers shows them in text lines too.
    """
    numbers = _selection(expression)
    out_file, out_name = open_output(output)  # like strace: -o first, a bad path says so
    guest = open_target(target)
    if not guest.live:
        guest.close()
        raise XenhptError(f"{target} is a snapshot: only a live guest can be traced")
    try:
        plugin_file = plugin_file_for(capture_mode, target, guest, capture_file,
                                      saving=save_path is not None)
    except BadUsage:
        guest.close()
        raise
    try:
        recording = open(record_path, "w") if record_path else None
        saving = open(save_path, "wb") if save_path else None
    except OSError as exc:
        guest.close()
        raise BadUsage(f"cannot write {exc.filename}: {exc.strerror}") from None
    try:
        control = ControlServer(control_path) if control_path else None
    except BadUsage:
        guest.close()
        raise
    steering: TraceControl | None = None
    writer = BackgroundWriter(out_file, out_name)
    sink = StreamSink(writer, as_json=as_json, summary=summary, show_time=show_time,
                      containers=with_containers)
    stop = StopFlag()
    guardian = Guardian.start(target)
    capture: CaptureSource | None = None
    report: CaptureReport | None = None
    engine = None
    watch = None
    gone: str | None = None
    try:
        guest.pause()
        kernel = Kernel.open(guest, profile_path, progress=scan_progress)
        tasks = read_processes(kernel).tasks
        _warn_if_nothing_matches(tasks, pids, comm)
        process_tree = ProcessTree.from_tasks(tasks)
        process_tree.graph  # noqa: B018 - from here on the live tree is a networkx graph
        call_filter = CallFilter(numbers, set(pids) if pids else None,
                                 comm.encode() if comm else None, follow)
        if recording is None:
            engine = SyscallEngine(Decoder(string_limit), sink, call_filter, process_tree)
        else:
            engine = RecordingEngine(recording, Decoder(string_limit), sink, call_filter,
                                     process_tree, tasks)
        if sink.containers and saving is None:
            engine.containers = _container_cache(kernel, required=with_containers)
        # (a saved trace is decoded later: no live tree to keep honest meanwhile)
        watch = TaskListWatch(kernel, engine) if saving is None else None
        mode = "full" if numbers is None else "selective"
        source = choose_source(guest, kernel, engine, numbers, string_limit, plugin_file,
                               save_to=saving, tasks=tasks,
                               exception=capture_mode == "exception")
        if source.plugin_file is not None:
            guardian.watch_plugin(source.plugin_file)
        if source.fault_entry is not None:
            guardian.watch_exception_trap(source.fault_entry)
        source.start()
        capture = source  # (only a started source is stopped: a failed claim is not ours)
        spool = getattr(source, "spool", None)
        if spool is not None:
            guardian.keep_file(spool.path)
        if control is not None:
            steering = TraceControl(engine, capture)
        if verbose:
            click.echo(f"xenhpt: tracing {target}: {capture.description} armed ({mode}, "
                       f"{kernel.profile.path.name})", err=True)
            if capture.fault_entry is not None:
                click.echo(f"xenhpt: {NOT_BY_EXCEPTION}", err=True)
        deadline = None if duration is None else time.monotonic() + duration

        def should_stop() -> bool:
            if watch is not None:
                watch.maybe_check()
            if control is not None and steering is not None:
                control.serve(steering.apply)
            return (stop.reason is not None or writer.error is not None
                    or (deadline is not None and time.monotonic() >= deadline))

        try:
            capture.run(should_stop)
        except TargetGone as exc:
            gone = str(exc)
    finally:
        if capture is not None and gone is None:
            try:
                if stop.reason is None and writer.error is None:  # --duration: decode all
                    report = capture.stop(lambda: stop.reason is not None, grace=None)
                else:  # a signal or a dead output: end within about a second
                    report = capture.stop(lambda: stop.hurry, grace=STOP_GRACE_SECONDS)
                if not report.confirmed:
                    gone = "the capture plugin did not confirm the stop (guest gone?)"
                elif watch is not None:
                    watch.check(complete=True)  # the tree at the end equals the guest's ps
            except TargetGone as exc:
                gone = str(exc)
        if gone is None:
            guest.close()  # removes every breakpoint and leaves the guest running
        guardian.dismiss()  # (a guest that is gone has nothing left to undo)
        if control is not None:
            control.close()
        stop.restore()
        if engine is not None:
            engine.finish()
        sink.close()
        if not writer.close(timeout=None if not stop.hurry else 1.0):
            writer.abandon()
        if output:
            _close_quietly(out_file)
        if recording is not None:
            recording.close()
        if saving is not None:
            _close_quietly(saving)
    if saving is not None and report is not None:
        if report.error is not None:
            raise OutputError(f"{report.error}; {report.events} records saved before, "
                              f"{report.undecoded} left unsaved")
        click.echo(f"xenhpt: {report.events} records saved to {save_path}; print them with "
                   f"'xenhpt decode {save_path}'", err=True)
    _report(target, verbose, tree, engine, sink, writer, report, gone)


def _container_cache(kernel: Kernel, required: bool) -> ContainerCache | None:
    """The per-task container reads of this trace; an old profile without the fields is
    an error when --containers asked for them, else JSON shows nulls (no warning: JSON
    carries the fields always, and a trace's first stderr line says it is armed)."""
    try:
        reader = ContainerReader(kernel)
    except ProfileError:
        if required:
            raise
        return None  # (JSON's container fields stay null: nobody asked for them)
    if reader.cgroup_v2 is False and required:
        click.echo("xenhpt: warning: cgroup v2 is not mounted in the guest (cgroup v1 only, "
                   "or none): no cgroup paths", err=True)
    return ContainerCache(reader)


def _close_quietly(file: BinaryIO) -> None:
    try:
        file.close()
    except OSError:
        pass  # the writer already reported why it could not write


def summary_counts(stats: EngineStats, printed: int, report: CaptureReport | None) -> str:
    """The counts every trace ends with (``-v`` and errors; tests and the bench parse it)."""
    return (f"{stats.captured} calls captured, {stats.emitted} decoded, {printed} printed, "
            f"{report.dropped if report else 0} dropped, "
            f"{report.undecoded if report else 0} undecoded")


def _report(target: str, verbose: bool, tree: bool, engine: SyscallEngine | None,
            sink: StreamSink, writer: BackgroundWriter, report: CaptureReport | None,
            gone: str | None) -> None:
    """The end of a trace on stderr (and the tree on stdout): counts, warnings, errors."""
    broken_stdout = writer.error is not None and writer.name == "stdout"
    if broken_stdout:
        # Nothing more can reach the reader; keep Python's exit-time flush from failing.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    if tree and engine is not None and engine.tree is not None and not broken_stdout:
        click.echo(pstree_text(engine.tree), nl=False)
    stats = engine.stats if engine is not None else None
    counts = "no call captured"
    if stats is not None:
        counts = summary_counts(stats, sink.printed, report)
    if verbose and stats is not None and report is not None:
        unit = "traps" if report.source == "breakpoints" else "records"
        detail = f"{report.events} {unit}, {report.unknown_task} of unknown task"
        if report.source == "plugin":
            detail += f", {report.late_reads} late reads"
        click.echo(f"xenhpt: {counts} ({detail}; {stats.unfinished} unfinished, "
                   f"{stats.unpaired_exits} exits without entry; by mechanism "
                   f"{dict(sorted(stats.by_mechanism.items()))})", err=True)
    if report is not None and report.interruptions:
        click.echo(f"xenhpt: warning: the capture plugin stopped {report.interruptions} "
                   "time(s) when the tracer's heartbeat came late (starved of CPU?) and was "
                   "started again: calls in those gaps are missing", err=True)
    if report is not None and report.dropped:
        click.echo(f"xenhpt: warning: the capture plugin dropped {report.dropped} records "
                   "(its ring was full): those calls are missing or unfinished", err=True)
    if report is not None and report.undecoded and report.kept is not None:
        click.echo(f"xenhpt: warning: {report.undecoded} captured records were not decoded "
                   f"when the trace ended; the whole capture is kept in {report.kept} "
                   f"('xenhpt decode {report.kept}' prints it)", err=True)
    elif report is not None and report.undecoded:
        click.echo(f"xenhpt: warning: {report.undecoded} captured records were still in the "
                   "ring when the trace ended and were not decoded", err=True)
    if report is not None and report.error is not None and report.kept is None:
        click.echo(f"xenhpt: warning: {report.error}", err=True)
    if writer.lost_bytes and writer.error is None:
        click.echo(f"xenhpt: warning: {writer.lost_bytes} bytes of output were not written",
                   err=True)
    if gone is not None:
        raise TargetGone(f"{gone}; {counts}")
    if writer.error is not None:
        raise OutputError(f"cannot write the trace to {writer.name}: "
                          f"{writer.error.strerror or writer.error}; {counts}, "
                          f"{writer.lost_bytes} bytes not written")
