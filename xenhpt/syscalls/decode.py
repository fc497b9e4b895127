"""Turn raw system-call registers and guest memory into strace's text.

Independent of any backend: the caller passes ``read(address, size) -> bytes`` for the calling
task's user memory (raising ``MemoryReadError`` where it cannot), and the raw register values.

    decoder = Decoder(string_limit=32)
    state = decoder.entry(template, [rdi, rsi, rdx, r10, r8, r9], read)   # at entry
    call = decoder.exit(state, rax, read)                                  # at exit
    call.text      # 'openat(AT_FDCWD, "/tmp/x", O_WRONLY|O_CREAT|O_TRUNC, 0644)'
    call.ret_text  # '3' or '-1 ENOENT (No such file or directory)'
    call.line      # both, aligned like strace's output

Arguments the caller passes in are decoded at entry, while its pointers mean what it meant;
arguments the kernel fills (``read``'s buffer, ``stat``'s struct) at exit, from the return
value. A call that never returns (``exit_group``, a task that died) goes through ``no_exit``
and prints ``= ?``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import MemoryReadError
from . import calls
from .argfmt import ENTRY_PRINTERS, ENTRY_READS
from .memory import ReadFn, read_words
from .outargs import CAPTURES, EXIT_PRINTERS, EXIT_READS
from .reads import MemoryRead, ReadLimits
from .render import align_result, format_call, hex_or_zero, octal, signed
from .state import AbiContext, EntryState
from .table import ArgSpec, SyscallTable, Template

_SKIPPED_KINDS = frozenset({"off64_hi"})  # printed together with the preceding off64_lo
_OLD_MMAP_ARGS = (ArgSpec("addr", "ptr"), ArgSpec("len", "ulong"), ArgSpec("prot", "prot"),
                  ArgSpec("flags", "map_flags"), ArgSpec("fd", "fd"),
                  ArgSpec("offset", "off_hex"))

# (arg index, printer, printed at exit?, entry-time capture of an exit argument or None)
Plan = tuple[tuple[int, Any, bool, Any], ...]
_PLAN_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class DecodedCall:
    """One finished call as strace prints it."""

    name: str
    args: tuple[str, ...]
    text: str          # 'openat(AT_FDCWD, "/x", O_RDONLY)'
    ret: int | None    # the signed return value; None when the call did not return
    ret_text: str      # '3', '-1 ENOENT (No such file or directory)', '0x7f..', '?'
    errno: str | None  # 'ENOENT' for a failed call

    @property
    def line(self) -> str:
        """``text = ret_text`` with the ``=`` in column 40, like strace."""
        return align_result(self.text, self.ret_text)


def _no_memory(address: int, size: int) -> bytes:
    raise MemoryReadError(address, "the call did not return")


class AbiDecoder(AbiContext):
    """The decoder's per-ABI state: the printers' context, the table, compiled plans."""

    def __init__(self, abi: str, string_limit: int) -> None:
        self.table = SyscallTable.load(abi)
        super().__init__(abi, self.table.word_size, string_limit)
        self._plans: dict[int, tuple[Template, Plan]] = {}
        mmap = self.table.by_name("mmap")
        self.old_mmap = Template("mmap", mmap.nr if mmap else -1, abi,
                                 mmap.entry if mmap else None, _OLD_MMAP_ARGS,
                                 mmap.classes if mmap else frozenset(), "hex")

    def plan(self, template: Template) -> Plan:
        cached = self._plans.get(id(template))
        if cached is not None and cached[0] is template:
            return cached[1]
        steps = []
        for index, spec in enumerate(template.args):
            if spec.kind in _SKIPPED_KINDS:
                continue
            exit_printer = EXIT_PRINTERS.get(spec.kind)
            if exit_printer is not None:
                steps.append((index, exit_printer, True, CAPTURES.get(spec.kind)))
            else:
                steps.append((index, ENTRY_PRINTERS.get(spec.kind, ENTRY_PRINTERS["ptr"]), False,
                              None))
        plan: Plan = tuple(steps)
        if len(self._plans) >= _PLAN_CACHE_LIMIT:
            self._plans.clear()
        self._plans[id(template)] = (template, plan)
        return plan

    def redirect(self, template: Template, values: tuple[int, ...], read: ReadFn
                 ) -> tuple[Template, tuple[int, ...]]:
        """i386 ``socketcall``/old ``mmap`` carry their real arguments in guest memory."""
        if template.name == "socketcall" and len(values) >= 2:
            sub = self.table.socketcall.get(values[0] & 0xFFFFFFFF)
            if sub is not None:
                words = read_words(read, values[1], len(sub.args), self.word_size)
                if words is not None:
                    return sub, tuple(words)
        elif template.args and template.args[0].kind == "old_mmap_args" and values:
            block = calls.old_mmap_args(read, values[0])
            if block is not None:
                return self.old_mmap, block
        return template, values

    def format_return(self, st: EntryState, ret: int, read: ReadFn) -> tuple[str, str | None]:
        if -4096 < ret < 0:
            number = -ret
            info = self.c.errno.get(number)
            if info is None:
                return f"-1 {number} (Unknown error {number})", None
            if info.restart:
                return f"? {info.name} ({info.message})", info.name
            return f"-1 {info.name} ({info.message})", info.name
        hook = calls.RETURN_HOOKS.get(st.template.name)
        if hook is not None:
            text = hook(self, st, ret, read)
            if text is not None:
                return text, None
        kind = st.template.ret
        if kind == "hex":
            return hex_or_zero(ret & self.mask), None
        if kind == "octal":
            return octal(ret), None
        return str(ret), None


class Decoder:
    """strace-style decoding of system calls, for every ABI (``Decoder(string_limit=32)``).

    ``string_limit`` is strace's ``-s``: the bytes shown of strings and buffers, and the
    elements shown of argv-like arrays. Paths are shown in full (up to PATH_MAX).
    """

    def __init__(self, string_limit: int = 32) -> None:
        self.string_limit = string_limit
        self._abis: dict[str, AbiDecoder] = {}

    def for_abi(self, abi: str) -> AbiDecoder:
        decoder = self._abis.get(abi)
        if decoder is None:
            decoder = self._abis[abi] = AbiDecoder(abi, self.string_limit)
        return decoder

    def entry(self, template: Template, args: list[int] | tuple[int, ...], read: ReadFn,
              stack_pointer: int | None = None) -> EntryState:
        """Decode the arguments known at entry; keep what the exit needs.

        ``stack_pointer`` (the user stack pointer at entry) is optional; with it
        ``rt_sigreturn``/``sigreturn`` show the signal mask they restore, as strace does.
        """
        d = self.for_abi(template.abi)
        count = len(template.args)
        mask = d.mask
        values = tuple(a & mask for a in args[:count])
        if len(values) < count:
            values += (0,) * (count - len(values))
        if template.name == "socketcall" or (template.args and
                                             template.args[0].kind == "old_mmap_args"):
            template, values = d.redirect(template, values, read)
        st = EntryState(template, values, [""] * len(values), [], name=template.name)
        texts = st.texts
        for index, printer, at_exit, capture in d.plan(template):
            if at_exit:
                st.exit_fns.append((index, printer, index))
                if capture is not None:
                    capture(d, st, index, read)
            else:
                texts[index] = printer(d, st, index, read)
        for index, spec in enumerate(template.args):
            if spec.kind in _SKIPPED_KINDS:
                st.omit(index)
        hook = calls.ENTRY_HOOKS.get(template.name)
        if hook is not None:
            hook(d, st, read)
        if stack_pointer is not None and template.name in ("rt_sigreturn", "sigreturn"):
            mask = calls.sigreturn_mask(d, template.name, read, stack_pointer)
            if mask is not None:
                st.replace_texts([mask], [])
        return st

    def exit(self, state: EntryState, ret: int, read: ReadFn) -> DecodedCall:
        """Finish a call that returned ``ret`` (the raw return register)."""
        d = self.for_abi(state.template.abi)
        value = signed(ret, d.bits)
        for text_index, printer, arg_index in state.exit_fns:
            state.texts[text_index] = printer(d, state, arg_index, value, read)
        hook = calls.EXIT_HOOKS.get(state.template.name)
        if hook is not None:
            hook(d, state, value, read)
        ret_text, errno = d.format_return(state, value, read)
        shown = tuple(state.shown_texts())
        return DecodedCall(state.name, shown, format_call(state.name, shown), value, ret_text,
                           errno)

    def no_exit(self, state: EntryState) -> DecodedCall:
        """A call that never returned (exit_group, a killed task): ``= ?``."""
        d = self.for_abi(state.template.abi)
        for text_index, printer, arg_index in state.exit_fns:
            # As for a failed call: exit printers then show the pointer itself.
            state.texts[text_index] = printer(d, state, arg_index, -4095, _no_memory)
        shown = tuple(state.shown_texts())
        return DecodedCall(state.name, shown, format_call(state.name, shown), None, "?", None)

    def decode(self, template: Template, args: list[int] | tuple[int, ...], ret: int | None,
               read: ReadFn, stack_pointer: int | None = None) -> DecodedCall:
        """Entry and exit at once (a snapshot, a test): ``ret=None`` for ``= ?``."""
        state = self.entry(template, args, read, stack_pointer)
        return self.no_exit(state) if ret is None else self.exit(state, ret, read)


def memory_reads(template: Template, string_limit: int) -> list[MemoryRead]:
    """Every region of the caller's memory that decoding ``template`` may read, and when
    (declared beside the printers: ``ENTRY_READS``, ``EXIT_READS``, ``calls.CALL_READS``)."""
    limits = ReadLimits(string_limit, SyscallTable.load(template.abi).word_size)
    reads: list[MemoryRead] = []
    for index, spec in enumerate(template.args):
        declared = (ENTRY_READS.get(spec.kind) or EXIT_READS.get(spec.kind)
                    or calls.KIND_READS.get(spec.kind))
        if declared is not None:
            reads += declared(index, spec.length_arg, limits)
    call = calls.CALL_READS.get(template.name)
    if call is not None:
        reads += call(template, limits)
    return reads
