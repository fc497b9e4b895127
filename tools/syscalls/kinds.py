"""Argument kinds from C prototypes, return kinds, and strace's trace classes.

The kinds are documented for their users in ``xenhpt/syscalls/kinds.py``. A kind comes from,
in this order:

1. ``OVERRIDES``: per-system-call knowledge a prototype cannot carry (``openat``'s ``flags``
   are open flags, ``mmap``'s ``off`` prints in hex, ``sendto``'s non-const buffer is input).
   These mirror what strace's per-call decoders print.
2. ``_pointer_kind`` / ``_scalar_kind``: rules on the parameter's C type and name (a
   ``const char __user *filename`` is a path, ``umode_t`` a mode, an ``int fd`` a descriptor).
3. A fallback by type: pointers print as addresses, integers as (un)signed decimals.
"""

from __future__ import annotations

import re

from .cparse import Param

PATH_NAMES = {"filename", "pathname", "path", "oldname", "newname", "dir_name", "dev_name",
              "library", "specialfile", "special", "new_root", "put_old", "from_path",
              "to_path", "old", "new"}
FD_NAMES = {"fd", "oldfd", "newfd", "fd_in", "fd_out", "fdin", "fdout", "in_fd", "out_fd",
            "epfd", "ufd", "fildes", "fs_fd", "group_fd", "kernel_fd", "initrd_fd",
            "ruleset_fd", "pidfd", "mqdes", "fanotify_fd"}
DIRFD_NAMES = {"dfd", "olddfd", "newdfd", "from_dfd", "to_dfd", "mountdirfd", "dirfd"}
LEN_NAMES = {"count", "len", "size", "plen", "msg_len", "bufsiz", "msgsz", "nbytes"}
ADDRESS_NAMES = {"addr", "start", "brk", "new_addr", "newsp", "tls"}
SOCKLEN_NAMES = {"upeer_addrlen", "usockaddr_len", "addr_len"}
PID_NAMES = {"pid", "tgid", "pgid", "pid1", "pid2"}

_STRUCT_KINDS = {
    "stat": "stat_out", "stat64": "stat64_out", "statx": "statx_out",
    "rusage": "rusage_out", "clone_args": "clone_args", "mmap_arg_struct": "old_mmap_args",
}

_ITIMER_KINDS = {"__kernel_old_itimerval": "itimerval", "old_itimerval32": "itimerval32",
                 "__kernel_itimerspec": "itimerspec", "old_itimerspec32": "itimerspec32"}

