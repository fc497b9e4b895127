"""``xenhpt trace TARGET``: the guest's system calls, live, strace-style, from outside."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from types import FrameType

import click

from ..errors import TargetGone, XenhptError
from ..linux.kernel import Kernel
from ..linux.process_tree import ProcessTree
from ..output.processes import pstree_text
from ..output.stream import StreamSink
from ..syscalls.decode import Decoder
from ..syscalls.table import SyscallTable, resolve_selection
from ..tracer.capture import BreakpointCapture
from ..tracer.engine import CallFilter, SyscallEngine
from ..tracer.plugin_capture import PluginCapture, build_config
from ..tracer.recording import RecordingEngine
from ..tracer.trappoints import full_plan, selective_plan
from ..vmi.plugin_channel import PluginChannel
from .process import profile_option, read_processes, scan_progress
from .targets import open_target

ABIS = ("x86_64", "i386")


class StopFlag:
    """Ctrl-C and SIGTERM end the trace cleanly instead of interrupting a packet exchange."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT,
                                                                       signal.SIGTERM)}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.reason = signal.Signals(signum).name

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _selection(expression: str | None) -> dict[str, set[int]] | None:
    if not expression:
        return None
    expression = expression.removeprefix("trace=")
    if expression in ("all", "%all"):
        return None
    return {abi: resolve_selection(expression, abi) for abi in ABIS}


@click.command()
@click.argument("target", metavar="TARGET")
@click.option("-e", "expression", metavar="trace=SET",
              help="Calls to trace: names and classes %file %process %network %memory "
                   "(e.g. -e trace=openat,%process). Only these cost a trap.")
@click.option("-p", "pids", type=int, multiple=True, help="Only this process (all threads).")
@click.option("--comm", help="Only processes with this name.")
@click.option("-f", "follow", is_flag=True, help="Follow the descendants of -p/--comm.")
@click.option("-s", "string_limit", default=32, show_default=True,
              help="Print at most this many bytes of each string.")
