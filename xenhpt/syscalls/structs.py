"""User-space structures the decoder prints, with their x86_64 and i386 layouts.

Layouts are the stable user ABI (``arch/x86/include/uapi/asm/stat.h``, ``linux/stat.h``,
``linux/time_types.h``, ``asm/compat.h``...): only the fields strace prints without ``-v`` are
read, as ``struct`` formats with padding for the rest. Each ``format_*`` takes the raw field
values and returns strace's text, e.g. ``{st_mode=S_IFREG|0644, st_size=123, ...}``.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime

from .render import hex_or_zero, octal, pointer
from .xlat import Constants

# struct stat (x86_64): st_mode u32 @24, st_rdev u64 @40, st_size s64 @48.
STAT_64 = struct.Struct("<24xI12xQq")
# struct stat / compat_stat (i386): st_mode u16 @8, st_rdev u32 @16, st_size u32 @20.
STAT_32 = struct.Struct("<8xH6xII")
# struct stat64 (i386, packed): st_mode u32 @16, st_rdev u64 @32, st_size s64 @44.
STAT64_32 = struct.Struct("<16xI12xQ4xq")
# struct statx: stx_mask u32 @0, stx_attributes u64 @8, stx_mode u16 @28, stx_size u64 @40.
STATX = struct.Struct("<I4xQ12xH10xQ")
# struct __kernel_timespec (both ABIs) and old_timespec32.
TIMESPEC_64 = struct.Struct("<qq")
TIMESPEC_32 = struct.Struct("<ii")
# struct rusage: ru_utime and ru_stime (struct timeval of the ABI) come first.
RUSAGE = {8: struct.Struct("<qqqq"), 4: struct.Struct("<iiii")}
RLIMIT64 = struct.Struct("<QQ")
RLIMIT = {8: struct.Struct("<QQ"), 4: struct.Struct("<II")}
# The kernel's struct sigaction for rt_sigaction: handler, flags, restorer, then the mask.
SIGACTION = {8: struct.Struct("<QQQ"), 4: struct.Struct("<III")}
# struct clone_args: eleven u64 (CLONE_ARGS_SIZE_VER0 = 64 bytes covers the first eight).
CLONE_ARGS_FIELDS = ("flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack",
                     "stack_size", "tls", "set_tid", "set_tid_size", "cgroup")
CLONE_ARGS_VER0 = 64
# struct new_utsname: six char[65] fields; sysname and nodename are printed.
UTSNAME_FIELD = 65
# struct pollfd: int fd, short events, short revents.
POLLFD = struct.Struct("<ihh")
# struct winsize (TIOCGWINSZ): four u16.
WINSIZE = struct.Struct("<4H")
# rt_sigreturn: offset of uc_sigmask from the stack pointer at entry (x86_64: struct
# rt_sigframe's ucontext follows the popped pretcode; uc_flags, uc_link, stack_t and the
# 256-byte sigcontext precede the mask. i386: pretcode, sig, pinfo, puc, 128-byte siginfo,
# then ucontext_ia32 with its 88-byte sigcontext).
# i386 sigreturn: the restorer popped the signal number too, so the sigcontext starts at the
# stack pointer; its oldmask is at 80 and the frame's extramask (the mask's high word) follows
# the 88-byte sigcontext and the 624-byte unused _fpstate_32.
SIGRETURN_MASK_OFFSET = {("rt_sigreturn", 8): 8 + 8 + 24 + 256,
                         ("rt_sigreturn", 4): 4 + 4 + 4 + 128 + 4 + 4 + 12 + 88,
                         ("sigreturn", 4): 80}
SIGRETURN_EXTRAMASK_OFFSET = 88 + 624
# i386 old_mmap's argument block: six u32 (addr, len, prot, flags, fd, offset).
OLD_MMAP_ARGS = struct.Struct("<6I")

# The times[2] of utimensat (timespec) and utimes/futimesat (timeval), per ABI: tv_sec
# signed, the fraction shown unsigned (strace zero-extends it).
UTIME_LAYOUT = {"timespec_utime_pair": struct.Struct("<qQ"),
                "timespec32_utime_pair": struct.Struct("<iI"),
                "timeval_utime_pair": struct.Struct("<qQ"),
                "timeval32_utime_pair": struct.Struct("<iI")}
# utime's struct utimbuf (actime, modtime), x86_64 and i386.
UTIMBUF = {"utimbuf": struct.Struct("<qq"), "utimbuf32": struct.Struct("<ii")}
# struct itimerval (setitimer) and itimerspec (timer_settime, timerfd_settime): an interval
# and a value, each a timeval / timespec of the ABI (the fraction shown unsigned).
ITIMER = {"itimerval": struct.Struct("<qQqQ"), "itimerval32": struct.Struct("<iIiI"),
          "itimerspec": struct.Struct("<qQqQ"), "itimerspec32": struct.Struct("<iIiI")}
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2

STAT_LAYOUT = {"stat_out": {8: STAT_64, 4: STAT_32}, "stat64_out": {4: STAT64_32, 8: STAT64_32}}


def makedev(dev: int) -> str:
    """glibc's major()/minor() split of an encoded device number."""
    major = ((dev >> 8) & 0xFFF) | ((dev >> 32) & ~0xFFF)
    minor = (dev & 0xFF) | ((dev >> 12) & ~0xFF)
    return f"makedev({hex_or_zero(major)}, {hex_or_zero(minor)})"


