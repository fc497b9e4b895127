"""Inside the Xen lab's dom0: the QEMU lab's trace checks, run against the HVM domU "lab".

    python3.11 /lab/checks.py              every check, then `xenlab: N passed, M failed`
    python3.11 /lab/checks.py measure      traps/s and the tracer's CPU time per trap

The checks are the QEMU lab's own test functions (tests/test_trace.py,
tests/test_processes.py), called unchanged. Two things are swapped under them: the target
(their ``xenhpt ... lab`` becomes ``xenhpt ... xen:lab``, through a wrapper command) and
the guest channel (``machine.exec_in_guest`` talks to the same exec agent, which the
domU runs on its second serial port, a socket in dom0). Only the Ctrl-C check is the
Xen one: it reads every trap address back from the domU's memory after the interrupt.
"""

from __future__ import annotations

import base64
import cProfile
import json
import os
import pstats
import re
import socket
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

AGENT = "/var/run/xenlab-agent.sock"
DOMAIN = "lab"
WRAPPER = Path("/usr/bin/xenhpt-lab-is-xen")
STATE = Path("/root/.cache/xenhpt/xen") / f"{DOMAIN}.json"
SLOW_LINE_SECONDS = 600
# The tests' "xenhpt CMD lab ... --duration N": the target becomes xen:lab and N is
# stretched (XENLAB_DURATION_SCALE, default 3): their workload reaches the domU over the
# slow agent line and runs under nested TCG, and with the QEMU lab's windows it could
# start after the trace had ended (mech32 int80: no call seen in a 25 s trace).
WRAPPER_TEXT = """#!/usr/bin/python3.11
import os
import sys

args = sys.argv[1:]
if len(args) > 1 and args[1] == "lab":
    args[1] = "xen:lab"
scale = float(os.environ.get("XENLAB_DURATION_SCALE", "3"))
for i, arg in enumerate(args[:-1]):
    if arg == "--duration":
        args[i + 1] = str(float(args[i + 1]) * scale)
os.execv("/usr/bin/xenhpt", ["xenhpt", *args])
"""


def exec_in_guest(command: str, timeout: float = 60.0, directory: Path | None = None):
    """``machine.exec_in_guest`` over the agent socket the domU's ttyS1 is wired to.

    That line is an emulated 16550 behind the device model, under nested TCG: a few
    hundred bytes per second. The tests' timeouts are for the QEMU lab's socket, so
    none is shorter than ``SLOW_LINE_SECONDS`` here.
    """
    return agent_exec(command, max(timeout, SLOW_LINE_SECONDS, _slow_floor[0]))


# A longer floor while a workload with a measured (longer) duration runs (the strace check).
_slow_floor = [0.0]


def agent_exec(command: str, timeout: float):
    """One request to the lab's exec agent (its protocol: xenhpt/lab/guest/xenhpt-agent)."""
    from xenhpt.errors import LabError
    from xenhpt.lab import machine

    request_id = uuid.uuid4().hex[:12]
    payload = base64.b64encode(command.encode()).decode()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        try:
            s.connect(AGENT)
            s.sendall(f"\n{request_id} {len(payload)} {payload}\n".encode())
            return machine._read_reply(s, request_id, timeout)
        except TimeoutError:
            raise LabError(f"domU did not finish {command[:40]!r} in {timeout:.0f} s") \
                from None


def install_swaps() -> None:
    """Point the QEMU lab's tests at xen:lab and at the domU's agent."""
    WRAPPER.write_text(WRAPPER_TEXT)
    WRAPPER.chmod(0o755)
    from tests import conftest, test_processes, test_trace
    from xenhpt.lab import machine
    machine.exec_in_guest = exec_in_guest
    conftest.XENHPT = test_trace.XENHPT = str(WRAPPER)
    del test_processes  # imported so that its module uses the swapped machine too


def wait_for_agent(seconds: float) -> str:
    """The agent's first answer, once its READY line is on the domU's console.

    One request, waited for as long as it takes: on a loaded host an answer can take
    longer than any short timeout, and every request given up on and sent again queues
    behind the last one, so a retry loop never catches up (seen: no answer in 600 s).
    """
    console = Path("/var/log/xen/console/guest-lab.log")
    deadline = time.monotonic() + seconds
    while "XENHPT-READY" not in (console.read_text(errors="replace")
                                 if console.exists() else ""):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no XENHPT-READY on the domU's console in {seconds:.0f} s")
        time.sleep(3)
    time.sleep(2)  # its stty raw, then the read loop
    return agent_exec("uname -r", seconds).stdout.strip()


