"""Capture through QEMU's xenhpt_capture plugin: the fast source that feeds the same engine.

The plugin copies, at the moment of each call, the registers, the calling task's identity
and the guest memory the decoder will want, into a ring (``vmi/qemu/plugin_channel.py``). This
module decides *what* memory that is — capture rules derived from the syscall templates
and the string limit (``-s``) — and turns each ring record into a :class:`TrapRecord` whose
``read`` answers from the copied bytes. A read the rules did not foresee falls back to the
guest's memory as it is now, through the target, and is counted (``late_reads``): such a
read may see memory the guest has changed since.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import MemoryReadError, ProfileError
from ..linux.current import CurrentTask
from ..linux.kernel import Kernel
from ..linux.segments import USER32_CS
from ..syscalls.argfmt import ENVP_LIMIT
from ..syscalls.outargs import DIRENT_BYTES_LIMIT
from ..syscalls.render import signed
from ..syscalls.sockaddr import SOCKADDR_STORAGE_SIZE
from ..syscalls.structs import CLONE_ARGS_FIELDS, SIGRETURN_EXTRAMASK_OFFSET, SIGRETURN_MASK_OFFSET
from ..syscalls.table import SyscallTable, Template
from ..vmi.qemu.plugin_channel import (
    ABI_INDEX,
    HOW_BY_ARG,
    HOW_BY_DEREF,
    HOW_BY_RET,
    HOW_CSTRING,
    HOW_FIXED,
    HOW_STACK,
    HOW_STRINGS,
    REGION_CUT,
    REGION_TERMINATED,
    WHEN_ENTRY,
    WHEN_EXIT,
    CaptureConfig,
    ChannelCounters,
    PluginChannel,
    RawRecord,
    Rule,
)
from ..vmi.target import Target
from .engine import EXEC_CALLS, SyscallEngine
from .records import TaskIdentity, TrapRecord
from .source import STOP_GRACE_SECONDS, CaptureReport
from .trappoints import EXEC_REFRESH, EXIT_FUNCTION, identity_points

PATH_BYTES = 4096 + 1  # PATH_MAX and one more: is the string longer?
MASK32 = 0xFFFF_FFFF
UNKNOWN_TASK = TaskIdentity(task=0, pid=-1, tid=-1, ppid=-1, comm=b"?")

# Bytes the kernel or the caller fills for struct kinds: the larger ABI's size is copied
# (a 32-bit caller's struct is smaller; the extra bytes are not read).
_STRUCT_BYTES = {
    "stat_out": 144, "stat64_out": 96, "statx_out": 256, "timespec_in": 16,
    "timespec32_in": 8, "timespec_out": 16, "timespec32_out": 8, "timespec_rem": 16,
    "timespec32_rem": 8, "rusage_out": 144, "utsname_out": 6 * 65, "wait_status": 4,
    "rlimit64_in": 16, "rlimit64_out": 16, "rlimit_in": 16, "rlimit_out": 16,
    "clone_args": 8 * len(CLONE_ARGS_FIELDS), "old_mmap_args": 24, "fd_pair": 8,
    "sigset_in": 128, "sigset_out": 128, "sigaction_in": 24 + 128, "sigaction_out": 24 + 128,
}
_SIGRETURN_BYTES = max(max(SIGRETURN_MASK_OFFSET.values()), SIGRETURN_EXTRAMASK_OFFSET) + 8


def capture_rules(template: Template, string_limit: int) -> list[Rule]:
    """What to copy for one call so that the decoder finds it (see ``syscalls/kinds.py``)."""
    rules: list[Rule] = []
    word = 8 if template.abi == "x86_64" else 4
    for i, spec in enumerate(template.args):
        kind, length = spec.kind, spec.length_arg
        when = WHEN_EXIT if kind.endswith("_out") or kind in (
            "fd_pair", "wait_status", "timespec_rem", "timespec32_rem") else WHEN_ENTRY
        if kind == "path":
            rules.append(Rule(WHEN_ENTRY, HOW_CSTRING, i, PATH_BYTES))
        elif kind == "path_out":
            rules.append(Rule(WHEN_EXIT, HOW_CSTRING, i, PATH_BYTES))
        elif kind == "string":
            rules.append(Rule(WHEN_ENTRY, HOW_CSTRING, i, string_limit + 1))
        elif kind == "buf_in" and length is not None:
            rules.append(Rule(WHEN_ENTRY, HOW_BY_ARG, i, string_limit, length, 1))
        elif kind in ("buf_out", "buf_out_hex"):
            rules.append(Rule(WHEN_EXIT, HOW_BY_RET, i, string_limit))
        elif kind in ("dirents64_out", "dirents_out"):
            rules.append(Rule(WHEN_EXIT, HOW_BY_RET, i, DIRENT_BYTES_LIMIT))
        elif kind == "argv":
            rules.append(Rule(WHEN_ENTRY, HOW_STRINGS, i, string_limit + 1, count=string_limit + 1))
        elif kind == "envp":
            rules.append(Rule(WHEN_ENTRY, HOW_FIXED, i, min((ENVP_LIMIT + 1) * word, 4096)))
        elif kind == "sockaddr" and length is not None:
            rules.append(Rule(WHEN_ENTRY, HOW_BY_ARG, i, SOCKADDR_STORAGE_SIZE, length, 1))
        elif kind == "sockaddr_out" and length is not None:
            rules.append(Rule(WHEN_EXIT, HOW_BY_DEREF, i, SOCKADDR_STORAGE_SIZE, length))
        elif kind == "socklen_inout":
            rules += [Rule(WHEN_ENTRY, HOW_FIXED, i, 4), Rule(WHEN_EXIT, HOW_FIXED, i, 4)]
        elif kind == "pollfds" and length is not None:
            for moment in (WHEN_ENTRY, WHEN_EXIT):
                rules.append(Rule(moment, HOW_BY_ARG, i, 8 * string_limit, length, 8))
        elif kind in _STRUCT_BYTES:
            rules.append(Rule(when, HOW_FIXED, i, _STRUCT_BYTES[kind]))
    rules += _call_rules(template)
    return rules


def _call_rules(template: Template) -> list[Rule]:
    """Reads of the call-specific decoders in ``syscalls/calls.py``."""
    name = template.name
    if name == "prctl":  # PR_SET_NAME / PR_GET_NAME: a task name at argument 2
        return [Rule(WHEN_ENTRY, HOW_CSTRING, 1, 16), Rule(WHEN_EXIT, HOW_CSTRING, 1, 16)]
    if name == "ioctl":  # an int or a struct winsize at argument 3
        return [Rule(WHEN_ENTRY, HOW_FIXED, 2, 8), Rule(WHEN_EXIT, HOW_FIXED, 2, 8)]
    if name in ("futex", "futex_time64"):
        return [Rule(WHEN_ENTRY, HOW_FIXED, 3, 16)]
    if name == "clone":
        index = template.arg_index("parent_tidptr")
        return [] if index is None else [Rule(WHEN_EXIT, HOW_FIXED, index, 4)]
    if name in ("rt_sigreturn", "sigreturn"):
        return [Rule(WHEN_ENTRY, HOW_STACK, 0, _SIGRETURN_BYTES)]
    if name == "socketcall":
        return [Rule(WHEN_ENTRY, HOW_FIXED, 1, 24)]
    return []


def build_config(kernel: Kernel, numbers: dict[str, set[int]] | None,
                 string_limit: int) -> CaptureConfig:
    """The plugin's configuration for this kernel, selection (None: every call) and -s."""
    profile = kernel.profile
    current = CurrentTask(kernel)
    if current.percpu_offset is None:
        raise ProfileError("the capture plugin finds the calling task through the per-CPU "
                           "current task (Linux 4.9 and later); this profile has none")
    if not kernel.has_symbol(EXIT_FUNCTION):
        raise ProfileError(f"profile has no {EXIT_FUNCTION}: the plugin cannot see returns")
    config = CaptureConfig(
        exit_address=kernel.symbol(EXIT_FUNCTION), current_offset=current.percpu_offset,
        task_pid=profile.offset("task_struct", "pid"),
        task_tgid=profile.offset("task_struct", "tgid"),
        task_comm=profile.offset("task_struct", "comm"),
        task_real_parent=profile.offset("task_struct", "real_parent"),
        regs_orig_ax=profile.offset("pt_regs", "orig_ax"),
        regs_ax=profile.offset("pt_regs", "ax"), user32_cs=USER32_CS,
        unknown_selected=numbers is None,
        refresh_address=kernel.symbol(EXEC_REFRESH) if kernel.has_symbol(EXEC_REFRESH) else 0,
        identity_addresses=identity_points(kernel))
    for abi, index in ABI_INDEX.items():
        table = SyscallTable.load(abi)
        wanted = numbers[abi] if numbers is not None else None
        for template in table:
            if wanted is None or template.nr in wanted:
                config.calls[(index, template.nr)] = capture_rules(template, string_limit)
                if template.name in EXEC_CALLS:
                    config.reread_at_exit.add((index, template.nr))
        if wanted is not None:  # numbers the table does not name are still selectable
            for nr in wanted:
                config.calls.setdefault((index, nr), [])
    return config