def format_file_mode(c: Constants, mode: int) -> str:
    """``S_IFDIR|S_ISVTX|0777``: file type, set-id and sticky bits, permissions."""
    file_type = mode & c.numbers["S_IFMT"]
    name = c.values["stat_type"].get(file_type) if file_type else None
    if file_type and name is None:
        return octal(mode)
    bits, _ = c.flags["stat_mode_bits"].split(mode & 0o7000)
    return "|".join(([name] if name else []) + bits + [octal(mode & 0o777)])


def format_stat(c: Constants, mode: int, rdev: int, size: int) -> str:
    kind = mode & c.numbers["S_IFMT"]
    name = c.values["stat_type"].get(kind)
    if name in ("S_IFCHR", "S_IFBLK"):
        detail = f"st_rdev={makedev(rdev)}"
    else:
        detail = f"st_size={size}"
    return f"{{st_mode={format_file_mode(c, mode)}, {detail}, ...}}"


def format_statx(c: Constants, mask: int, attributes: int, mode: int, size: int) -> str:
    return (f"{{stx_mask={c.flags['statx_mask'].format(mask)}, "
            f"stx_attributes={c.flags['statx_attributes'].format(attributes)}, "
            f"stx_mode={format_file_mode(c, mode)}, stx_size={size}, ...}}")


def format_timespec(sec: int, nsec: int) -> str:
    return f"{{tv_sec={sec}, tv_nsec={nsec}}}"


def format_time_comment(sec: int, fraction: int = 0, digits: int = 9) -> str:
    """strace's `` /* 2024-05-01T10:00:00.000000002+0000 */`` after a timestamp (in UTC: the
    guest's time zone is unknown); nothing for zero or an out-of-range fraction or year."""
    if (sec == 0 and fraction == 0) or fraction >= 10 ** digits:
        return ""
    try:
        when = datetime.fromtimestamp(sec, UTC)
    except (OverflowError, OSError, ValueError):
        return ""
    part = f".{fraction:0{digits}d}" if fraction else ""
    return f" /* {when:%Y-%m-%dT%H:%M:%S}{part}+0000 */"


def format_utime_timespec(sec: int, nsec: int) -> str:
    """One of utimensat's times: ``UTIME_NOW``, ``UTIME_OMIT`` or the time with its date."""
    if nsec == UTIME_NOW:
        return "UTIME_NOW"
    if nsec == UTIME_OMIT:
        return "UTIME_OMIT"
    return f"{{tv_sec={sec}, tv_nsec={nsec}}}{format_time_comment(sec, nsec)}"


