"""One small printer per argument kind (see ``kinds.py``).

Entry printers are ``f(d, st, i, read) -> str`` for argument ``i`` of the call in ``st``
(the arguments the caller passes in); ``outargs.py`` has the exit printers, for what the
kernel writes. ``d`` is the ``AbiContext`` (string limit, constants, ABI word size). None of
them raises because of guest memory: an unreadable pointer prints as its address.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from . import structs
from .memory import PAGE_SIZE, ReadFn, chunks, read_bytes, read_cstring, read_prefix, read_struct
from .reads import (
    ENTRY,
    EXIT,
    PATH_BYTES,
    KindReads,
    fixed,
    sized_by_argument,
    string,
    string_array,
)
from .render import hex_or_zero, octal, pointer, quote, quote_hex, signed
from .sockaddr import SOCKADDR_STORAGE_SIZE, format_sockaddr
from .state import AbiContext, EntryState

EntryPrinter = Callable[["AbiContext", "EntryState", int, ReadFn], str]

ENVP_LIMIT = 1 << 16  # environment entries counted at most
SIGSET_BYTES_LIMIT = 128  # sigset bytes read at most (sigsetsize; the kernel uses 8)


# --- numbers -------------------------------------------------------------------------------

def _int(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return str(signed(st.args[i], 32))


def _uint(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return str(st.args[i] & 0xFFFFFFFF)


def _long(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return str(signed(st.args[i], d.bits))


def _ulong(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return str(st.args[i])


def _off(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return str(signed(st.args[i], 64))


def _hex(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return hex_or_zero(st.args[i])


def _ptr(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return pointer(st.args[i])


def _pgoff(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return hex_or_zero(st.args[i] * PAGE_SIZE)


def _off64_lo(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    high = st.args[i + 1] if i + 1 < len(st.args) else 0
    return str(signed(st.args[i] | (high << 32), 64))


def _uid(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    value = st.args[i] & 0xFFFFFFFF
    return "-1" if value == 0xFFFFFFFF else str(value)


def _fd(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return str(signed(st.args[i], 32))


def _dirfd(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    value = signed(st.args[i], 32)
    return "AT_FDCWD" if value == d.at_fdcwd else str(value)


def _mode(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return octal(st.args[i] & 0xFFFF)


def _mode_type(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return structs.format_file_mode(d.c, st.args[i] & 0xFFFF)


# --- strings and memory ----------------------------------------------------------------------

def cstring(read: ReadFn, address: int, limit: int) -> str:
    """``"text"``, cut at ``limit`` bytes with ``...``; the address when the string runs into
    unreadable memory before its NUL or its ``limit + 1``-th byte (strace's umovestr fails)."""
    if address == 0:
        return "NULL"
    found = read_cstring(read, address, limit + 1)
    if found is None:
        return pointer(address)
    data, cut = found
    if cut and len(data) <= limit:  # stopped by a fault, not by the length
        return pointer(address)
    return quote(data[:limit], len(data) > limit)


def _path(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return cstring(read, st.args[i], d.path_max)


def _string(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return cstring(read, st.args[i], d.string_limit)


def buffer(d: AbiContext, read: ReadFn, address: int, length: int, as_hex: bool = False) -> str:
    if address == 0:
        return "NULL"
    shown = min(max(length, 0), d.string_limit)
    data = read_bytes(read, address, shown)
    if data is None:
        return pointer(address)
    return (quote_hex if as_hex else quote)(data, length > shown)


def _buf_in(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    spec = st.template.args[i]
    length = st.args[spec.length_arg] if spec.length_arg is not None else 0
    return buffer(d, read, st.args[i], length)


def _words(d: AbiContext, read: ReadFn, address: int, limit: int
           ) -> tuple[list[int], bool] | None:
    """Pointer-array entries up to the NULL or ``limit``; did the array go on past it?"""
    words: list[int] = []
    size = d.word_size
    for start, length in chunks(address, (limit + 1) * size, first=16 * size):
        data = read_prefix(read, start, length)
        if data is None or len(data) < size:
            return (words, True) if words else None
        for (word,) in struct.iter_unpack(d.word_format, data[:len(data) - len(data) % size]):
            if word == 0:
                return words, False
            words.append(word)
        if len(data) < length:
            return words, True
    return words[:limit], True


def _argv(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    address = st.args[i]
    if address == 0:
        return "NULL"
    found = _words(d, read, address, d.string_limit)
    if found is None:
        return pointer(address)
    words, more = found
    items = [cstring(read, word, d.string_limit) for word in words]
    if more and len(words) < d.string_limit:
        # The array ran into unreadable memory: strace names the word it could not read.
        items.append(f"... /* {pointer(address + len(words) * d.word_size)} */")
    elif more:
        items.append("...")
    return "[" + ", ".join(items) + "]"


def _envp(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    address = st.args[i]
    if address == 0:
        return "NULL"
    found = _words(d, read, address, ENVP_LIMIT)
    if found is None:
        return pointer(address)
    count = len(found[0])
    return f"{pointer(address)} /* {count} var{'' if count == 1 else 's'} */"


# --- flags and named values ---------------------------------------------------------------

def _o_flags(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return d.c.flags["open_flags"].format(st.args[i] & 0xFFFFFFFF)


def open_flags(d: AbiContext, value: int) -> str:
    value &= 0xFFFFFFFF
    access = d.c.values["open_access"].format(value & d.o_accmode)
    rest = value & ~d.o_accmode
    return f"{access}|{d.c.flags['open_flags'].format(rest, alone=False)}" if rest else access


def _open_flags(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return open_flags(d, st.args[i])


def _flags(group: str, zero: str = "0") -> EntryPrinter:
    def printer(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
        return d.c.flags[group].format(st.args[i] & 0xFFFFFFFF, zero)
    return printer


def _values(group: str) -> EntryPrinter:
    def printer(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
        return d.c.values[group].format(st.args[i] & 0xFFFFFFFF)
    return printer


def _statx_flags(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    value = st.args[i] & 0xFFFFFFFF
    sync_type = d.c.numbers["AT_STATX_SYNC_TYPE"]
    sync = d.c.values["statx_sync"].get(value & sync_type)
    if sync is None:
        return d.c.flags["at_flags"].format(value)
    rest = value & ~sync_type
    return f"{sync}|{d.c.flags['at_flags'].format(rest, alone=False)}" if rest else sync


def map_flags(d: AbiContext, value: int) -> str:
    n = d.c.numbers
    map_type = value & n["MAP_TYPE"]
    type_name = d.c.values["map_type"].get(map_type)
    parts = [type_name or f"{hex_or_zero(map_type)} /* MAP_??? */"]
    huge = (value >> n["MAP_HUGE_SHIFT"]) & n["MAP_HUGE_MASK"]
    rest = value & ~n["MAP_TYPE"] & ~(n["MAP_HUGE_MASK"] << n["MAP_HUGE_SHIFT"])
    names, leftover = d.c.flags["map_flags"].split(rest)
    parts += names
    if leftover:
        parts.append(f"{leftover:#x}")
    if huge:
        parts.append(f"{huge}<<MAP_HUGE_SHIFT")
    return "|".join(parts)


def _map_flags(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return map_flags(d, st.args[i])


def _prot(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return d.c.flags["prot"].format(st.args[i], "PROT_NONE")


def clone_flags(d: AbiContext, value: int) -> str:
    signal = value & d.c.numbers["CSIGNAL"]
    text = d.c.flags["clone_flags"].format(value & ~d.c.numbers["CSIGNAL"], "")
    if signal:
        signal_text = d.c.signal(signal)
        text = f"{text}|{signal_text}" if text else signal_text
    return text or "0"


def _clone_flags(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return clone_flags(d, st.args[i])


def _sock_type(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    value = st.args[i] & 0xFFFFFFFF
    mask = d.c.numbers["SOCK_TYPE_MASK"]
    type_name = d.c.values["sock_type"].get(value & mask)
    parts = [type_name] if type_name else []
    names, leftover = d.c.flags["sock_type_flags"].split(value & ~mask if type_name else value)
    parts += names
    if leftover:
        parts.append(f"{leftover:#x}" if names else f"{leftover:#x} /* SOCK_??? */")
    return "|".join(parts) or "0"


def _sock_protocol(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    n = d.c.numbers
    domain = st.args[0] & 0xFFFFFFFF
    protocol = st.args[i] & 0xFFFFFFFF
    if domain in (n["AF_INET"], n["AF_INET6"]):
        return d.c.values["ipproto"].format(protocol)
    if domain == n["AF_NETLINK"]:
        return d.c.values["netlink_protocol"].format(protocol)
    return str(signed(protocol, 32))


def _signal(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return d.c.signal(signed(st.args[i], 32))


def _access_mode(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return d.c.flags["access_mode"].format(st.args[i] & 0xFFFFFFFF, "F_OK")


# --- structures -----------------------------------------------------------------------------

def _struct_in(layout_of: Callable[[AbiContext], Any], fmt: Callable[..., str]) -> EntryPrinter:
    def printer(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
        address = st.args[i]
        if address == 0:
            return "NULL"
        fields = read_struct(read, address, layout_of(d))
        return pointer(address) if fields is None else fmt(*fields)
    return printer


def rlimit(d: AbiContext, address: int, read: ReadFn) -> str:
    fields = read_struct(read, address, structs.RLIMIT[d.word_size])
    return pointer(address) if fields is None else structs.format_rlimit(*fields, d.bits)


def _rlimit_in(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return rlimit(d, st.args[i], read) if st.args[i] else "NULL"


def pollfds(d: AbiContext, read: ReadFn, address: int, count: int, returned: bool = False
            ) -> str | None:
    """``[{fd=3, events=POLLIN}, ...]`` (or, after the call, the entries with revents)."""
    shown = min(count, d.string_limit)
    data = read_bytes(read, address, shown * structs.POLLFD.size) if address else None
    if data is None:
        return None
    items = []
    for fd, events, revents in structs.POLLFD.iter_unpack(data):
        if returned:
            if revents:
                items.append(f"{{fd={fd}, revents={d.c.flags['poll_events'].format(revents)}}}")
        elif fd < 0:
            items.append(f"{{fd={fd}}}")
        else:
            items.append(f"{{fd={fd}, events={d.c.flags['poll_events'].format(events)}}}")
    if count > shown and not returned:
        items.append("...")
    return "[" + ", ".join(items) + "]"


def _pollfds(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    spec = st.template.args[i]
    count = st.args[spec.length_arg] & 0xFFFFFFFF if spec.length_arg is not None else 0
    if st.args[i] == 0:
        return "NULL"
    return pollfds(d, read, st.args[i], count) or pointer(st.args[i])


def _sockaddr(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    spec = st.template.args[i]
    length = signed(st.args[spec.length_arg], 32) if spec.length_arg is not None else 0
    return format_sockaddr(d.c, read, st.args[i], length)


def sigset_size(st: EntryState) -> int:
    index = st.template.arg_index("sigsetsize")
    return st.args[index] if index is not None else 8


def sigset(d: AbiContext, st: EntryState, read: ReadFn, address: int) -> str:
    if address == 0:
        return "NULL"
    size = sigset_size(st)
    if not 0 < size <= SIGSET_BYTES_LIMIT:
        return pointer(address)
    data = read_bytes(read, address, size)
    return pointer(address) if data is None else structs.format_sigset(d.c, data)


def _sigset_in(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return sigset(d, st, read, st.args[i])


def sigaction(d: AbiContext, st: EntryState, read: ReadFn, address: int) -> str:
    if address == 0:
        return "NULL"
    layout = structs.SIGACTION[d.word_size]
    size = sigset_size(st)
    if not 0 < size <= SIGSET_BYTES_LIMIT:
        return pointer(address)
    data = read_bytes(read, address, layout.size + size)
    if data is None:
        return pointer(address)
    handler, flags, restorer = layout.unpack_from(data)
    return structs.format_sigaction(d.c, handler, flags, restorer, data[layout.size:],
                                    d.word_size)


def _sigaction_in(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
    return sigaction(d, st, read, st.args[i])


def _utime_pair(kind: str) -> EntryPrinter:
    """``times[2]`` of utimensat (``[{tv_sec=1, tv_nsec=2} /* ... */, UTIME_NOW]``) or of
    utimes/futimesat (``tv_usec``), read at entry: 2 x 16 bytes, or 2 x 8 for i386's 32-bit
    layouts; the address if unreadable."""
    layout = structs.UTIME_LAYOUT[kind]
    element = (structs.format_utime_timespec if kind.startswith("timespec")
               else structs.format_utime_timeval)

    def printer(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
        address = st.args[i]
        if address == 0:
            return "NULL"
        data = read_bytes(read, address, 2 * layout.size)
        if data is None:
            return pointer(address)
        return "[" + ", ".join(element(*times) for times in layout.iter_unpack(data)) + "]"
    return printer


def _signed_values(group: str) -> EntryPrinter:
    """A value set with negative members (``RUSAGE_CHILDREN`` is -1); unknown ones in hex."""
    def printer(d: AbiContext, st: EntryState, i: int, read: ReadFn) -> str:
        value = st.args[i] & 0xFFFFFFFF
        values = d.c.values[group]
        return values.get(signed(value, 32)) or values.format(value)
    return printer


ENTRY_PRINTERS: dict[str, EntryPrinter] = {
    "int": _int, "uint": _uint, "long": _long, "ulong": _ulong, "size": _ulong, "off": _off,
    "hex": _hex, "ptr": _ptr, "off_hex": _hex, "pgoff": _pgoff, "off64_lo": _off64_lo,
    "uid": _uid, "pid": _int, "fd": _fd, "dirfd": _dirfd, "mode": _mode,
    "mode_type": _mode_type, "path": _path, "string": _string, "buf_in": _buf_in,
    "argv": _argv, "envp": _envp, "open_flags": _open_flags, "o_flags": _o_flags,
    "at_flags": _flags("at_flags"),
    "statx_flags": _statx_flags, "statx_mask": _flags("statx_mask"), "prot": _prot,
    "map_flags": _map_flags, "madvise": _values("madvise"), "clone_flags": _clone_flags,
    "sock_domain": _values("sock_domain"), "sock_type": _sock_type,
    "sock_protocol": _sock_protocol, "msg_flags": _flags("msg_flags"),
    "wait_options": _flags("wait_options"), "signal": _signal,
    "sigprocmask_how": _values("sigprocmask_how"), "fcntl_cmd": _values("fcntl_cmd"),
    "seek_whence": _values("seek_whence"), "access_mode": _access_mode,
    "arch_prctl_code": _values("arch_prctl_code"),
    "rlimit_resource": _values("rlimit_resource"), "clockid": _values("clockid"),
    "getrandom_flags": _flags("getrandom_flags"),
    "socketcall_call": _values("socketcall_call"), "futex_op": _values("futex_op"),
    "prctl_option": _values("prctl_option"), "fadvise_advice": _values("fadvise_advice"),
    "timespec_in": _struct_in(lambda d: structs.TIMESPEC_64, structs.format_timespec),
    "timespec32_in": _struct_in(lambda d: structs.TIMESPEC_32, structs.format_timespec),
    "rlimit64_in": _struct_in(lambda d: structs.RLIMIT64, structs.format_rlimit64),
    "rlimit_in": _rlimit_in,
    "sockaddr": _sockaddr, "sigset_in": _sigset_in, "sigaction_in": _sigaction_in,
    "pollfds": _pollfds,
    "msync_flags": _flags("msync_flags"), "mremap_flags": _flags("mremap_flags"),
    "mlockall_flags": _flags("mlockall_flags"), "mlock_flags": _flags("mlock_flags"),
    "flock_op": _flags("flock_op"), "rename_flags": _flags("rename_flags"),
    "memfd_flags": _flags("memfd_flags"), "epoll_create_flags": _flags("epoll_create_flags"),
    "timer_flags": _flags("timer_flags"), "unshare_flags": _flags("clone_flags"),
    "shutdown_how": _values("shutdown_how"), "epoll_ctl_op": _values("epoll_ctl_op"),
    "rusage_who": _signed_values("rusage_who"), "priority_which": _values("priority_which"),
    "itimer_which": _values("itimer_which"),
    "timespec_utime_pair": _utime_pair("timespec_utime_pair"),
    "timespec32_utime_pair": _utime_pair("timespec32_utime_pair"),
    "timeval_utime_pair": _utime_pair("timeval_utime_pair"),
    "timeval32_utime_pair": _utime_pair("timeval32_utime_pair"),
    "utimbuf": _struct_in(lambda d: structs.UTIMBUF["utimbuf"], structs.format_utimbuf),
    "utimbuf32": _struct_in(lambda d: structs.UTIMBUF["utimbuf32"], structs.format_utimbuf),
    "inotify_init_flags": _flags("inotify_init_flags"), "timerfd_flags": _flags("timerfd_flags"),
    "eventfd_flags": _flags("eventfd_flags"), "close_range_flags": _flags("close_range_flags"),
    "fallocate_mode": _flags("fallocate_mode"), "umount_flags": _flags("umount_flags"),
    "pidfd_open_flags": _flags("pidfd_open_flags"), "setns_flags": _flags("setns_flags"),
    "itimerval_in": _struct_in(lambda d: structs.ITIMER["itimerval"], structs.format_itimerval),
    "itimerval32_in": _struct_in(lambda d: structs.ITIMER["itimerval32"],
                                 structs.format_itimerval),
    "itimerspec_in": _struct_in(lambda d: structs.ITIMER["itimerspec"],
                                structs.format_itimerspec),
    "itimerspec32_in": _struct_in(lambda d: structs.ITIMER["itimerspec32"],
                                  structs.format_itimerspec),
}

# What each entry kind above reads from the caller's memory (see ``reads.py``); kinds not
# named here read nothing.
ENTRY_READS: dict[str, KindReads] = {
    "path": string(ENTRY, PATH_BYTES),
    "string": string(ENTRY, lambda lim: lim.string_limit + 1),
    "buf_in": sized_by_argument(ENTRY, lambda lim: lim.string_limit),
    "argv": string_array(count=lambda lim: lim.string_limit + 1,
                         limit=lambda lim: lim.string_limit + 1),
    # The pointers only (counted, not printed); a page of them at most.
    "envp": fixed(ENTRY, lambda lim: min((ENVP_LIMIT + 1) * lim.word_size, PAGE_SIZE)),
    "sockaddr": sized_by_argument(ENTRY, SOCKADDR_STORAGE_SIZE),
    # poll's return value shows the entries' revents: read again at exit.
    "pollfds": sized_by_argument(ENTRY, lambda lim: structs.POLLFD.size * lim.string_limit,
                                 structs.POLLFD.size, EXIT),
    "timespec_in": fixed(ENTRY, structs.TIMESPEC_64.size),
    "timespec32_in": fixed(ENTRY, structs.TIMESPEC_32.size),
    "rlimit64_in": fixed(ENTRY, structs.RLIMIT64.size),
    "rlimit_in": fixed(ENTRY, lambda lim: structs.RLIMIT[lim.word_size].size),
    "sigset_in": fixed(ENTRY, SIGSET_BYTES_LIMIT),
    "sigaction_in": fixed(ENTRY, lambda lim: structs.SIGACTION[lim.word_size].size
                          + SIGSET_BYTES_LIMIT),
    # utimensat/utimes' times[2], utime's struct utimbuf, struct itimerval/itimerspec:
    **{kind: fixed(ENTRY, 2 * layout.size) for kind, layout in structs.UTIME_LAYOUT.items()},
    **{kind: fixed(ENTRY, layout.size) for kind, layout in structs.UTIMBUF.items()},
    **{f"{name}_in": fixed(ENTRY, layout.size) for name, layout in structs.ITIMER.items()},
}
