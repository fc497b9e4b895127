"""Capture through QEMU's xenhpt_capture plugin: the fast source that feeds the same engine.

The plugin copies, at the moment of each call, the registers, the calling task's identity
and the guest memory the decoder will want, into a ring (``vmi/qemu/plugin_channel.py``).
*What* memory that is, the printers declare beside themselves (``syscalls/reads.py``); this
module only translates those declarations into the plugin's capture rules, and turns each
ring record into a :class:`TrapRecord` whose ``read`` answers from the copied bytes. A read
the rules did not foresee falls back to the guest's memory as it is now, through the
target, and is counted (``late_reads``): such a read may see memory the guest has changed
since.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import ProfileError
from ..linux.current import CurrentTask
from ..linux.kernel import Kernel
from ..linux.segments import USER32_CS
from ..syscalls import reads
from ..syscalls.decode import memory_reads
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
    MAX_FILTER_PIDS,
    MAX_HANDLERS,
    MECHANISMS,
    WHEN_ENTRY,
    WHEN_EXIT,
    CaptureConfig,
    ChannelCounters,
    HandlerConfig,
    KernelView,
    PluginChannel,
    Rule,
    TaskFilter,
    parse_records,
)
from ..vmi.qemu.target import QemuTarget
from .engine import EXEC_CALLS, FORK_CALLS, NO_RETURN, CallFilter, SyscallEngine
from .plugin_records import RecordFeeder
from .source import STOP_GRACE_SECONDS, CaptureReport
from .spool import Spool
from .trappoints import (
    EXEC_REFRESH,
    EXIT_FUNCTION,
    PT_REGS_ARGUMENTS,
    STUB_SPAN,
    SWITCH_FUNCTION,
    SWITCH_NEXT,
    entry_arguments,
    entry_stubs,
    first_argument,
    function_arguments,
    handler_addresses,
    identity_points,
)

_WHEN = {reads.ENTRY: WHEN_ENTRY, reads.EXIT: WHEN_EXIT}
_HOW = {reads.CSTRING: HOW_CSTRING, reads.FIXED: HOW_FIXED, reads.BY_ARG: HOW_BY_ARG,
        reads.BY_RET: HOW_BY_RET, reads.BY_DEREF: HOW_BY_DEREF, reads.STRINGS: HOW_STRINGS,
        reads.STACK: HOW_STACK}


def capture_rules(template: Template, string_limit: int) -> list[Rule]:
    """What to copy for one call: what its printers declare they read (``syscalls/reads.py``),
    in the plugin's terms."""
    rules = []
    for read in memory_reads(template, string_limit):
        # The plugin's `count` is the unit of a length (BY_ARG, BY_RET) or, for STRINGS,
        # how many pointers; the other shapes have none.
        count = {reads.STRINGS: read.count, reads.BY_ARG: read.unit,
                 reads.BY_RET: read.unit}.get(read.shape, 0)
        rules.append(Rule(_WHEN[read.when], _HOW[read.shape], read.arg, read.limit,
                          read.length_arg or 0, count))
    return rules


def build_config(kernel: Kernel, numbers: dict[str, set[int]] | None,
                 string_limit: int, call_filter: CallFilter | None = None) -> CaptureConfig:
    """The plugin's configuration for this kernel, selection (None: every call) and -s;
    ``call_filter``'s -p / --comm / -f, if any, are applied in the plugin too."""
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
        identity_addresses=identity_points(kernel),
        handlers=selective_handlers(kernel, numbers),
        task_filter=plugin_task_filter(call_filter), kernel=kernel_view(kernel, current))
    if kernel.has_symbol(SWITCH_FUNCTION):  # (the handler mode is refused without it)
        config.switch_address = kernel.symbol(SWITCH_FUNCTION)
        config.switch_next = function_arguments(kernel)[SWITCH_NEXT]
    for abi, index in ABI_INDEX.items():
        table = SyscallTable.load(abi)
        wanted = numbers[abi] if numbers is not None else None
        for template in table:
            if wanted is None or template.nr in wanted:
                config.calls[(index, template.nr)] = capture_rules(template, string_limit)
                if template.name in EXEC_CALLS:
                    config.reread_at_exit.add((index, template.nr))
                if template.name in FORK_CALLS:
                    config.forks.add((index, template.nr))
                if template.name in NO_RETURN:
                    config.no_return.add((index, template.nr))
        if wanted is not None:  # numbers the table does not name are still selectable
            for nr in wanted:
                config.calls.setdefault((index, nr), [])
    return config


