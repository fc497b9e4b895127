"""Printers of the arguments the kernel fills in, run when the call returns.

``f(d, st, i, ret, read) -> str`` for argument ``i`` of the call in ``st``, given the signed
return value ``ret``. A NULL pointer prints as ``NULL``; after a failed call (or one that
never returned) the pointer prints as its address, as strace does, since nothing was written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import structs
from .argfmt import SIGSET_BYTES_LIMIT, buffer, cstring, rlimit, sigaction, sigset
from .memory import ReadFn, read_bytes, read_struct
from .reads import (
    ENTRY,
    EXIT,
    PATH_BYTES,
    KindReads,
    fixed,
    sized_by_pointer,
    sized_by_return,
    string,
)
from .render import pointer, quote, signed
from .sockaddr import SOCKADDR_STORAGE_SIZE, format_sockaddr
from .state import AbiContext, EntryState, ExitPrinter

DIRENT_BYTES_LIMIT = 1 << 16  # getdents buffer bytes walked at most


def failed(ret: int) -> bool:
    """A return value in the errno range (strace: -4095..-1)."""
    return -4096 < ret < 0


def _out(fmt: Callable[[AbiContext, EntryState, int, int, ReadFn], str]) -> ExitPrinter:
    """Print NULL as NULL, a failed call's pointer as its address, otherwise decode."""
    def printer(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
        address = st.args[i]
        if address == 0:
            return "NULL"
        if failed(ret):
            return pointer(address)
        return fmt(d, st, i, ret, read)
    return printer


def _struct_out(layout_of: Callable[[AbiContext], Any], fmt: Callable[..., str]) -> ExitPrinter:
    def decode(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
        fields = read_struct(read, st.args[i], layout_of(d))
        return pointer(st.args[i]) if fields is None else fmt(*fields)
    return _out(decode)


def _fd_pair(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
    data = read_bytes(read, st.args[i], 8)
    if data is None:
        return pointer(st.args[i])
    return f"[{signed(int.from_bytes(data[:4], 'little'), 32)}, " \
           f"{signed(int.from_bytes(data[4:], 'little'), 32)}]"


def _path_out(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
    return cstring(read, st.args[i], d.path_max)


def _buf_out(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
    return buffer(d, read, st.args[i], ret)


def _buf_out_hex(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
    return buffer(d, read, st.args[i], ret, as_hex=True)


def _stat(kind: str) -> ExitPrinter:
    def decode(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
        fields = read_struct(read, st.args[i], structs.STAT_LAYOUT[kind][d.word_size])
        return pointer(st.args[i]) if fields is None else structs.format_stat(d.c, *fields)
    return _out(decode)


def _statx(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
    fields = read_struct(read, st.args[i], structs.STATX)
    return pointer(st.args[i]) if fields is None else structs.format_statx(d.c, *fields)


def _timespec_rem(layout: Any) -> ExitPrinter:
    """The time left, which the kernel writes only when the sleep was interrupted: strace
    prints it when the call returns a restart code (``= ? ERESTART_RESTARTBLOCK``), which a
    signal turns into EINTR only later, and for clock_nanosleep only without flags (an
    absolute sleep leaves nothing); otherwise the address."""
    def printer(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
        address = st.args[i]
        if address == 0:
            return "NULL"
        info = d.c.errno.get(-ret) if failed(ret) else None
        flags = st.template.arg_index("flags")
        interrupted = (info is not None and info.restart
                       and (flags is None or st.args[flags] == 0))
        fields = read_struct(read, address, layout) if interrupted else None
        return pointer(address) if fields is None else structs.format_timespec(*fields)
    return printer


def _utsname(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
    data = read_bytes(read, st.args[i], 2 * structs.UTSNAME_FIELD)
    if data is None:
        return pointer(st.args[i])
    fields = []
    for label, start in (("sysname", 0), ("nodename", structs.UTSNAME_FIELD)):
        raw = data[start:start + structs.UTSNAME_FIELD].split(b"\0", 1)[0]
        fields.append(f"{label}={quote(raw[:d.string_limit], len(raw) > d.string_limit)}")
    return "{" + ", ".join(fields) + ", ...}"


def _dirents(name_offset: int) -> ExitPrinter:
    """``0x5555... /* 5 entries */``: the records in the returned bytes, by ``d_reclen``."""
    def decode(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
        address = st.args[i]
        data = read_bytes(read, address, min(ret, DIRENT_BYTES_LIMIT)) if ret > 0 else b""
        if data is None:
            return pointer(address)
        reclen_offset = 16 if name_offset < 0 else 2 * d.word_size
        count = offset = 0
        while offset + reclen_offset + 2 <= len(data):
            reclen = int.from_bytes(data[offset + reclen_offset:offset + reclen_offset + 2],
                                    "little")
            if reclen == 0:
                break
            count += 1
            offset += reclen
        return f"{pointer(address)} /* {count} entries */"
    return _out(decode)


def capture_int(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> None:
    """At entry: remember the int the argument points to (a socklen's "in" value)."""
    data = read_bytes(read, st.args[i], 4) if st.args[i] else None
    if data is not None:
        if st.extra is None:
            st.extra = {}
        st.extra[f"in{i}"] = signed(int.from_bytes(data, "little"), 32)


def _int_at(read: ReadFn, address: int) -> int | None:
    data = read_bytes(read, address, 4)
    return None if data is None else signed(int.from_bytes(data, "little"), 32)


def _socklen_inout(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
    """``[128 => 16]`` (what the caller offered, what the kernel wrote), or ``[16]``."""
    address = st.args[i]
    if address == 0:
        return "NULL"
    before = st.extra.get(f"in{i}") if st.extra else None
    after = None if failed(ret) else _int_at(read, address)
    if before is None and after is None:
        return pointer(address)
    if after is None or after == before:
        return f"[{before}]"
    return f"[{after}]" if before is None else f"[{before} => {after}]"


def _sockaddr_out(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
    spec = st.template.args[i]
    length_address = st.args[spec.length_arg] if spec.length_arg is not None else 0
    written = _int_at(read, length_address) if length_address else None
    if not written or written <= 0:
        return pointer(st.args[i])
    offered = st.extra.get(f"in{spec.length_arg}") if st.extra else None
    length = written if offered is None else min(written, offered)
    return format_sockaddr(d.c, read, st.args[i], length)


def _wait_status(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
    address = st.args[i]
    if address == 0:
        return "NULL"
    data = read_bytes(read, address, 4) if ret > 0 else None
    if data is None:
        return pointer(address)
    return structs.format_wait_status(d.c, int.from_bytes(data, "little"))


def _sigset_out(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
    return sigset(d, st, read, st.args[i])


def _sigaction_out(d: AbiContext, st: EntryState, i: int, ret: int, read: ReadFn) -> str:
    return sigaction(d, st, read, st.args[i])


EXIT_PRINTERS: dict[str, ExitPrinter] = {
    "fd_pair": _out(_fd_pair), "path_out": _out(_path_out), "buf_out": _out(_buf_out),
    "buf_out_hex": _out(_buf_out_hex), "stat_out": _stat("stat_out"),
    "stat64_out": _stat("stat64_out"), "statx_out": _out(_statx),
    "timespec_out": _struct_out(lambda d: structs.TIMESPEC_64, structs.format_timespec),
    "timespec32_out": _struct_out(lambda d: structs.TIMESPEC_32, structs.format_timespec),
    "rusage_out": _struct_out(lambda d: structs.RUSAGE[d.word_size], structs.format_rusage),
    "rlimit64_out": _struct_out(lambda d: structs.RLIMIT64, structs.format_rlimit64),
    "rlimit_out": _out(lambda d, st, i, ret, read: rlimit(d, st.args[i], read)),
    "timespec_rem": _timespec_rem(structs.TIMESPEC_64),
    "timespec32_rem": _timespec_rem(structs.TIMESPEC_32), "utsname_out": _out(_utsname),
    "dirents64_out": _dirents(-1), "dirents_out": _dirents(0),
    "wait_status": _wait_status, "sigset_out": _out(_sigset_out),
    "socklen_inout": _socklen_inout, "sockaddr_out": _out(_sockaddr_out),
    "sigaction_out": _out(_sigaction_out),
    "itimerval_out": _struct_out(lambda d: structs.ITIMER["itimerval"],
                                 structs.format_itimerval),
    "itimerval32_out": _struct_out(lambda d: structs.ITIMER["itimerval32"],
                                   structs.format_itimerval),
    "itimerspec_out": _struct_out(lambda d: structs.ITIMER["itimerspec"],
                                  structs.format_itimerspec),
    "itimerspec32_out": _struct_out(lambda d: structs.ITIMER["itimerspec32"],
                                    structs.format_itimerspec),
}

# Exit kinds that also need something remembered at entry.
CAPTURES: dict[str, Callable[[AbiContext, EntryState, int, ReadFn], None]] = {
    "socklen_inout": capture_int,
}

# What each exit kind above reads from the caller's memory (see ``reads.py``).
EXIT_READS: dict[str, KindReads] = {
    "fd_pair": fixed(EXIT, 8),
    "path_out": string(EXIT, PATH_BYTES),
    "buf_out": sized_by_return(lambda lim: lim.string_limit),
    "buf_out_hex": sized_by_return(lambda lim: lim.string_limit),
    "stat_out": fixed(EXIT, lambda lim: structs.STAT_LAYOUT["stat_out"][lim.word_size].size),
    "stat64_out": fixed(EXIT,
                        lambda lim: structs.STAT_LAYOUT["stat64_out"][lim.word_size].size),
    "statx_out": fixed(EXIT, structs.STATX.size),
    "timespec_out": fixed(EXIT, structs.TIMESPEC_64.size),
    "timespec32_out": fixed(EXIT, structs.TIMESPEC_32.size),
    "rusage_out": fixed(EXIT, lambda lim: structs.RUSAGE[lim.word_size].size),
    "rlimit64_out": fixed(EXIT, structs.RLIMIT64.size),
    "rlimit_out": fixed(EXIT, lambda lim: structs.RLIMIT[lim.word_size].size),
    "timespec_rem": fixed(EXIT, structs.TIMESPEC_64.size),
    "timespec32_rem": fixed(EXIT, structs.TIMESPEC_32.size),
    "utsname_out": fixed(EXIT, 2 * structs.UTSNAME_FIELD),
    "dirents64_out": sized_by_return(DIRENT_BYTES_LIMIT),
    "dirents_out": sized_by_return(DIRENT_BYTES_LIMIT),
    "wait_status": fixed(EXIT, 4),
    "sigset_out": fixed(EXIT, SIGSET_BYTES_LIMIT),
    "sigaction_out": fixed(EXIT, lambda lim: structs.SIGACTION[lim.word_size].size
                           + SIGSET_BYTES_LIMIT),
    # The caller's length before the call (capture_int) and the kernel's after it.
    "socklen_inout": fixed(ENTRY, 4, EXIT),
    "sockaddr_out": sized_by_pointer(EXIT, SOCKADDR_STORAGE_SIZE),
    **{f"{name}_out": fixed(EXIT, layout.size) for name, layout in structs.ITIMER.items()},
}
