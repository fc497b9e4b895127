"""Named constants (strace's "xlat" tables) from the kernel's uapi headers.

Every value comes from the headers. A group either lists its names (for flag sets whose
display order is strace's, not ascending: that order was read off strace 6.1's own output on
Debian 12 by setting every bit, e.g. ``openat(..., 0xfffffffc)``), or takes every definition
with a prefix from the named headers. Without a list, flag groups print in ascending order of
their lowest bit, combined flags (``O_SYNC``, ``STATX_ALL``) before their parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import cparse
from .source import KernelSource

UAPI = "include/uapi/"
ARCH_UAPI = "arch/x86/include/uapi/asm/"

# Headers read for constants, arch-specific first so that they win over asm-generic.
CONSTANT_HEADERS = [
    ARCH_UAPI + "signal.h", ARCH_UAPI + "mman.h", ARCH_UAPI + "prctl.h", ARCH_UAPI + "stat.h",
    UAPI + "asm-generic/errno-base.h", UAPI + "asm-generic/errno.h", "include/linux/errno.h",
    UAPI + "asm-generic/signal.h", UAPI + "asm-generic/fcntl.h", UAPI + "linux/fcntl.h",
    UAPI + "asm-generic/mman-common.h", UAPI + "asm-generic/mman.h", UAPI + "linux/mman.h",
    UAPI + "asm-generic/hugetlb_encode.h",
    UAPI + "linux/sched.h", "include/linux/socket.h", "include/linux/net.h",
    UAPI + "linux/net.h", UAPI + "linux/in.h", UAPI + "linux/netlink.h",
    UAPI + "asm-generic/signal-defs.h", UAPI + "linux/wait.h", UAPI + "linux/stat.h",
    UAPI + "linux/fs.h", "include/linux/fs.h", UAPI + "asm-generic/resource.h",
    UAPI + "linux/time.h", UAPI + "linux/random.h", UAPI + "linux/limits.h",
    UAPI + "linux/futex.h", UAPI + "asm-generic/ioctls.h", UAPI + "linux/prctl.h",
    UAPI + "linux/fadvise.h", UAPI + "asm-generic/poll.h", UAPI + "linux/eventpoll.h",
    UAPI + "linux/resource.h", UAPI + "linux/memfd.h", UAPI + "linux/inotify.h",
    UAPI + "linux/timerfd.h", "include/linux/eventfd.h", UAPI + "linux/close_range.h",
    UAPI + "linux/falloc.h", UAPI + "linux/pidfd.h",
]

# The #if branches taken when reading the headers: an x86_64 kernel (which also serves i386
# tasks through CONFIG_COMPAT), seen from user space (no __KERNEL__).
HEADER_CONFIG = {"__x86_64__": 1, "CONFIG_64BIT": 1, "CONFIG_COMPAT": 1, "CONFIG_X86_64": 1}


@dataclass
class Group:
    """One named table: ``flags`` (bits, OR-ed) or ``values`` (one of)."""

    name: str
    type: str
    headers: list[str]
    names: list[str] | None = None       # explicit, in display order
    prefix: str = ""
    exclude: re.Pattern[str] | None = None
    max_value: int | None = None
    min_value: int | None = None
    exclude_unused: bool = False           # drop entries whose comment says "Unused"
    stop_at: str | None = None             # only definitions before this name
    rename: dict[str, str] = field(default_factory=dict)
    # What strace writes in a comment after a value no name covers (its printflags/printxval
    # default argument at the call site, e.g. "O_???"); None: the values' common prefix.
    unknown: str | None = None


def _x(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


GROUPS = [
    Group("signals", "values", [ARCH_UAPI + "signal.h"], prefix="SIG", min_value=1,
          max_value=31),
    Group("open_access", "values", [UAPI + "asm-generic/fcntl.h"],
          names=["O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE"]),
    Group("open_flags", "flags", [UAPI + "asm-generic/fcntl.h"], unknown="O_???", names=[
        "O_CREAT", "O_EXCL", "O_NOCTTY", "O_TRUNC", "O_APPEND", "O_NONBLOCK", "O_SYNC",
        "O_DSYNC", "__O_SYNC", "O_DIRECT", "O_LARGEFILE", "O_NOFOLLOW", "O_NOATIME",
        "O_CLOEXEC", "O_PATH", "O_TMPFILE", "O_DIRECTORY", "__O_TMPFILE", "FASYNC"]),
    Group("at_flags", "flags", [UAPI + "linux/fcntl.h"], unknown="AT_???", names=[
        "AT_SYMLINK_NOFOLLOW", "AT_REMOVEDIR", "AT_SYMLINK_FOLLOW", "AT_NO_AUTOMOUNT",
        "AT_EMPTY_PATH", "AT_RECURSIVE"]),
    Group("statx_sync", "values", [UAPI + "linux/fcntl.h"], names=[
        "AT_STATX_SYNC_AS_STAT", "AT_STATX_FORCE_SYNC", "AT_STATX_DONT_SYNC"]),
    Group("prot", "flags", [UAPI + "asm-generic/mman-common.h"], prefix="PROT_",
          min_value=1, unknown="PROT_???"),
    Group("map_type", "values", [UAPI + "linux/mman.h", UAPI + "asm-generic/mman-common.h"],
          names=["MAP_FILE", "MAP_SHARED", "MAP_PRIVATE", "MAP_SHARED_VALIDATE"]),
    Group("map_flags", "flags", [UAPI + "asm-generic/mman-common.h"], names=[
        "MAP_FIXED", "MAP_ANONYMOUS", "MAP_32BIT", "MAP_NORESERVE", "MAP_POPULATE",
        "MAP_NONBLOCK", "MAP_GROWSDOWN", "MAP_DENYWRITE", "MAP_EXECUTABLE", "MAP_LOCKED",
        "MAP_STACK", "MAP_HUGETLB", "MAP_SYNC", "MAP_FIXED_NOREPLACE"]),
    Group("madvise", "values", [UAPI + "asm-generic/mman-common.h"], prefix="MADV_"),
    Group("clone_flags", "flags", [UAPI + "linux/sched.h"], prefix="CLONE_",
          min_value=0x100, max_value=0xFFFFFFFF, exclude_unused=True,
          exclude=_x(r"CLONE_ARGS_"), unknown="CLONE_???"),
    Group("clone3_flags", "flags", [UAPI + "linux/sched.h"], prefix="CLONE_", min_value=1,
          exclude_unused=True, exclude=_x(r"CLONE_ARGS_"), unknown="CLONE_???"),
    Group("sock_domain", "values", ["include/linux/socket.h"], prefix="AF_",
          exclude=_x(r"AF_MAX")),
    Group("sock_type", "values", ["include/linux/net.h"], prefix="SOCK_", min_value=1,
          max_value=15, exclude=_x(r"SOCK_(TYPE_MASK|MAX|NOSPACE|PASSCRED|PASSSEC|"
                                   r"SUPPORT_ZC|ASYNC_|CUSTOMSOCKOPT|WAKE_)")),
    Group("sock_type_flags", "flags", ["include/linux/net.h"],
          names=["SOCK_CLOEXEC", "SOCK_NONBLOCK"], unknown="SOCK_???"),
    Group("ipproto", "values", [UAPI + "linux/in.h"], prefix="IPPROTO_",
          exclude=_x(r"IPPROTO_MAX")),
    Group("netlink_protocol", "values", [UAPI + "linux/netlink.h"], prefix="NETLINK_",
          stop_at="MAX_LINKS", exclude=_x(r"NETLINK_(INET_DIAG)$")),
    # Kernel-internal bits strace does not name are left out.
    Group("msg_flags", "flags", ["include/linux/socket.h"], prefix="MSG_", min_value=1,
          unknown="MSG_???",
          exclude=_x(r"MSG_(SENDPAGE_DECRYPTED|SPLICE_PAGES|INTERNAL_SENDMSG_FLAGS|"
                     r"SENDPAGE_NOPOLICY)$")),
    Group("wait_options", "flags", [UAPI + "linux/wait.h"], unknown="W???", names=[
        "WNOHANG", "WEXITED", "WSTOPPED", "WCONTINUED", "WNOWAIT", "__WCLONE", "__WALL",
        "__WNOTHREAD"]),
    Group("sa_flags", "flags", [ARCH_UAPI + "signal.h", UAPI + "asm-generic/signal-defs.h"],
          unknown="SA_???",
          names=["SA_RESTORER", "SA_ONSTACK", "SA_RESTART", "SA_NODEFER", "SA_RESETHAND",
                 "SA_SIGINFO", "SA_NOCLDSTOP", "SA_NOCLDWAIT"]),
    Group("sigprocmask_how", "values", [UAPI + "asm-generic/signal-defs.h"],
          names=["SIG_BLOCK", "SIG_UNBLOCK", "SIG_SETMASK"]),
    Group("fcntl_cmd", "values", [UAPI + "asm-generic/fcntl.h", UAPI + "linux/fcntl.h"],
          prefix="F_", exclude=_x(r"F_(SEAL_|OWNER_|RDLCK|WRLCK|UNLCK|EXLCK|SHLCK|"
                                  r"LINUX_SPECIFIC_BASE|OK)")),
    Group("fd_flags", "flags", [UAPI + "asm-generic/fcntl.h"], names=["FD_CLOEXEC"],
          unknown="FD_???"),
    Group("seek_whence", "values", [UAPI + "linux/fs.h"], prefix="SEEK_",
          exclude=_x(r"SEEK_MAX")),
    # access(2) modes: the kernel tests them as MAY_READ/MAY_WRITE/MAY_EXEC (same values).
    Group("access_mode", "flags", ["include/linux/fs.h"], names=[
        "MAY_READ", "MAY_WRITE", "MAY_EXEC"],
          rename={"MAY_READ": "R_OK", "MAY_WRITE": "W_OK", "MAY_EXEC": "X_OK"},
          unknown="?_OK"),
    Group("arch_prctl_code", "values", [ARCH_UAPI + "prctl.h"], prefix="ARCH_"),
    Group("rlimit_resource", "values", [UAPI + "asm-generic/resource.h"], prefix="RLIMIT_"),
    Group("clockid", "values", [UAPI + "linux/time.h"], prefix="CLOCK_", max_value=15),
    Group("getrandom_flags", "flags", [UAPI + "linux/random.h"], prefix="GRND_",
          unknown="GRND_???"),
    Group("stat_type", "values", [UAPI + "linux/stat.h"], names=[
        "S_IFSOCK", "S_IFLNK", "S_IFREG", "S_IFBLK", "S_IFDIR", "S_IFCHR", "S_IFIFO"]),
    Group("stat_mode_bits", "flags", [UAPI + "linux/stat.h"],
          names=["S_ISUID", "S_ISGID", "S_ISVTX"]),
    Group("statx_mask", "flags", [UAPI + "linux/stat.h"], prefix="STATX_",
          exclude=_x(r"STATX_(ATTR_|_RESERVED)"), unknown="STATX_???"),
    Group("statx_attributes", "flags", [UAPI + "linux/stat.h"], prefix="STATX_ATTR_",
          unknown="STATX_ATTR_???"),
    Group("socketcall_call", "values", [UAPI + "linux/net.h"], prefix="SYS_",
          exclude=_x(r"SYS_.*SOCKETCALL")),
    Group("futex_op", "values", [UAPI + "linux/futex.h"], prefix="FUTEX_", max_value=255,
          exclude=_x(r"FUTEX_(OP_|CMD_MASK|PRIVATE_FLAG|CLOCK_REALTIME|32$|WAITV_MAX)")),
    Group("ioctl_cmd", "values", [UAPI + "asm-generic/ioctls.h"], min_value=0x5400,
          max_value=0x54FF),
    # prctl options; the constants of their sub-commands (PR_SET_MM_*, PR_SPEC_*...) are not.
    Group("prctl_option", "values", [UAPI + "linux/prctl.h"], prefix="PR_", min_value=1,
          max_value=0xFFFF, exclude=_x(
              r"PR_(SET_MM_|SPEC_|MTE_|SVE_VL|SME_VL|FP_MODE_|TAGGED_ADDR_|PAC_AP|"
              r"SCHED_CORE_(SCOPE|GET|CREATE|SHARE|MAX)|MCE_KILL_(CLEAR|SET|LATE|EARLY|"
              r"DEFAULT)|TIMING_|ENDIAN_|FPEMU_|UNALIGN_|FP_EXC_|TSC_|CAP_AMBIENT_|"
              r"SET_PTRACER_ANY|SET_VMA_ANON_NAME|SVE_SET_VL_ONEXEC|SME_SET_VL_ONEXEC|"
              r"SVE_VL_INHERIT|SME_VL_INHERIT)")),
    Group("fadvise_advice", "values", [UAPI + "linux/fadvise.h"], prefix="POSIX_FADV_",
          unknown="POSIX_FADV_???"),
    Group("poll_events", "flags", [UAPI + "asm-generic/poll.h"], prefix="POLL",
          max_value=0x2000, unknown="POLL???"),
    # Calls strace prints with names that xenhpt printed as numbers (the display order and
    # the comment for unknown values are strace 6.1's, src/xlat/*.in and their call sites).
    Group("msync_flags", "flags", [UAPI + "asm-generic/mman-common.h"],
          names=["MS_ASYNC", "MS_INVALIDATE", "MS_SYNC"], unknown="MS_???"),
    Group("mremap_flags", "flags", [UAPI + "linux/mman.h"],
          names=["MREMAP_MAYMOVE", "MREMAP_FIXED", "MREMAP_DONTUNMAP"], unknown="MREMAP_???"),
    Group("mlockall_flags", "flags", [UAPI + "asm-generic/mman.h"],
          names=["MCL_CURRENT", "MCL_FUTURE", "MCL_ONFAULT"], unknown="MCL_???"),
    Group("mlock_flags", "flags", [UAPI + "asm-generic/mman-common.h"],
          names=["MLOCK_ONFAULT"], unknown="MLOCK_???"),
    Group("flock_op", "flags", [UAPI + "asm-generic/fcntl.h"], names=[
        "LOCK_SH", "LOCK_EX", "LOCK_NB", "LOCK_UN", "LOCK_MAND", "LOCK_RW", "LOCK_READ",
        "LOCK_WRITE"], unknown="LOCK_???"),
    Group("rename_flags", "flags", [UAPI + "linux/fs.h"],
          names=["RENAME_NOREPLACE", "RENAME_EXCHANGE", "RENAME_WHITEOUT"],
          unknown="RENAME_???"),
    Group("memfd_flags", "flags", [UAPI + "linux/memfd.h"],
          names=["MFD_CLOEXEC", "MFD_ALLOW_SEALING", "MFD_HUGETLB"], unknown="MFD_???"),
    Group("epoll_create_flags", "flags", [UAPI + "linux/eventpoll.h"],
          names=["EPOLL_CLOEXEC"], unknown="EPOLL_???"),
    Group("timer_flags", "flags", [UAPI + "linux/time.h"], names=["TIMER_ABSTIME"],
          unknown="TIMER_???"),
    Group("inotify_init_flags", "flags", [UAPI + "linux/inotify.h"],
          names=["IN_NONBLOCK", "IN_CLOEXEC"], unknown="IN_???"),
    Group("timerfd_flags", "flags", [UAPI + "linux/timerfd.h"], names=[
        "TFD_TIMER_ABSTIME", "TFD_TIMER_CANCEL_ON_SET", "TFD_CLOEXEC", "TFD_NONBLOCK"],
          unknown="TFD_???"),
    Group("eventfd_flags", "flags", ["include/linux/eventfd.h"],
          names=["EFD_SEMAPHORE", "EFD_CLOEXEC", "EFD_NONBLOCK"], unknown="EFD_???"),
    Group("close_range_flags", "flags", [UAPI + "linux/close_range.h"],
          names=["CLOSE_RANGE_UNSHARE", "CLOSE_RANGE_CLOEXEC"], unknown="CLOSE_RANGE_???"),
    Group("fallocate_mode", "flags", [UAPI + "linux/falloc.h"], prefix="FALLOC_FL_",
          unknown="FALLOC_FL_???"),
    Group("umount_flags", "flags", ["include/linux/fs.h"],
          names=["MNT_FORCE", "MNT_DETACH", "MNT_EXPIRE", "UMOUNT_NOFOLLOW"],
          unknown="MNT_???"),
    Group("pidfd_open_flags", "flags", [UAPI + "linux/pidfd.h"], names=["PIDFD_NONBLOCK"],
          unknown="PIDFD_???"),
    Group("setns_flags", "flags", [UAPI + "linux/sched.h"], names=[
        "CLONE_NEWTIME", "CLONE_NEWNS", "CLONE_NEWCGROUP", "CLONE_NEWUTS", "CLONE_NEWIPC",
        "CLONE_NEWUSER", "CLONE_NEWPID", "CLONE_NEWNET"], unknown="CLONE_NEW???"),
    Group("shutdown_how", "values", ["include/linux/net.h"],
          names=["SHUT_RD", "SHUT_WR", "SHUT_RDWR"], unknown="SHUT_???"),
    Group("epoll_ctl_op", "values", [UAPI + "linux/eventpoll.h"],
          names=["EPOLL_CTL_ADD", "EPOLL_CTL_DEL", "EPOLL_CTL_MOD"], unknown="EPOLL_CTL_???"),
    Group("rusage_who", "values", [UAPI + "linux/resource.h"],
          names=["RUSAGE_SELF", "RUSAGE_CHILDREN", "RUSAGE_BOTH", "RUSAGE_THREAD"],
          unknown="RUSAGE_???"),
    Group("priority_which", "values", [UAPI + "linux/resource.h"],
          names=["PRIO_PROCESS", "PRIO_PGRP", "PRIO_USER"], unknown="PRIO_???"),
    Group("itimer_which", "values", [UAPI + "linux/time.h"],
          names=["ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF"], unknown="ITIMER_???"),
]

# Single numbers the decoders need, by name.
NUMBERS = ["AT_FDCWD", "O_ACCMODE", "O_CREAT", "__O_TMPFILE", "MAP_TYPE", "MAP_HUGE_SHIFT",
           "MAP_HUGE_MASK", "CSIGNAL", "CLONE_PARENT_SETTID", "CLONE_CHILD_SETTID",
           "CLONE_CHILD_CLEARTID", "CLONE_SETTLS", "CLONE_PIDFD", "SOCK_TYPE_MASK",
           "SIGRTMIN", "_NSIG", "S_IFMT", "AT_STATX_SYNC_TYPE", "PATH_MAX", "AF_UNIX",
           "AF_INET", "AF_INET6", "AF_NETLINK", "F_DUPFD", "F_DUPFD_CLOEXEC", "F_GETFD",
           "F_SETFD", "F_GETFL", "F_SETFL", "SIG_DFL", "SIG_IGN", "SIG_ERR",
           "FUTEX_PRIVATE_FLAG", "FUTEX_CLOCK_REALTIME", "FUTEX_BITSET_MATCH_ANY"]


def all_values(src: KernelSource) -> tuple[dict[str, int], dict[str, list[cparse.Define]]]:
    """Every constant of the listed headers, and each header's definitions in order."""
    per_header: dict[str, list[cparse.Define]] = {}
    everything: list[cparse.Define] = []
    config = dict(HEADER_CONFIG)
    for member in CONSTANT_HEADERS:
        # Without a libc, linux/libc-compat.h turns every __UAPI_DEF_* switch on.
        for name in re.findall(r"__UAPI_DEF_\w+", src.text(member)):
            config[name] = 1
    for member in CONSTANT_HEADERS:
        text = cparse.preprocess(src.text(member), config, keep_comments=True)
        found = cparse.defines(text, member) + cparse.enum_members(text, member)
        per_header[member] = found
        everything.extend(found)
    # SIG_DFL & co. are pointer casts in the headers: ((__force __sighandler_t)0) ...
    known = {"SIG_DFL": 0, "SIG_IGN": 1, "SIG_ERR": -1}
    return cparse.resolve(everything, known), per_header