# Per-call knowledge, keyed by system call name then parameter name (or "#<index>").
OVERRIDES: dict[str, dict[str, str]] = {
    "open": {"flags": "open_flags"},
    "openat": {"flags": "open_flags"},
    "pipe2": {"flags": "o_flags"},
    "dup3": {"flags": "o_flags"},
    "newfstatat": {"flag": "at_flags"},
    "fstatat64": {"flag": "at_flags"},
    "statx": {"flags": "statx_flags", "mask": "statx_mask"},
    "unlinkat": {"flag": "at_flags"},
    "linkat": {"flags": "at_flags"},
    "fchownat": {"flag": "at_flags"},
    "faccessat2": {"flags": "at_flags", "mode": "access_mode"},
    "faccessat": {"mode": "access_mode"},
    "access": {"mode": "access_mode"},
    "utimensat": {"flags": "at_flags"},
    "utimensat_time64": {"flags": "at_flags"},
    "execveat": {"fd": "dirfd", "flags": "at_flags"},
    "name_to_handle_at": {"flag": "at_flags"},
    "mknod": {"mode": "mode_type"},
    "mknodat": {"mode": "mode_type"},
    "umask": {"mask": "mode"},
    "mmap": {"prot": "prot", "flags": "map_flags", "off": "off_hex"},
    "mmap2": {"prot": "prot", "flags": "map_flags", "pgoff": "pgoff"},
    "mprotect": {"prot": "prot"},
    "pkey_mprotect": {"prot": "prot"},
    "madvise": {"behavior": "madvise"},
    "clone": {"clone_flags": "clone_flags"},
    "socket": {"family": "sock_domain", "type": "sock_type", "protocol": "sock_protocol"},
    "socketpair": {"family": "sock_domain", "type": "sock_type", "protocol": "sock_protocol",
                   "usockvec": "fd_pair"},
    "accept4": {"flags": "sock_type"},
    "sendto": {"buff": "buf_in", "flags": "msg_flags"},
    "send": {"buff": "buf_in", "flags": "msg_flags"},
    "recvfrom": {"ubuf": "buf_out", "flags": "msg_flags"},
    "recv": {"ubuf": "buf_out", "flags": "msg_flags"},
    "sendmsg": {"flags": "msg_flags"},
    "recvmsg": {"flags": "msg_flags"},
    "socketcall": {"call": "socketcall_call", "args": "ptr"},
    "kill": {"sig": "signal"},
    "tkill": {"sig": "signal"},
    "tgkill": {"sig": "signal"},
    "rt_sigaction": {"sig": "signal", "act": "sigaction_in", "oact": "sigaction_out"},
    "rt_sigprocmask": {"how": "sigprocmask_how", "nset": "sigset_in", "oset": "sigset_out"},
    "wait4": {"options": "wait_options", "stat_addr": "wait_status", "ru": "rusage_out"},
    "waitpid": {"options": "wait_options", "stat_addr": "wait_status"},
    "waitid": {"options": "wait_options"},
    "getcwd": {"buf": "path_out"},
    "readlink": {"buf": "buf_out"},
    "readlinkat": {"buf": "buf_out"},
    "getrandom": {"flags": "getrandom_flags", "ubuf": "buf_out_hex"},
    "lseek": {"whence": "seek_whence", "offset": "long"},

    "uname": {"name": "utsname_out"},
    "getdents64": {"dirent": "dirents64_out"},
    "getdents": {"dirent": "dirents_out"},
    "fadvise64": {"advice": "fadvise_advice"},
    "prctl": {"option": "prctl_option", "arg2": "hex", "arg3": "hex", "arg4": "hex",
              "arg5": "hex"},
    "futex": {"op": "futex_op"},
    "futex_time64": {"op": "futex_op"},
    "fcntl": {"cmd": "fcntl_cmd", "arg": "hex"},
    "fcntl64": {"cmd": "fcntl_cmd", "arg": "hex"},
    "arch_prctl": {"option": "arch_prctl_code", "arg2": "hex"},
    "rseq": {"rseq_len": "hex", "sig": "hex"},
    "ioctl": {"cmd": "hex", "arg": "hex"},
    "msync": {"flags": "msync_flags"},
    "mremap": {"flags": "mremap_flags"},
    "mlockall": {"flags": "mlockall_flags"},
    "mlock2": {"flags": "mlock_flags"},
    "flock": {"cmd": "flock_op"},
    "renameat2": {"flags": "rename_flags"},
    "memfd_create": {"flags": "memfd_flags"},
    "epoll_create1": {"flags": "epoll_create_flags"},
    "epoll_ctl": {"op": "epoll_ctl_op"},
    "clock_nanosleep": {"flags": "timer_flags"},
    "clock_nanosleep_time64": {"flags": "timer_flags"},
    "timer_settime": {"flags": "timer_flags"},
    "timer_settime64": {"flags": "timer_flags"},
    "unshare": {"unshare_flags": "unshare_flags"},
    "shutdown": {"how": "shutdown_how"},
    "getrusage": {"who": "rusage_who"},
    "getpriority": {"which": "priority_which"},
    "setpriority": {"which": "priority_which"},
    "getitimer": {"which": "itimer_which"},
    "setitimer": {"which": "itimer_which"},
    "inotify_init1": {"flags": "inotify_init_flags"},
    "timerfd_create": {"flags": "timerfd_flags"},
    "timerfd_settime": {"flags": "timerfd_flags"},
    "timerfd_settime64": {"flags": "timerfd_flags"},
    "eventfd2": {"flags": "eventfd_flags"},
    "close_range": {"flags": "close_range_flags"},
    "fallocate": {"mode": "fallocate_mode"},
    "umount2": {"name": "path", "flags": "umount_flags"},
    "umount": {"name": "path"},
    "pidfd_open": {"flags": "pidfd_open_flags"},
    "setns": {"flags": "setns_flags"},
}