# -- the Xen-specific check: Ctrl-C leaves no trap byte behind --------------------------

def ctrl_c_leaves_no_trap_byte() -> None:
    """A full trace interrupted mid-run: every byte it patched reads back as the original,
    and the domU still answers."""
    from tests import conftest, test_trace

    stop = busy_domU()
    try:
        trace = test_trace.Trace("--json")
        armed = json.loads(STATE.read_text())  # written before the first byte changes
        originals = {int(k, 16): v for k, v in armed["bytes"].items()}
        assert len(originals) >= 3, armed
        started = time.monotonic()
        time.sleep(10)
        window = time.monotonic() - started  # (the stop after SIGINT traps nothing)
        out, err = trace.interrupt()
    finally:
        stop()
    c = test_trace.counts(err)
    if c["traps"]:  # the full trace's pace on a busy domU: the strace check sizes by it
        _trap_rate.append(c["traps"] / window)
    assert c["captured"] > 0 and c["captured"] == c["printed"], err
    assert not STATE.exists(), "the state file outlived a clean stop"
    wrong = read_back(originals)
    assert not wrong, f"bytes not restored (now, original): {wrong}"
    print(f"  {len(originals)} trap bytes read back as the originals; "
          f"{c['traps']} traps before Ctrl-C", flush=True)
    assert conftest.guest("echo alive") == "alive\n"


def read_back(originals: dict[int, int]) -> dict[str, tuple[str, str]]:
    """The trap bytes that do not read back as the original: {address: (now, original)}."""
    from xenhpt.vmi.xen.domain import open_xen

    target = open_xen(DOMAIN)
    try:
        back = {a: target.read_physical(a, 1)[0] for a in originals}
    finally:
        target.close()
    return {hex(a): (hex(back[a]), hex(v)) for a, v in originals.items() if back[a] != v}


def sigkill_then_a_new_attach() -> None:
    """A tracer killed with SIGKILL mid-trace: its guardian puts every byte back, drops
    its pauses and answers the vCPU left waiting on its monitor; the domU runs on and a
    new tracer attaches and captures calls (as guardian-steps.sh, with the trap bytes
    read back)."""
    from tests import test_trace

    err_path = Path("/tmp/killed.err")
    stop = busy_domU()
    try:  # the busy loop is stopped only after the domU's state is printed
        with err_path.open("w") as err_file:
            tracer = subprocess.Popen(["/usr/bin/xenhpt", "trace", f"xen:{DOMAIN}", "-v", "-o",
                                       "/tmp/killed.txt"], stdout=subprocess.DEVNULL,
                                      stderr=err_file)
        deadline = time.monotonic() + 300
        while "armed" not in err_path.read_text():
            assert tracer.poll() is None, f"the tracer ended before it armed: " \
                                          f"{err_path.read_text()}"
            assert time.monotonic() < deadline, "the tracer never armed"
            time.sleep(0.5)
        originals = {int(k, 16): v for k, v in json.loads(STATE.read_text())["bytes"].items()}
        time.sleep(5)
        tracer.kill()
        tracer.wait()
        deadline = time.monotonic() + 180  # the guardian's turn (Python in nested dom0)
        while "guardian" not in err_path.read_text() and time.monotonic() < deadline:
            time.sleep(1)
        said = err_path.read_text()
        print("  " + "\n  ".join(said.strip().splitlines()[-6:]), flush=True)
        for command in (["xl", "list", DOMAIN], ["xl", "vcpu-list", DOMAIN]):
            listed = subprocess.run(command, capture_output=True, text=True).stdout
            print("  " + "\n  ".join(listed.strip().splitlines()[-2:]), flush=True)
        listed = subprocess.run(["xl", "list", DOMAIN], capture_output=True, text=True).stdout
        assert "guardian" in said, said
        wrong = read_back(originals)
        assert not wrong, f"bytes not restored after SIGKILL (now, original): {wrong}"
        state = listed.splitlines()[-1].split()[4]
        assert "p" not in state and "c" not in state, listed
        # The vCPU (not the domain) is what a dead monitor leaves paused: ask the domU.
        started = time.monotonic()
        assert agent_exec("echo alive", SLOW_LINE_SECONDS).stdout == "alive\n"
        print(f"  {len(originals)} trap bytes restored by the guardian; domU state {state}; "
              f"it answered after {time.monotonic() - started:.0f} s", flush=True)
    except BaseException:
        try:
            stop()
        except Exception as exc:  # noqa: BLE001 - the first failure is the one to report
            print(f"  (and the busy loop could not be stopped: {exc})", flush=True)
        raise
    stop()
    # the new attach: the QEMU lab's random-write check again
    test_trace.test_random_write_is_decoded_with_path_flags_string_and_task(None)


