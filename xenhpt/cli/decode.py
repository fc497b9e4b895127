"""``xenhpt decode FILE``: print a trace saved with ``xenhpt trace --save`` (no guest needed)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import OutputError, XenhptError
from ..output.processes import pstree_text
from ..output.stream import StreamSink
from ..output.writer import BackgroundWriter
from ..syscalls.decode import Decoder
from ..tracer.capture_file import engine_start, open_capture_file
from ..tracer.engine import SyscallEngine
from .trace import StopFlag, open_output, summary_counts


@click.command()
@click.argument("capture", metavar="FILE", type=click.Path(path_type=Path, dir_okay=False))
@click.option("-o", "output", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the trace here instead of stdout.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per call/event.")
@click.option("-c", "summary", is_flag=True, help="Print a summary table at the end.")
@click.option("-T", "show_time", is_flag=True, help="Show the time spent in each call.")
@click.option("--tree", is_flag=True, help="Print the process tree at the end.")
@click.option("-v", "verbose", is_flag=True, help="Print record counts at the end.")
def decode(capture: Path, output: Path | None, as_json: bool, summary: bool, show_time: bool,
           tree: bool, verbose: bool) -> None:
    """Decode a capture saved by 'xenhpt trace --save' into the trace it holds.

    The selection, filters and -s are those of the trace that saved it.

    \b
    Examples:
      xenhpt trace lab --save busy.xcap --duration 10
      xenhpt decode busy.xcap -o busy.txt
      xenhpt decode busy.xcap --json -c
    """
    out_file, out_name = open_output(output)
    writer = BackgroundWriter(out_file, out_name)
    sink = StreamSink(writer, as_json=as_json, summary=summary, show_time=show_time)
    engines: list[SyscallEngine] = []

    def engine_for(header: dict) -> SyscallEngine:
        string_limit, call_filter, process_tree = engine_start(header)
        engine = SyscallEngine(Decoder(string_limit), sink, call_filter, process_tree)
        engines.append(engine)
        return engine

    stop = StopFlag()
    try:
        source = open_capture_file(capture, engine_for)
        source.run(lambda: stop.reason is not None or writer.error is not None)
        report = source.stop(lambda: True)
        source.engine.finish()
    finally:
        stop.restore()
        sink.close()
        if not writer.close(timeout=None):
            writer.abandon()
        if output:
            out_file.close()
    engine = engines[0]
    if tree and engine.tree is not None:
        click.echo(pstree_text(engine.tree), nl=False)
    stats = engine.stats
    counts = summary_counts(stats, sink.printed, report)
    if verbose:
        click.echo(f"xenhpt: {counts} ({report.events} records, {report.unknown_task} of "
                   f"unknown task, {report.late_reads} reads not in the capture; "
                   f"{stats.unfinished} unfinished)", err=True)
    if writer.error is not None:
        raise OutputError(f"cannot write the trace to {writer.name}: "
                          f"{writer.error.strerror or writer.error}; {counts}")
    if stop.reason is not None:
        raise XenhptError(f"interrupted ({stop.reason}); {counts}")
    if source.problem is not None:
        raise XenhptError(source.problem)