# System calls whose return value is an address (strace prints it in hex), a mode (octal),
# a new file descriptor, or never comes back.
RETURN_KINDS = {
    "hex": {"mmap", "mmap2", "old_mmap", "ia32_mmap", "brk", "mremap", "shmat"},
    "octal": {"umask"},
    "none": {"exit", "exit_group"},
}
_RETURNS_FD = re.compile(
    r"(open|openat|openat2|creat|dup[23]?|socket|accept4?|epoll_create1?|eventfd2?|signalfd4?"
    r"|timerfd_create|inotify_init1?|fanotify_init|memfd_create|memfd_secret|perf_event_open"
    r"|pidfd_open|pidfd_getfd|userfaultfd|io_uring_setup|open_tree|fsopen|fsmount|fspick"
    r"|open_by_handle_at|landlock_create_ruleset|mq_open)$")

_INT_TYPES = {"int", "__s32", "s32", "key_t", "mqd_t", "clockid_t", "timer_t", "key_serial_t"}
_UINT_TYPES = {"unsigned", "unsigned int", "u32", "__u32", "uint32_t", "qid_t", "rwf_t"}
_LONG_TYPES = {"long", "off_t", "ssize_t", "__s64", "s64"}
_ULONG_TYPES = {"unsigned long", "size_t", "aio_context_t"}
_WIDE_TYPES = {"loff_t", "u64", "__u64", "long long", "unsigned long long"}


def _pointer_kind(call: str, param: Param, following: list[Param]) -> tuple[str, int | None]:
    """Kind of a pointer parameter; the second item is the index offset of its length."""
    ctype, name = param.ctype, param.name
    tokens = ctype.split()
    if ctype.count("*") >= 2 and ("char" in tokens or "compat_uptr_t" in tokens):
        return ("envp" if name == "envp" else "argv"), None
    struct = re.search(r"struct (\w+)", ctype)
    if struct:
        tag = struct.group(1)
        if tag in ("rlimit64", "rlimit"):
            return f"{tag}_{'in' if 'const' in tokens else 'out'}", None
        if tag in _STRUCT_KINDS:
            return _STRUCT_KINDS[tag], None
        if tag == "sockaddr":
            if following and following[0].ctype in ("int", "compat_int_t"):
                return "sockaddr", 1
            if following and following[0].ctype == "int __user *":
                return "sockaddr_out", 1  # accept, getsockname, recvfrom: filled in
            return "ptr", None
        if tag == "pollfd":
            return "pollfds", 1
        if tag in ("__kernel_old_timeval", "old_timeval32") and call in ("utimes", "futimesat"):
            return f"timeval{'' if tag.startswith('__') else '32'}_utime_pair", None
        if tag in _ITIMER_KINDS:  # the caller's new setting, or the one the kernel writes
            written = call.startswith(("get", "timer_gettime", "timerfd_gettime")) or name in (
                "ovalue", "otmr", "old_setting", "old")
            return f"{_ITIMER_KINDS[tag]}_{'out' if written else 'in'}", None
        if tag in ("utimbuf", "old_utimbuf32") and call == "utime":
            return "utimbuf" if tag == "utimbuf" else "utimbuf32", None
        if tag in ("__kernel_timespec", "old_timespec32"):
            size = "" if tag == "__kernel_timespec" else "32"
            if name == "rmtp":  # nanosleep's remaining time: written only when interrupted
                return f"timespec{size}_rem", None
            if call in ("utimensat", "utimensat_time64"):  # times[2], read by the kernel
                return f"timespec{size}_utime_pair", None
            # The compat prototypes drop "const", so the call says which way it goes: only
            # these fill a timespec in; every other one (nanosleep's request, a timeout, the
            # time clock_settime sets) is the caller's, printed at entry as strace does.
            filled = call.startswith(("clock_gettime", "clock_getres", "sched_rr_get_interval"))
            return f"timespec{size}_{'out' if filled else 'in'}", None
        return "ptr", None
    if tokens[0:2] == ["const", "char"] or tokens[0] == "char":
        if name in PATH_NAMES:
            return "path", None
        length = _length_offset(following)
        if length is not None:
            return ("buf_in" if tokens[0] == "const" else "buf_out"), length
        return ("string" if tokens[0] == "const" else "ptr"), None
    if tokens[0:2] == ["const", "void"] or tokens[0] == "void":
        length = _length_offset(following)
        if length is not None and name in ("buf", "value", "_payload", "buff", "ubuf"):
            return ("buf_in" if tokens[0] == "const" else "buf_out"), length
        return "ptr", None
    if name == "fildes" and tokens[0] == "int":
        return "fd_pair", None
    if name in SOCKLEN_NAMES and tokens[0] == "int":
        return "socklen_inout", None
    if tokens[0:2] == ["const", "sigset_t"]:
        return "sigset_in", None
    if name in ("stat_addr",):
        return "wait_status", None
    return "ptr", None


