"""The overhead benchmark (tools/bench.py) and the trace recording it replays.

The recording tests check the one promise a replay makes: fed the recorded trap records,
the engine prints exactly what it printed live. The benchmark's statistics
(``tools/bench_stats.py``) are checked on made-up runs; the lab test runs ``--quick`` with a
tiny duration and checks that every workload × condition was measured end to end (no timing
is asserted).
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from xenhpt.errors import MemoryReadError
from xenhpt.lab import machine
from xenhpt.linux.process_tree import ProcessTree
from xenhpt.linux.tasks import Task
from xenhpt.output.stream import StreamSink
from xenhpt.syscalls.decode import Decoder
from xenhpt.tracer.engine import SyscallEngine
from xenhpt.tracer.recording import RecordingEngine, RecordingError, load_recording, replay
from xenhpt.tracer.records import TaskIdentity, TrapRecord

from .test_trace import Trace, in_guest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import bench_stats as stats  # noqa: E402

SHELL = TaskIdentity(task=0xFFFF_8880_0100_0000, pid=90, tid=90, ppid=1, comm=b"sh")
CHILD = TaskIdentity(task=0xFFFF_8880_0200_0000, pid=91, tid=91, ppid=90, comm=b"sh")
PATH = 0x7FFF_0000_1000
BUFFER = 0x7FFF_0000_2000
ARGV = 0x7FFF_0000_3000


def _task(pid: int, ppid: int, comm: bytes, address: int) -> Task:
    return Task(address=address, pid=pid, tid=pid, comm=comm, state=0, parent_address=0,
                ppid=ppid, uid=0, mm=1, pgd=0, start_time=0, flags=0)


TASKS = [_task(0, 0, b"swapper/0", 0x1000), _task(1, 0, b"init", 0x2000),
         _task(90, 1, b"sh", SHELL.task)]


def _guest_memory(address: int, size: int) -> bytes:
    """A task's user memory with a path, a read buffer and an argv; anything else faults."""
    pages = {PATH: b"/etc/inittab\0", BUFFER: b"::sysinit:/etc/init.d/rcS\n",
             ARGV: struct.pack("<2Q", PATH, 0)}
    for base, data in pages.items():
        if base <= address and address + size <= base + 4096:
            return (data + bytes(4096))[address - base:address - base + size]
    raise MemoryReadError(address)


def _session() -> list[TrapRecord]:
    """openat, a read that fills a buffer, a failed stat, fork, exec, exit_group."""
    def entry(task: TaskIdentity, nr: int, *args: int, ts: float) -> TrapRecord:
        return TrapRecord("entry", ts, 0, task, "x86_64", "syscall", nr, args,
                          read=_guest_memory, stack_pointer=0x7FFF_0000_F000)

    def exit(task: TaskIdentity, ret: int, ts: float) -> TrapRecord:
        return TrapRecord("exit", ts, 0, task, None, None, -1, ret=ret, read=_guest_memory)

    return [
        entry(SHELL, 257, 0xFFFF_FF9C, PATH, 0, 0, 0, 0, ts=1.0), exit(SHELL, 3, ts=1.1),
        entry(SHELL, 0, 3, BUFFER, 64, 0, 0, 0, ts=1.2), exit(SHELL, 26, ts=1.3),
        entry(SHELL, 262, 0xFFFF_FF9C, 0xDEAD_0000, BUFFER, 0, 0, 0, ts=1.4),
        exit(SHELL, -2, ts=1.5),
        entry(SHELL, 57, ts=1.6), exit(SHELL, 91, ts=1.7),
        entry(CHILD, 59, PATH, ARGV, 0, 0, 0, 0, ts=1.8),
        exit(TaskIdentity(CHILD.task, 91, 91, 90, b"inittab"), 0, ts=1.9),
        entry(CHILD, 231, 0, ts=2.0),
    ]


def _json_sink() -> tuple[io.StringIO, StreamSink]:
    out = io.StringIO()
    return out, StreamSink(out, as_json=True)


