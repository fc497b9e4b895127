"""The live tracer on the real lab guest: decoding, the three mechanisms, strace agreement,
selective trapping, and a clean stop on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from xenhpt.errors import LabError
from xenhpt.lab import machine
from xenhpt.vmi.qemu.target import QemuTarget

from .conftest import XENHPT, guest, run_xenhpt

pytestmark = pytest.mark.lab


class Trace:
    """``xenhpt trace`` running in the background, as a user would start it.

    Its records go to a file (-o): a pipe nobody reads until the end fills up, and then
    the tracer blocks on write while it holds the guest stopped at a breakpoint.
    """

    def __init__(self, *args: str) -> None:
        self.output = Path(tempfile.mkstemp(prefix="xenhpt-trace-")[1])
        self.process = subprocess.Popen([XENHPT, "trace", "lab", "-v", "-o", str(self.output),
                                         *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.stdout = ""  # what the trace printed besides its records (the --tree)
        # -v announces when the traps are armed; only then may the workload start.
        assert self.process.stderr is not None
        said = ""
        while "armed" not in said:  # warnings (e.g. --comm matching nothing yet) may come first
            line = self.process.stderr.readline()
            assert line, f"trace did not start: {said}{self.process.stderr.read()}"
            said += line

    def finish(self, timeout: float = 300) -> tuple[str, str]:
        self.stdout, err = self.process.communicate(timeout=timeout)
        assert self.process.returncode == 0, f"trace failed: {err}"
        out = self.output.read_text()
        self.output.unlink()
        return out, err

    def interrupt(self) -> tuple[str, str]:
        self.process.send_signal(signal.SIGINT)
        return self.finish()


def records(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


SUMMARY = re.compile(r"(\d+) calls captured, (\d+) decoded, (\d+) printed, (\d+) dropped, "
                     r"(\d+) undecoded \((\d+) (?:traps|records)\b")


def counts(err: str) -> dict[str, int]:
    """The -v summary line: calls captured, decoded, printed, dropped, undecoded, and the
    source's traps (breakpoints) or records (plugin)."""
    match = SUMMARY.search(err)
    assert match, err
    return dict(zip(("captured", "decoded", "printed", "dropped", "undecoded", "traps"),
                    map(int, match.groups()), strict=True))


def in_guest(command: str, timeout: float = 300) -> machine.ExecResult:
    return machine.exec_in_guest(command, timeout=timeout)


def test_random_write_is_decoded_with_path_flags_string_and_task(lab: machine.LabState) -> None:
    path = f"/tmp/xenhpt-{secrets.token_hex(4)}"
    text = secrets.token_urlsafe(12)
    trace = Trace("-e", "trace=openat,write", "--json", "--duration", "20")
    result = in_guest(f"echo $$; echo {text} > {path}")
    out, err = trace.finish()
    shell = int(result.stdout.split()[0])
    calls = [r for r in records(out) if r.get("type") == "syscall" and r["pid"] == shell]
    opens = [r for r in calls if r["name"] == "openat" and f'"{path}"' in r["decoded"]]
    assert opens, f"no openat of {path} in {calls}"
    assert "O_WRONLY|O_CREAT|O_TRUNC" in opens[0]["decoded"]
    assert opens[0]["ret"] >= 0 and opens[0]["errno"] is None
    writes = [r for r in calls if r["name"] == "write" and f'"{text}\\n"' in r["decoded"]]
    assert writes, f"no write of {text!r} in {calls}"
    assert writes[0]["ret"] == len(text) + 1
    for record in (opens[0], writes[0]):
        assert record["comm"] == "sh" and record["tid"] == shell
        assert record["abi"] == "x86_64" and record["nr"] in (1, 257)
        assert record["duration_us"] is not None and record["ppid"] > 0
        assert record["mechanism"] == "syscall"  # known in selective mode too
    assert counts(err)["captured"] == counts(err)["printed"]


