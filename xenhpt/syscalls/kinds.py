"""The argument kinds of the system-call tables: what an argument is, hence how it prints.

Kinds are derived by ``tools/gen_syscall_tables.py`` from the C prototypes in the kernel
(``tools/syscalls/kinds.py`` holds the rules) and stored per argument in
``data/<abi>.json``. The decoder has one small function per kind. A kind marked *exit* is
decoded when the call returns, because the kernel fills it in; all others are decoded at entry,
while the caller's pointers are still meaningful.

Numbers
  ``int`` ``uint`` ``long`` ``ulong``  signed/unsigned decimal (``int`` is 32-bit, ``long``
  the ABI's word); ``size`` size_t decimal; ``off`` loff_t decimal; ``hex`` ``0x...``;
  ``ptr`` an address: ``NULL`` or ``0x7ffd...``; ``off_hex`` mmap's byte offset in hex;
  ``pgoff`` mmap2's page offset, printed as a byte offset; ``off64_lo``/``off64_hi`` the two
  halves of a 64-bit offset on i386 (printed once, as one decimal); ``uid`` (``-1`` or
  unsigned); ``pid`` signed.
Descriptors
  ``fd``; ``dirfd`` (``AT_FDCWD``); ``fd_pair`` *exit* ``int[2]`` filled by pipe/socketpair.
Strings and memory
  ``path`` NUL-terminated, in full up to PATH_MAX; ``string`` NUL-terminated, cut at ``-s``;
  ``path_out`` *exit* like ``path`` (getcwd); ``buf_in`` caller's bytes, length in argument
  ``len``; ``buf_out`` *exit* kernel-filled bytes, length = return value; ``buf_out_hex``
  *exit* the same, every byte as ``\\xNN`` (getrandom); ``argv`` string array (``["ls",
  "-l"]``); ``envp`` address plus a ``/* N vars */`` count.
Flags and named values (tables in ``data/constants.json``)
  ``open_flags`` (access mode first), ``o_flags`` (the same flags without an access mode:
  pipe2, dup3), ``at_flags``, ``statx_flags``, ``statx_mask``,
  ``prot``, ``map_flags`` (type, flags, huge page size), ``madvise``, ``clone_flags`` (with
  the exit signal in the low byte), ``sock_domain``, ``sock_type`` (type plus SOCK_CLOEXEC /
  SOCK_NONBLOCK), ``sock_protocol`` (by the call's domain), ``msg_flags``, ``wait_options``,
  ``signal``, ``sigprocmask_how``, ``fcntl_cmd``, ``seek_whence``, ``access_mode``,
  ``arch_prctl_code``, ``rlimit_resource``, ``clockid``, ``getrandom_flags``,
  ``socketcall_call``, ``futex_op`` (``FUTEX_WAKE_PRIVATE``), ``prctl_option``,
  ``fadvise_advice``, ``mode`` (octal ``0644``), ``mode_type`` (``S_IFIFO|0600``);
  ``msync_flags``, ``mremap_flags``, ``mlockall_flags``, ``mlock_flags`` (mlock2),
  ``flock_op`` (``LOCK_EX|LOCK_NB``), ``rename_flags`` (renameat2), ``memfd_flags``,
  ``epoll_create_flags``, ``epoll_ctl_op``, ``timer_flags`` (``TIMER_ABSTIME``),
  ``unshare_flags`` (clone flags, no exit signal), ``shutdown_how``, ``rusage_who``,
  ``priority_which``, ``itimer_which``, ``inotify_init_flags``, ``timerfd_flags``
  (timerfd_create and timerfd_settime), ``eventfd_flags``, ``close_range_flags``,
  ``fallocate_mode``, ``umount_flags``, ``pidfd_open_flags``, ``setns_flags``. A flag value
  with no known bit prints as strace prints it, ``0x1 /* O_??? */``; an unknown value as
  ``0x9 /* EPOLL_CTL_??? */``.
Structures (user-space ABI layouts, x86_64 and i386, in ``structs.py``)
  ``stat_out`` ``stat64_out`` ``statx_out`` *exit*; ``timespec_in`` ``timespec32_in``;
  ``timespec_out`` ``timespec32_out`` *exit*; ``timespec_rem`` ``timespec32_rem`` *exit*
  (nanosleep's remainder: decoded only when interrupted); ``rusage_out`` *exit*;
  ``utsname_out`` *exit*; ``dirents64_out`` ``dirents_out`` *exit* (the buffer's address and
  a ``/* N entries */`` count); ``wait_status`` *exit*;
  ``sockaddr`` (length in argument ``len``); ``sockaddr_out`` *exit* (accept, getsockname,
  recvfrom: its length is the ``socklen_inout`` argument ``len``, printed ``[128 => 16]``);
  ``pollfds`` (``[{fd=3, events=POLLIN}]``, count in argument ``len``);
  ``sigset_in``, ``sigset_out`` *exit*;
  ``sigaction_in``, ``sigaction_out`` *exit*; ``rlimit64_in``, ``rlimit64_out`` *exit*;
  ``rlimit_in``, ``rlimit_out`` *exit* (the ABI's word-sized struct rlimit);
  ``clone_args`` (clone3); ``old_mmap_args`` (i386 ``mmap``: an argument block);
  ``timespec_utime_pair`` ``timespec32_utime_pair`` (utimensat's ``times[2]``, an array:
  ``[{tv_sec=1, tv_nsec=2} /* 1970-01-01T00:00:01.000000002+0000 */, UTIME_NOW]``);
  ``timeval_utime_pair`` ``timeval32_utime_pair`` (utimes/futimesat: ``[{tv_sec=1,
  tv_usec=2} /* ... */, ...]``); ``utimbuf`` ``utimbuf32`` (utime: ``{actime=..., modtime=...}``).
  Dates in these comments are UTC. ``itimerval_in`` ``itimerval32_in`` ``itimerspec_in``
  ``itimerspec32_in`` (setitimer's, timer_settime's and timerfd_settime's new setting:
  ``{it_interval={tv_sec=0, tv_usec=0}, it_value={tv_sec=1, tv_usec=0}}``, ``tv_nsec`` for
  itimerspec) and ``itimerval_out`` ``itimerval32_out`` ``itimerspec_out``
  ``itimerspec32_out`` *exit* (the old or current setting the kernel writes).
"""