def domu_reboot_ends_the_trace() -> None:
    """The domU reboots mid-trace (a new domid): the tracer ends with one line, writes
    nothing into the dead domain, and the next attach drops the old state file unused."""
    from tests import test_trace
    from xenhpt.vmi.xen.domain import open_xen

    def domid() -> str:
        return subprocess.run(["xl", "domid", DOMAIN], capture_output=True,
                              text=True).stdout.strip()

    old = domid()
    trace = test_trace.Trace("--json")
    try:
        agent_exec("reboot -f", 10)  # never answered
    except Exception:  # noqa: BLE001
        pass
    assert trace.process.stderr is not None
    trace.process.wait(timeout=600)
    err = trace.process.stderr.read()
    print("  tracer: " + " | ".join(err.strip().splitlines()[-3:]), flush=True)
    assert trace.process.returncode != 0 and "is gone" in err, err
    deadline = time.monotonic() + 120
    while domid() in ("", old):
        assert time.monotonic() < deadline, "the domU did not come back with a new domid"
        time.sleep(2)
    assert STATE.exists(), "the dead domain's state file should wait for the next attach"
    open_xen(DOMAIN).close()  # repair_leftovers: another domid, so nothing is written
    assert not STATE.exists()
    print(f"  domid {old} -> {domid()}; the old state file was dropped unused", flush=True)


# -- what the domU's CPU allows: SYSENTER from a 32-bit process ----------------------------

# Vendors whose SYSENTER works in compatibility mode (a 32-bit process on a 64-bit kernel).
# AMD's (and Hygon's) raise #UD there (AMD APM vol. 3, SYSENTER: #UD "in long mode"), and
# Linux's vDSO enters through 32-bit SYSCALL instead. The lab's CPU is QEMU's `-cpu max`
# under TCG: AuthenticAMD.
SYSENTER_IN_COMPAT_MODE = ("GenuineIntel",)
WHY_NO_SYSENTER = (
    "on {vendor} SYSENTER from a 32-bit process under a 64-bit kernel raises #UD (AMD APM "
    "vol. 3), so no call can arrive through it and the vDSO uses 32-bit SYSCALL. "
    "`mech32 sysenter` is not run here: QEMU's TCG executes SYSENTER anyway (it #UDs only "
    "in 64-bit code) and loads CS with both L and D set, which the next nested VMRUN "
    "rejects (Xen: 'Unexpected vmexit: reason 0xffffffff', the domU crashed in run 4). "
    "Checked instead: the 32-bit program's vDSO calls arrive by syscall, none by sysenter")
_vendor: list[str] = []


def domu_cpu_vendor() -> str:
    """The domU's CPU vendor, as its kernel reports it (cpuid leaf 0)."""
    if not _vendor:
        said = exec_in_guest("grep -m1 vendor_id /proc/cpuinfo").stdout
        _vendor.append(said.partition(":")[2].strip() or "unknown")
    return _vendor[0]


def mechanisms_of_this_cpu() -> tuple[str, ...]:
    """The 32-bit system-call mechanisms the domU's CPU has under a 64-bit kernel."""
    if domu_cpu_vendor() in SYSENTER_IN_COMPAT_MODE:
        return ("int80", "sysenter", "syscall")
    return ("int80", "syscall")


def sysenter_as_the_cpu_vendor_allows() -> None:
    """On an Intel domU the QEMU lab's sysenter check; elsewhere what the vendor implies."""
    from tests import test_trace as t

    vendor = domu_cpu_vendor()
    if vendor in SYSENTER_IN_COMPAT_MODE:
        t.test_32bit_programs_are_seen_through_their_mechanism(None, "sysenter")
        return
    print("  " + WHY_NO_SYSENTER.format(vendor=vendor), flush=True)
    trace = t.Trace("--comm", "mech32", "--json", "--duration", "25")
    t.in_guest("/opt/xenhpt/bin/mech32 int80")
    out, _ = trace.finish()
    calls = [r for r in t.records(out) if r.get("type") == "syscall" and r["abi"] == "i386"]
    # printf's write ("getpid=...") goes through the vDSO's __kernel_vsyscall
    through_vdso = [r for r in calls if r["name"] == "write" and "getpid=" in r["decoded"]]
    assert through_vdso, calls
    assert {r["mechanism"] for r in through_vdso} == {"syscall"}, through_vdso
    assert not [r for r in calls if r["mechanism"] == "sysenter"], calls
    print(f"  {len(calls)} i386 calls traced; the vDSO's write came by syscall, none by "
          "sysenter", flush=True)


