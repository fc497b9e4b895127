"""Boot, reach and stop the lab guest: a Debian kernel under QEMU with a gdbstub.

The state of the running guest lives in a run directory (``state.json``), so each
``xenhpt lab`` command, test or tracer process can find it again.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import LabError
from .initramfs import build_initramfs
from .kernel import GuestKernel, ensure_kernel
from .paths import cache_dir, run_dir
from .qmp import Qmp

READY_MARKER = "XENHPT-READY"
QEMU = "qemu-system-x86_64"
# A 32-bit kernel runs under QEMU's i386 system emulator, whose gdbstub then speaks the
# i386 register set (an x86_64 QEMU would describe a 32-bit guest in its 64-bit layout).
QEMU_32 = "qemu-system-i386"


@dataclass
class LabState:
    pid: int
    gdb_port: int
    qmp_port: int
    exec_socket: str
    console_log: str
    ram_file: str
    memory_mib: int
    smp: int
    kaslr: bool
    accel: str
    release: str
    kernel_image: str
    initramfs: str
    started: float
    capture: str = "gdbstub"  # or "plugin": QEMU 10 with the xenhpt_capture TCG plugin
    capture_file: str = ""  # the plugin's shared ring and configuration

    @classmethod
    def load(cls, directory: Path | None = None) -> LabState:
        path = (directory or run_dir()) / "state.json"
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise LabError("the lab is not running: start it with 'xenhpt lab up'") from None
        except (ValueError, TypeError) as exc:
            raise LabError(f"lab state {path} is unreadable ({exc}); "
                           "run 'xenhpt lab down'") from None

    def alive(self) -> bool:
        return _qemu_alive(self.pid)


@dataclass
class ExecResult:
    stdout: str
    stderr: str
    status: int


def _qemu_alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # A zombie or a recycled pid is not our QEMU.
    return b"qemu-system" in cmdline


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no console output)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(no console output)"


@dataclass(frozen=True)
class Prepared:
    kernel: GuestKernel
    initramfs: Path
    profile: Path


def profile_path(release: str) -> Path:
    """Where the lab keeps its kernel's profile: in xenhpt's default profile search path."""
    return cache_dir() / "profiles" / f"{release}.json"


def prepare(kernel_package: str | None = None) -> Prepared:
    """Everything a boot needs, fetched or built once and cached: kernel, initramfs, and
    the kernel's profile (built from the image's own BTF and kallsyms)."""
    kernel = ensure_kernel(kernel_package)
    profile = profile_path(kernel.release)
    if not profile.exists():
        from ..profile import build_profile, write_profile  # the builder is heavy: only here

        if kernel.bits == 64:
            isf = build_profile(kernel=kernel.image, btf=None, system_map=None)
        else:  # Debian's i386 kernels have no BTF: their types come from the -dbg package
            from .debug_profile import debug_profile

            isf = debug_profile(kernel)
        write_profile(isf, profile)
    # A 32-bit userland comes from the release the kernel package names (".../bookworm").
    suite = (kernel_package or "").partition("/")[2] or None
    initramfs = (build_initramfs(cache_dir() / "initramfs") if kernel.bits == 64
                 else build_initramfs(cache_dir() / "initramfs-i386", bits=32, suite=suite))
    return Prepared(kernel, initramfs, profile)


# gdbstub: Debian's QEMU, traced through its gdbstub; plugin: QEMU 10 with the capture
# plugin; qemu10: QEMU 10 without it (what the plugin's costs are measured against).
CAPTURES = ("gdbstub", "plugin", "qemu10")
DEFAULT_RING_MIB = 256


def up(smp: int = 1, memory_mib: int = 512, kaslr: bool = False, accel: str = "tcg",
       timeout: float = 120.0, directory: Path | None = None,
       extra_append: str = "", capture: str = "gdbstub",
       ring_mib: int = DEFAULT_RING_MIB, kernel_package: str | None = None) -> LabState:
    """Boot the lab guest and wait for its ready marker; nothing stays running on failure.

    ``capture="plugin"`` runs QEMU 10 with the in-VMM capture plugin (``xenhpt trace lab``
    then reads its ring instead of trapping through the gdbstub, which stays available).
    ``extra_append`` adds kernel command-line words (tests use it to break the boot).
    ``kernel_package`` boots another Debian kernel (see :func:`kernel.ensure_kernel`).
    """
    if capture not in CAPTURES:
        raise LabError(f"unknown capture {capture!r}: expected one of {', '.join(CAPTURES)}")
    if capture == "plugin" and accel != "tcg":
        raise LabError("the capture plugin is a TCG plugin: it needs --accel tcg")
    directory = directory or run_dir()
    if (directory / "state.json").exists():
        try:
            old = LabState.load(directory)
        except LabError:
            old = None
        if old is not None and old.alive():
            raise LabError(f"the lab is already running (QEMU pid {old.pid}); "
                           "'xenhpt lab down' first")
        _cleanup(directory)
    qemu: str | None = None
    if capture == "gdbstub":
        # Looked for before anything is built (the initramfs needs gcc and ldd): a machine
        # without QEMU is told so first, in one line. (The kernel is cached once fetched.)
        wanted = QEMU if ensure_kernel(kernel_package).bits == 64 else QEMU_32
        qemu = shutil.which(wanted)
        if qemu is None:
            raise LabError(f"{wanted} not found: install the Debian package qemu-system-x86")
    prepared = prepare(kernel_package)
    kernel, initramfs = prepared.kernel, prepared.initramfs
    plugin_args: list[str] = []
    capture_file = ""
    if capture in ("plugin", "qemu10"):
        from .qemu10 import ensure_plugin, ensure_qemu10

        qemu10 = ensure_qemu10()
        qemu = str(qemu10.binary if kernel.bits == 64 else qemu10.binary_32)
        if capture == "plugin":
            capture_file = str(Path("/dev/shm") / f"xenhpt-lab-{uuid.uuid4().hex[:8]}.cap")
            plugin_args = ["-plugin", f"{ensure_plugin()},shm={capture_file},"
                                      f"ring={ring_mib << 20}"]
        for firmware in qemu10.firmware:
            plugin_args += ["-L", str(firmware)]
    directory.mkdir(parents=True, exist_ok=True)
    console = directory / "console.log"
    exec_socket = directory / "exec.sock"
    for stale in (console, exec_socket):
        stale.unlink(missing_ok=True)
    # Guest RAM in a shared file on tmpfs: our tracer maps it and reads physical memory
    # without a gdbstub round trip per read.
    ram_file = Path("/dev/shm") / f"xenhpt-lab-{uuid.uuid4().hex[:8]}.ram"
    gdb_port, qmp_port = _free_port(), _free_port()
    append = f"console=ttyS0 panic=-1 quiet {'kaslr' if kaslr else 'nokaslr'} {extra_append}"
    cmd = [
        qemu, "-machine", "pc,memory-backend=ram", "-accel", accel,
        # No LA57: like common cloud CPU models, and Volatility 3 cannot walk 5-level tables.
        "-cpu", "max,la57=off",
        "-smp", str(smp), "-m", f"{memory_mib}M",
        "-object", f"memory-backend-file,id=ram,size={memory_mib}M,mem-path={ram_file},share=on",
        "-kernel", str(kernel.image), "-initrd", str(initramfs), "-append", append,
        "-display", "none", "-vga", "none", "-nodefaults", "-no-reboot",
        "-serial", f"file:{console}",
        "-chardev", f"socket,id=exec,path={exec_socket},server=on,wait=off",
        "-serial", "chardev:exec",
        "-gdb", f"tcp:127.0.0.1:{gdb_port}",
        "-qmp", f"tcp:127.0.0.1:{qmp_port},server=on,wait=off",
        "-pidfile", str(directory / "qemu.pid"), "-daemonize", *plugin_args,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        ram_file.unlink(missing_ok=True)
        if capture_file:
            Path(capture_file).unlink(missing_ok=True)
        raise LabError(f"QEMU did not start: {done.stderr.strip() or done.returncode}")
    pid = int((directory / "qemu.pid").read_text().strip())
    state = LabState(pid, gdb_port, qmp_port, str(exec_socket), str(console), str(ram_file),
                     memory_mib, smp, kaslr, accel, kernel.release, str(kernel.image),
                     str(initramfs), time.time(), capture, capture_file)
    (directory / "state.json").write_text(json.dumps(asdict(state), indent=2))
    deadline = time.monotonic() + timeout
    while True:
        text = console.read_text(errors="replace") if console.exists() else ""
        if READY_MARKER in text:
            return state
        if not _qemu_alive(pid) or time.monotonic() > deadline:
            reason = ("QEMU exited" if not _qemu_alive(pid)
                      else f"no ready marker in {timeout:.0f} s")
            down(directory)
            raise LabError(f"lab guest did not boot ({reason}); last console lines:\n"
                           + _tail(console))
        time.sleep(0.1)


def _cleanup(directory: Path) -> None:
    try:
        state = json.loads((directory / "state.json").read_text())
        for key in ("ram_file", "capture_file"):
            if state.get(key):
                Path(state[key]).unlink(missing_ok=True)
    except (OSError, ValueError):
        pass
    for name in ("state.json", "qemu.pid", "exec.sock"):
        (directory / name).unlink(missing_ok=True)


def down(directory: Path | None = None) -> bool:
    """Stop the lab's QEMU (by its recorded pid). Returns whether one was running."""
    directory = directory or run_dir()
    try:
        state = LabState.load(directory)
    except LabError:
        _cleanup(directory)
        return False
    was_running = state.alive()
    if was_running:
        os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while state.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if state.alive():
            os.kill(state.pid, signal.SIGKILL)
            while state.alive():
                time.sleep(0.05)
    _cleanup(directory)
    return was_running