@pytest.mark.parametrize("mechanism", ["int80", "sysenter", "syscall"])
def test_32bit_programs_are_seen_through_their_mechanism(lab: machine.LabState,
                                                         mechanism: str) -> None:
    trace = Trace("--comm", "mech32", "--json", "--duration", "25")
    result = in_guest(f"/opt/xenhpt/bin/mech32 {mechanism}")
    out, _ = trace.finish()
    said = dict(line.split("=") for line in result.stdout.splitlines() if "=" in line)
    calls = [r for r in records(out) if r.get("type") == "syscall" and r["mechanism"] ==
             mechanism and r["abi"] == "i386"]
    # libc's own printf also writes through the vDSO, which uses 32-bit syscall on AMD:
    # the program's raw write is the one carrying its message.
    by_name = {r["name"]: r for r in calls if r["name"] in ("getpid", "open")
               or (r["name"] == "write" and "hello from" in r["decoded"])}
    assert set(by_name) == {"getpid", "open", "write"}, calls
    assert by_name["getpid"]["ret"] == int(said["getpid"]) == by_name["getpid"]["pid"]
    assert by_name["open"]["ret"] == -1 and by_name["open"]["errno"] == "ENOENT"
    assert '"/nonexistent/xenhpt-mech32"' in by_name["open"]["decoded"]
    assert by_name["write"]["ret"] == int(said["write"])
    assert f'"hello from {mechanism}\\n"' in by_name["write"]["decoded"]


def test_a_selective_trace_knows_each_calls_mechanism(
        lab: machine.LabState,
        mechanisms: tuple[str, ...] = ("int80", "sysenter", "syscall")) -> None:
    """Selective traps sit in the handlers (__ia32_sys_getpid...), after the entry stub:
    the mechanism comes from the stub that called into the kernel's C code.

    ``mechanisms``: those the CPU has (QEMU's TCG runs SYSENTER from a 32-bit process
    even as an AMD model; the Xen lab's nested domU must not: tools/xenlab/checks.py)."""
    trace = Trace("-e", "trace=getpid,open,write", "--comm", "mech32", "--json",
                  "--duration", "30")
    result = in_guest("; ".join(f"/opt/xenhpt/bin/mech32 {m}" for m in mechanisms))
    out, _ = trace.finish()
    pids = [int(line.split("=")[1]) for line in result.stdout.splitlines()
            if line.startswith("getpid=")]
    assert len(pids) == len(mechanisms), result.stdout
    calls = [r for r in records(out) if r.get("type") == "syscall"]
    for pid, mechanism in zip(pids, mechanisms, strict=True):
        mine = [r for r in calls if r["pid"] == pid and r["abi"] == "i386"]
        getpid = [r for r in mine if r["name"] == "getpid"]
        hello = [r for r in mine if r["name"] == "write" and "hello from" in r["decoded"]]
        assert getpid and hello, mine
        assert getpid[0]["mechanism"] == hello[0]["mechanism"] == mechanism, mine


def test_a_path_unreadable_at_the_call_is_read_at_its_exit(lab: machine.LabState) -> None:
    """A fresh static binary's first readlink("/proc/self/exe"): the literal's page is not
    mapped yet at the call (it printed as 0x48e078); the kernel faults it in, so the exit
    can read it."""
    trace = Trace("-e", "trace=readlink", "--comm", "bench_true", "--json", "--duration", "15")
    in_guest("/opt/xenhpt/bin/bench_true")
    out, _ = trace.finish()
    calls = [r for r in records(out) if r.get("type") == "syscall" and r["name"] == "readlink"]
    assert calls and all(r["decoded"].startswith('readlink("/proc/self/exe", ')
                         for r in calls), calls