# -- the strace cross-check, its workload fitted to the measured pace ----------------------

# Seconds the traced strace workload may take; cut down to fit, from measured numbers.
STRACE_BUDGET = 600.0
_trap_rate: list[float] = []


def measured_trap_rate(seconds: int = 30) -> float:
    """Traps per second of a full trace of a busy domU (the Ctrl-C check's, else a run)."""
    if not _trap_rate:
        from tests import test_trace as t

        stop = busy_domU()
        try:
            done = subprocess.run(["/usr/bin/xenhpt", "trace", f"xen:{DOMAIN}", "-v", "-c",
                                   "--duration", str(seconds), "-o", "/dev/null"],
                                  capture_output=True, text=True, timeout=1200)
        finally:
            stop()
        _trap_rate.append(max(t.counts(done.stderr)["traps"], 1) / seconds)
    return _trap_rate[0]


def calls_of_strace_workload(workload: str) -> int:
    """The system calls the strace check's run makes in the domU, counted untraced:
    strace's own (an outer ``strace -c`` of it) and the workload's (its output lines)."""
    said = exec_in_guest(
        f"strace -c -o /tmp/outer.txt strace -f -s 32 -o /tmp/inner.txt sh -c '{workload}'"
        "; tail -n 1 /tmp/outer.txt; wc -l < /tmp/inner.txt").stdout.strip().splitlines()
    try:
        total = said[-2].split()  # "100.00 0.012345 12 1234 56 total": calls 4th
        return int(total[3]) + int(said[-1])
    except (IndexError, ValueError):
        raise AssertionError(f"cannot count the strace workload's calls: {said}") from None


def strace_cross_check() -> None:
    """The QEMU lab's strace cross-check with its workload fitted to this lab: each call
    is two traps (entry, exit); from the calls counted untraced and the full trace's
    measured traps/s, the workload is cut to ``STRACE_BUDGET`` seconds and the agent's
    timeout set to three times the estimate."""
    from tests import test_trace as t

    rate = measured_trap_rate()
    parts = t.WORKLOAD.split("; ")
    workload = t.WORKLOAD
    calls = calls_of_strace_workload(workload)
    estimate = 2 * calls / rate
    print(f"  strace workload: {calls} calls untraced (strace's own included); full trace "
          f"{rate:.1f} traps/s: about {estimate:.0f} s traced", flush=True)
    if estimate > STRACE_BUDGET:
        # Its first commands, and always its last: the one program it starts (busybox
        # runs cat, stat, test inside the shell; with only those, 2 commands made too
        # little to compare, lab run of 2026-12-01).
        keep = max(3, int(len(parts) * STRACE_BUDGET / estimate))
        workload = "; ".join(parts[:keep - 1] + parts[-1:])
        calls = calls_of_strace_workload(workload)
        estimate = 2 * calls / rate
        print(f"  cut to {keep} of its {len(parts)} commands ({workload}): {calls} calls, "
              f"about {estimate:.0f} s traced", flush=True)
    saved, t.WORKLOAD = t.WORKLOAD, workload
    _slow_floor[0] = 3 * estimate + 120
    try:
        t.test_calls_agree_with_strace_inside_the_guest(None)
    finally:
        t.WORKLOAD, _slow_floor[0] = saved, 0.0


def busy_domU() -> Callable[[], None]:
    """Keep the domU making system calls (a file-reading loop) until the returned stop()."""
    exec_in_guest("rm -f /tmp/stop-busy; (while [ ! -e /tmp/stop-busy ]; do "
                  "cat /etc/inittab > /dev/null; done) > /dev/null 2>&1 &")
    return lambda: exec_in_guest("touch /tmp/stop-busy", timeout=120)


# -- running the checks --------------------------------------------------------------------