@click.option("-o", "output", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the trace here instead of stdout.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per call/event.")
@click.option("-c", "summary", is_flag=True, help="Print a summary table at the end.")
@click.option("-T", "show_time", is_flag=True, help="Show the time spent in each call.")
@click.option("--duration", type=float, help="Stop after this many seconds.")
@click.option("--tree", is_flag=True, help="Print the process tree when the trace ends.")
@click.option("-v", "verbose", is_flag=True, help="Print trap and event counts at the end.")
@click.option("--record", "record_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Also save every trap record with the guest bytes the decoder read, "
                   "for a replay without the guest (tools/bench.py measures the pipeline).")
@click.option("--capture", "capture_mode", type=click.Choice(["auto", "plugin", "breakpoints"]),
              default="auto", show_default=True,
              help="plugin: QEMU's in-VMM capture plugin (fast; the lab has it after "
                   "'lab up --capture plugin'); breakpoints: trap through the gdbstub or "
                   "LibVMI; auto: the plugin when the target has one.")
@click.option("--capture-file", type=click.Path(path_type=Path, dir_okay=False),
              help="The plugin's shared file (shm=PATH given to -plugin) for a QEMU "
                   "started by hand.")
@profile_option
def trace(target: str, expression: str | None, pids: tuple[int, ...], comm: str | None,
          follow: bool, string_limit: int, output: Path | None, as_json: bool, summary: bool,
          show_time: bool, duration: float | None, tree: bool, verbose: bool,
          record_path: Path | None, capture_mode: str, capture_file: Path | None,
          profile_path: Path | None) -> None:
    """Trace the system calls of TARGET (a live guest) from outside.

    \b
    Examples:
      xenhpt trace lab --duration 5
      xenhpt trace lab -e trace=%file,%process -p 412 -f -o calls.jsonl --json
      xenhpt trace lab -c --duration 10
    """
    numbers = _selection(expression)
    guest = open_target(target)
    if not guest.live:
        guest.close()
        raise XenhptError(f"{target} is a snapshot: only a live guest can be traced")
    channel_path = capture_file or getattr(guest, "capture_file", None)
    if capture_mode == "breakpoints":
        channel_path = None
    elif capture_mode == "plugin" and channel_path is None:
        guest.close()
        raise XenhptError(f"{target} has no capture plugin: start the lab with 'xenhpt lab up "
                          "--capture plugin', or give --capture-file")
    stop = StopFlag()
    out = open(output, "w") if output else sys.stdout
    recording = open(record_path, "w") if record_path else None
    sink = StreamSink(out, as_json=as_json, summary=summary, show_time=show_time)
    capture: BreakpointCapture | PluginCapture | None = None
    engine = None
    gone: str | None = None
    try:
        guest.pause()
        kernel = Kernel.open(guest, profile_path, progress=scan_progress)
        tasks = read_processes(kernel).tasks
        process_tree = ProcessTree.from_tasks(tasks)
        process_tree.graph  # noqa: B018 - from here on the live tree is a networkx graph
        call_filter = CallFilter(numbers, set(pids) if pids else None,
                                 comm.encode() if comm else None, follow)
        if recording is None:
            engine = SyscallEngine(Decoder(string_limit), sink, call_filter, process_tree)
        else:
            engine = RecordingEngine(recording, Decoder(string_limit), sink, call_filter,
                                     process_tree, tasks)
        mode = "full" if numbers is None else "selective"
        if channel_path is not None:
            capture = PluginCapture(PluginChannel(channel_path), kernel, engine, guest,
                                    build_config(kernel, numbers, string_limit))
            guest.resume()  # the plugin takes its configuration from a running guest
            capture.start()
            armed = "capture plugin armed"
        else:
            if numbers is None:
                points = full_plan(kernel)
            else:
                entries = {}
                for abi in ABIS:
                    table = SyscallTable.load(abi)
                    for nr in numbers[abi]:
                        template = table.by_number(nr)
                        if template is not None:
                            entries[(abi, nr)] = template.entry
                points = selective_plan(kernel, entries)
            capture = BreakpointCapture(guest, kernel, points, engine)
            capture.arm()
            armed = f"{len(points)} trap points armed"
        if verbose:
            click.echo(f"xenhpt: tracing {target}: {armed} ({mode}, "
                       f"{kernel.profile.path.name})", err=True)
        deadline = None if duration is None else time.monotonic() + duration

        def should_stop() -> bool:
            return stop.reason is not None or (deadline is not None
                                               and time.monotonic() >= deadline)

        try:
            capture.run(should_stop)
        except TargetGone as exc:
            gone = str(exc)
    finally:
        stop.restore()
        if isinstance(capture, PluginCapture) and gone is None:
            if not capture.close():
                gone = "the capture plugin did not confirm the stop (guest gone?)"
        if gone is None:
            guest.close()  # removes every breakpoint and leaves the guest running
        if engine is not None:
            engine.finish()
        sink.close()
        if output:
            out.close()
        if recording is not None:
            recording.close()
    if tree and engine is not None and engine.tree is not None:
        click.echo(pstree_text(engine.tree), nl=False)
    if verbose and engine is not None and capture is not None:
        s = engine.stats
        if isinstance(capture, PluginCapture):
            p = capture.stats
            source = (f"{p.records} records (plugin: {p.dropped} dropped on a full ring, "
                      f"{p.late_reads} late reads)")
        else:
            source = f"{capture.stats.traps} traps"
        click.echo(f"xenhpt: {source}, {s.captured} calls captured, "
                   f"{sink.printed} printed, {s.unfinished} unfinished, "
                   f"{s.unpaired_exits} exits without entry; by mechanism "
                   f"{dict(sorted(s.by_mechanism.items()))}", err=True)
    if isinstance(capture, PluginCapture) and capture.stats.dropped:
        click.echo(f"xenhpt: warning: the capture plugin dropped {capture.stats.dropped} "
                   "records (its ring was full): those calls are missing or unfinished",
                   err=True)
    if gone is not None:
        raise TargetGone(f"{gone}; {sink.printed} calls were captured and written")