def format_utime_timeval(sec: int, usec: int) -> str:
    """One of utimes's times, with its date: ``{tv_sec=1, tv_usec=2} /* ... */``."""
    return f"{{tv_sec={sec}, tv_usec={usec}}}{format_time_comment(sec, usec, 6)}"


def format_itimerval(isec: int, iusec: int, vsec: int, vusec: int) -> str:
    return (f"{{it_interval={{tv_sec={isec}, tv_usec={iusec}}}, "
            f"it_value={{tv_sec={vsec}, tv_usec={vusec}}}}}")


def format_itimerspec(isec: int, insec: int, vsec: int, vnsec: int) -> str:
    return (f"{{it_interval={{tv_sec={isec}, tv_nsec={insec}}}, "
            f"it_value={{tv_sec={vsec}, tv_nsec={vnsec}}}}}")


def format_utimbuf(actime: int, modtime: int) -> str:
    return (f"{{actime={actime}{format_time_comment(actime)}, "
            f"modtime={modtime}{format_time_comment(modtime)}}}")


def format_rusage(utime_sec: int, utime_usec: int, stime_sec: int, stime_usec: int) -> str:
    return (f"{{ru_utime={{tv_sec={utime_sec}, tv_usec={utime_usec}}}, "
            f"ru_stime={{tv_sec={stime_sec}, tv_usec={stime_usec}}}, ...}}")


def _rlim(value: int, infinity: str = "RLIM64_INFINITY", bits: int = 64) -> str:
    if value == (1 << bits) - 1:
        return infinity
    if value > 1024 and value % 1024 == 0:
        return f"{value // 1024}*1024"
    return str(value)


def format_rlimit64(cur: int, maximum: int) -> str:
    return f"{{rlim_cur={_rlim(cur)}, rlim_max={_rlim(maximum)}}}"


def format_rlimit(cur: int, maximum: int, bits: int) -> str:
    """struct rlimit of the ABI's word size: all ones is ``RLIM_INFINITY``."""
    return (f"{{rlim_cur={_rlim(cur, 'RLIM_INFINITY', bits)}, "
            f"rlim_max={_rlim(maximum, 'RLIM_INFINITY', bits)}}}")


def format_sigset(c: Constants, data: bytes) -> str:
    """``[HUP INT]``, or ``~[RTMIN RT_1]`` when more than half of the bits are set."""
    bits = int.from_bytes(data, "little")
    total = len(data) * 8
    complement = 2 * bin(bits).count("1") > total
    if complement:
        bits = ~bits & ((1 << total) - 1)
    names = []
    number = 1
    while bits:
        if bits & 1:
            name = c.signal_name(number)
            names.append(name[3:] if name else str(number))
        bits >>= 1
        number += 1
    return ("~[" if complement else "[") + " ".join(names) + "]"


def format_sigaction(c: Constants, handler: int, flags: int, restorer: int, mask: bytes,
                     word_size: int) -> str:
    if handler == 0:
        handler_text = "SIG_DFL"
    elif handler == 1:
        handler_text = "SIG_IGN"
    elif handler == (1 << (8 * word_size)) - 1:
        handler_text = "SIG_ERR"
    else:
        handler_text = f"{handler:#x}"
    text = (f"{{sa_handler={handler_text}, sa_mask={format_sigset(c, mask)}, "
            f"sa_flags={c.flags['sa_flags'].format(flags)}")
    if flags & c.flags["sa_flags"].names["SA_RESTORER"]:
        text += f", sa_restorer={pointer(restorer)}"
    return text + "}"