@dataclass
class PluginStats:
    records: int = 0  # ring records handed to the engine
    late_reads: int = 0  # decoder reads not covered by the capture rules
    unknown_task: int = 0
    dropped: int = 0  # records the plugin dropped on a full ring during this trace
    stale_stops: int = 0  # the plugin stopped itself: our heartbeat went missing
    undecoded: int = 0  # records still in the ring when the trace had to end


class PluginCapture:
    """Reads the plugin's ring and feeds the engine; the guest never stops for us."""

    def __init__(self, channel: PluginChannel, kernel: Kernel, engine: SyscallEngine,
                 target: Target, config: CaptureConfig) -> None:
        self.channel = channel
        self.kernel = kernel
        self.engine = engine
        self.target = target
        self.config = config
        self.stats = PluginStats()
        self._start: ChannelCounters | None = None
        self._started = False
        # Entries waiting for their exit record's second copy of argument memory.
        self._held: dict[int, RawRecord] = {}

    def start(self) -> None:
        """Configure the plugin (the guest must be running: it takes it at a call)."""
        self.channel.claim()
        self.channel.skip_pending()
        self._start = self.channel.counters()
        self.channel.configure(self.config)
        self._started = True

    def run(self, should_stop: Callable[[], bool], poll: float = 0.005) -> None:
        if not self._started:
            self.start()
        # One batch at a time, asking should_stop() in between: under a syscall storm the
        # ring never empties, and a Ctrl-C must not wait for it to.
        while not should_stop():
            if not self.drain_batch():
                # Waiting on the gdbstub both paces us and notices a guest that died
                # (TargetGone); nothing stops the guest while it runs with no breakpoint.
                self.target.wait_for_trap(timeout=poll)

    def drain_batch(self, limit: int = 2048) -> int:
        """Hand up to ``limit`` records of the ring to the engine; how many there were."""
        self.channel.heartbeat()
        batch = self.channel.read(limit)
        if batch:
            # Late reads see the guest as it is now, not a cached old mapping.
            self.target.flush_translations()
            for raw in batch:
                self._feed(raw)
        self._update_counters()
        return len(batch)

    def stop(self, give_up: Callable[[], bool], grace: float | None = STOP_GRACE_SECONDS
             ) -> CaptureReport:
        """Switch capture off in the plugin, decode what the ring holds for at most
        ``grace`` seconds (None: all of it) or until ``give_up()``, count what is left."""
        confirmed = self.channel.disable() if self._started else True
        if confirmed:
            deadline = None if grace is None else time.monotonic() + grace
            while (deadline is None or time.monotonic() < deadline) and not give_up():
                if not self.drain_batch():
                    break
        self.stats.undecoded = self.channel.pending_records()
        for held in list(self._held.values()):
            self._feed_entry(held, held.regions)
        self._held.clear()
        self._update_counters()
        self.channel.release()
        self.channel.close()
        s = self.stats
        return CaptureReport("plugin", events=s.records, unknown_task=s.unknown_task,
                             dropped=s.dropped, undecoded=s.undecoded,
                             late_reads=s.late_reads, confirmed=confirmed)

    def _update_counters(self) -> None:
        if self._start is None:
            return
        now = self.channel.counters()
        self.stats.dropped = now.dropped - self._start.dropped
        self.stats.stale_stops = now.stale_stops - self._start.stale_stops

    # -- one record ------------------------------------------------------------------------

    def _feed(self, raw: RawRecord) -> None:
        self.stats.records += 1
        if not raw.task_known:
            self.stats.unknown_task += 1
        if raw.kind == "refresh":
            held = self._held.get(raw.task)
            if held is not None:
                held.regions = held.regions + raw.regions
            return
        held = self._held.pop(raw.task, None) if raw.task_known else None
        if raw.kind == "entry":
            if held is not None:  # its exit never came: the engine reports it unfinished
                self._feed_entry(held, held.regions)
            if raw.retry_at_exit and raw.task_known:
                self._held[raw.task] = raw
            else:
                self._feed_entry(raw, raw.regions)
            return
        if held is not None:
            self._feed_entry(held, held.regions + raw.regions)
        self.engine.exit(TrapRecord("exit", raw.ts, raw.vcpu, self._identity(raw), None, None,
                                    signed(raw.nr, 64), ret=raw.ret,
                                    read=self._reader(raw, raw.regions)))

    def _feed_entry(self, raw: RawRecord, regions: list[tuple[int, int, bytes]]) -> None:
        self.engine.entry(TrapRecord("entry", raw.ts, raw.vcpu, self._identity(raw), raw.abi,
                                     raw.mechanism, raw.nr, raw.args,
                                     read=self._reader(raw, regions), stack_pointer=raw.sp))

    @staticmethod
    def _identity(raw: RawRecord) -> TaskIdentity:
        if not raw.task_known:
            return UNKNOWN_TASK
        return TaskIdentity(raw.task, raw.pid, raw.tid, raw.ppid, raw.comm)

    def _reader(self, raw: RawRecord, regions: list[tuple[int, int, bytes]]
                ) -> Callable[[int, int], bytes]:
        mask = MASK32 if raw.abi == "i386" else (1 << 64) - 1
        cr3, target, stats = raw.cr3, self.target, self.stats

        def read(address: int, size: int) -> bytes:
            address &= mask
            for start, flags, data in regions:
                offset = address - start
                if offset < 0 or offset >= len(data):
                    continue  # (the next string of an argv starts right after this one)
                if offset + size <= len(data):
                    return data[offset:offset + size]
                if flags & REGION_TERMINATED:
                    # Past a string's NUL: what follows did not matter to anyone.
                    return data[offset:] + bytes(offset + size - len(data))
                if flags & REGION_CUT:
                    raise MemoryReadError(start + len(data), "unreadable at the call")
            stats.late_reads += 1
            return target.read_virtual(cr3, address, size)

        return read