def test_a_replayed_recording_prints_exactly_what_the_engine_printed_live(
        tmp_path: Path) -> None:
    live_out, live_sink = _json_sink()
    path = tmp_path / "calls.rec.jsonl"
    with open(path, "w") as recording:
        engine = RecordingEngine(recording, Decoder(32), live_sink,
                                 tree=ProcessTree.from_tasks(TASKS), tasks=TASKS)
        for record in _session():
            engine.feed(record)
        engine.finish()
    live_sink.close()
    replayed_out, replayed_sink = _json_sink()
    result = replay(load_recording(path), replayed_sink)
    replayed_sink.close()
    live = live_out.getvalue()
    assert 'openat(AT_FDCWD, \\"/etc/inittab' in live and "ENOENT" in live
    assert '"event": "fork"' in live and '"event": "exec"' in live
    assert replayed_out.getvalue() == live
    assert result.records == 11 and result.emitted == 6


def test_the_recording_keeps_the_bytes_read_and_the_reads_that_failed(tmp_path: Path) -> None:
    path = tmp_path / "calls.rec.jsonl"
    with open(path, "w") as recording:
        engine = RecordingEngine(recording, Decoder(32), StreamSink(io.StringIO()),
                                 tasks=TASKS)
        for record in _session()[:6]:
            engine.feed(record)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["type"] == "xenhpt-recording" and len(lines[0]["tasks"]) == 3
    reads = [read for line in lines[1:] for read in line["reads"]]
    assert any(data and bytes.fromhex(data).startswith(b"/etc/inittab\0") for _, _, data in reads)
    assert any(a == 0xDEAD_0000 and data is None for a, _, data in reads)


def test_the_engine_without_recording_prints_the_same(tmp_path: Path) -> None:
    plain_out, plain_sink = _json_sink()
    engine = SyscallEngine(Decoder(32), plain_sink, tree=ProcessTree.from_tasks(TASKS))
    for record in _session():
        engine.feed(record)
    engine.finish()
    recorded_out, recorded_sink = _json_sink()
    with open(tmp_path / "r.jsonl", "w") as recording:
        engine = RecordingEngine(recording, Decoder(32), recorded_sink,
                                 tree=ProcessTree.from_tasks(TASKS), tasks=TASKS)
        for record in _session():
            engine.feed(record)
        engine.finish()
    assert recorded_out.getvalue() == plain_out.getvalue()


def test_a_truncated_recording_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.rec.jsonl"
    path.write_text('{"type": "xenhpt-recording", "version": 1}\n{"kind": "entry", "ts"')
    with pytest.raises(RecordingError, match="truncated or corrupt"):
        load_recording(path)
    with pytest.raises(RecordingError, match="not a version-1"):
        path.write_text('{"type": "something else"}\n')
        load_recording(path)


# -- the benchmark's statistics, on made-up runs --------------------------------------------

BASELINES = {"untraced": "untraced", "traced": "untraced", "plugin-untraced": "plugin-untraced",
             "plugin-traced": "plugin-untraced"}
UNITS = {"syscall": "loops/s", "shell": "runs/min"}


def _run(workload: str, condition: str, repetition: int, wall: float, guest: float,
         **tracer: float) -> stats.Run:
    return stats.Run(workload, condition, repetition, 1000, 2.0, guest, 2.0, wall, **tracer)


def test_a_score_is_the_count_per_second_or_per_minute_of_host_time() -> None:
    assert stats.wall_rate(500, 2.0) == 250.0
    assert stats.wall_rate(3, 4.0, per_minute=True) == 45.0


def test_the_tracer_counts_are_read_off_its_report() -> None:
    breakpoints = ("xenhpt: armed\nxenhpt: 2410 calls captured, 2400 decoded, 2400 printed, "
                   "0 dropped, 0 undecoded (4821 traps, 0 of unknown task; 5 unfinished, ...)")
    plugin = ("xenhpt: 70 calls captured, 65 decoded, 65 printed, 12 dropped, 0 undecoded "
              "(77 records, 0 of unknown task, 3 late reads; 0 unfinished, ...)")
    assert stats.tracer_counts(breakpoints) == (4821, 0)
    assert stats.tracer_counts(plugin) == (77, 12)
    assert stats.tracer_counts("error: no lab running") is None


def test_the_spread_is_median_min_max_of_the_finite_values() -> None:
    assert stats.spread([3.0, 1.0, 10.0, float("inf"), float("nan")]) == {
        "median": 3.0, "min": 1.0, "max": 10.0}
    assert stats.spread([4.0, 2.0]) == {"median": 3.0, "min": 2.0, "max": 4.0}
    assert stats.spread([float("inf")]) == {"median": None, "min": None, "max": None}
    assert stats.ratio(100.0, 25.0) == 4.0 and stats.ratio(100.0, 0.0) == float("inf")