def format_wait_status(c: Constants, status: int) -> str:
    """``[{WIFEXITED(s) && WEXITSTATUS(s) == 0}]`` and the other three shapes."""
    status &= 0xFFFFFFFF
    low = status & 0x7F
    if (status & 0xFF) == 0x7F:
        text = f"WIFSTOPPED(s) && WSTOPSIG(s) == {c.signal((status >> 8) & 0xFF)}"
        extra = status >> 16
    elif status == 0xFFFF:
        text, extra = "WIFCONTINUED(s)", 0
    elif low == 0:
        text = f"WIFEXITED(s) && WEXITSTATUS(s) == {(status >> 8) & 0xFF}"
        extra = status >> 16
    else:
        text = f"WIFSIGNALED(s) && WTERMSIG(s) == {c.signal(low)}"
        if status & 0x80:
            text += " && WCOREDUMP(s)"
        extra = status >> 16
    if extra:
        text += f" | {extra << 16:#x}"
    return f"[{{{text}}}]"


def format_winsize(row: int, col: int, xpixel: int, ypixel: int) -> str:
    return f"{{ws_row={row}, ws_col={col}, ws_xpixel={xpixel}, ws_ypixel={ypixel}}}"


def format_clone_args(c: Constants, fields: dict[str, int]) -> str:
    """``{flags=..., [pidfd=..., child_tid=..., parent_tid=...,] exit_signal=..., stack=...}``."""
    flags = fields["flags"]
    n = c.numbers
    parts = [f"flags={c.flags['clone3_flags'].format(flags)}"]
    if flags & n["CLONE_PIDFD"]:
        parts.append(f"pidfd={pointer(fields['pidfd'])}")
    if flags & (n["CLONE_CHILD_SETTID"] | n["CLONE_CHILD_CLEARTID"]):
        parts.append(f"child_tid={pointer(fields['child_tid'])}")
    if flags & n["CLONE_PARENT_SETTID"]:
        parts.append(f"parent_tid={pointer(fields['parent_tid'])}")
    parts.append(f"exit_signal={c.signal(fields['exit_signal']) if fields['exit_signal'] else 0}")
    parts.append(f"stack={pointer(fields['stack'])}")
    parts.append(f"stack_size={hex_or_zero(fields['stack_size'])}")
    if flags & n["CLONE_SETTLS"]:
        parts.append(f"tls={pointer(fields['tls'])}")
    if fields.get("set_tid_size"):
        parts.append(f"set_tid={pointer(fields['set_tid'])}")
        parts.append(f"set_tid_size={fields['set_tid_size']}")
    return "{" + ", ".join(parts) + "}"


# struct user_desc (set_thread_area): entry_number, base_addr, limit, then one word of bit
# fields (name, first bit, width); the x86-64 struct adds lm after useable.
USER_DESC = struct.Struct("<4I")
USER_DESC_BITS = (("seg_32bit", 0, 1), ("contents", 1, 2), ("read_exec_only", 3, 1),
                  ("limit_in_pages", 4, 1), ("seg_not_present", 5, 1), ("useable", 6, 1))
USER_DESC_LM = ("lm", 7, 1)
# "Take any free TLS entry": the kernel writes the one it took back into entry_number.
USER_DESC_ANY_ENTRY = 0xFFFF_FFFF


def user_desc_entry(number: int) -> str:
    """An entry number as strace prints it: ``-1`` (any free entry) or unsigned."""
    return "-1" if number == USER_DESC_ANY_ENTRY else str(number)


def _hex_u32(value: int) -> str:
    # C's "%#08x": eight characters with the 0x, and no 0x at all for zero.
    return f"{value:#08x}" if value else "00000000"


def format_user_desc(entry_number: int, base_addr: int, limit: int, bits: int,
                     word_size: int) -> str:
    """``{entry_number=-1, base_addr=0x9946380, limit=0x0fffff, seg_32bit=1, ...}``."""
    fields = [f"entry_number={user_desc_entry(entry_number)}",
              f"base_addr={_hex_u32(base_addr)}", f"limit={_hex_u32(limit)}"]
    layout = USER_DESC_BITS + ((USER_DESC_LM,) if word_size == 8 else ())
    fields += [f"{name}={bits >> shift & ((1 << width) - 1)}" for name, shift, width in layout]
    return "{" + ", ".join(fields) + "}"
