"""The tracer's checks again, on a lab whose QEMU 10 runs the in-VMM capture plugin.

``xenhpt trace lab`` picks the plugin by itself when the lab has one, so the checks of
``test_trace.py`` run unchanged against this lab and must give the same results; the
plugin's own promises (selective filtering inside it, nothing left capturing after a
stop or a killed tracer, drops counted and reported) are checked here.
"""

from __future__ import annotations

import json
import os
import re
import resource
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenhpt.lab import machine
from xenhpt.lab.qmp import Qmp
from xenhpt.vmi.qemu.plugin_channel import PluginChannel

from . import test_trace as checks
from . import test_trace_robust as robust
from .conftest import XENHPT, current_lab, guest

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def plugin_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[machine.LabState]:
    """A plugin lab in a run directory of its own, the current lab for this module."""
    with current_lab(tmp_path_factory.mktemp("plugin-lab"), capture="plugin") as state:
        yield state


def _capture_enabled(state: machine.LabState) -> bool:
    channel = PluginChannel(Path(state.capture_file))
    try:
        return bool(int.from_bytes(channel._map[channel.config_offset:channel.config_offset + 4],
                                   "little"))
    finally:
        channel.close()


def _records_written(state: machine.LabState) -> int:
    channel = PluginChannel(Path(state.capture_file))
    try:
        return channel.counters().records
    finally:
        channel.close()


@pytest.fixture()
def busy_plugin_guest(plugin_lab: machine.LabState) -> Iterator[None]:
    with checks.guest_kept_busy():
        yield


# --- the tracer's checks, unchanged ----------------------------------------------------

def test_the_lab_runs_qemu_10_with_the_plugin(plugin_lab: machine.LabState) -> None:
    cmdline = Path(f"/proc/{plugin_lab.pid}/cmdline").read_bytes().split(b"\0")
    assert any(b"xenhpt_capture" in word for word in cmdline)
    version = subprocess.run([cmdline[0].decode(), "--version"], capture_output=True,
                             text=True).stdout
    assert int(version.split("version ")[1].split(".")[0]) >= 10, version


def test_random_write_is_decoded(plugin_lab: machine.LabState) -> None:
    checks.test_random_write_is_decoded_with_path_flags_string_and_task(plugin_lab)


@pytest.mark.parametrize("mechanism", ["int80", "sysenter", "syscall"])
def test_32bit_mechanisms(plugin_lab: machine.LabState, mechanism: str) -> None:
    checks.test_32bit_programs_are_seen_through_their_mechanism(plugin_lab, mechanism)


def test_exec_arguments_in_unmapped_pages(plugin_lab: machine.LabState) -> None:
    checks.test_exec_arguments_in_pages_fork_did_not_map_are_shown(plugin_lab)


def test_calls_agree_with_strace(plugin_lab: machine.LabState) -> None:
    checks.test_calls_agree_with_strace_inside_the_guest(plugin_lab)


def test_live_tree_follows_fork_and_exec(plugin_lab: machine.LabState) -> None:
    checks.test_live_tree_and_json_events_follow_fork_and_exec(plugin_lab)


def test_dash_p_covers_every_thread(plugin_lab: machine.LabState) -> None:
    checks.test_dash_p_covers_every_thread_of_the_process(plugin_lab)


def test_selective_filtering_happens_in_the_plugin(plugin_lab: machine.LabState) -> None:
    # With the plugin, "traps" are the records it wrote: unselected calls write none.
    checks.test_selective_trace_costs_far_fewer_traps_than_a_full_one(plugin_lab)


def _instructions_seen(state: machine.LabState) -> int:
    channel = PluginChannel(Path(state.capture_file))
    try:
        return channel.counters().instructions
    finally:
        channel.close()


@pytest.mark.parametrize("selection", [["-e", "trace=openat"], []], ids=["selective", "full"])
def test_unselected_calls_never_enter_the_plugin(plugin_lab: machine.LabState,
                                                 selection: list[str]) -> None:
    """A selective trace instruments the selected calls' kernel handlers, not the syscall
    instructions: the syscall loop's 5 calls a loop (none of them openat) run no plugin
    code at all, so the plugin's count of the instructions it was called for stays where
    it was; a full trace is called for every one of them. The openat the loop does not
    make, a shell run afterwards does: the selective trace still sees it."""
    trace = checks.Trace(*selection, "--json")
    time.sleep(2)  # configured (the tracer waits for the plugin to take it)
    before = _instructions_seen(plugin_lab)
    said = guest("/opt/xenhpt/bin/bench_syscall 1", timeout=120)
    loops = int(re.search(r"count=(\d+)", said).group(1))
    seen = _instructions_seen(plugin_lab) - before
    token = secrets.token_hex(4)
    guest(f"cat /nonexistent-{token} 2>/dev/null; true")
    out, _ = trace.interrupt()
    assert loops > 1000, "the syscall loop did not run"
    if not selection:
        assert seen >= loops * 4, f"only {seen} instructions for {loops} loops"
        return  # (its decoder is still working through the loop's million records)
    # A handful at most: the guest agent's own calls around the loop.
    assert seen < loops // 100, f"{seen} syscall instructions entered the plugin"
    opened = [r for r in checks.records(out) if r.get("name") == "openat"
              and token in json.dumps(r)]
    assert opened, "the openat after the loop was not traced"