def exec_in_guest(command: str, timeout: float = 60.0, directory: Path | None = None) -> ExecResult:
    """Run a shell command in the guest through the agent on its second serial port."""
    directory = directory or run_dir()
    state = LabState.load(directory)
    if not state.alive():
        raise LabError("the lab's QEMU is not running: 'xenhpt lab up'")
    request_id = uuid.uuid4().hex[:12]
    payload = base64.b64encode(command.encode()).decode()
    with open(directory / "exec.lock", "w") as lock:
        # One command at a time: the serial line carries a single conversation.
        fcntl.flock(lock, fcntl.LOCK_EX)
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            try:
                s.connect(state.exec_socket)
                s.sendall(f"\n{request_id} {len(payload)} {payload}\n".encode())
                return _read_reply(s, request_id, timeout)
            except TimeoutError:
                raise LabError(f"guest did not finish {command[:40]!r} in {timeout:.0f} s "
                               "(paused by a debugger, or hung?)") from None
            except OSError as exc:
                raise LabError(f"cannot talk to the lab's exec agent: {exc}") from None


def _read_reply(s: socket.socket, request_id: str, timeout: float) -> ExecResult:
    deadline = time.monotonic() + timeout
    buffer = b""
    sections: dict[str, list[str]] = {"out": [], "err": []}
    current: str | None = None
    while True:
        while b"\n" not in buffer:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                raise LabError("the lab's exec channel closed (guest rebooted or QEMU quit?)")
            buffer += chunk
        raw, buffer = buffer.split(b"\n", 1)
        line = raw.decode(errors="replace").strip("\r")
        # Answers to earlier, timed-out requests are skipped by id.
        if line == f"XENHPT-BEGIN {request_id}":
            current = "out"
        elif line == f"XENHPT-ERR {request_id}" and current:
            current = "err"
        elif line.startswith(f"XENHPT-END {request_id} ") and current:
            status = int(line.rsplit(" ", 1)[1])
            decode = lambda lines: base64.b64decode("".join(lines)).decode(errors="replace")  # noqa: E731
            return ExecResult(decode(sections["out"]), decode(sections["err"]), status)
        elif current:
            sections[current].append(line)


def snapshot(path: Path, directory: Path | None = None) -> Path:
    """Save guest memory: ``.raw`` flat physical (pmemsave) or ``.elf`` (dump-guest-memory)."""
    state = LabState.load(directory or run_dir())
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with Qmp("127.0.0.1", state.qmp_port) as qmp:
        if path.suffix == ".raw":
            qmp.execute("pmemsave", val=0, size=state.memory_mib << 20, filename=str(path))
        elif path.suffix == ".elf":
            qmp.execute("dump-guest-memory", paging=False, protocol=f"file:{path}")
        else:
            raise LabError(f"snapshot file must end in .raw or .elf, not {path.suffix or '(none)'}")
    return path