from __future__ import annotations

NUMBER_KINDS = frozenset({
    "int", "uint", "long", "ulong", "size", "off", "hex", "ptr", "off_hex", "pgoff",
    "off64_lo", "off64_hi", "uid", "pid"})
DESCRIPTOR_KINDS = frozenset({"fd", "dirfd", "fd_pair"})
MEMORY_KINDS = frozenset({
    "path", "string", "path_out", "buf_in", "buf_out", "buf_out_hex", "argv", "envp"})
NAMED_KINDS = frozenset({
    "open_flags", "o_flags", "at_flags", "statx_flags", "statx_mask", "prot", "map_flags",
    "madvise", "clone_flags", "sock_domain", "sock_type", "sock_protocol", "msg_flags",
    "wait_options", "signal", "sigprocmask_how", "fcntl_cmd", "seek_whence", "access_mode",
    "arch_prctl_code", "rlimit_resource", "clockid", "getrandom_flags", "socketcall_call",
    "futex_op", "prctl_option", "fadvise_advice", "mode", "mode_type",
    "msync_flags", "mremap_flags", "mlockall_flags", "mlock_flags", "flock_op",
    "rename_flags", "memfd_flags", "epoll_create_flags", "epoll_ctl_op", "timer_flags",
    "unshare_flags", "shutdown_how", "rusage_who", "priority_which", "itimer_which",
    "inotify_init_flags", "timerfd_flags", "eventfd_flags", "close_range_flags",
    "fallocate_mode", "umount_flags", "pidfd_open_flags", "setns_flags"})
STRUCT_KINDS = frozenset({
    "stat_out", "stat64_out", "statx_out", "timespec_in", "timespec32_in", "timespec_out",
    "timespec32_out", "timespec_rem", "timespec32_rem", "rusage_out", "utsname_out",
    "sockaddr_out", "socklen_inout", "pollfds",
    "dirents64_out", "dirents_out", "wait_status", "sockaddr", "sigset_in", "sigset_out",
    "sigaction_in", "sigaction_out", "rlimit64_in", "rlimit64_out", "rlimit_in",
    "rlimit_out", "clone_args",
    "old_mmap_args", "timespec_utime_pair", "timespec32_utime_pair", "timeval_utime_pair",
    "timeval32_utime_pair", "utimbuf", "utimbuf32", "itimerval_in", "itimerval32_in",
    "itimerspec_in", "itimerspec32_in", "itimerval_out", "itimerval32_out", "itimerspec_out",
    "itimerspec32_out"})

KINDS = NUMBER_KINDS | DESCRIPTOR_KINDS | MEMORY_KINDS | NAMED_KINDS | STRUCT_KINDS

# Decoded when the call returns (the kernel writes them).
EXIT_KINDS = frozenset({
    "fd_pair", "path_out", "buf_out", "buf_out_hex", "stat_out", "stat64_out", "statx_out",
    "timespec_out", "timespec32_out", "timespec_rem", "timespec32_rem", "rusage_out",
    "utsname_out", "dirents64_out", "dirents_out", "wait_status", "sigset_out",
    "sockaddr_out", "socklen_inout",
    "sigaction_out", "rlimit64_out", "rlimit_out", "itimerval_out", "itimerval32_out",
    "itimerspec_out", "itimerspec32_out"})

RETURN_KINDS = frozenset({"int", "hex", "octal", "fd", "none"})