def _length_offset(following: list[Param]) -> int | None:
    """A buffer's length is the parameter right after it (``write(fd, buf, count)``)."""
    if following and following[0].name in LEN_NAMES and "*" not in following[0].ctype:
        return 1
    return None


def _scalar_kind(param: Param, abi: str) -> str:
    ctype, name = param.ctype.replace("const ", ""), param.name
    if ctype == "unsigned long" and name in ADDRESS_NAMES:
        return "ptr"
    if name in DIRFD_NAMES:
        return "dirfd"
    if name in FD_NAMES:
        return "fd"
    if ctype == "umode_t":
        return "mode"
    if name == "resource" and ctype in ("unsigned int", "int"):
        return "rlimit_resource"
    if name in ("which_clock", "clockid") and ctype in ("clockid_t", "int", "const clockid_t"):
        return "clockid"
    if ctype == "pid_t" or (name in PID_NAMES and ctype in ("int", "long")):
        return "pid"
    if ctype in ("uid_t", "gid_t", "old_uid_t", "old_gid_t"):
        return "uid"
    if name == "sig" and ctype == "int":
        return "signal"
    if ctype in ("size_t", "compat_size_t"):
        return "size"
    if ctype in _INT_TYPES:
        return "int"
    if ctype in _UINT_TYPES:
        return "uint"
    if ctype in _LONG_TYPES or ctype in ("compat_long_t", "compat_off_t"):
        return "long"
    if ctype in _ULONG_TYPES or ctype in ("compat_ulong_t", "compat_uptr_t"):
        return "ulong"
    if ctype in _WIDE_TYPES:
        return "off" if ctype == "loff_t" else "ulong"
    return "ulong" if "unsigned" in ctype else "long"


def derive_args(call: str, abi: str, params: list[Param]) -> list[dict[str, object]]:
    """Argument specs ``{name, kind[, len]}`` of one system call for one ABI."""
    overrides = OVERRIDES.get(call, {})
    out: list[dict[str, object]] = []
    for index, param in enumerate(params):
        name = param.name or f"arg{index}"
        wide = param.ctype.replace("const ", "") in _WIDE_TYPES and "*" not in param.ctype
        if abi == "i386" and wide:
            # A 64-bit value takes two registers on i386: low word first.
            out.append({"name": f"{name}_lo", "kind": "off64_lo"})
            out.append({"name": f"{name}_hi", "kind": "off64_hi"})
            continue
        kind = overrides.get(name) or overrides.get(f"#{index}")
        length = None
        if kind is None:
            if "*" in param.ctype:
                kind, length = _pointer_kind(call, param, params[index + 1:])
                if abi == "i386" and kind.startswith("itimerval_"):
                    # Two pairs of longs: 32-bit words for an i386 caller, whichever
                    # prototype (native or compat) the table names first.
                    kind = kind.replace("itimerval_", "itimerval32_")
            else:
                kind = _scalar_kind(param, abi)
        elif kind in ("buf_in", "buf_out", "buf_out_hex", "sockaddr", "sockaddr_out", "pollfds"):
            length = _length_offset(params[index + 1:]) or 1
        spec: dict[str, object] = {"name": name, "kind": kind}
        if length is not None:
            spec["len"] = len(out) + length
        out.append(spec)
    _join_split_halves(out)
    return out