def test_dash_p_filters_in_the_plugin(plugin_lab: machine.LabState) -> None:
    """-p is applied in the plugin too: a syscall loop in another process writes no
    records (the plugin drops its calls before copying anything), while the traced
    process's own calls still come through."""
    # A shell that makes a few calls a second of its own (its sleeps are children).
    shell = guest("sh -c 'echo $$; while :; do read x < /dev/null; sleep 1; done'"
                  " > /tmp/dash-p.pid 2>&1 & sleep 1; cat /tmp/dash-p.pid").split()[0]
    trace = checks.Trace("-p", shell, "--json")
    time.sleep(2)
    before = _records_written(plugin_lab)
    said = guest("/opt/xenhpt/bin/bench_syscall 1", timeout=120)
    loops = int(re.search(r"count=(\d+)", said).group(1))
    written = _records_written(plugin_lab) - before
    guest(f"kill {shell}")
    out, _ = trace.interrupt()
    assert loops > 1000 and written < loops // 100, (loops, written)
    mine = [r for r in checks.records(out) if r.get("pid") == int(shell)]
    assert mine, "the -p process's own calls were not traced"


def test_a_pause_somebody_else_makes_stays_one(plugin_lab: machine.LabState) -> None:
    """QEMU tells the tracer's gdbstub connection of every stop. A pause made through the
    monitor (an operator freezing the guest, say for a memory dump) must stay one while
    the tracer runs, and when it ends; the guest's calls are traced again on resume.
    (The tracer used to resume the VM within a second.)"""
    trace = checks.Trace("-e", "trace=openat", "--json")
    with Qmp("127.0.0.1", plugin_lab.qmp_port) as monitor:
        try:
            monitor.execute("stop")
            time.sleep(2)
            assert monitor.execute("query-status")["status"] == "paused"
            monitor.execute("cont")
            guest("cat /etc/inittab > /dev/null")
            monitor.execute("stop")
            time.sleep(1)
            out, _ = trace.interrupt()
            assert monitor.execute("query-status")["status"] == "paused"
        finally:
            monitor.execute("cont")
            if trace.process.poll() is None:  # (a failed check: no tracer left behind)
                trace.interrupt()
    assert any(r.get("name") == "openat" and "/etc/inittab" in json.dumps(r)
               for r in checks.records(out)), out[-2000:]


def test_a_running_trace_is_steered(plugin_lab: machine.LabState, tmp_path: Path) -> None:
    # With the plugin, add/remove write a new call table that it takes at the next call.
    checks.test_a_running_trace_is_steered_from_its_control_socket(plugin_lab, tmp_path)


# --- saved captures (trace --save, decode) ---------------------------------------------------