def test_the_ratio_pairs_each_run_with_its_own_labs_baseline_of_the_same_repetition() -> None:
    runs = [
        _run("syscall", "untraced", 0, wall=1000, guest=1000),
        _run("syscall", "untraced", 1, wall=800, guest=900),
        _run("syscall", "traced", 0, wall=100, guest=500),
        _run("syscall", "traced", 1, wall=20, guest=90),
        _run("syscall", "plugin-untraced", 0, wall=600, guest=600),
        _run("syscall", "plugin-traced", 0, wall=200, guest=300),
        _run("syscall", "plugin-traced", 1, wall=100, guest=100),  # no baseline in rep 1
    ]
    summary = stats.summarise(runs, BASELINES, UNITS)["syscall"]
    # 1000/100 = 10 and 800/20 = 40: the median of two is their mean.
    assert summary["traced"]["ratio"] == {"median": 25.0, "min": 10.0, "max": 40.0}
    assert summary["traced"]["guest_ratio"]["median"] == 6.0  # 1000/500 = 2, 900/90 = 10
    assert summary["traced"]["wall_score"] == {"median": 60.0, "min": 20.0, "max": 100.0}
    assert summary["plugin-traced"]["ratio"] == {"median": 3.0, "min": 3.0, "max": 3.0}
    assert summary["untraced"]["unit"] == "loops/s"


def test_in_a_grouped_run_each_ratio_pairs_the_runs_made_back_to_back() -> None:
    # One repetition, two groups: the host was twice as fast during the second. Paired by
    # repetition, the traced runs would meet whichever baseline came last.
    runs = [_run("syscall", "untraced", 0, wall=1000, guest=1000),
            _run("syscall", "traced", 0, wall=500, guest=500),
            _run("syscall", "untraced", 0, wall=2000, guest=2000),
            _run("syscall", "traced", 0, wall=1000, guest=1000)]
    for group, run in zip((0, 0, 1, 1), runs, strict=True):
        run.group = group
    summary = stats.summarise(runs, BASELINES, UNITS)["syscall"]
    assert summary["traced"]["ratio"] == {"median": 2.0, "min": 2.0, "max": 2.0}
    assert summary["untraced"]["ratio"]["median"] == 1.0


def test_every_condition_runs_back_to_back_with_the_baselines_of_its_ratios() -> None:
    import bench  # (after stats: tools/ is on the path)

    groups = bench.run_groups(["untraced", "xenhpt-full", "qemu10-untraced",
                               "plugin-untraced", "xenhpt-plugin-full"])
    assert sorted(map(sorted, groups)) == [
        ["plugin-untraced", "qemu10-untraced"],  # the idle plugin, against QEMU 10
        ["plugin-untraced", "qemu10-untraced", "xenhpt-plugin-full"],
        ["untraced", "xenhpt-full"]]
    assert bench.run_groups(["qemu10-untraced"]) == [["qemu10-untraced"]]


def test_tracer_rates_and_drops_are_summed_over_the_traced_runs() -> None:
    runs = [
        _run("shell", "untraced", 0, wall=60, guest=60),
        _run("shell", "plugin-traced", 0, wall=30, guest=30, traps=4000, trace_seconds=2.0,
             tracer_cpu=1.0, dropped=5),
        _run("shell", "plugin-traced", 1, wall=30, guest=30, traps=1000, trace_seconds=1.0,
             tracer_cpu=0.5, dropped=7),
    ]
    entry = stats.summarise(runs, BASELINES, UNITS)["shell"]["plugin-traced"]
    assert entry["traps_per_s"] == {"median": 1500.0, "min": 1000.0, "max": 2000.0}
    assert entry["tracer_cpu_ms_per_trap"] == {"median": 0.375, "min": 0.25, "max": 0.5}
    assert entry["tracer_cpu_share"]["median"] == 0.5
    assert entry["dropped_total"] == 12
    assert entry["ratio"] == {"median": None, "min": None, "max": None}  # no plugin baseline
    assert "traps_per_s" not in stats.summarise(runs, BASELINES, UNITS)["shell"]["untraced"]