def _join_split_halves(args: list[dict[str, object]]) -> None:
    """i386 wrappers pass 64-bit offsets as two named halves (``pos_lo``/``pos_hi``...)."""
    for first, second in zip(args, args[1:], strict=False):
        a, b = str(first["name"]), str(second["name"])
        if re.search(r"(lo|low|_l)$", a) and re.search(r"(hi|high|_h)$", b) and (
                a.rstrip("lowh_") == b.rstrip("ighw_")):
            first["kind"], second["kind"] = "off64_lo", "off64_hi"


def return_kind(call: str) -> str:
    for kind, names in RETURN_KINDS.items():
        if call in names:
            return kind
    if _RETURNS_FD.match(call):
        return "fd"
    return "int"


# --- trace classes -------------------------------------------------------------------------

_FD_KINDS = {"fd", "dirfd", "fd_pair"}
_SIGNAL_KINDS = {"signal", "sigset_in", "sigset_out", "sigaction_in", "sigaction_out"}


def classes(call: str, args: list[dict[str, object]], ret: str, defined_in: str) -> list[str]:
    """strace's trace classes, from the kinds and from where the kernel defines the call.

    * ``%file``: takes a path.
    * ``%desc``: takes or returns a file descriptor, or is a select/poll-style wait on them.
    * ``%network``: defined in ``net/socket.c`` or ``net/compat.c``.
    * ``%memory``: defined under ``mm/`` (or the arch's ``mmap``/``ia32_mmap``), and takes
      neither a path nor a descriptor (``mmap`` itself excepted), nor returns one; plus the
      SysV shared-memory attach/detach.
    * ``%process``: creates a task (defined in ``kernel/fork.c`` with clone flags/arguments or
      no arguments at all), executes (takes an argv), exits or waits (``kernel/exit.c``), or
      sends a signal to a pid/pidfd.
    * ``%signal``: defined in ``kernel/signal.c``/``fs/signalfd.c``, or takes a signal, a
      signal set or a sigaction, or is a sigreturn.
    """
    kinds = {str(a["kind"]) for a in args}
    found = []
    if "path" in kinds:
        found.append("%file")
    is_mmap = call in ("mmap", "mmap2", "old_mmap", "ia32_mmap")
    if (kinds & _FD_KINDS or ret == "fd"
            or re.fullmatch(r"(p?select6?|_newselect|poll|ppoll|ppoll_time32|pselect6_time32)",
                            call)):
        found.append("%desc")
    if defined_in in ("net/socket.c", "net/compat.c"):
        found.append("%network")
    in_mm = defined_in.startswith("mm/") or is_mmap
    if is_mmap or call in ("shmat", "shmdt") or (
            in_mm and not (kinds & (_FD_KINDS | {"path"})) and ret != "fd"):
        found.append("%memory")
    if ((defined_in == "kernel/fork.c" and (not args or kinds & {"clone_flags", "clone_args"}))
            or "argv" in kinds or defined_in == "kernel/exit.c"
            or ("signal" in kinds and kinds & {"pid", "fd"})):
        found.append("%process")
    if (defined_in in ("kernel/signal.c", "fs/signalfd.c") or kinds & _SIGNAL_KINDS
            or call.endswith("sigreturn")):
        found.append("%signal")
    return found