def _lowest_bit(value: int) -> int:
    return (value & -value).bit_length()


def build_group(group: Group, values: dict[str, int],
                per_header: dict[str, list[cparse.Define]]) -> list[tuple[str, int]]:
    """The (name, value) entries of one group, in display order."""
    if group.names is not None:
        missing = [n for n in group.names if n not in values]
        if missing:
            raise SystemExit(f"{group.name}: not defined in the headers: {missing}")
        return [(group.rename.get(n, n), values[n]) for n in group.names]
    entries: list[tuple[str, int]] = []
    seen_values: set[int] = set()
    seen_names: set[str] = set()
    for member in group.headers:
        for define in per_header[member]:
            if group.stop_at and define.name == group.stop_at:
                break
            name = define.name
            if not name.startswith(group.prefix) or name not in values or name in seen_names:
                continue
            if group.exclude and group.exclude.match(name):
                continue
            if group.exclude_unused and "unused" in define.comment.lower():
                continue
            value = values[name]
            if group.min_value is not None and value < group.min_value:
                continue
            if group.max_value is not None and value > group.max_value:
                continue
            seen_names.add(name)
            if value in seen_values:
                continue  # an alias: the first name wins
            if group.type == "flags" and value <= 0:
                continue
            seen_values.add(value)
            entries.append((group.rename.get(name, name), value))
    if not entries:
        raise SystemExit(f"{group.name}: no definitions found")
    if group.type == "flags":
        entries.sort(key=lambda e: (_lowest_bit(e[1]), -bin(e[1]).count("1")))
    return entries


def build_all(src: KernelSource) -> tuple[dict[str, dict[str, object]], dict[str, int]]:
    values, per_header = all_values(src)
    groups = {}
    for group in GROUPS:
        groups[group.name] = {
            "type": group.type,
            "source": group.headers,
            "entries": [[n, v] for n, v in build_group(group, values, per_header)],
        }
        if group.unknown is not None:
            groups[group.name]["unknown"] = group.unknown
    missing = [n for n in NUMBERS if n not in values]
    if missing:
        raise SystemExit(f"numbers not defined in the headers: {missing}")
    return groups, {n: values[n] for n in NUMBERS}


def errno_names(src: KernelSource) -> list[tuple[int, str]]:
    """(number, name) of every errno, uapi first, then the kernel-internal ones (>= 512)."""
    values, per_header = all_values(src)
    found: list[tuple[int, str]] = []
    seen: set[int] = set()
    for member in (UAPI + "asm-generic/errno-base.h", UAPI + "asm-generic/errno.h",
                   "include/linux/errno.h"):
        for define in per_header[member]:
            value = values.get(define.name)
            if (define.name.startswith("E") and value is not None and 0 < value < 4096
                    and value not in seen):
                seen.add(value)
                found.append((value, define.name))
    return sorted(found)
