#!/usr/bin/env python3
"""Overhead benchmark: the papers' workloads, untraced vs traced vs strace, in one boot.

    .venv/bin/python tools/bench.py            # 5 repetitions of 5 s runs (~40 min)
    .venv/bin/python tools/bench.py --quick    # 2 repetitions of 2 s runs (~10 min)
    .venv/bin/python tools/bench.py --quick --json results.json --cprofile tracer.prof

Workloads (built into the lab guest from xenhpt/lab/guest/src/bench_*.c, each printing its
own score by the guest's clock): ``syscall`` (UnixBench syscall mix), ``shell`` (tst.sh
runs/min), ``arithmetic`` (integer loop, no calls), ``spawn`` (fork + exec + wait).
Conditions, each run with its baselines (run_groups): back to back, or where they are on
QEMU 10 labs, taking turns of --slice seconds on one host CPU (Turns); these groups in an
order that rotates every repetition. On the gdbstub lab (system QEMU 7.2): untraced;
xenhpt full (``xenhpt trace lab -o /dev/null``); xenhpt selective (``-e
trace=%file,%process``); ``strace -f`` inside the guest; ``strace -f --seccomp-bpf`` with
the same selection. On QEMU 10 with the capture plugin (``lab up --capture plugin``):
plugin-untraced (the plugin loaded, capture off: the baseline, on a lab of its own so that
it can take turns), xenhpt-plugin-full and xenhpt-plugin-selective, whose records dropped
on a full ring are counted too, and xenhpt-plugin-save (full, ``--save`` to a file in
/var/tmp: the records saved at ring speed; each saved syscall storm is then decoded by
``xenhpt decode`` and timed, records/s). On QEMU 10 *without* the plugin (``lab up
--capture qemu10``): qemu10-untraced, against which every plugin condition's ratio is
also given (the honest baseline for a user who would not load the plugin).
Last, the plugin storm: the syscall loop fully traced with the default ring, the trace
left to end by itself, every record decoded (dropped must be 0).

Scores are rates, measured twice: by the guest's clock (what the workload prints) and by
the host's wall clock between markers the workload writes on the console. While a debugger
holds the VM stopped, QEMU stops the guest's clock, so the guest's own score hides most of
the cost of a trap: the **overhead ratio = untraced / condition** is computed from the
wall-clock scores (the guest-clock ratio is shown beside it), each run against the
baseline run of its group, then median, min and max. Runs that took turns are scored by
the guest's clock (it stands still while the VM waits; the plugin never stops it).
Tracer-side: traps/s (over the tracer's wall time, other labs' turns included) and host
CPU of the tracer process per trap.
Pipeline: a full trace of the shell workload is recorded (``--record``) and replayed
through decode → pair → tree → output with no guest: µs per trap record.

It boots its own lab guest in a temporary run directory (or uses ``--lab-dir``'s).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

from bench_stats import Run, ratio, summarise, table, tracer_counts, wall_rate

from xenhpt.errors import LabError
from xenhpt.lab import machine
from xenhpt.lab.kernel import ensure_kernel
from xenhpt.lab.qmp import Qmp
from xenhpt.linux.kernel import Kernel
from xenhpt.output.stream import StreamSink
from xenhpt.tracer.recording import load_recording, replay
from xenhpt.vmi.qemu.gdbremote import GdbRemote
from xenhpt.vmi.qemu.target import REGISTER_NUMBER, QemuTarget

XENHPT = str(Path(sys.executable).with_name("xenhpt"))
BIN = "/opt/xenhpt/bin"
SELECTION = "trace=%file,%process"
SAVE_PLACEHOLDER = "{save}"  # replaced by a fresh file per run
SAVE_DIR = Path("/var/tmp")  # on disk: a storm saves hundreds of MB a second
WORKLOADS = {  # name -> (guest command taking the duration, unit)
    "syscall": (f"{BIN}/bench_syscall", "loops/s"),
    "shell": (f"{BIN}/bench_shell", "runs/min"),
    "arithmetic": (f"{BIN}/bench_arith", "loops/s"),
    "spawn": (f"{BIN}/bench_spawn", "spawns/s"),
    # The same mix from a 32-bit program, one mechanism each (the paper's columns).
    "syscall32-int80": (f"{BIN}/bench_syscall32 int80", "loops/s"),
    "syscall32-sysenter": (f"{BIN}/bench_syscall32 sysenter", "loops/s"),
    "syscall32-syscall": (f"{BIN}/bench_syscall32 syscall", "loops/s"),
}
DEFAULT_WORKLOADS = ("syscall", "shell", "arithmetic", "spawn")
# --paper: the paper's table (syscall loop per mechanism, shell, arithmetic), with the
# exception trap beside the breakpoints and the plugin.
PAPER_WORKLOADS = ("syscall", "syscall32-int80", "syscall32-sysenter", "syscall32-syscall",
                   "shell", "arithmetic")
PAPER_CONDITIONS = ("untraced", "xenhpt-full", "xenhpt-exception", "plugin-untraced",
                    "xenhpt-plugin-full")
# A 32-bit guest kernel (--kernel) has no `syscall` path: its calls come by int 0x80 and
# sysenter. So no 32-bit syscall loop there, and no exception trap (which breaks
# syscall's condition; the other two's cannot be broken through a gdbstub).
NOT_ON_32_BIT = ("syscall32-syscall", "xenhpt-exception")
CONDITIONS = {  # name -> (lab, xenhpt trace arguments or None, in-guest prefix)
    "untraced": ("gdbstub", None, ""),
    "xenhpt-full": ("gdbstub", [], ""),
    "xenhpt-selective": ("gdbstub", ["-e", SELECTION], ""),
    # The paper's trap: EFER.SCE cleared, every syscall caught at its #UD (sysenter and
    # int 0x80 stay on breakpoints: the gdbstub cannot break their conditions).
    "xenhpt-exception": ("gdbstub", ["--capture", "exception"], ""),
    "strace-full": ("gdbstub", None, "strace -f -o /dev/null "),
    "strace-selective": ("gdbstub", None, f"strace -f --seccomp-bpf -e {SELECTION} -o /dev/null "),
    # The plugin lab: QEMU 10 with the capture plugin loaded (idle when untraced).
    # (on a lab of its own, so that it can take turns with the traced conditions: Turns)
    "plugin-untraced": ("plugin-idle", None, ""),
    "xenhpt-plugin-full": ("plugin", [], ""),
    "xenhpt-plugin-selective": ("plugin", ["-e", SELECTION], ""),
    # Full, saving the ring's records to a file for a later `xenhpt decode` (lossless).
    "xenhpt-plugin-save": ("plugin", ["--save", SAVE_PLACEHOLDER], ""),
    # QEMU 10 without the plugin: what a user who would not load it runs.
    "qemu10-untraced": ("qemu10", None, ""),
}
BASELINE = {"gdbstub": "untraced", "plugin": "plugin-untraced",
            "plugin-idle": "plugin-untraced", "qemu10": "qemu10-untraced"}
# The plugin labs' conditions are also compared with QEMU 10 without the plugin.
PLAIN_BASELINE = {"plugin": "qemu10-untraced", "plugin-idle": "qemu10-untraced"}
CAPTURE = {"gdbstub": "gdbstub", "plugin": "plugin", "plugin-idle": "plugin",
           "qemu10": "qemu10"}  # each lab's `lab up --capture`
KEPT = re.compile(r"the whole capture is kept in (\S+) ")
PAPER = {"syscall": "13.8 / 100.4 / 60.6", "shell": "1.90 / 2.61 / 2.20", "arithmetic": "≈ 1.00",
         "spawn": "—", "syscall32-int80": "13.8 (int)", "syscall32-sysenter": "100.4 (sysenter)",
         "syscall32-syscall": "60.6 (syscall)"}
SCORE = re.compile(r"bench=(\w+) count=(\d+) seconds=([\d.]+) score=([\d.]+)")
TICKS = os.sysconf("SC_CLK_TCK")


# -- the console markers: the workload's timed part, by the host's clock -------------------

class ConsoleMarks:
    """Watches the console log for "XENHPT-BENCH begin|end TAG" lines, stamped on arrival."""

    def __init__(self, path: Path, poll: float = 0.003) -> None:
        self.path, self.poll = path, poll
        self.seen: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ConsoleMarks:
        self._file = open(self.path, "rb")
        self._file.seek(0, os.SEEK_END)
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._file.close()

    def _watch(self) -> None:
        pending = b""
        while True:
            stopping = self._stop.is_set()
            chunk = self._file.read()
            now = time.monotonic()
            if chunk:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    match = re.search(rb"XENHPT-BENCH (begin|end) (\S+)", line)
                    if match:
                        self.seen[(match.group(1).decode(), match.group(2).decode())] = now
            if stopping:
                return
            time.sleep(self.poll)

    def interval(self, tag: str) -> float:
        try:
            return self.seen[("end", tag)] - self.seen[("begin", tag)]
        except KeyError:
            raise RuntimeError(f"no begin/end console marker for {tag}") from None


# -- one run -------------------------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


class Tracer:
    """``xenhpt trace lab -v -o /dev/null`` in the background (never an unread pipe)."""

    def __init__(self, directory: Path, args: list[str], extra: list[str] | None = None,
                 python: list[str] | None = None) -> None:
        self.log = Path(tempfile.mkstemp(prefix="xenhpt-bench-trace-")[1])
        env = {**os.environ, "XENHPT_LAB_DIR": str(directory)}
        command = [*(python or []), XENHPT, "trace", "lab", "-v", "-o", "/dev/null", *args,
                   *(extra or [])]
        with open(self.log, "w") as err:
            self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                            stderr=err)
        deadline = time.monotonic() + 120
        while "armed" not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tracer did not start: {self.log.read_text()}")
            time.sleep(0.02)
        self.armed = time.monotonic()
        self.cpu_armed = _cpu_seconds(self.process.pid)

    def stop(self) -> tuple[int, float, float, int | None]:
        """Stop it; (traps or records, seconds armed, CPU seconds while armed, dropped)."""
        seconds = time.monotonic() - self.armed
        cpu = _cpu_seconds(self.process.pid) - self.cpu_armed
        self.process.send_signal(signal.SIGINT)
        return self._ended(seconds, cpu)

    def finish(self, timeout: float) -> tuple[int, float, float, int | None]:
        """Wait for a trace started with --duration to end by itself (it decodes all)."""
        seconds = time.monotonic() - self.armed
        cpu_seconds = _cpu_seconds(self.process.pid)
        self.process.wait(timeout=timeout)
        return self._ended(seconds, cpu_seconds - self.cpu_armed)

    def _ended(self, seconds: float, cpu: float) -> tuple[int, float, float, int | None]:
        self.process.wait(timeout=300)
        text = self.log.read_text()
        self.log.unlink()
        kept = KEPT.search(text)
        if kept:  # a Ctrl-C before the spool was decoded: nothing is lost, but not ours
            Path(kept.group(1)).unlink(missing_ok=True)
        counts = tracer_counts(text)
        if self.process.returncode != 0 or counts is None:
            raise RuntimeError(f"tracer failed ({self.process.returncode}): {text}")
        return counts[0], seconds, cpu, counts[1]


def run_groups(conditions: list[str]) -> list[list[str]]:
    """The runs made back to back: each condition with the baselines its ratios need.

    This host's speed changes by up to 2x (other tenants), for seconds at a time: a ratio
    of runs made minutes apart measures that, one of adjacent runs less so, one of runs
    taking turns (Turns) the condition. A baseline has a group of its own only if it is
    measured against another (the idle plugin against QEMU 10 without it) or nothing
    else runs on its lab.
    """
    groups = []
    for condition in conditions:
        lab = CONDITIONS[condition][0]
        partners = [b for b in (BASELINE[lab], PLAIN_BASELINE.get(lab))
                    if b is not None and b != condition and b in conditions]
        needed = bool(partners) or not any(
            condition in (BASELINE[CONDITIONS[c][0]], PLAIN_BASELINE.get(CONDITIONS[c][0]))
            for c in conditions if c != condition)
        if needed:
            groups.append([*partners, condition])
    return groups


class Started:
    """A run whose tracer (if any) is armed: the workload is next."""

    def __init__(self, directory: Path, workload: str, condition: str, repetition: int,
                 duration: float) -> None:
        self.directory, self.workload, self.condition = directory, workload, condition
        self.repetition, self.duration = repetition, duration
        program, _ = WORKLOADS[workload]
        _, trace_args, prefix = CONDITIONS[condition]
        self.tag = f"{workload}.{condition}.{repetition}.{time.monotonic_ns()}"
        self.command = (f"XENHPT_BENCH_MARK=/dev/ttyS0 XENHPT_BENCH_TAG={self.tag} "
                        f"{prefix}{program} {duration}")
        self.saved = None
        if trace_args is not None and SAVE_PLACEHOLDER in trace_args:
            self.saved = Path(tempfile.mkstemp(prefix="xenhpt-bench-", suffix=".xcap",
                                               dir=SAVE_DIR)[1])
            trace_args = [str(self.saved) if a == SAVE_PLACEHOLDER else a for a in trace_args]
        self.tracer = Tracer(directory, trace_args) if trace_args is not None else None
        self.result: machine.ExecResult | BaseException | None = None

    def execute(self) -> None:
        """The workload, in the guest (kept in ``result``: this may run in a thread)."""
        try:
            self.result = machine.exec_in_guest(self.command,
                                                timeout=600 + 200 * self.duration,
                                                directory=self.directory)
        except BaseException as exc:  # noqa: BLE001 (handed to finish)
            self.result = exc

    def finish(self, marks: ConsoleMarks | None) -> Run:
        """Stop the tracer, read the score; by the console markers, or with no ``marks``
        (the run took turns with others) by the guest's clock, which stood still while
        its VM waited for its turn."""
        try:
            traced = self.tracer.stop() if self.tracer is not None else None
            if self.saved is not None and traced is not None and self.workload == "syscall":
                SAVED_DECODES.append(decode_saved(self.saved, traced[0]))
        finally:
            if self.saved is not None:
                self.saved.unlink(missing_ok=True)
        result = self.result
        if isinstance(result, BaseException):
            raise result
        match = SCORE.search(result.stdout) if result is not None else None
        if result is None or result.status != 0 or not match:
            raise RuntimeError(f"{self.command} failed: {result}")
        count, guest_seconds, guest_score = int(match[2]), float(match[3]), float(match[4])
        if marks is None:
            wall, wall_score = guest_seconds, guest_score
        else:
            time.sleep(0.05)  # let the watcher see the end marker
            wall = marks.interval(self.tag)
            wall_score = wall_rate(count, wall,
                                   per_minute=WORKLOADS[self.workload][1] == "runs/min")
        run = Run(self.workload, self.condition, self.repetition, count, guest_seconds,
                  guest_score, wall, wall_score, interleaved=marks is None)
        if traced is not None:
            run.traps, run.trace_seconds, run.tracer_cpu, run.dropped = traced
        return run


def run_once(directory: Path, marks: ConsoleMarks, workload: str, condition: str,
             repetition: int, duration: float) -> Run:
    started = Started(directory, workload, condition, repetition, duration)
    started.execute()
    return started.finish(marks)


# The labs whose runs take turns (see Turns): QEMU 10, with the plugin or without.
TAKING_TURNS = ("plugin", "plugin-idle", "qemu10")


def _pin(pid: int, cpus: set[int]) -> None:
    for thread in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(thread.name), cpus)
        except ProcessLookupError:
            pass  # (a thread that just ended)


class Turns:
    """Labs run one at a time, in turns of ``slice_s`` seconds, every QEMU thread pinned to
    one host CPU (the tracers and this process on the others); a VM waiting for its turn
    is stopped (QMP), and its clock with it.

    This host's speed changes by up to 2x within a second (other tenants; both CPUs, not
    always together): runs made one after another, or at once on two CPUs, measure that.
    Runs that take turns on one CPU share it, and their scores by their own clocks compare
    the conditions (idle labs against each other: ratios 0.97-1.03; the idle plugin against
    QEMU 10 back to back in one run: 0.30-1.28).
    """

    def __init__(self, states: dict[str, machine.LabState], slice_s: float) -> None:
        self.states, self.slice_s = states, slice_s
        self.cpu = max(os.sched_getaffinity(0))

    def run(self, runs: dict[str, Started]) -> None:
        """Execute every run's workload, its lab taking turns with the others'."""
        everywhere = os.sched_getaffinity(0)
        others = everywhere - {self.cpu} or {self.cpu}
        for kind, run in runs.items():  # (threads made since the last group too)
            _pin(self.states[kind].pid, {self.cpu})
            if run.tracer is not None:  # the tracers work beside, as they would
                _pin(run.tracer.process.pid, others)
        # Nor may this process take the VMs' CPU: whichever VM it ran beside would lose
        # (measured: up to 1.2x, either way round).
        _pin(os.getpid(), others)
        monitors = {kind: Qmp("127.0.0.1", self.states[kind].qmp_port) for kind in runs}
        try:
            for kind in runs:
                monitors[kind].execute("stop")
            threads = {kind: threading.Thread(target=run.execute, daemon=True)
                       for kind, run in runs.items()}
            for thread in threads.values():
                thread.start()
            while any(thread.is_alive() for thread in threads.values()):
                for kind, thread in threads.items():
                    if thread.is_alive():
                        monitors[kind].execute("cont")
                        time.sleep(self.slice_s)
                        monitors[kind].execute("stop")
        finally:
            for kind, monitor in monitors.items():  # never leave a guest stopped
                try:
                    monitor.execute("cont")
                    monitor.close()
                except (OSError, LabError) as exc:
                    print(f"bench: could not resume the {kind} lab: {exc}", file=sys.stderr)
            _pin(os.getpid(), everywhere)


# Decoding speed of the saved syscall storms (`xenhpt decode` of each file, timed).
SAVED_DECODES: list[dict[str, float]] = []


def decode_saved(path: Path, records: int) -> dict[str, float]:
    """Time ``xenhpt decode FILE -o /dev/null``: the whole decoder on saved records."""
    started = time.monotonic()
    done = subprocess.run([XENHPT, "decode", str(path), "-o", "/dev/null", "-v"],
                          capture_output=True, text=True, timeout=3600)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"xenhpt decode failed: {done.stderr}")
    return {"records": records, "bytes": path.stat().st_size, "seconds": seconds,
            "records_per_s": records / seconds}


# -- tracer-side: the pipeline alone, and a profile of the live tracer ------------------------

def record_and_replay(directory: Path, duration: float, repeats: int = 3) -> dict[str, object]:
    """Record a full trace of the shell workload, then replay it with no guest."""
    path = Path(tempfile.mkstemp(prefix="xenhpt-bench-", suffix=".rec.jsonl")[1])
    try:
        tracer = Tracer(directory, ["--capture", "breakpoints"], ["--record", str(path)])
        try:
            machine.exec_in_guest(f"{WORKLOADS['shell'][0]} {duration}; "
                                  f"{WORKLOADS['spawn'][0]} {duration / 4}",
                                  timeout=600 + 200 * duration, directory=directory)
        finally:
            traps = tracer.stop()[0]
        size = path.stat().st_size
        recording = load_recording(path)
    finally:
        path.unlink(missing_ok=True)
    result: dict[str, object] = {"traps_live": traps, "records": len(recording.records),
                                 "recording_bytes": size}
    for name, as_json in (("text", False), ("json", True)):
        times = []
        for _ in range(repeats):
            with open(os.devnull, "w") as out:
                sink = StreamSink(out, as_json=as_json)
                done = replay(recording, sink)
                sink.close()
            times.append(done)
        best = min(times, key=lambda d: d.seconds)
        result[name] = {"us_per_record": best.us_per_record, "us_per_call": best.us_per_call,
                        "cpu_us_per_record": best.cpu_us_per_record, "calls": best.emitted,
                        "seconds": best.seconds}
    profile = cProfile.Profile()
    with open(os.devnull, "w") as out:
        sink = StreamSink(out)
        profile.enable()
        replay(recording, sink)
        profile.disable()
    result["profile"] = _top(profile, 12)
    return result


def _top(profile: cProfile.Profile | Path, limit: int) -> str:
    text = io.StringIO()
    stats = pstats.Stats(str(profile) if isinstance(profile, Path) else profile, stream=text)
    stats.strip_dirs().sort_stats("tottime").print_stats(limit)
    lines = text.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    header = [line for line in lines[:start] if "function calls" in line]
    return "\n".join(header + lines[start:start + limit + 1])


def trap_cost(state: machine.LabState, directory: Path, hits: int) -> dict[str, float]:
    """One breakpoint hit at a 5-byte nop (``__x64_sys_getpid``'s ftrace pad), two ways:
    stepped over as the backend does today (lift, single-step, re-insert), or with the
    displaced instruction emulated (rip += 5) and no single-step. ms per hit."""
    busy = threading.Thread(target=machine.exec_in_guest, daemon=True,
                            args=(f"{WORKLOADS['syscall'][0]} {8 + hits * 0.02}",),
                            kwargs={"timeout": 900, "directory": directory})
    busy.start()
    time.sleep(0.5)
    target = QemuTarget("127.0.0.1", state.gdb_port, ram_file=Path(state.ram_file))
    try:
        address = Kernel.open(target).symbol("__x64_sys_getpid")
        target.insert_breakpoint(address)
        started = time.perf_counter()
        for _ in range(hits):
            trap = target.wait_for_trap(timeout=10)
            assert trap is not None and trap.pc == address
            target.registers(trap.vcpu)
        stepped = (time.perf_counter() - started) / hits
    finally:
        target.close()
    remote = GdbRemote("127.0.0.1", state.gdb_port)  # the VM stops when a client attaches
    rip = 8 * REGISTER_NUMBER["rip"]
    try:
        remote.checked(f"Z0,{address:x},1")
        started = time.perf_counter()
        for _ in range(hits):
            remote.send("c")
            while (reply := remote.receive(10)) is not None and reply[:1] not in (b"T", b"S"):
                pass
            registers = bytes.fromhex(remote.checked("g").decode())
            pc = int.from_bytes(registers[rip:rip + 8], "little")
            assert pc == address, hex(pc)
            remote.checked(f"P{REGISTER_NUMBER['rip']:x}={(pc + 5).to_bytes(8, 'little').hex()}")
        emulated = (time.perf_counter() - started) / hits
        remote.checked(f"z0,{address:x},1")
        remote.send("D")
        remote.receive(2)
    finally:
        remote.close()
    busy.join(timeout=900)
    return {"hits": hits, "stepped_ms": 1e3 * stepped, "emulated_ms": 1e3 * emulated}


def plugin_storm(duration: float, ring_mib: int = machine.DEFAULT_RING_MIB
                 ) -> dict[str, object]:
    """The syscall loop fully traced through the plugin with the default ring, the trace
    left to end by itself (--duration) so that every call is captured *and* decoded (the
    tracer works through its spool after the guest is done; the guest never waits for
    it). Untraced and traced once each, same boot."""
    directory = Path(tempfile.mkdtemp(prefix="xenhpt-bench-storm-"))
    state = machine.up(directory=directory, capture="plugin", ring_mib=ring_mib)
    program = WORKLOADS["syscall"][0]
    try:
        with ConsoleMarks(Path(state.console_log)) as marks:
            base = run_once(directory, marks, "syscall", "plugin-untraced", 0, duration)
            started = time.monotonic()
            margin = 20 + 5 * duration  # the guest agent starting the loop, TCG being slow
            tracer = Tracer(directory, ["-c", "--duration", str(duration + margin)])
            tag = f"storm.{time.monotonic_ns()}"
            result = machine.exec_in_guest(
                f"XENHPT_BENCH_MARK=/dev/ttyS0 XENHPT_BENCH_TAG={tag} {program} {duration}",
                timeout=600, directory=directory)
            guest_done = time.monotonic()
            records, _, cpu, dropped = tracer.finish(timeout=3600)
            drained = time.monotonic()
            time.sleep(0.05)
            match = SCORE.search(result.stdout)
            assert match, result.stdout
            wall_score = wall_rate(int(match[2]), marks.interval(tag))
    finally:
        machine.down(directory)
        shutil.rmtree(directory, ignore_errors=True)
    loops = int(match[2])
    return {"ring_mib": ring_mib, "duration_s": duration, "untraced_wall_score": base.wall_score,
            "traced_wall_score": wall_score, "ratio": ratio(base.wall_score, wall_score),
            "loop_calls": 5 * loops, "records": records, "dropped": dropped,
            "decode_lag_s": drained - guest_done, "tracer_cpu_s": cpu, "margin_s": margin,
            "trace_seconds": drained - started}


def profile_tracer(directory: Path, duration: float, output: Path) -> str:
    """The live tracer under cProfile during a fully traced syscall loop: where time goes."""
    tracer = Tracer(directory, [], python=[sys.executable, "-m", "cProfile", "-o", str(output)])
    try:
        machine.exec_in_guest(f"{WORKLOADS['syscall'][0]} {duration}", timeout=600,
                              directory=directory)
    finally:
        traps, seconds, cpu, _ = tracer.stop()
    head = (f"{traps} traps in {seconds:.1f} s; tracer CPU {cpu:.2f} s "
            f"({1e3 * cpu / max(traps, 1):.3f} ms/trap, under cProfile)")
    return head + "\n" + _top(output, 18)


# -- main ----------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions of 2 s runs")
    parser.add_argument("--duration", type=float, help="seconds per run (guest clock)")
    parser.add_argument("--reps", type=int, help="repetitions of every workload × condition")
    parser.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS),
                        help=f"any of {', '.join(WORKLOADS)}")
    parser.add_argument("--conditions",
                        help=f"any of {', '.join(CONDITIONS)} (default: all but "
                        "xenhpt-exception)")
    parser.add_argument("--paper", action="store_true",
                        help="the paper's table: workloads " + ",".join(PAPER_WORKLOADS)
                        + "; conditions " + ",".join(PAPER_CONDITIONS)
                        + " (unless --conditions says otherwise)")
    parser.add_argument("--kernel", metavar="PACKAGE",
                        help="boot this Debian kernel in every lab, as 'xenhpt lab up "
                        "--kernel' (e.g. linux-image-686-pae/bookworm: the 32-bit guest)")
    parser.add_argument("--json", dest="json_path", default="-",
                        help="write the JSON results here ('-': stdout, after the table)")
    parser.add_argument("--cprofile", type=Path, metavar="FILE",
                        help="also profile the live tracer (full trace, syscall loop) to FILE")
    parser.add_argument("--lab-dir", type=Path, help="use the lab already running there")
    parser.add_argument("--slice", type=float, default=0.05, metavar="SECONDS",
                        help="the plugin and QEMU 10 labs' runs take turns of this long on "
                        "one host CPU, their VMs stopped between (0: one after another)")
    parser.add_argument("--no-storm", action="store_true",
                        help="skip the plugin syscall storm with a ring that holds all of it")
    options = parser.parse_args()
    duration = options.duration or (2.0 if options.quick else 5.0)
    reps = options.reps or (2 if options.quick else 5)
    workloads = [w for w in options.workloads.split(",") if w]
    conditions = ([c for c in options.conditions.split(",") if c] if options.conditions
                  else [c for c in CONDITIONS if c != "xenhpt-exception"])
    if options.paper:
        workloads = list(PAPER_WORKLOADS)
        conditions = conditions if options.conditions else list(PAPER_CONDITIONS)
    bits = ensure_kernel(options.kernel).bits if options.kernel else 64
    if bits == 32:
        dropped = [n for n in workloads + conditions if n in NOT_ON_32_BIT]
        if dropped:
            print(f"32-bit guest kernel: no {', '.join(dropped)} (no syscall path)",
                  file=sys.stderr)
        workloads = [w for w in workloads if w not in NOT_ON_32_BIT]
        conditions = [c for c in conditions if c not in NOT_ON_32_BIT]
    for name in workloads + conditions:
        if name not in WORKLOADS and name not in CONDITIONS:
            parser.error(f"unknown workload or condition {name!r}")
    for kind in list(dict.fromkeys(CONDITIONS[c][0] for c in conditions)):
        if BASELINE[kind] not in conditions:
            conditions.insert(0, BASELINE[kind])
    kinds = list(dict.fromkeys(CONDITIONS[c][0] for c in conditions))
    own_lab = options.lab_dir is None
    directory = options.lab_dir or Path(tempfile.mkdtemp(prefix="xenhpt-bench-"))
    # The plugin conditions run on a second lab (QEMU 10 + the capture plugin), up at the
    # same time so that its runs interleave with the others'.
    directories = {"gdbstub": directory,
                   **{kind: directory.with_name(f"{directory.name}-{kind}")
                      for kind in ("plugin", "plugin-idle", "qemu10")}}
    started = time.monotonic()
    load_start = os.getloadavg()
    states: dict[str, machine.LabState] = {}
    runs: list[Run] = []
    results: dict[str, object] = {}
    try:
        for kind in kinds:
            if own_lab or kind != "gdbstub":
                states[kind] = machine.up(directory=directories[kind], capture=CAPTURE[kind],
                                          kernel_package=options.kernel)
            else:
                states[kind] = machine.LabState.load(directory)
        state = states.get("gdbstub") or next(iter(states.values()))
        marks_by_lab = {kind: ConsoleMarks(Path(s.console_log)) for kind, s in states.items()}
        turns = Turns(states, options.slice) if options.slice > 0 else None
        for marks in marks_by_lab.values():
            marks.__enter__()
        try:
            group = 0
            for repetition in range(reps):
                for index, workload in enumerate(workloads):
                    order = run_groups(conditions)
                    shift = (repetition + index) % len(order)
                    for members in order[shift:] + order[:shift]:
                        turn = group % len(members)  # who goes first rotates too
                        members = members[turn:] + members[:turn]
                        labs = [CONDITIONS[c][0] for c in members]
                        if (turns and len(members) > 1 and len(set(labs)) == len(labs)
                                and set(labs) <= set(TAKING_TURNS)):
                            started_runs = {lab: Started(directories[lab], workload, c,
                                                         repetition, duration)
                                            for lab, c in zip(labs, members, strict=True)}
                            turns.run(started_runs)
                            done = [r.finish(None) for r in started_runs.values()]
                        else:
                            done = [run_once(directories[lab], marks_by_lab[lab], workload,
                                             c, repetition, duration)
                                    for lab, c in zip(labs, members, strict=True)]
                        for run in done:
                            condition = run.condition
                            run.group = group
                            runs.append(run)
                            clock = ("guest clock, took turns" if run.interleaved else
                                     f"wall; guest clock {run.guest_score:.2f}")
                            print(f"[{time.monotonic() - started:6.0f} s] rep {repetition} "
                                  f"group {group:3} {workload:10} {condition:23} "
                                  f"{run.wall_score:12.2f} {WORKLOADS[workload][1]} "
                                  f"({clock})", file=sys.stderr, flush=True)
                        group += 1
        finally:
            for marks in marks_by_lab.values():
                marks.__exit__()
        plugin_labs = [kind for kind in ("plugin", "plugin-idle") if kind in states]
        if plugin_labs and not options.no_storm:
            for kind in plugin_labs:  # no other plugin lab beside the storm's: memory
                machine.down(directories[kind])
            results["plugin_storm"] = plugin_storm(duration)
        if "gdbstub" in states:
            results["pipeline"] = record_and_replay(directory, min(duration, 2.0))
            if bits == 64:  # (a 64-bit handler's ftrace pad, 64-bit registers)
                results["trap_cost"] = trap_cost(state, directory,
                                                 100 if options.quick else 300)
            if options.cprofile:
                results["tracer_profile"] = profile_tracer(directory, duration,
                                                           options.cprofile)
    finally:
        for kind in states:
            if own_lab or kind != "gdbstub":
                machine.down(directories[kind])
                shutil.rmtree(directories[kind], ignore_errors=True)
    plain = {c: PLAIN_BASELINE[lab] for c, (lab, _, _) in CONDITIONS.items()
             if lab in PLAIN_BASELINE and PLAIN_BASELINE[lab] in conditions}
    summary = summarise(runs, {c: BASELINE[CONDITIONS[c][0]] for c in CONDITIONS},
                        {w: unit for w, (_, unit) in WORKLOADS.items()}, plain)
    print(table(summary))
    if "pipeline" in results:
        pipeline = results["pipeline"]
        print(f"\npipeline alone (replay of {pipeline['records']} recorded trap records, "
              f"decode → pair → tree → output to /dev/null): "
              f"{pipeline['text']['us_per_record']:.1f} µs/record "
              f"({pipeline['text']['us_per_call']:.1f} µs/call) text, "
              f"{pipeline['json']['us_per_record']:.1f} µs/record json")
    if "trap_cost" in results:
        cost = results["trap_cost"]
        print(f"one breakpoint hit at a 5-byte nop: {cost['stepped_ms']:.2f} ms stepped over "
              f"(today), {cost['emulated_ms']:.2f} ms with the instruction emulated (no step)")
    if SAVED_DECODES:
        results["saved_decodes"] = SAVED_DECODES
        best = max(SAVED_DECODES, key=lambda d: d["records_per_s"])
        print(f"saved syscall storms decoded by 'xenhpt decode': {best['records_per_s']:.0f} "
              f"records/s at best ({best['records']} records, "
              f"{best['bytes'] / 1e6:.0f} MB, {best['seconds']:.1f} s)")
    if "plugin_storm" in results:
        storm = results["plugin_storm"]
        print(f"plugin, syscall loop, {storm['ring_mib']} MiB ring: ratio {storm['ratio']:.2f}, "
              f"{storm['records']} records decoded, {storm['dropped']} dropped, the tracer "
              f"finished decoding {storm['decode_lag_s']:.1f} s after the guest (its "
              f"--duration ended {storm['margin_s']:.0f} s after the loop's start)")
    print("paper (int / sysenter / syscall): " +
          "; ".join(f"{w} {PAPER[w]}" for w in workloads))
    document = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "host": {"machine": platform.node(), "cpus": os.cpu_count(), "kernel": state.release,
                 "accel": state.accel, "loadavg_start": load_start,
                 "loadavg_end": os.getloadavg()},
        "duration_s": duration, "repetitions": reps, "elapsed_s": time.monotonic() - started,
        "summary": summary, "runs": [asdict(r) for r in runs], **results,
    }
    text = json.dumps(document, indent=1, default=lambda v: None)
    if options.json_path == "-":
        print(text)
    else:
        Path(options.json_path).write_text(text + "\n")
    if "tracer_profile" in results:
        print("\nlive tracer profile:\n" + str(results["tracer_profile"]), file=sys.stderr)
    if "pipeline" in results:
        print("\npipeline profile:\n" + str(results["pipeline"]["profile"]), file=sys.stderr)


if __name__ == "__main__":
    main()