def kernel_view(kernel: Kernel, current: CurrentTask) -> KernelView:
    """What the plugin must know of this kernel's architecture (x86-64 or i386): the width
    of its words, where its per-CPU base is, and where each of its entry paths takes its
    arguments from (the breakpoints' table, ``trappoints.py``)."""
    return KernelView(word_size=kernel.pointer_size, kernel_start=kernel.kernel_start,
                      first_argument=first_argument(kernel),
                      percpu_register=current.percpu_segment,
                      percpu_selector=current.percpu_selector,
                      percpu_offsets=current.percpu_offsets or 0,
                      arguments=entry_arguments(kernel))


def plugin_task_filter(call_filter: CallFilter | None) -> TaskFilter | None:
    """The tracer's -p / --comm / -f for the plugin (None: it records every task; also
    when the pids are more than it holds, then the tracer alone filters)."""
    if call_filter is None or (call_filter.pids is None and call_filter.comm is None):
        return None
    pids = tuple(sorted(call_filter.pids or ()))
    if len(pids) > MAX_FILTER_PIDS or (call_filter.comm and len(call_filter.comm) > 15):
        return None
    return TaskFilter(pids, call_filter.comm, call_filter.follow)


def selective_handlers(kernel: Kernel, numbers: dict[str, set[int]] | None
                       ) -> HandlerConfig | None:
    """For a selection, the plugin's handler mode (calls outside it never enter the
    plugin); None — trap every instruction — for a full trace, or where this kernel lacks
    what the handler mode needs (then the selection is applied at the instruction).

    The plugin reads each call from the ``pt_regs`` its handler gets (the C function's
    first argument: rdi, or eax on an i386 kernel), in the kernel's words: which of its
    fields holds which argument for each ABI is :data:`~.trappoints.PT_REGS_ARGUMENTS`,
    their offsets this kernel's profile."""
    if numbers is None:
        return None
    profile = kernel.profile
    addresses = handler_addresses(kernel, numbers)
    stubs = entry_stubs(kernel)
    abis = {abi for _, _, abi in stubs}
    fields = {"orig_ax", "sp", "ip"}.union(*(PT_REGS_ARGUMENTS[abi] for abi in abis))
    if (addresses is None or len(addresses) > MAX_HANDLERS or not stubs
            or not kernel.has_symbol(SWITCH_FUNCTION) or not profile.has_struct("pt_regs")
            or not all(profile.has_field("pt_regs", name) for name in fields)):
        return None

    def offset(name: str) -> int:
        return profile.offset("pt_regs", name)

    return HandlerConfig(
        handlers=tuple(sorted(addresses)),
        stubs=tuple((start, MECHANISMS.index(mechanism), ABI_INDEX[abi])
                    for start, mechanism, abi in stubs),
        stub_span=STUB_SPAN, regs_size=profile.size("pt_regs"), regs_sp=offset("sp"),
        regs_ip=offset("ip"),
        regs_arguments={abi: tuple(offset(name) for name in PT_REGS_ARGUMENTS[abi])
                        for abi in sorted(abis)})


class Heartbeat:
    """A thread that tells the plugin the tracer is alive, every ``period`` seconds.

    Alive, not keeping up: the copier may wait on a disk that throttles writeback, the
    decoder may be far behind; neither must make the plugin think we died and stop
    capturing (its timeout, 5 s, is for a tracer killed with its guardian)."""

    def __init__(self, channel: PluginChannel, period: float = 0.1) -> None:
        self.channel = channel
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="xenhpt-heartbeat",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.period):
            self.channel.heartbeat()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


@dataclass
class PluginStats:
    dropped: int = 0  # records the plugin dropped on a full ring during this trace
    stale_stops: int = 0  # the plugin stopped itself: our heartbeat went missing
    undecoded: int = 0  # records still in the ring when the trace had to end


