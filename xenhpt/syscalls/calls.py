"""The few system calls whose printing depends on more than one argument.

strace has a decoder per call; we need one only where the generic per-kind printing is not
enough: ``open``/``openat`` show ``mode`` only with ``O_CREAT``/``O_TMPFILE``; ``clone`` and
``clone3`` print labelled fields chosen by the flags and fill in the parent's TID at exit;
``fcntl`` reads its third argument according to the command and prints some results as flags;
``set_thread_area`` prints its ``struct user_desc`` and, at exit, the entry the kernel took.

Hooks run after the generic printing: ``ENTRY_HOOKS[name](d, st, read)``,
``EXIT_HOOKS[name](d, st, ret, read)``, and ``RETURN_HOOKS[name](d, st, ret, read)`` which
may return the text of a successful result.
"""

from __future__ import annotations

from collections.abc import Callable

from . import structs
from .argfmt import clone_flags, open_flags, pollfds
from .memory import ReadFn, read_bytes, read_cstring, read_struct
from .outargs import failed
from .reads import CSTRING, ENTRY, EXIT, FIXED, STACK, KindReads, MemoryRead, ReadLimits, fixed
from .render import hex_or_zero, pointer, quote, signed
from .state import AbiContext, EntryState, ExitPrinter
from .table import Template

EntryHook = Callable[["AbiContext", "EntryState", ReadFn], None]
ExitHook = Callable[["AbiContext", "EntryState", int, ReadFn], None]
ReturnHook = Callable[["AbiContext", "EntryState", int, ReadFn], "str | None"]


def _read_int(read: ReadFn, address: int) -> int | None:
    data = read_bytes(read, address, 4)
    return None if data is None else signed(int.from_bytes(data, "little"), 32)


# --- open / openat --------------------------------------------------------------------------

def _open_entry(d: AbiContext, st: EntryState, read: ReadFn) -> None:
    flags, mode = st.template.arg_index("flags"), st.template.arg_index("mode")
    if flags is None or mode is None:
        return
    if not st.args[flags] & (d.c.numbers["O_CREAT"] | d.c.numbers["__O_TMPFILE"]):
        st.omit(mode)


# --- mknod / mknodat -----------------------------------------------------------------------

def _mknod_entry(d: AbiContext, st: EntryState, read: ReadFn) -> None:
    """The device number matters (and is printed) only for character and block devices."""
    mode, dev = st.template.arg_index("mode"), st.template.arg_index("dev")
    if mode is None or dev is None:
        return
    file_type = d.c.values["stat_type"].get(st.args[mode] & d.c.numbers["S_IFMT"])
    if file_type in ("S_IFCHR", "S_IFBLK"):
        st.texts[dev] = structs.makedev(st.args[dev])
    else:
        st.omit(dev)


# --- mremap --------------------------------------------------------------------------------

def _mremap_entry(d: AbiContext, st: EntryState, read: ReadFn) -> None:
    """The new address is an argument only with MREMAP_MAYMOVE and FIXED or DONTUNMAP."""
    if len(st.args) < 5:
        return
    names = d.c.flags["mremap_flags"].names
    flags = st.args[3]
    if not (flags & names["MREMAP_MAYMOVE"]
            and flags & (names["MREMAP_FIXED"] | names["MREMAP_DONTUNMAP"])):
        st.omit(4)


# --- wait4 ---------------------------------------------------------------------------------

def _wait4_exit(d: AbiContext, st: EntryState, ret: int, read: ReadFn) -> None:
    """No child changed state (WNOHANG, ``= 0``): the kernel filled no rusage, so strace
    prints its address, as it does the status's."""
    index = st.template.arg_index("ru")
    if ret == 0 and index is not None and index < len(st.texts):
        st.texts[index] = pointer(st.args[index])


# --- clone ----------------------------------------------------------------------------------