def checks() -> list[tuple[str, Callable[[], None]]]:
    from tests import test_processes, test_trace

    booted = {"dir": None}
    t = test_trace
    return [
        ("ps equals the domU's own ps",
         lambda: test_processes.test_ps_equals_the_guests_own_ps(booted)),
        ("random write: path, flags, data, pid/comm, returns",
         lambda: t.test_random_write_is_decoded_with_path_flags_string_and_task(None)),
        ("Ctrl-C mid-trace leaves no trap byte; the domU keeps running",
         ctrl_c_leaves_no_trap_byte),
        ("SIGKILL of the tracer: the guardian restores every byte; a new attach traces",
         sigkill_then_a_new_attach),
        ("strace cross-check, call by call", strace_cross_check),
        ("selective trace costs far fewer traps than a full one",
         lambda: t.test_selective_trace_costs_far_fewer_traps_than_a_full_one(None)),
        ("mech32 through int 0x80",
         lambda: t.test_32bit_programs_are_seen_through_their_mechanism(None, "int80")),
        ("mech32 through 32-bit syscall",
         lambda: t.test_32bit_programs_are_seen_through_their_mechanism(None, "syscall")),
        # the mechanisms the domU's CPU vendor has (no sysenter on AMD: WHY_NO_SYSENTER)
        ("selective trace knows each call's mechanism",
         lambda: t.test_a_selective_trace_knows_each_calls_mechanism(
             None, mechanisms_of_this_cpu())),
        ("mech32 through sysenter, as the domU's CPU vendor allows",
         sysenter_as_the_cpu_vendor_allows),
    ]


def run_checks(only: list[str]) -> int:
    install_swaps()
    print(f"xenlab: domU agent answers ({wait_for_agent(900)}), "
          f"trap {os.environ.get('XENHPT_XEN_TRAP') or 'int3'}", flush=True)
    passed = failed = 0
    frozen = ""
    for name, check in checks():
        if only and not any(word in name for word in only):
            continue
        if frozen:  # every check needs the agent: each would wait out its timeout
            failed += 1
            print(f"XENLAB-CHECK FAIL: {name} (not run: {frozen})", flush=True)
            continue
        start = time.monotonic()
        print(f"XENLAB-STEP {name}", flush=True)
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - report and go on with the next check
            failed += 1
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            print(f"XENLAB-CHECK FAIL: {name} ({time.monotonic() - start:.0f}s)\n"
                  f"{detail[:3000]}", flush=True)
            try:
                agent_exec("echo alive", SLOW_LINE_SECONDS)
            except Exception as exc:  # noqa: BLE001
                frozen = f"the domU stopped answering after the check above ({exc})"
        else:
            passed += 1
            print(f"XENLAB-CHECK ok: {name} ({time.monotonic() - start:.0f}s)", flush=True)
    print(f"XENLAB-CHECKS {passed} {failed}", flush=True)
    if failed and not frozen:  # what the domU itself says about the mechanisms (untraced)
        for mechanism in mechanisms_of_this_cpu():
            said = exec_in_guest(f"/opt/xenhpt/bin/mech32 {mechanism}; echo rc=$?")
            print(f"  domU: mech32 {mechanism}: {said.stdout.split()} {said.stderr.strip()}",
                  flush=True)
        print("  domU dmesg: " + exec_in_guest("dmesg | tail -n 8").stdout, flush=True)
    return 1 if failed else 0


# -- measuring -----------------------------------------------------------------------------

def profiled_main(out: str, profiled: bool) -> None:
    """``xenhpt`` itself, its trace phase timed apart: the capture loop from armed to the
    end (the traps, LibVMI's event callbacks, the engine, the periodic task-list walks),
    without the set-up (kernel open, first walk, arming). Writes that phase's CPU seconds
    (user + system, this process) to ``out.cpu``; with ``profiled``, also a cProfile of
    the phase counting CPU time (not waiting) to ``out``."""
    from xenhpt.cli.main import main
    from xenhpt.tracer.capture import BreakpointCapture

    profile = cProfile.Profile(time.process_time)
    phase = [0.0]
    run = BreakpointCapture.run

    def timed_run(self: BreakpointCapture, should_stop: Callable[[], bool],
                  poll: float = 0.2) -> None:
        start = time.process_time()
        if profiled:
            profile.enable()
        try:
            run(self, should_stop, poll)
        finally:
            if profiled:
                profile.disable()
            phase[0] += time.process_time() - start

    BreakpointCapture.run = timed_run  # type: ignore[method-assign]
    try:
        main()
    except SystemExit:
        pass
    finally:
        Path(out + ".cpu").write_text(f"{phase[0]}\n")
        if profiled:
            profile.dump_stats(out)