def test_a_running_trace_is_steered_from_its_control_socket(lab: machine.LabState,
                                                            tmp_path: Path) -> None:
    """add/remove take effect from the next call, pause stops records, the guest runs on."""
    sock = tmp_path / "trace.sock"
    trace = Trace("-e", "trace=openat", "--control", str(sock), "--json")

    def steer(*args: str) -> str:
        done = subprocess.run([XENHPT, "control", str(sock), *args], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    tags = [secrets.token_hex(4) for _ in range(4)]
    write = [f"echo {tag} > /tmp/xenhpt-{tag}" for tag in tags]
    in_guest(write[0])
    steer("add", "-e", "trace=write")
    in_guest(write[1])
    steer("remove", "-e", "trace=write")
    in_guest(write[2])
    assert "paused: True" in steer("pause")
    in_guest(write[3])
    status = steer("status")
    out, _ = trace.interrupt()
    calls = [r for r in records(out) if r.get("type") == "syscall"]
    opened = {tag for tag in tags for r in calls
              if r["name"] == "openat" and f"/tmp/xenhpt-{tag}" in r["decoded"]}
    written = {tag for tag in tags for r in calls
               if r["name"] == "write" and f'"{tag}\\n"' in r["decoded"]}
    assert opened == set(tags[:3]) and written == {tags[1]}, calls
    assert "selection: x86_64: openat" in status and "paused: True" in status, status


def test_exec_arguments_in_pages_fork_did_not_map_are_shown(lab: machine.LabState) -> None:
    """bench_shell, a static binary, forks and execs sh with string literals: in the child
    those pages are not mapped until the kernel's own copy faults them in."""
    trace = Trace("-e", "trace=execve", "--comm", "bench_shell", "-f", "--json",
                  "--duration", "20")
    in_guest("/opt/xenhpt/bin/bench_shell 0.2 > /dev/null")
    out, _ = trace.finish()
    execs = [r["decoded"] for r in records(out) if r.get("type") == "syscall"
             and r["name"] == "execve" and r["comm"] == "bench_shell"]
    assert execs, records(out)
    assert all(d.startswith('execve("/bin/sh", ["sh", "/opt/xenhpt/bench/tst.sh"]')
               for d in execs), execs


# --- strace cross-check -----------------------------------------------------------------

COMPARED = {"openat", "read", "write", "close", "execve", "clone", "vfork", "fork", "wait4",
            "newfstatat", "mmap", "brk", "getpid", "dup", "dup2", "umask", "pipe2"}
WORKLOAD = ("umask 022; cat /etc/inittab > /tmp/copy; echo abc | cat > /dev/null; "
            "stat /tmp/copy > /dev/null; test -e /nope; /opt/xenhpt/bin/mech32 int80 > /dev/null")


def parse_strace(text: str) -> dict[int, list[tuple[str, str]]]:
    """strace -f output → per pid, (name, "name(args) = ret") with resumed calls joined."""
    calls: dict[int, list[tuple[str, str]]] = {}
    unfinished: dict[int, str] = {}
    for line in text.splitlines():
        match = re.match(r"^(\d+)\s+(.*)$", line)
        if not match:
            continue
        pid, rest = int(match.group(1)), match.group(2)
        if rest.endswith("<unfinished ...>"):
            unfinished[pid] = rest[: -len("<unfinished ...>")].rstrip()
            continue
        resumed = re.match(r"^<\.\.\. (\w+) resumed>\s?(.*)$", rest)
        if resumed:
            head = unfinished.pop(pid, resumed.group(1) + "(")
            rest = head + (" " if head.endswith(",") else "") + resumed.group(2)
        call = re.match(r"^(\w+)\((.*)\)\s+= (.*)$", rest)
        if call:
            name = call.group(1)
            calls.setdefault(pid, []).append((name, f"{name}({call.group(2)}) = "
                                                    f"{call.group(3).strip()}"))
    return calls


def _normalise(name: str, text: str) -> str:
    # strace prints vfork/clone children as "= PID", execve envp as a count comment:
    # both sides print them the same way, so only whitespace is normalised here.
    return re.sub(r"\s+", " ", text).strip()


def test_calls_agree_with_strace_inside_the_guest(
        lab: machine.LabState, names: Collection[str] | None = COMPARED) -> None:
    """``names``: the names of the calls compared; None compares every call strace
    shows (an i386 userland names its calls its own way, and which it makes depends on
    its libc's release: tests/test_i386_lab.py)."""
    # Ended once the workload is done, not after a fixed time: a loaded host can make the
    # workload outlast any duration (seen: the last calls missing).
    trace = Trace("--comm", "strace", "-f", "--json", "-s", "32")
    in_guest(f"strace -f -s 32 -o /tmp/strace.out sh -c '{WORKLOAD}'")
    strace_text = guest("cat /tmp/strace.out")
    out, _ = trace.interrupt()
    theirs = parse_strace(strace_text)
    ours: dict[int, list[tuple[str, str]]] = {}
    for r in records(out):
        if r.get("type") == "syscall" and r["pid"] in theirs and r["finished"]:
            ours.setdefault(r["tid"], []).append(
                (r["name"], f"{r['decoded']} = {r['ret_text']}"))
    differences = []
    compared = 0
    for pid, their_calls in theirs.items():
        a = [(n, _normalise(n, t)) for n, t in their_calls if names is None or n in names]
        b = [(n, _normalise(n, t)) for n, t in ours.get(pid, []) if names is None or n in names]
        # strace shows the child it starts only from its execve on; from outside we also
        # see that child's few calls before it (strace's own set-up): skip those.
        if a and a[0][0] == "execve" and a[0] in b:
            del b[:b.index(a[0])]
        for i in range(max(len(a), len(b))):
            left = a[i][1] if i < len(a) else "(none)"
            right = b[i][1] if i < len(b) else "(none)"
            compared += 1
            if left != right:
                differences.append(f"pid {pid} #{i}: strace: {left}\n{' ' * 12}xenhpt: {right}")
    assert compared > 30, f"too little to compare: {theirs}"
    assert not differences, "\n".join(differences)


# --- trap economy and teardown ----------------------------------------------------------

def test_selective_trace_costs_far_fewer_traps_than_a_full_one(lab: machine.LabState) -> None:
    workload = "for i in 1 2 3; do cat /etc/inittab > /dev/null; done"
    full = Trace("-c", "--duration", "15")
    in_guest(workload)
    _, full_err = full.finish()
    selective = Trace("-e", "trace=openat", "-c", "--duration", "15")
    in_guest(workload)
    _, selective_err = selective.finish()
    full_traps, selective_traps = counts(full_err)["traps"], counts(selective_err)["traps"]
    assert counts(selective_err)["captured"] >= 3  # the three openat of /etc/inittab
    assert selective_traps * 10 < full_traps, (selective_traps, full_traps)


def _no_trap_fires(state: machine.LabState, seconds: float) -> bool:
    """A fresh debugger sees the guest run a syscall loop without any stop."""
    target = QemuTarget("127.0.0.1", state.gdb_port, ram_file=Path(state.ram_file))
    try:
        return target.wait_for_trap(timeout=seconds) is None
    finally:
        target.close()


@contextmanager
def guest_kept_busy() -> Iterator[None]:
    """The current lab guest runs a file-reading loop for as long as the block lasts."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            try:
                in_guest("i=0; while [ $i -lt 200 ]; do cat /etc/inittab > /dev/null; "
                         "i=$((i+1)); done", timeout=120)
            except Exception:  # noqa: BLE001 - the workload only has to keep the guest busy
                time.sleep(0.1)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=180)


@pytest.fixture()
def busy_guest(lab: machine.LabState) -> Iterator[None]:
    with guest_kept_busy():
        yield


def test_ctrl_c_mid_trace_removes_every_trap(lab: machine.LabState, busy_guest: None) -> None:
    trace = Trace("--json")
    time.sleep(4)
    out, err = trace.interrupt()
    c = counts(err)
    assert c["captured"] > 0 and c["captured"] == c["printed"]
    assert len(records(out)) >= c["printed"]
    assert _no_trap_fires(lab, 3), "a breakpoint survived the interrupted trace"
    assert guest("echo alive") == "alive\n"


def _power_off(directory: Path) -> None:
    try:
        machine.exec_in_guest("poweroff -f", directory=directory, timeout=60)
    except LabError:
        pass  # the guest is gone before it can answer: that is the point


def test_guest_power_off_ends_the_trace_with_one_line_and_keeps_events(tmp_path: Path) -> None:
    env = {**os.environ, "XENHPT_LAB_DIR": str(tmp_path)}
    machine.up(directory=tmp_path)
    try:
        process = subprocess.Popen([XENHPT, "trace", "lab", "-v", "--json"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert process.stderr is not None and "armed" in process.stderr.readline()
        threading.Thread(target=_power_off, args=(tmp_path,), daemon=True).start()
        out, err = process.communicate(timeout=120)
    finally:
        machine.down(tmp_path)
    assert process.returncode == 1
    error_lines = [line for line in err.splitlines() if line.startswith("xenhpt: error:")]
    assert len(error_lines) == 1 and "captured" in error_lines[0]
    assert records(out), "events captured before the power-off were lost"


def test_live_tree_and_json_events_follow_fork_and_exec(lab: machine.LabState) -> None:
    trace = Trace("-e", "trace=%process,prctl", "--json", "--tree", "--duration", "20")
    pid = int(in_guest("sleep 40 > /dev/null 2>&1 & echo $!").stdout)
    out, _ = trace.finish()
    events = [r for r in records(out) if r.get("type") == "process"]
    assert any(e["event"] == "fork" and e["pid"] == pid for e in events), events
    assert any(e["event"] == "exec" and e["pid"] == pid for e in events), events
    # busybox re-execs itself as "exe", then names itself with prctl(PR_SET_NAME).
    assert any(e["event"] in ("exec", "rename") and e["pid"] == pid and e["comm"] == "sleep"
               for e in events), events
    tree_text = trace.stdout
    # The shell that started it has exited: like the kernel, the tree re-parents to init.
    init_block = tree_text[tree_text.index("busybox(1)"):tree_text.index("kthreadd(2)")]
    assert f"─sleep({pid})" in init_block, tree_text


def test_dash_p_covers_every_thread_of_the_process(lab: machine.LabState) -> None:
    # The program waits 8 s before starting its threads: time for the trace to arm.
    pid = int(in_guest("/opt/xenhpt/bin/threads 8 > /tmp/threads.out 2>&1 & "
                       "while [ ! -s /tmp/threads.out ]; do sleep 0.1; done; "
                       "head -1 /tmp/threads.out").stdout)
    trace = Trace("-p", str(pid), "--json", "--duration", "25")
    out, _ = trace.finish()
    calls = [r for r in records(out) if r.get("type") == "syscall"]
    assert calls and all(r["pid"] == pid for r in calls), "a call of another process"
    writes = [r for r in calls if r["name"] == "write" and "thread " in r["decoded"]]
    tids = {r["tid"] for r in writes}
    assert len(tids) == 2 and pid not in tids, writes  # the two worker threads
    assert {r["comm"] for r in calls} == {"threads"}
    clones = [r for r in calls if r["name"] in ("clone", "clone3")]
    assert {r["ret"] for r in clones} == tids  # each thread's id, returned to its creator


def test_ps_threads_lists_each_thread_with_its_process(lab: machine.LabState) -> None:
    # (cat, not `wc -l < FILE`: until the background job has created the file, that
    # redirection fails, `[` fails with it, and the loop ended before the program began)
    pid = int(in_guest("/opt/xenhpt/bin/threads 0 30 > /tmp/threads2.out 2>&1 & "
                       "while [ $(cat /tmp/threads2.out 2>/dev/null | wc -l) -lt 3 ]; "
                       "do sleep 0.1; done; head -1 /tmp/threads2.out").stdout)
    out = run_xenhpt("ps", "lab", "--threads", "--json").stdout
    rows = [json.loads(line) for line in out.splitlines()]
    mine = [r for r in rows if r["pid"] == pid]
    assert len(mine) == 3 and len({r["tid"] for r in mine}) == 3, mine
    inside = guest(f"ls /proc/{pid}/task").split()
    assert sorted(r["tid"] for r in mine) == sorted(map(int, inside))