def _clone_parent_tid(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
    address = st.args[i]
    if address and not failed(ret):
        value = _read_int(read, address)
        if value is not None:
            return f"parent_tid=[{value}]"
    return f"parent_tid={pointer(address)}"


_CLONE_ARGS = ("clone_flags", "newsp", "parent_tidptr", "child_tidptr", "tls")


def _clone_entry(d: AbiContext, st: EntryState, read: ReadFn) -> None:
    """``clone(child_stack=..., flags=...[, parent_tid=...][, tls=...][, child_tidptr=...])``."""
    indexes = [i for i in map(st.template.arg_index, _CLONE_ARGS) if i is not None]
    if len(indexes) != len(_CLONE_ARGS):
        return
    flags_i, stack_i, parent_i, child_i, tls_i = indexes
    flags, n = st.args[flags_i], d.c.numbers
    texts = [f"child_stack={pointer(st.args[stack_i])}", f"flags={clone_flags(d, flags)}"]
    exit_fns: list[tuple[int, ExitPrinter, int]] = []
    if flags & n["CLONE_PARENT_SETTID"]:
        exit_fns.append((len(texts), _clone_parent_tid, parent_i))
        texts.append("")
    if flags & n["CLONE_SETTLS"]:
        texts.append(f"tls={pointer(st.args[tls_i])}")
    if flags & (n["CLONE_CHILD_SETTID"] | n["CLONE_CHILD_CLEARTID"]):
        texts.append(f"child_tidptr={pointer(st.args[child_i])}")
    st.replace_texts(texts, exit_fns)


def _clone3_entry(d: AbiContext, st: EntryState, read: ReadFn) -> None:
    address, size = st.args[0], st.args[1]
    if address == 0 or size < structs.CLONE_ARGS_VER0:
        return
    count = min(size, 8 * len(structs.CLONE_ARGS_FIELDS)) // 8
    data = read_bytes(read, address, count * 8)
    if data is None:
        return
    values = [int.from_bytes(data[k:k + 8], "little") for k in range(0, count * 8, 8)]
    fields = dict(zip(structs.CLONE_ARGS_FIELDS, values, strict=False))
    st.extra = fields
    st.texts[0] = structs.format_clone_args(d.c, fields)


def _clone3_exit(d: AbiContext, st: EntryState, ret: int, read: ReadFn) -> None:
    fields = st.extra
    if not fields or failed(ret):
        return
    n = d.c.numbers
    parts = []
    for flag, field in (("CLONE_PIDFD", "pidfd"), ("CLONE_PARENT_SETTID", "parent_tid")):
        if fields["flags"] & n[flag] and fields[field]:
            value = _read_int(read, fields[field])
            parts.append(f"{field}=" + (f"[{value}]" if value is not None
                                        else pointer(fields[field])))
    if parts:
        st.texts[0] += " => {" + ", ".join(parts) + "}"


# --- fcntl ----------------------------------------------------------------------------------

_FCNTL_NO_ARG = {"F_GETFD", "F_GETFL", "F_GETOWN", "F_GETSIG", "F_GETLEASE", "F_GETPIPE_SZ",
                 "F_GET_SEALS"}
_FCNTL_INT_ARG = {"F_SETOWN", "F_SETSIG", "F_SETPIPE_SZ", "F_NOTIFY", "F_DUPFD",
                  "F_DUPFD_CLOEXEC"}


def _fcntl_entry(d: AbiContext, st: EntryState, read: ReadFn) -> None:
    if len(st.args) < 3:
        return
    cmd = d.c.values["fcntl_cmd"].get(st.args[1] & 0xFFFFFFFF)
    if cmd in _FCNTL_NO_ARG:
        st.omit(2)
    elif cmd in _FCNTL_INT_ARG:
        st.texts[2] = str(signed(st.args[2], 32))
    elif cmd == "F_SETFD":
        st.texts[2] = d.c.flags["fd_flags"].format(st.args[2] & 0xFFFFFFFF)
    elif cmd == "F_SETFL":
        st.texts[2] = open_flags(d, st.args[2])


def _fcntl_return(d: AbiContext, st: EntryState, ret: int, read: ReadFn) -> str | None:
    cmd = d.c.values["fcntl_cmd"].get(st.args[1] & 0xFFFFFFFF)
    if cmd == "F_GETFD" and ret:
        return f"{ret:#x} (flags {d.c.flags['fd_flags'].format(ret)})"
    if cmd == "F_GETFL":
        return f"{hex_or_zero(ret)} (flags {open_flags(d, ret)})"
    return None


# --- futex ----------------------------------------------------------------------------------

# Which arguments each futex command uses, as strace prints them (after uaddr and op).
_FUTEX_ARGS = {
    "FUTEX_WAIT": ("val", "timeout"), "FUTEX_WAKE": ("val",),
    "FUTEX_WAIT_BITSET": ("val", "timeout", "bitset"), "FUTEX_WAKE_BITSET": ("val", "bitset"),
    "FUTEX_REQUEUE": ("val", "val2", "uaddr2"),
    "FUTEX_CMP_REQUEUE": ("val", "val2", "uaddr2", "val3"),
    "FUTEX_CMP_REQUEUE_PI": ("val", "val2", "uaddr2", "val3"),
    "FUTEX_WAIT_REQUEUE_PI": ("val", "timeout", "uaddr2"),
    "FUTEX_LOCK_PI": ("timeout",), "FUTEX_LOCK_PI2": ("timeout",), "FUTEX_UNLOCK_PI": (),
    "FUTEX_TRYLOCK_PI": (),
}


def _futex_entry(d: AbiContext, st: EntryState, read: ReadFn) -> None:
    if len(st.args) < 6:
        return
    n = d.c.numbers
    op = st.args[1] & 0xFFFFFFFF
    realtime = op & n["FUTEX_CLOCK_REALTIME"]
    op_name = d.c.values["futex_op"].get(op & ~realtime)
    if op_name is None:
        return
    st.texts[1] = op_name + ("|FUTEX_CLOCK_REALTIME" if realtime else "")
    command = op_name.removesuffix("_PRIVATE")
    wanted = _FUTEX_ARGS.get(command)
    if wanted is None:
        return
    uaddr2, val3 = st.texts[4], st.args[5] & 0xFFFFFFFF
    bitset = ("FUTEX_BITSET_MATCH_ANY" if val3 == n["FUTEX_BITSET_MATCH_ANY"]
              else hex_or_zero(val3))
    pieces = {"val": str(st.args[2] & 0xFFFFFFFF), "timeout": st.texts[3],
              "val2": str(st.args[3] & 0xFFFFFFFF), "uaddr2": uaddr2, "val3": str(val3),
              "bitset": bitset}
    st.replace_texts(st.texts[:2] + [pieces[name] for name in wanted], [])


# --- ioctl (terminal requests) ----------------------------------------------------------------

_IOCTL_NO_ARG = {"FIOCLEX", "FIONCLEX", "TIOCNOTTY", "TIOCEXCL", "TIOCNXCL"}
_IOCTL_INT_IN = {"TIOCSPGRP", "FIONBIO"}
_IOCTL_INT_OUT = {"TIOCGPGRP", "FIONREAD", "TIOCOUTQ", "TIOCGSID"}


def _int_pointer(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
    value = None if failed(ret) else _read_int(read, st.args[i])
    return pointer(st.args[i]) if value is None else f"[{value}]"


def _winsize(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
    fields = None if failed(ret) else read_struct(read, st.args[i], structs.WINSIZE)
    return pointer(st.args[i]) if fields is None else structs.format_winsize(*fields)


def _ioctl_entry(d: AbiContext, st: EntryState, read: ReadFn) -> None:
    if len(st.args) < 3:
        return
    request = d.c.values["ioctl_cmd"].get(st.args[1] & 0xFFFFFFFF)
    if request is None:
        return
    st.texts[1] = request
    if request in _IOCTL_NO_ARG:
        st.omit(2)
    elif request in _IOCTL_INT_IN and st.args[2]:
        value = _read_int(read, st.args[2])
        st.texts[2] = pointer(st.args[2]) if value is None else f"[{value}]"
    elif request in _IOCTL_INT_OUT and st.args[2]:
        st.exit_fns.append((2, _int_pointer, 2))
    elif request == "TIOCGWINSZ" and st.args[2]:
        st.exit_fns.append((2, _winsize, 2))
    elif request == "TIOCSWINSZ" and st.args[2]:
        st.texts[2] = _winsize(d, st, 2, 0, read)


# --- prctl ----------------------------------------------------------------------------------

_TASK_COMM_LEN = 16


def _comm(read: ReadFn, address: int) -> str:
    found = read_cstring(read, address, _TASK_COMM_LEN - 1) if address else None
    return pointer(address) if found is None else quote(found[0])


def _prctl_name_out(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
    return pointer(st.args[i]) if failed(ret) else _comm(read, st.args[i])


def _prctl_entry(d: AbiContext, st: EntryState, read: ReadFn) -> None:
    """``prctl(PR_SET_NAME, "sh")``: the options with a known shape print only their args."""
    if len(st.args) < 2:
        return
    option = d.c.values["prctl_option"].get(st.args[0] & 0xFFFFFFFF)
    if option == "PR_SET_NAME":
        st.replace_texts([option, _comm(read, st.args[1])], [])
    elif option == "PR_GET_NAME":
        st.replace_texts([option, ""], [(1, _prctl_name_out, 1)])
    elif option == "PR_SET_PDEATHSIG":
        st.replace_texts([option, d.c.signal(signed(st.args[1], 32))], [])


# --- set_thread_area ------------------------------------------------------------------------

def _thread_area_entry(d: AbiContext, st: EntryState, read: ReadFn) -> None:
    """The struct user_desc it installs (its address if unreadable, as strace)."""
    if not st.args:  # (x86-64's table has no prototype for it)
        return
    desc = read_struct(read, st.args[0], structs.USER_DESC)
    if desc is not None:
        st.texts[0] = structs.format_user_desc(*desc, d.word_size)


def _thread_area_return(d: AbiContext, st: EntryState, ret: int, read: ReadFn) -> str | None:
    """``0 (entry_number=6)``: the TLS entry the kernel took, written back into the struct."""
    number = read_bytes(read, st.args[0], 4) if st.args else None
    if number is None:
        return None
    return f"{ret} (entry_number={int.from_bytes(number, 'little')})"


# --- rt_sigreturn ---------------------------------------------------------------------------

def sigreturn_mask(d: AbiContext, name: str, read: ReadFn, stack_pointer: int) -> str | None:
    """``{mask=[...]}``: the signal mask the signal frame (rt_)sigreturn restores holds.

    When the handler returns into the restorer, the stack pointer is just past the frame's
    return address, so the mask is at a fixed offset from it.
    """
    offset = structs.SIGRETURN_MASK_OFFSET.get((name, d.word_size))
    if offset is None:
        return None
    if name == "sigreturn":
        low = read_bytes(read, stack_pointer + offset, 4)
        high = read_bytes(read, stack_pointer + structs.SIGRETURN_EXTRAMASK_OFFSET, 4)
        data = low + high if low is not None and high is not None else None
    else:
        data = read_bytes(read, stack_pointer + offset, 8)
    return "{mask=" + (structs.format_sigset(d.c, data) if data is not None else "?") + "}"


# --- poll / ppoll ---------------------------------------------------------------------------

def _poll_return(d: AbiContext, st: EntryState, ret: int, read: ReadFn) -> str | None:
    """``1 ([{fd=4, revents=POLLOUT}])``, ``0 (Timeout)``; ppoll adds the time ``left``."""
    if ret == 0:
        return "0 (Timeout)"
    ready = pollfds(d, read, st.args[0], st.args[1] & 0xFFFFFFFF, returned=True)
    notes = [ready] if ready else []
    if st.template.name.startswith("ppoll") and len(st.args) > 2 and st.args[2]:
        wide = st.template.args[2].kind == "timespec_in"
        layout = structs.TIMESPEC_64 if wide else structs.TIMESPEC_32
        left = read_struct(read, st.args[2], layout)
        if left is not None:
            notes.append(f"left {structs.format_timespec(*left)}")
    return f"{ret} ({', '.join(notes)})" if notes else None


ENTRY_HOOKS: dict[str, EntryHook] = {
    "futex": _futex_entry, "futex_time64": _futex_entry, "ioctl": _ioctl_entry,
    "prctl": _prctl_entry,
    "open": _open_entry, "openat": _open_entry, "mknod": _mknod_entry,
    "mknodat": _mknod_entry, "clone": _clone_entry,
    "clone3": _clone3_entry, "fcntl": _fcntl_entry, "fcntl64": _fcntl_entry,
    "mremap": _mremap_entry, "set_thread_area": _thread_area_entry,
}
EXIT_HOOKS: dict[str, ExitHook] = {"clone3": _clone3_exit, "wait4": _wait4_exit}
RETURN_HOOKS: dict[str, ReturnHook] = {
    "fcntl": _fcntl_return, "fcntl64": _fcntl_return, "poll": _poll_return,
    "ppoll": _poll_return, "ppoll_time64": _poll_return,
    "set_thread_area": _thread_area_return,
}

# i386 mmap (old_mmap) passes its six arguments in a block; printed like mmap's.
OLD_MMAP_LAYOUT = structs.OLD_MMAP_ARGS


def old_mmap_args(read: ReadFn, address: int) -> tuple[int, ...] | None:
    return read_struct(read, address, OLD_MMAP_LAYOUT)


# --- what the decoders above read (see ``reads.py``) -----------------------------------------

CallReads = Callable[[Template, ReadLimits], tuple[MemoryRead, ...]]

# The bytes above the user stack pointer that hold a signal frame's mask.
_SIGRETURN_BYTES = max(max(structs.SIGRETURN_MASK_OFFSET.values()),
                       structs.SIGRETURN_EXTRAMASK_OFFSET) + 8


def _task_name_reads(template: Template, limits: ReadLimits) -> tuple[MemoryRead, ...]:
    return (MemoryRead(ENTRY, CSTRING, 1, _TASK_COMM_LEN),
            MemoryRead(EXIT, CSTRING, 1, _TASK_COMM_LEN))


def _ioctl_reads(template: Template, limits: ReadLimits) -> tuple[MemoryRead, ...]:
    size = max(4, structs.WINSIZE.size)  # an int or a struct winsize
    return (MemoryRead(ENTRY, FIXED, 2, size), MemoryRead(EXIT, FIXED, 2, size))


def _clone_reads(template: Template, limits: ReadLimits) -> tuple[MemoryRead, ...]:
    index = template.arg_index("parent_tidptr")
    return () if index is None else (MemoryRead(EXIT, FIXED, index, 4),)


def _sigreturn_reads(template: Template, limits: ReadLimits) -> tuple[MemoryRead, ...]:
    return (MemoryRead(ENTRY, STACK, 0, _SIGRETURN_BYTES),)


def _thread_area_reads(template: Template, limits: ReadLimits) -> tuple[MemoryRead, ...]:
    if not template.args:
        return ()
    return (MemoryRead(ENTRY, FIXED, 0, structs.USER_DESC.size), MemoryRead(EXIT, FIXED, 0, 4))


def _socketcall_reads(template: Template, limits: ReadLimits) -> tuple[MemoryRead, ...]:
    """The block that holds the real call's arguments (at most six words)."""
    return (MemoryRead(ENTRY, FIXED, 1, 6 * limits.word_size),)


def _ppoll_reads(template: Template, limits: ReadLimits) -> tuple[MemoryRead, ...]:
    """ppoll's return value shows the time left in its timeout argument."""
    if len(template.args) < 3:
        return ()
    wide = template.args[2].kind == "timespec_in"
    size = (structs.TIMESPEC_64 if wide else structs.TIMESPEC_32).size
    return (MemoryRead(EXIT, FIXED, 2, size),)


CALL_READS: dict[str, CallReads] = {
    "prctl": _task_name_reads, "ioctl": _ioctl_reads, "clone": _clone_reads,
    "rt_sigreturn": _sigreturn_reads, "sigreturn": _sigreturn_reads,
    "ppoll": _ppoll_reads, "ppoll_time64": _ppoll_reads, "socketcall": _socketcall_reads,
    "set_thread_area": _thread_area_reads,
}

# Kinds whose decoding lives in this file (clone3's struct, i386 mmap's argument block).
KIND_READS: dict[str, KindReads] = {
    "clone_args": fixed(ENTRY, 8 * len(structs.CLONE_ARGS_FIELDS)),
    "old_mmap_args": fixed(ENTRY, OLD_MMAP_LAYOUT.size),
}