def test_the_table_has_one_row_per_workload_and_condition() -> None:
    runs = [_run("syscall", "untraced", 0, wall=1000, guest=1000),
            _run("syscall", "traced", 0, wall=100, guest=500, traps=300, trace_seconds=3.0,
                 tracer_cpu=0.6)]
    rows = stats.table(stats.summarise(runs, BASELINES, UNITS)).splitlines()
    assert rows[0].startswith("| workload | condition |") and len(rows) == 4
    assert rows[3] == ("| syscall | traced | 100.00 [100.00–100.00] | loops/s | "
                       "10.00 [10.00–10.00] | 2.00 |  | 100 | 2.000 |  |")


# -- on the lab guest ----------------------------------------------------------------------

@pytest.mark.lab
def test_a_recorded_live_trace_replays_to_the_same_json(lab: machine.LabState,
                                                        tmp_path: Path) -> None:
    recording = tmp_path / "live.rec.jsonl"
    trace = Trace("--json", "--record", str(recording), "--duration", "25")
    in_guest("cat /etc/inittab > /tmp/copy; /opt/xenhpt/bin/mech32 int80; ls /nonexistent")
    out, _ = trace.finish()
    replayed, sink = _json_sink()
    result = replay(load_recording(recording), sink)
    sink.close()
    assert '\\"/etc/inittab\\"' in out and '"mechanism": "int80"' in out
    assert result.emitted > 20
    assert replayed.getvalue() == out


@pytest.mark.lab
def test_quick_benchmark_prints_the_table_and_json(tmp_path: Path) -> None:
    results = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "bench.py"), "--quick",
                           "--duration", "0.3", "--reps", "1", "--json", str(results)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert "| workload | condition |" in done.stdout and "µs/record" in done.stdout
    document = json.loads(results.read_text())
    conditions = {"untraced", "xenhpt-full", "xenhpt-selective", "strace-full",
                  "strace-selective", "plugin-untraced", "xenhpt-plugin-full",
                  "xenhpt-plugin-selective", "xenhpt-plugin-save", "qemu10-untraced"}
    assert set(document["summary"]) == {"syscall", "shell", "arithmetic", "spawn"}
    for workload, by_condition in document["summary"].items():
        assert set(by_condition) == conditions, workload
        assert by_condition["xenhpt-full"]["traps_per_s"]["median"] > 0
        assert "dropped_total" in by_condition["xenhpt-plugin-full"]  # the report was read
        # The plugin's conditions are also measured against QEMU 10 without the plugin.
        assert by_condition["xenhpt-plugin-full"]["plain_ratio"]["median"] > 0
        for condition in conditions:
            row = next(line for line in done.stdout.splitlines()
                       if line.startswith(f"| {workload} | {condition} |"))
            assert "—" not in row.split("|")[3], row  # a score was measured
    # Each traced run has its lab's baseline run in its group (the runs made back to back).
    groups: dict[int, set[str]] = {}
    for run in document["runs"]:
        groups.setdefault(run["group"], set()).add(run["condition"])
    for members in groups.values():
        if members & {"xenhpt-plugin-full", "xenhpt-plugin-selective", "xenhpt-plugin-save"}:
            assert {"plugin-untraced", "qemu10-untraced"} <= members, members
        elif members & {"xenhpt-full", "xenhpt-selective", "strace-full", "strace-selective"}:
            assert "untraced" in members, members
    assert len(groups) == 4 * 8  # 4 workloads x (4 gdbstub + idle + 3 plugin conditions)
    # The plugin labs' runs took turns, and are scored by the guest's clock.
    assert all(run["interleaved"] == (run["condition"] not in {
        "untraced", "xenhpt-full", "xenhpt-selective", "strace-full", "strace-selective"})
        for run in document["runs"])
    assert document["pipeline"]["text"]["us_per_record"] > 0
    # The saved syscall storm was decoded, and said how fast.
    assert [d["records"] > 0 and d["records_per_s"] > 0 for d in document["saved_decodes"]] \
        == [True]
    # The storm with the default ring: nothing dropped, every record decoded.
    storm = document["plugin_storm"]
    assert storm["dropped"] == 0 and storm["records"] >= 2 * storm["loop_calls"], storm