PARTS = ("libvmi (bindings + C)", "xenhpt", "built-ins (bytes, dicts, struct, ...)",
         "other Python (stdlib, click, networkx)")


def part_of(filename: str, name: str) -> str:
    """Which side a profiled function is on: LibVMI's (its Python bindings, cffi, the C
    calls), ours, Python's built-ins, or other Python."""
    if "/libvmi/" in filename or "_libvmi" in name or "cffi" in filename:
        return PARTS[0]
    if "/xenhpt/" in filename:
        return PARTS[1]
    if filename == "~":
        return PARTS[2]
    return PARTS[3]


def traced_phase(seconds: int, profiled: bool) -> tuple[int, float, str]:
    """One full trace of the busy domU: (traps, trace-phase CPU seconds, its stderr)."""
    prof = "/tmp/trace.prof"
    done = subprocess.run([sys.executable, __file__, "profiled" if profiled else "timed",
                           prof, "trace", f"xen:{DOMAIN}", "-v", "-c", "--duration",
                           str(seconds), "-o", "/tmp/measure.txt"], capture_output=True,
                          text=True)
    match = re.search(r"\((\d+) traps", done.stderr)
    cpu = float(Path(prof + ".cpu").read_text()) if Path(prof + ".cpu").exists() else 0.0
    return (int(match.group(1)) if match else 0), cpu, done.stderr


def measure(seconds: int = 30) -> None:
    """Traps per second and the tracer's CPU time per INT3 event in its trace phase, with
    a busy domU (a run without the profiler); then, from a profiled run, what part of
    that CPU time is LibVMI (bindings + C) and what part is ours."""
    stop = busy_domU()
    try:
        traps, cpu, err = traced_phase(seconds, profiled=False)
        print(err[-800:], flush=True)
        per = f"{cpu / traps * 1e6:.0f} us" if traps else "-"
        print(f"XENLAB-MEASURE {traps} traps in {seconds} s: {traps / seconds:.1f} traps/s; "
              f"tracer CPU in the trace phase {cpu:.2f} s = {per} per INT3 event "
              "(unprofiled)", flush=True)
        ptraps, pcpu, err = traced_phase(seconds, profiled=True)
    finally:
        stop()
    stats = pstats.Stats("/tmp/trace.prof")
    total = sum(row[2] for row in stats.stats.values())  # tottime: CPU seconds
    shares = dict.fromkeys(PARTS, 0.0)
    for (filename, _, name), row in stats.stats.items():
        shares[part_of(filename, name)] += row[2]
    print(f"XENLAB-MEASURE profiled run: {ptraps} traps, trace-phase CPU {pcpu:.2f} s "
          f"({total:.2f} s profiled; cProfile's own overhead inflates the Python side)",
          flush=True)
    for part, part_cpu in sorted(shares.items(), key=lambda kv: -kv[1]):
        per_trap = f", {part_cpu / ptraps * 1e6:.0f} us/trap" if ptraps else ""
        print(f"XENLAB-MEASURE   {part}: {part_cpu:.2f} s ({part_cpu / max(total, 1e-9):.0%}"
              f"{per_trap})", flush=True)
    stats.sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumulative").print_stats(
        r"capture.py.*\((run|_handle)\)|target.py.*\((wait_for_trap|_on_trap|_handle_trap)\)"
        r"|libvmi.py.*\(listen\)|trace.py.*\(maybe_check\)|engine.py.*\(on_")


def main() -> int:
    sys.path[:0] = ["/opt/site"]
    if sys.argv[1:2] in (["profiled"], ["timed"]):
        profiled, out = sys.argv[1] == "profiled", sys.argv[2]
        sys.argv = ["xenhpt", *sys.argv[3:]]
        profiled_main(out, profiled)
        return 0
    if sys.argv[1:2] == ["reboot"]:  # last: the domU comes back as a fresh domain
        install_swaps()
        name = "domU reboot mid-trace: one line, nothing written, state file dropped"
        print(f"XENLAB-STEP {name}", flush=True)
        try:
            domu_reboot_ends_the_trace()
        except Exception as exc:  # noqa: BLE001
            print(f"XENLAB-CHECK FAIL: {name}\n{exc!r}"[:3000], flush=True)
            return 1
        print(f"XENLAB-CHECK ok: {name}", flush=True)
        return 0
    if sys.argv[1:2] == ["measure"]:
        install_swaps()
        wait_for_agent(900)
        measure(int(sys.argv[2]) if len(sys.argv) > 2 else 30)
        return 0
    return run_checks(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