class PluginCapture:
    """Reads the plugin's ring and feeds the engine; the guest never stops for us.

    The ring is copied to a spool file as it fills (``spool.py``) and decoded from there:
    however far the decoder falls behind a syscall storm, the ring does not fill because
    of it, and what a trace ended before decoding stays in that file.
    """

    spooling = True

    def __init__(self, channel: PluginChannel, kernel: Kernel, engine: SyscallEngine,
                 target: QemuTarget, config: CaptureConfig, string_limit: int = 32,
                 file_header: bytes = b"") -> None:
        self.channel = channel
        self.kernel = kernel
        self.engine = engine
        self.target = target
        self.config = config
        self.string_limit = string_limit  # (the capture rules' sizes depend on -s)
        self.stats = PluginStats()
        self.feeder = RecordFeeder(engine, target.read_virtual)
        self._start: ChannelCounters | None = None
        self._started = False
        self._file_header = file_header  # the spool file's first line (capture_file.py)
        self.heartbeat = Heartbeat(channel)
        self._stopping = False
        self.spool: Spool | None = None
        self.description = "capture plugin"
        self.plugin_file = channel.path
        self.fault_entry: int | None = None

    def start(self) -> None:
        """Resume the guest and configure the plugin (it takes the configuration at the
        guest's next call, so the guest must run)."""
        if self.spooling:  # first: a spool that cannot be created leaves nothing armed
            self.spool = Spool(self.channel, self._file_header)
        try:
            self.target.resume()
            self.channel.claim()
            self.channel.skip_pending()
            self._start = self.channel.counters()
            self.channel.configure(self.config)
        except BaseException:
            if self.spool is not None:  # (nothing was captured into it)
                self.spool.close(keep=False)
                self.spool = None
            raise
        self._started = True
        self.heartbeat.start()
        if self.spool is not None:
            self.spool.start()

    def select(self, numbers: dict[str, set[int]] | None) -> None:
        """The plugin takes a new call table at the guest's next call (it filters there)."""
        self.config = build_config(self.kernel, numbers, self.string_limit, self.engine.filter)
        self.channel.configure(self.config)

    def refilter(self) -> None:
        """The engine's task filter changed (``control filter -p``): the plugin takes it at
        the guest's next call."""
        self.select(self.engine.filter.numbers)

    def run(self, should_stop: Callable[[], bool], poll: float = 0.005) -> None:
        if not self._started:
            self.start()
        # One batch at a time, asking should_stop() in between: under a syscall storm the
        # ring never empties, and a Ctrl-C must not wait for it to.
        while not should_stop():
            if not self.drain_batch():
                # Waiting on the gdbstub both paces us and notices a guest that died
                # (TargetGone). Nothing of ours stops the guest: a stop is somebody's
                # pause, and stays one (the plugin captures again when it runs).
                self.target.watch(timeout=poll)

    def drain_batch(self, limit: int = 512 << 10) -> int:
        """Hand about ``limit`` bytes of spooled records to the engine; how many records."""
        assert self.spool is not None
        data = self.spool.take(limit)
        count = 0
        if data:
            # Late reads see the guest as it is now, not a cached old mapping.
            self.target.flush_translations()
            for raw in parse_records(data):
                self.feeder.feed(raw)
                count += 1
        self._update_counters()
        return count

    def stop(self, give_up: Callable[[], bool], grace: float | None = STOP_GRACE_SECONDS
             ) -> CaptureReport:
        """Switch capture off in the plugin, decode what the ring holds for at most
        ``grace`` seconds (None: all of it) or until ``give_up()``, count what is left."""
        self._stopping = True  # (from here, a stale stop is not undone)
        confirmed = self.channel.disable() if self._started else True
        self.heartbeat.stop()
        if self.spool is not None:
            self.spool.finish_copy()  # everything the plugin wrote is in the file now
        if confirmed:
            deadline = None if grace is None else time.monotonic() + grace
            while (deadline is None or time.monotonic() < deadline) and not give_up():
                if not self.drain_batch():
                    break
        kept = None
        if self.spool is not None:
            # (what the ring still holds is left only if the spool's disk failed)
            self.stats.undecoded = (self.spool.records - self.feeder.records
                                    + self.channel.pending_records())
            kept = self.spool.close(keep=self.spool.records > self.feeder.records)
        else:
            self.stats.undecoded = self.channel.pending_records()
        self.feeder.finish()
        self._update_counters()
        self.channel.release()
        self.channel.close()
        f = self.feeder
        return CaptureReport("plugin", events=self._events(), unknown_task=f.unknown_task,
                             dropped=self.stats.dropped, undecoded=self.stats.undecoded,
                             late_reads=f.late_reads, confirmed=confirmed, kept=kept,
                             error=self.spool.error if self.spool is not None else None,
                             interruptions=self.stats.stale_stops)

    def _events(self) -> int:
        """Records taken from the ring (the -v count)."""
        return self.feeder.records

    def _update_counters(self) -> None:
        if self._start is None:
            return
        now = self.channel.counters()
        self.stats.dropped = now.dropped - self._start.dropped
        stale = now.stale_stops - self._start.stale_stops
        if stale > self.stats.stale_stops and self._started and not self._stopping:
            # The plugin stopped itself: our heartbeat came later than its timeout (a
            # tracer starved of CPU). We are alive: capture again, and say so at the end.
            self.stats.stale_stops = stale
            self.channel.configure(self.config)