def test_a_saved_capture_decodes_to_what_a_live_trace_shows(plugin_lab: machine.LabState,
                                                            tmp_path: Path) -> None:
    saved = tmp_path / "write.xcap"
    where = f"/tmp/xenhpt-{secrets.token_hex(4)}"
    text = secrets.token_urlsafe(12)
    trace = checks.Trace("-e", "trace=openat,write", "--save", str(saved), "--duration", "15")
    shell = int(checks.in_guest(f"echo $$; echo {text} > {where}").stdout.split()[0])
    out, err = trace.finish()
    assert out == "" and "records saved to" in err, err  # nothing decoded live
    done = subprocess.run([XENHPT, "decode", str(saved), "--json", "-v"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    calls = [r for r in checks.records(done.stdout)
             if r.get("type") == "syscall" and r["pid"] == shell]
    opens = [r for r in calls if r["name"] == "openat" and f'"{where}"' in r["decoded"]]
    writes = [r for r in calls if r["name"] == "write" and f'"{text}\\n"' in r["decoded"]]
    assert opens and opens[0]["ret"] >= 0 and "O_CREAT" in opens[0]["decoded"], calls
    assert writes and writes[0]["ret"] == len(text) + 1, calls
    assert "0 reads not in the capture" in done.stderr, done.stderr


def test_a_saved_storm_is_decoded_record_for_record(plugin_lab: machine.LabState,
                                                    busy_plugin_guest: None,
                                                    tmp_path: Path) -> None:
    saved = tmp_path / "storm.xcap"
    trace = checks.Trace("--save", str(saved), "--duration", "5")
    _, err = trace.finish()
    records = int(re.search(r"(\d+) records saved to", err).group(1))
    assert records > 1000, err
    done = subprocess.run([XENHPT, "decode", str(saved), "-o", str(tmp_path / "storm.txt"),
                           "-v"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert re.search(rf"\({records} records,", done.stderr), done.stderr
    decoded = int(re.search(r"(\d+) decoded", done.stderr).group(1))
    assert decoded >= records // 2 - 1, done.stderr  # an entry and an exit per call


# --- stopping ------------------------------------------------------------------------------

def test_ctrl_c_stops_capture_in_the_plugin(plugin_lab: machine.LabState,
                                            busy_plugin_guest: None) -> None:
    trace = checks.Trace("--json")
    time.sleep(4)
    out, err = trace.interrupt()
    c = checks.counts(err)
    assert c["captured"] > 0 and c["captured"] == c["printed"]
    assert len(checks.records(out)) >= c["printed"]
    assert not _capture_enabled(plugin_lab), "the plugin still captures after Ctrl-C"
    before = _records_written(plugin_lab)
    time.sleep(2)  # the guest keeps making calls meanwhile
    assert _records_written(plugin_lab) == before
    assert guest("echo alive") == "alive\n"


def test_a_killed_tracer_does_not_leave_capture_running(plugin_lab: machine.LabState,
                                                        busy_plugin_guest: None) -> None:
    process = robust.start_tracer()
    time.sleep(2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    # The tracer's guardian switches capture off at once (without it the plugin would
    # notice the missing heartbeat only after 5 s).
    deadline = time.monotonic() + 2
    while _capture_enabled(plugin_lab) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _capture_enabled(plugin_lab), "capture still on 2 s after the tracer died"
    before = _records_written(plugin_lab)
    time.sleep(1)
    assert _records_written(plugin_lab) == before, "the plugin writes for a dead tracer"
    assert guest("echo alive") == "alive\n"


@pytest.mark.parametrize("selection", [[], ["-e", "trace=wait4,openat"]],
                         ids=["full", "selective"])
def test_a_killed_tracer_leaves_the_guest_traceable(plugin_lab: machine.LabState,
                                                    selection: list[str]) -> None:
    said = robust.check_sigkill_leaves_the_guest_running_and_traceable(selection)
    assert "guardian" in said, said
    # What the killed tracer captured is not lost: its spool file is named, and decodes.
    kept = re.search(r"the calls it captured are kept in (\S+) ", said)
    assert kept, said
    spool = Path(kept.group(1))
    try:
        done = subprocess.run([XENHPT, "decode", str(spool), "-o", os.devnull, "-v"],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0 and checks.counts(done.stderr)["decoded"] > 0, done.stderr
    finally:
        spool.unlink(missing_ok=True)


def test_ctrl_c_under_a_syscall_storm_ends_promptly(plugin_lab: machine.LabState) -> None:
    """The ring holds far more than the decoder keeps up with; Ctrl-C must not wait for it
    to be decoded: it ends the trace about a second later and counts what was left."""
    storm = threading.Thread(target=lambda: guest("/opt/xenhpt/bin/bench_syscall 8",
                                                  timeout=120))
    process = robust.start_tracer()
    storm.start()
    time.sleep(5)
    process.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    _, err = process.communicate(timeout=120)
    took = time.monotonic() - interrupted
    storm.join(timeout=120)
    assert process.returncode == 0, err
    assert took < 5, f"Ctrl-C took {took:.1f} s to end the trace:\n{err}"
    c = checks.counts(err)
    assert c["undecoded"] > 0, f"the storm left nothing behind (make it harder): {err}"
    # Nothing captured is lost: the spool file with every record is kept and named.
    kept = re.search(rf"{c['undecoded']} captured records were not decoded when the trace "
                     r"ended; the whole capture is kept in (\S+) ", err)
    assert kept, err
    saved = Path(kept.group(1))
    try:
        done = subprocess.run([XENHPT, "decode", str(saved), "-o", os.devnull, "-v"],
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr
        assert checks.counts(done.stderr)["decoded"] >= c["decoded"], done.stderr
    finally:
        saved.unlink()


def test_a_tracer_stopped_for_a_while_captures_again(plugin_lab: machine.LabState) -> None:
    """A tracer that gets no CPU for longer than the plugin's heartbeat timeout (5 s;
    here SIGSTOP) finds capture switched off by the plugin: it switches it on again,
    and says at the end that calls in that gap are missing."""
    trace = checks.Trace("-e", "trace=openat", "--json")
    os.kill(trace.process.pid, signal.SIGSTOP)
    time.sleep(7)
    os.kill(trace.process.pid, signal.SIGCONT)
    time.sleep(3)  # it notices at its next look at the plugin's counters
    token = secrets.token_hex(4)
    guest(f"cat /nonexistent-{token} 2>/dev/null; true")
    out, err = trace.interrupt()
    assert "stopped 1 time(s)" in err, err
    assert any(token in json.dumps(r) for r in checks.records(out)), "capture did not resume"


def test_the_live_tree_follows_deaths_by_signal(plugin_lab: machine.LabState) -> None:
    robust.check_the_tree_follows_deaths_and_equals_ps()


def test_output_that_stalls_ends_the_trace_with_one_line(plugin_lab: machine.LabState) -> None:
    robust.check_a_stalled_reader_never_holds_the_guest()


def test_power_off_ends_a_plugin_trace_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "XENHPT_LAB_DIR": str(tmp_path)}
    machine.up(directory=tmp_path, capture="plugin")
    try:
        process = subprocess.Popen([XENHPT, "trace", "lab", "-v", "--json"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert process.stderr is not None and "armed" in process.stderr.readline()
        time.sleep(1)
        threading.Thread(target=checks._power_off, args=(tmp_path,), daemon=True).start()
        out, err = process.communicate(timeout=120)
    finally:
        machine.down(tmp_path)
    assert process.returncode == 1, err
    error_lines = [line for line in err.splitlines() if line.startswith("xenhpt: error:")]
    assert len(error_lines) == 1 and "captured" in error_lines[0], err
    assert checks.records(out), "events captured before the power-off were lost"


def test_a_small_ring_under_a_storm_drops_nothing(tmp_path: Path) -> None:
    """The spool empties the ring at copy speed: a 16 MiB ring (a sixteenth of the
    default) under the tight syscall loop drops nothing, although the decoder is far
    behind, and every record is decoded by the end of the trace. (A 1 MiB ring holds
    ~8 ms of the storm: less than the decoder thread may keep the copier waiting.)"""
    env = {**os.environ, "XENHPT_LAB_DIR": str(tmp_path)}
    state = machine.up(directory=tmp_path, capture="plugin", ring_mib=16)
    try:
        process = subprocess.Popen([XENHPT, "trace", "lab", "-v", "-o", os.devnull,
                                    "--duration", "12"], env=env, stderr=subprocess.PIPE,
                                   text=True)
        assert process.stderr is not None and "armed" in process.stderr.readline()
        machine.exec_in_guest("/opt/xenhpt/bin/bench_syscall 3", directory=tmp_path,
                              timeout=120)
        _, err = process.communicate(timeout=900)
        counters = PluginChannel(Path(state.capture_file)).counters()
    finally:
        machine.down(tmp_path)
    assert process.returncode == 0, err
    c = checks.counts(err)
    assert counters.dropped == 0 and c["dropped"] == 0 and c["undecoded"] == 0, err
    assert c["traps"] > 100_000, f"the loop was not a storm: {err} {counters}"


def test_a_full_disk_drops_records_and_says_so(tmp_path: Path) -> None:
    """Drops remain possible when the spool's disk is full: here the tracer may write
    only 2 MiB (RLIMIT_FSIZE), so the copy stops, the 1 MiB ring fills and the plugin
    drops; the drops are counted and shown, with the reason, in one line each."""
    env = {**os.environ, "XENHPT_LAB_DIR": str(tmp_path), "XENHPT_SPOOL_DIR": str(tmp_path)}
    state = machine.up(directory=tmp_path, capture="plugin", ring_mib=1)

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))

    try:
        process = subprocess.Popen([XENHPT, "trace", "lab", "-v", "-o", os.devnull,
                                    "--duration", "12"], env=env, stderr=subprocess.PIPE,
                                   text=True, preexec_fn=small_files)
        assert process.stderr is not None and "armed" in process.stderr.readline()
        machine.exec_in_guest("/opt/xenhpt/bin/bench_syscall 6", directory=tmp_path,
                              timeout=120)
        _, err = process.communicate(timeout=300)
        dropped = PluginChannel(Path(state.capture_file)).counters().dropped
    finally:
        machine.down(tmp_path)
    assert process.returncode == 0, err
    assert dropped > 0, "the loop did not overflow a 1 MiB ring (make the test harder)"
    assert f"dropped {dropped} records" in err, err
    assert "cannot write the spool file" in err, err
