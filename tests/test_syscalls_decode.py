"""The decoder on synthetic guest memory: strace's text for the common calls."""

from __future__ import annotations

import struct

import pytest

from xenhpt.errors import MemoryReadError
from xenhpt.syscalls.decode import Decoder
from xenhpt.syscalls.table import SyscallTable
from xenhpt.syscalls.xlat import Constants

U64 = (1 << 64) - 1
AT_FDCWD = -100 & U64


class GuestMemory:
    """A dict-backed user address space: only the bytes put there are readable."""

    def __init__(self) -> None:
        self.bytes: dict[int, int] = {}
        self.reads = 0

    def put(self, address: int, data: bytes) -> int:
        for offset, byte in enumerate(data):
            self.bytes[address + offset] = byte
        return address

    def read(self, address: int, size: int) -> bytes:
        self.reads += 1
        try:
            return bytes(self.bytes[a] for a in range(address, address + size))
        except KeyError as missing:
            raise MemoryReadError(missing.args[0]) from None


@pytest.fixture
def mem() -> GuestMemory:
    return GuestMemory()


def call(mem: GuestMemory, name: str, args: list[int], ret: int | None, abi: str = "x86_64",
         string_limit: int = 32) -> tuple[str, str]:
    template = SyscallTable.load(abi).by_name(name)
    assert template is not None
    decoded = Decoder(string_limit).decode(template, args, None if ret is None else ret & U64,
                                           mem.read)
    return decoded.text, decoded.ret_text


def test_openat_path_and_flags_and_mode(mem: GuestMemory) -> None:
    path = mem.put(0x1000, b"/tmp/x\0")
    assert call(mem, "openat", [AT_FDCWD, path, 0o1101, 0o644], 3) == (
        'openat(AT_FDCWD, "/tmp/x", O_WRONLY|O_CREAT|O_TRUNC, 0644)', "3")


def test_openat_without_o_creat_has_no_mode(mem: GuestMemory) -> None:
    path = mem.put(0x1000, b"/etc/ld.so.cache\0")
    assert call(mem, "openat", [AT_FDCWD, path, 0o2000000, 0o777], -2) == (
        'openat(AT_FDCWD, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC)',
        "-1 ENOENT (No such file or directory)")


def test_open_flags_unknown_bits_in_hex(mem: GuestMemory) -> None:
    path = mem.put(0x1000, b"/x\0")
    text, _ = call(mem, "openat", [5, path, 0o2 | 0o100 | 0o200 | 0o2000 | 0o4000 | 0o200000
                                   | 0x40000000, 0o644], -22)
    assert text == ('openat(5, "/x", O_RDWR|O_CREAT|O_EXCL|O_APPEND|O_NONBLOCK|O_DIRECTORY'
                    '|0x40000000, 0644)')


def test_write_string_is_truncated_at_the_limit(mem: GuestMemory) -> None:
    buf = mem.put(0x2000, b"0123456789" * 4)
    assert call(mem, "write", [1, buf, 40], 40)[0] == (
        'write(1, "01234567890123456789012345678901"..., 40)')
    assert call(mem, "write", [1, buf, 32], 32)[0] == (
        'write(1, "01234567890123456789012345678901", 32)')
    assert call(mem, "write", [1, buf, 40], 40, string_limit=5)[0] == 'write(1, "01234"..., 40)'


def test_read_buffer_is_decoded_at_exit_from_the_return_value(mem: GuestMemory) -> None:
    buf = 0x3000
    decoder = Decoder()
    template = SyscallTable.load("x86_64").by_name("read")
    state = decoder.entry(template, [3, buf, 832], mem.read)
    assert state.partial_text() == "read(3, "
    mem.put(buf, b"\x7fELF\x02\x01\x01\x03" + b"\0" * 8)  # the kernel fills it in
    decoded = decoder.exit(state, 16, mem.read)
    assert decoded.text == 'read(3, "\\177ELF\\2\\1\\1\\3\\0\\0\\0\\0\\0\\0\\0\\0", 832)'
    assert decoded.ret == 16 and decoded.errno is None


def test_failed_read_shows_the_buffer_address(mem: GuestMemory) -> None:
    assert call(mem, "read", [U64, 0x7FFD1234, 10], -9) == (
        "read(-1, 0x7ffd1234, 10)", "-1 EBADF (Bad file descriptor)")


def test_unreadable_pointer_prints_as_hex_without_raising(mem: GuestMemory) -> None:
    assert call(mem, "openat", [AT_FDCWD, 0x7FFD1234, 0, 0], -14)[0] == (
        "openat(AT_FDCWD, 0x7ffd1234, O_RDONLY)")
    assert call(mem, "write", [1, 0x1000, 5], 5)[0] == "write(1, 0x1000, 5)"
    assert call(mem, "execve", [0x10, 0x20, 0x30], -14)[0] == "execve(0x10, 0x20, 0x30)"


def test_null_pointers_print_as_null(mem: GuestMemory) -> None:
    assert call(mem, "openat", [U64, 0, 0, 0], -14)[0] == "openat(-1, NULL, O_RDONLY)"
    assert call(mem, "write", [1, 0, 5], 5)[0] == "write(1, NULL, 5)"
    assert call(mem, "brk", [0], 0x55FFD0AA2000) == ("brk(NULL)", "0x55ffd0aa2000")


def test_a_string_running_into_unreadable_memory_prints_as_its_address(
        mem: GuestMemory) -> None:
    # strace: unlink(0x7fa1cffa3ffc) = -1 EFAULT (Bad address)
    path = mem.put(0x4FFC, b"/tmp")  # no terminator before the unmapped page
    assert call(mem, "unlink", [path], -14)[0] == "unlink(0x4ffc)"
    name = mem.put(0x5FF0, b"a" * 16)  # a string argument (cut at -s) runs into it too
    assert call(mem, "memfd_create", [name, 0], -14)[0] == "memfd_create(0x5ff0, 0)"


def test_a_string_readable_past_the_limit_is_cut_even_before_a_fault(mem: GuestMemory) -> None:
    name = mem.put(0x5FE0, b"b" * 32)  # 32 readable bytes, then the unmapped page
    assert call(mem, "memfd_create", [name, 0], 3, string_limit=31)[0] == (
        f'memfd_create("{"b" * 31}"..., 0)')
    assert call(mem, "memfd_create", [name, 0], -14, string_limit=32)[0] == (
        "memfd_create(0x5fe0, 0)")
    ok = mem.put(0x7000, b"x" * 40 + b"\0")
    assert call(mem, "memfd_create", [ok, 0], 3, string_limit=32)[0] == (
        f'memfd_create("{"x" * 32}"..., 0)')


def test_hostile_bytes_are_escaped(mem: GuestMemory) -> None:
    buf = mem.put(0x2000, b'\x1b[2J\x1b]0;pwned\x07"\\\t\n\x00' + b"1\xff")
    text, _ = call(mem, "write", [1, buf, 21], 21)
    assert "\x1b" not in text and "\x07" not in text
    assert text == 'write(1, "\\33[2J\\33]0;pwned\\7\\"\\\\\\t\\n\\0001\\377", 21)'


def test_octal_escape_takes_three_digits_before_a_digit(mem: GuestMemory) -> None:
    buf = mem.put(0x2000, b"\x018\x019\x017\x01a")
    assert call(mem, "write", [1, buf, 8], 8)[0] == 'write(1, "\\18\\19\\0017\\1a", 8)'


def test_newfstatat_prints_the_stat_struct(mem: GuestMemory) -> None:
    path = mem.put(0x1000, b"/etc/passwd\0")
    statbuf = 0x3000
    mem.put(statbuf, struct.pack("<24xI12xQq", 0o100644, 0, 1221) + bytes(88))
    assert call(mem, "newfstatat", [AT_FDCWD, path, statbuf, 0], 0) == (
        'newfstatat(AT_FDCWD, "/etc/passwd", {st_mode=S_IFREG|0644, st_size=1221, ...}, 0)',
        "0")
    mem.put(statbuf, struct.pack("<24xI12xQq", 0o41777, 0, 4096))
    empty = mem.put(0x1100, b"\0")
    assert call(mem, "newfstatat", [3, empty, statbuf, 0x1000], 0)[0] == (
        'newfstatat(3, "", {st_mode=S_IFDIR|S_ISVTX|0777, st_size=4096, ...}, AT_EMPTY_PATH)')


def test_stat_of_a_device_shows_its_number(mem: GuestMemory) -> None:
    statbuf = mem.put(0x3000, struct.pack("<24xI12xQq", 0o20666, (1 << 8) | 3, 0))
    assert call(mem, "fstat", [0, statbuf], 0)[0] == (
        "fstat(0, {st_mode=S_IFCHR|0666, st_rdev=makedev(0x1, 0x3), ...})")


def test_failed_stat_shows_the_buffer_address(mem: GuestMemory) -> None:
    path = mem.put(0x1000, b"/nonexist\0")
    assert call(mem, "newfstatat", [AT_FDCWD, path, 0x7FFEAC464760, 0], -2) == (
        'newfstatat(AT_FDCWD, "/nonexist", 0x7ffeac464760, 0)',
        "-1 ENOENT (No such file or directory)")


def test_i386_stat64(mem: GuestMemory) -> None:
    path = mem.put(0x1000, b"/bin/sh\0")
    statbuf = mem.put(0x3000, struct.pack("<16xI12xQ4xq", 0o100755, 0, 125688))
    assert call(mem, "stat64", [path, statbuf], 0, abi="i386")[0] == (
        'stat64("/bin/sh", {st_mode=S_IFREG|0755, st_size=125688, ...})')


def test_execve_argv_and_environment_count(mem: GuestMemory) -> None:
    path = mem.put(0x1000, b"/bin/ls\0")
    strings = [mem.put(0x4100 + 0x10 * i, s + b"\0") for i, s in enumerate([b"ls", b"-l"])]
    argv = mem.put(0x4000, struct.pack("<3Q", *strings, 0))
    envp = mem.put(0x5000, struct.pack("<3Q", strings[0], strings[1], 0))
    assert call(mem, "execve", [path, argv, envp], 0) == (
        'execve("/bin/ls", ["ls", "-l"], 0x5000 /* 2 vars */)', "0")
    one = mem.put(0x6000, struct.pack("<2Q", strings[0], 0))
    assert call(mem, "execve", [path, argv, one], 0)[0].endswith("0x6000 /* 1 var */)")
    assert call(mem, "execve", [path, argv, 0], 0)[0].endswith('["ls", "-l"], NULL)')


def test_execve_argv_is_bounded_like_strace(mem: GuestMemory) -> None:
    path = mem.put(0x1000, b"/bin/true\0")
    x = mem.put(0x1100, b"x\0")
    argv = mem.put(0x4000, struct.pack("<41Q", *([x] * 40), 0))
    text, _ = call(mem, "execve", [path, argv, 0], 0, string_limit=3)
    assert text == 'execve("/bin/true", ["x", "x", "x", ...], NULL)'
    bad = mem.put(0x4800, struct.pack("<4Q", x, 0x10, x, 0))
    assert call(mem, "execve", [path, bad, 0], -2)[0] == (
        'execve("/bin/true", ["x", 0x10, "x"], NULL)')


def test_an_argv_running_into_unreadable_memory_names_the_word_it_could_not_read(
        mem: GuestMemory) -> None:
    # strace: execve("/nonexist", ["/bin/true", "x", ... /* 0x7effaa75d000 */], NULL)
    path = mem.put(0x1000, b"/nonexist\0")
    true, x = mem.put(0x1100, b"/bin/true\0"), mem.put(0x1200, b"x\0")
    argv = mem.put(0x4FF0, struct.pack("<2Q", true, x))  # 0x5000 is unmapped
    assert call(mem, "execve", [path, argv, 0], -2)[0] == (
        'execve("/nonexist", ["/bin/true", "x", ... /* 0x5000 */], NULL)')
    assert call(mem, "execve", [path, 0x4FFC, 0], -2)[0] == (
        'execve("/nonexist", 0x4ffc, NULL)')
    i386 = mem.put(0x6FF8, struct.pack("<2I", 0x1100, 0x1200))
    assert call(mem, "execve", [0x1000, i386, 0], -2, abi="i386")[0] == (
        'execve("/nonexist", ["/bin/true", "x", ... /* 0x7000 */], NULL)')


def test_exit_group_never_returns(mem: GuestMemory) -> None:
    assert call(mem, "exit_group", [0], None) == ("exit_group(0)", "?")


def test_errno_formats(mem: GuestMemory) -> None:
    assert call(mem, "close", [9], -9)[1] == "-1 EBADF (Bad file descriptor)"
    assert call(mem, "wait4", [U64, 0x7FFF4F6AF564, 0, 0], -512)[1] == (
        "? ERESTARTSYS (To be restarted if SA_RESTART is set)")
    assert call(mem, "close", [9], -4000)[1] == "-1 4000 (Unknown error 4000)"


def test_mmap_returns_hex_and_decodes_flags(mem: GuestMemory) -> None:
    assert call(mem, "mmap", [0, 8192, 3, 0x22, U64, 0], 0x7FDF1F267000) == (
        "mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0)",
        "0x7fdf1f267000")
    assert call(mem, "mmap", [0x7F0000000000, 4096, 5, 0x812, 3, 0x26000], 0x7F0000000000)[0] == (
        "mmap(0x7f0000000000, 4096, PROT_READ|PROT_EXEC, MAP_PRIVATE|MAP_FIXED|MAP_DENYWRITE, "
        "3, 0x26000)")
    assert call(mem, "mmap", [0, 4096, 0, 0x40022 | (21 << 26), U64, 0], -22)[0] == (
        "mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB|21<<MAP_HUGE_SHIFT, "
        "-1, 0)")
    assert call(mem, "mmap2", [0, 8192, 1, 2, 3, 3], 0xF7FBD000, abi="i386") == (
        "mmap2(NULL, 8192, PROT_READ, MAP_PRIVATE, 3, 0x3000)", "0xf7fbd000")


def test_simple_calls(mem: GuestMemory) -> None:
    assert call(mem, "getpid", [], 1234) == ("getpid()", "1234")
    assert call(mem, "dup", [1], 4) == ("dup(1)", "4")
    assert call(mem, "umask", [0o22], 0o22) == ("umask(022)", "022")
    assert call(mem, "umask", [0], 0o22) == ("umask(000)", "022")
    assert call(mem, "close", [(1 << 32) | 5], 0)[0] == "close(5)"


def test_pipe2_fills_two_descriptors(mem: GuestMemory) -> None:
    fds = 0x7000
    decoder = Decoder()
    state = decoder.entry(SyscallTable.load("x86_64").by_name("pipe2"), [fds, 0o2004000],
                          mem.read)
    mem.put(fds, struct.pack("<ii", 4, 5))
    assert decoder.exit(state, 0, mem.read).text == "pipe2([4, 5], O_NONBLOCK|O_CLOEXEC)"
    assert call(mem, "pipe2", [0, 0], -14)[0] == "pipe2(NULL, 0)"


def test_clone_flags_and_child_tid(mem: GuestMemory) -> None:
    assert call(mem, "clone", [0x1200011, 0, 0, 0x7F7C97DBCA10, 0], 18677) == (
        "clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD, "
        "child_tidptr=0x7f7c97dbca10)", "18677")
    parent_tid = mem.put(0x8000, struct.pack("<i", 23156))
    assert call(mem, "clone", [0x100011, 0, parent_tid, 0, 0], 23156)[0] == (
        "clone(child_stack=NULL, flags=CLONE_PARENT_SETTID|SIGCHLD, parent_tid=[23156])")
    assert call(mem, "clone", [0x111, 0x56406C9DF090, 0, 0, 0], 5)[0] == (
        "clone(child_stack=0x56406c9df090, flags=CLONE_VM|SIGCHLD)")


def test_fork_and_vfork(mem: GuestMemory) -> None:
    assert call(mem, "fork", [], 18682) == ("fork()", "18682")
    assert call(mem, "vfork", [], 18683) == ("vfork()", "18683")


def test_wait4_status_shapes(mem: GuestMemory) -> None:
    status = 0x6000
    cases = [(3 << 8, "[{WIFEXITED(s) && WEXITSTATUS(s) == 3}]"),
             (9, "[{WIFSIGNALED(s) && WTERMSIG(s) == SIGKILL}]"),
             (11 | 0x80, "[{WIFSIGNALED(s) && WTERMSIG(s) == SIGSEGV && WCOREDUMP(s)}]"),
             ((19 << 8) | 0x7F, "[{WIFSTOPPED(s) && WSTOPSIG(s) == SIGSTOP}]"),
             (0xFFFF, "[{WIFCONTINUED(s)}]")]
    for value, text in cases:
        mem.put(status, struct.pack("<I", value))
        assert call(mem, "wait4", [U64, status, 0x40000000, 0], 42)[0] == (
            f"wait4(-1, {text}, __WALL, NULL)")
    assert call(mem, "wait4", [U64, status, 1, 0], -10)[0] == "wait4(-1, 0x6000, WNOHANG, NULL)"


def test_wait4_rusage(mem: GuestMemory) -> None:
    status = mem.put(0x6000, struct.pack("<I", 0))
    rusage = mem.put(0x6100, struct.pack("<qqqq", 0, 7328, 0, 0))
    assert call(mem, "wait4", [7, status, 0, rusage], 7)[0] == (
        "wait4(7, [{WIFEXITED(s) && WEXITSTATUS(s) == 0}], 0, {ru_utime={tv_sec=0, "
        "tv_usec=7328}, ru_stime={tv_sec=0, tv_usec=0}, ...})")


def test_connect_sockaddr_in(mem: GuestMemory) -> None:
    addr = mem.put(0x8000, struct.pack("<H", 2) + struct.pack(">H", 80) + bytes([127, 0, 0, 1])
                   + bytes(8))
    assert call(mem, "connect", [3, addr, 16], -115) == (
        'connect(3, {sa_family=AF_INET, sin_port=htons(80), sin_addr=inet_addr("127.0.0.1")}, '
        "16)", "-1 EINPROGRESS (Operation now in progress)")


def test_connect_sockaddr_in6_and_unix(mem: GuestMemory) -> None:
    six = mem.put(0x8000, struct.pack("<H", 10) + struct.pack(">HI", 443, 5)
                  + bytes(15) + b"\x01" + struct.pack("<I", 0))
    assert call(mem, "connect", [3, six, 28], 0)[0] == (
        "connect(3, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(5), "
        'inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28)')
    unix = mem.put(0x9000, struct.pack("<H", 1) + b"/run/x.sock".ljust(108, b"\0"))
    assert call(mem, "connect", [3, unix, 110], -2)[0] == (
        'connect(3, {sa_family=AF_UNIX, sun_path="/run/x.sock"}, 110)')
    abstract = mem.put(0xA000, struct.pack("<H", 1) + b"\0run/")
    assert call(mem, "connect", [3, abstract, 7], -111)[0] == (
        'connect(3, {sa_family=AF_UNIX, sun_path=@"run/"}, 7)')


def test_socket_domain_type_and_protocol(mem: GuestMemory) -> None:
    assert call(mem, "socket", [2, 0o2004001, 0], 3)[0] == (
        "socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC|SOCK_NONBLOCK, IPPROTO_IP)")
    assert call(mem, "socket", [99, 99, 0], -22)[0] == (
        "socket(0x63 /* AF_??? */, SOCK_RAW|0x60 /* SOCK_??? */, 0)")


def test_i386_socketcall_prints_the_subcall(mem: GuestMemory) -> None:
    block = mem.put(0xB000, struct.pack("<3I", 2, 1, 0))
    template = SyscallTable.load("i386").by_name("socketcall")
    decoded = Decoder().decode(template, [1, block], 3, mem.read)
    assert (decoded.name, decoded.text) == ("socket", "socket(AF_INET, SOCK_STREAM, IPPROTO_IP)")


def test_signals_and_sigsets(mem: GuestMemory) -> None:
    assert call(mem, "kill", [12345, 15], 0)[0] == "kill(12345, SIGTERM)"
    assert call(mem, "kill", [12345, 33], 0)[0] == "kill(12345, SIGRT_1)"
    assert call(mem, "kill", [12345, 99], -22)[0] == "kill(12345, 99)"
    blocked = mem.put(0xC000, struct.pack("<Q", 0x10003))
    assert call(mem, "rt_sigprocmask", [0, blocked, 0, 8], 0)[0] == (
        "rt_sigprocmask(SIG_BLOCK, [HUP INT CHLD], NULL, 8)")
    most = mem.put(0xC100, struct.pack("<Q", U64 & ~(3 << 31)))
    assert call(mem, "rt_sigprocmask", [2, most, 0, 8], 0)[0] == (
        "rt_sigprocmask(SIG_SETMASK, ~[RTMIN RT_1], NULL, 8)")


def test_rt_sigaction_struct(mem: GuestMemory) -> None:
    act = mem.put(0xD000, struct.pack("<QQQQ", 0x55FFAFB8ADC0, 0x04000000, 0x7FDF1F0B4050,
                                      0x10000))
    assert call(mem, "rt_sigaction", [17, act, 0, 8], 0)[0] == (
        "rt_sigaction(SIGCHLD, {sa_handler=0x55ffafb8adc0, sa_mask=[CHLD], "
        "sa_flags=SA_RESTORER, sa_restorer=0x7fdf1f0b4050}, NULL, 8)")


def test_fcntl_commands(mem: GuestMemory) -> None:
    assert call(mem, "fcntl", [3, 3, 0], 0x8002) == (
        "fcntl(3, F_GETFL)", "0x8002 (flags O_RDWR|O_LARGEFILE)")
    assert call(mem, "fcntl", [11, 2, 1], 0)[0] == "fcntl(11, F_SETFD, FD_CLOEXEC)"
    assert call(mem, "fcntl", [1, 0, 10], 11) == ("fcntl(1, F_DUPFD, 10)", "11")
    assert call(mem, "fcntl", [0, 9999, 3], -22)[0] == "fcntl(0, 0x270f /* F_??? */, 0x3)"


def test_decoder_never_raises_on_garbage_arguments(mem: GuestMemory) -> None:
    decoder = Decoder()
    junk = [0xFFFF_FFFF_FFFF_FFF0, 0x8000_0000_0000_0000, 1, 0x7FFF_FFFF_F000, 0xFFFF, 2]
    for abi in ("x86_64", "i386"):
        for template in SyscallTable.load(abi):
            decoded = decoder.decode(template, junk, -14 & U64, mem.read)
            assert decoded.text.startswith(template.name) or template.name == "socketcall"
            assert "\x1b" not in decoded.text


def test_line_aligns_the_result_like_strace(mem: GuestMemory) -> None:
    decoded = Decoder().decode(SyscallTable.load("x86_64").by_name("close"), [3], 0, mem.read)
    assert decoded.line == "close(3)                                = 0"


def test_accept_fills_the_address_and_its_length(mem: GuestMemory) -> None:
    addr, length = 0xE000, mem.put(0xE100, struct.pack("<i", 128))
    decoder = Decoder()
    state = decoder.entry(SyscallTable.load("x86_64").by_name("accept"), [3, addr, length],
                          mem.read)
    mem.put(addr, struct.pack("<H", 2) + struct.pack(">H", 55742) + bytes([127, 0, 0, 1])
            + bytes(8))
    mem.put(length, struct.pack("<i", 16))
    assert decoder.exit(state, 5, mem.read).text == (
        'accept(3, {sa_family=AF_INET, sin_port=htons(55742), sin_addr=inet_addr("127.0.0.1")}, '
        "[128 => 16])")
    assert call(mem, "accept4", [3, addr, length, 0o4000], -11)[0] == (
        "accept4(3, 0xe000, [16], SOCK_NONBLOCK)")
    assert call(mem, "accept", [3, 0, 0], -11)[0] == "accept(3, NULL, NULL)"


def test_poll_shows_events_and_ready_descriptors(mem: GuestMemory) -> None:
    fds = mem.put(0xF000, struct.pack("<ihhihhihh", 4, 5, 4, 5, 1, 0, -1, 2, 0))
    assert call(mem, "poll", [fds, 3, 10], 1) == (
        "poll([{fd=4, events=POLLIN|POLLOUT}, {fd=5, events=POLLIN}, {fd=-1}], 3, 10)",
        "1 ([{fd=4, revents=POLLOUT}])")
    assert call(mem, "poll", [fds, 1, 0], 0)[1] == "0 (Timeout)"
    assert call(mem, "poll", [8, 1, 0], -14)[0] == "poll(0x8, 1, 0)"


# strace 6.1's lines, from a C program run under it on the host (addresses shortened).

def test_flags_with_no_known_bit_print_strace_s_comment(mem: GuestMemory) -> None:
    path = mem.put(0x1000, b"/nonexist\0")
    assert call(mem, "pipe2", [0x7FFE1B68394C, 0x1], -22)[0] == (
        "pipe2(0x7ffe1b68394c, 0x1 /* O_??? */)")
    assert call(mem, "pipe2", [0x7FFE1B68394C, 0o2000000 | 0x1], -22)[0] == (
        "pipe2(0x7ffe1b68394c, O_CLOEXEC|0x1)")
    assert call(mem, "unlinkat", [AT_FDCWD, path, 0x1], -22)[0] == (
        'unlinkat(AT_FDCWD, "/nonexist", 0x1 /* AT_??? */)')
    assert call(mem, "mprotect", [0x7FA1CFFA3000, 4096, 0x10], -22)[0] == (
        "mprotect(0x7fa1cffa3000, 4096, 0x10 /* PROT_??? */)")
    assert call(mem, "mprotect", [0x7FA1CFFA3000, 4096, 0x11], -22)[0] == (
        "mprotect(0x7fa1cffa3000, 4096, PROT_READ|0x10)")
    assert call(mem, "access", [path, 0x10], -22)[0] == 'access("/nonexist", 0x10 /* ?_OK */)'
    assert call(mem, "getrandom", [0x7FA1CFFA3000, 4, 0x10], -22)[0] == (
        "getrandom(0x7fa1cffa3000, 4, 0x10 /* GRND_??? */)")
    assert call(mem, "wait4", [U64, 0x7FFE1B68383C, 0x10, 0], -22)[0] == (
        "wait4(-1, 0x7ffe1b68383c, 0x10 /* W??? */, NULL)")
    # strace: fadvise64(0, 0, 0, 0x63 /* POSIX_FADV_??? */) (its prefix, not the common one)
    assert call(mem, "fadvise64", [0, 0, 0, 99], -22)[0] == (
        "fadvise64(0, 0, 0, 0x63 /* POSIX_FADV_??? */)")
    # Beside a name (open's access mode) the unknown bits get no comment.
    assert call(mem, "openat", [AT_FDCWD, path, 0x40000000], -2)[0] == (
        'openat(AT_FDCWD, "/nonexist", O_RDONLY|0x40000000)')


def test_memory_calls_print_their_flags_by_name(mem: GuestMemory) -> None:
    page = 0x7FA1CFFA3000
    assert call(mem, "msync", [page, 4096, 4], 0)[0] == "msync(0x7fa1cffa3000, 4096, MS_SYNC)"
    assert call(mem, "msync", [page, 4096, 3], 0)[0] == (
        "msync(0x7fa1cffa3000, 4096, MS_ASYNC|MS_INVALIDATE)")
    assert call(mem, "msync", [page, 4096, 0], 0)[0] == "msync(0x7fa1cffa3000, 4096, 0)"
    assert call(mem, "msync", [page, 4096, 0x10], -22)[0] == (
        "msync(0x7fa1cffa3000, 4096, 0x10 /* MS_??? */)")
    assert call(mem, "mremap", [page, 4096, 8192, 1, 0], 0x7FA1CFFA1000) == (
        "mremap(0x7fa1cffa3000, 4096, 8192, MREMAP_MAYMOVE)", "0x7fa1cffa1000")
    assert call(mem, "mremap", [page, 4096, 8192, 0x10, 0], -22)[0] == (
        "mremap(0x7fa1cffa3000, 4096, 8192, 0x10 /* MREMAP_??? */)")
    assert call(mem, "mremap", [page, 4096, 8192, 3, 0x7F0000000000], 0x7F0000000000)[0] == (
        "mremap(0x7fa1cffa3000, 4096, 8192, MREMAP_MAYMOVE|MREMAP_FIXED, 0x7f0000000000)")
    assert call(mem, "mlockall", [3], 0)[0] == "mlockall(MCL_CURRENT|MCL_FUTURE)"
    assert call(mem, "mlockall", [0x10], -22)[0] == "mlockall(0x10 /* MCL_??? */)"
    assert call(mem, "mlock2", [page, 4096, 1], 0)[0] == (
        "mlock2(0x7fa1cffa3000, 4096, MLOCK_ONFAULT)")
    assert call(mem, "mlock2", [0xF7FA3000, 4096, 1], 0, abi="i386")[0] == (
        "mlock2(0xf7fa3000, 4096, MLOCK_ONFAULT)")


def test_descriptor_and_process_calls_print_their_named_arguments(mem: GuestMemory) -> None:
    old, new = mem.put(0x1000, b"/nonexist\0"), mem.put(0x1100, b"/nonexist2\0")
    name = mem.put(0x1200, b"x\0")
    lines = {
        ("shutdown", (3, 2), -107): "shutdown(3, SHUT_RDWR)",
        ("shutdown", (3, 7), -22): "shutdown(3, 0x7 /* SHUT_??? */)",
        ("flock", (4, 6), 0): "flock(4, LOCK_EX|LOCK_NB)",
        ("flock", (4, 8), 0): "flock(4, LOCK_UN)",
        ("flock", (4, 0), -22): "flock(4, 0)",
        ("epoll_create1", (0o2000000,), 5): "epoll_create1(EPOLL_CLOEXEC)",
        ("epoll_create1", (0,), 6): "epoll_create1(0)",
        ("epoll_ctl", (5, 2, 4, 0), -1): "epoll_ctl(5, EPOLL_CTL_DEL, 4, NULL)",
        ("epoll_ctl", (5, 9, 4, 0), -14): "epoll_ctl(5, 0x9 /* EPOLL_CTL_??? */, 4, NULL)",
        ("getrusage", (5, 0x7FFE1B6838B0), -22):
            "getrusage(0x5 /* RUSAGE_??? */, 0x7ffe1b6838b0)",
        ("getrusage", (U64, 0), -14): "getrusage(RUSAGE_CHILDREN, NULL)",
        ("getitimer", (7, 0x7FFE1B683890), -22):
            "getitimer(0x7 /* ITIMER_??? */, 0x7ffe1b683890)",
        ("getpriority", (0, 0), 20): "getpriority(PRIO_PROCESS, 0)",
        ("setpriority", (1, 0, 0), 0): "setpriority(PRIO_PGRP, 0, 0)",
        ("renameat2", (AT_FDCWD, old, AT_FDCWD, new, 1), -2):
            'renameat2(AT_FDCWD, "/nonexist", AT_FDCWD, "/nonexist2", RENAME_NOREPLACE)',
        ("memfd_create", (name, 3), 7): 'memfd_create("x", MFD_CLOEXEC|MFD_ALLOW_SEALING)',
        ("memfd_create", (name, 0), 8): 'memfd_create("x", 0)',
        ("unshare", (0,), 0): "unshare(0)",
        ("unshare", (0x20000,), 0): "unshare(CLONE_NEWNS)",
        ("unshare", (0x1,), -22): "unshare(0x1 /* CLONE_??? */)",
    }
    for (name_, args, ret), expected in lines.items():
        assert call(mem, name_, list(args), ret)[0] == expected
    rqtp = mem.put(0x2000, struct.pack("<qq", 0, 1))
    assert call(mem, "clock_nanosleep", [1, 1, rqtp, 0], 0)[0] == (
        "clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, {tv_sec=0, tv_nsec=1}, NULL)")


def test_utimensat_prints_its_two_times_as_an_array_at_entry(mem: GuestMemory) -> None:
    # strace: utimensat(AT_FDCWD, "/nonexist", [{tv_sec=1, tv_nsec=2}
    #   /* 1970-01-01T00:00:01.000000002+0000 */, UTIME_NOW], 0) = -1 ENOENT (...)
    path = mem.put(0x1000, b"/nonexist\0")
    now, omit = (1 << 30) - 1, (1 << 30) - 2
    times = mem.put(0x2000, struct.pack("<4q", 1, 2, 3, now))
    assert call(mem, "utimensat", [AT_FDCWD, path, times, 0], -2)[0] == (
        'utimensat(AT_FDCWD, "/nonexist", [{tv_sec=1, tv_nsec=2} '
        '/* 1970-01-01T00:00:01.000000002+0000 */, UTIME_NOW], 0)')
    both = mem.put(0x2100, struct.pack("<4q", 0, omit, 5, now))
    assert call(mem, "utimensat", [AT_FDCWD, path, both, 0x100], -2)[0] == (
        'utimensat(AT_FDCWD, "/nonexist", [UTIME_OMIT, UTIME_NOW], AT_SYMLINK_NOFOLLOW)')
    whole = mem.put(0x2200, struct.pack("<4q", 1700000000, 0, 0, 0))
    assert call(mem, "utimensat", [3, 0, whole, 0], 0)[0] == (
        "utimensat(3, NULL, [{tv_sec=1700000000, tv_nsec=0} /* 2023-11-14T22:13:20+0000 */, "
        "{tv_sec=0, tv_nsec=0}], 0)")
    assert call(mem, "utimensat", [AT_FDCWD, path, 0, 0], -2)[0] == (
        'utimensat(AT_FDCWD, "/nonexist", NULL, 0)')
    half = mem.put(0x4FF0, struct.pack("<2q", 1, 2))  # the second time is unreadable
    assert call(mem, "utimensat", [AT_FDCWD, path, half, 0], -14)[0] == (
        'utimensat(AT_FDCWD, "/nonexist", 0x4ff0, 0)')


def test_i386_utimensat_reads_two_32_bit_timespecs(mem: GuestMemory) -> None:
    path = mem.put(0x1000, b"/x\0")
    times = mem.put(0x2000, struct.pack("<4i", 1, 2, 0, (1 << 30) - 2))
    assert call(mem, "utimensat", [0xFFFFFF9C, path, times, 0], 0, abi="i386")[0] == (
        'utimensat(AT_FDCWD, "/x", [{tv_sec=1, tv_nsec=2} '
        '/* 1970-01-01T00:00:01.000000002+0000 */, UTIME_OMIT], 0)')
    wide = mem.put(0x3000, struct.pack("<4q", 1, 2, 0, (1 << 30) - 1))
    assert call(mem, "utimensat_time64", [0xFFFFFF9C, path, wide, 0x100], 0, abi="i386")[0] == (
        'utimensat_time64(AT_FDCWD, "/x", [{tv_sec=1, tv_nsec=2} '
        '/* 1970-01-01T00:00:01.000000002+0000 */, UTIME_NOW], AT_SYMLINK_NOFOLLOW)')


def test_wait4_returning_0_prints_the_unfilled_rusage_as_its_address(mem: GuestMemory) -> None:
    # strace: wait4(-1, 0x7ffe1b68383c, WNOHANG, 0x7ffe1b6838b0) = 0
    status, usage = 0x7FFE1B68383C, 0x7FFE1B6838B0
    mem.put(status, struct.pack("<i", 0))
    mem.put(usage, struct.pack("<4q", 0, 1838, 0, 0))
    assert call(mem, "wait4", [U64, status, 1, usage], 0)[0] == (
        "wait4(-1, 0x7ffe1b68383c, WNOHANG, 0x7ffe1b6838b0)")
    assert call(mem, "wait4", [U64, status, 1, 0], 0)[0] == (
        "wait4(-1, 0x7ffe1b68383c, WNOHANG, NULL)")
    assert call(mem, "wait4", [U64, status, 1, usage], 4321)[0] == (
        "wait4(-1, [{WIFEXITED(s) && WEXITSTATUS(s) == 0}], WNOHANG, "
        "{ru_utime={tv_sec=0, tv_usec=1838}, ru_stime={tv_sec=0, tv_usec=0}, ...})")
    # getrusage returns 0 when it did fill the struct.
    assert call(mem, "getrusage", [0, usage], 0)[0] == (
        "getrusage(RUSAGE_SELF, {ru_utime={tv_sec=0, tv_usec=1838}, "
        "ru_stime={tv_sec=0, tv_usec=0}, ...})")


def test_utimes_futimesat_and_utime_print_their_times_with_dates(mem: GuestMemory) -> None:
    path = mem.put(0x1000, b"/nonexist\0")
    times = mem.put(0x2000, struct.pack("<qQqQ", 1700000000, 5, 0, 0))
    # strace: utimes("/nonexist", [{tv_sec=1700000000, tv_usec=5}
    #   /* 2023-11-14T22:13:20.000005+0000 */, {tv_sec=0, tv_usec=0}]) = -1 ENOENT (...)
    assert call(mem, "utimes", [path, times], -2)[0] == (
        'utimes("/nonexist", [{tv_sec=1700000000, tv_usec=5} '
        '/* 2023-11-14T22:13:20.000005+0000 */, {tv_sec=0, tv_usec=0}])')
    odd = mem.put(0x2100, struct.pack("<qQqQ", -1, 1000000, 3, 4))
    assert call(mem, "futimesat", [AT_FDCWD, path, odd], -22)[0] == (
        'futimesat(AT_FDCWD, "/nonexist", [{tv_sec=-1, tv_usec=1000000}, '
        '{tv_sec=3, tv_usec=4} /* 1970-01-01T00:00:03.000004+0000 */])')
    assert call(mem, "futimesat", [AT_FDCWD, 0, times], -14)[0].startswith(
        "futimesat(AT_FDCWD, NULL, [{tv_sec=1700000000, tv_usec=5}")
    assert call(mem, "utimes", [path, 0x4FF8], -14)[0] == 'utimes("/nonexist", 0x4ff8)'
    i386 = mem.put(0x3000, struct.pack("<iIiI", 3, 4, 0, 0))
    assert call(mem, "utimes", [0x1000, i386], -2, abi="i386")[0] == (
        'utimes("/nonexist", [{tv_sec=3, tv_usec=4} /* 1970-01-01T00:00:03.000004+0000 */, '
        '{tv_sec=0, tv_usec=0}])')
    # strace: utime("/nonexist", {actime=1700000000 /* 2023-11-14T22:13:20+0000 */,
    #   modtime=0}) = -1 ENOENT (...)
    buf = mem.put(0x3100, struct.pack("<qq", 1700000000, 0))
    assert call(mem, "utime", [path, buf], -2)[0] == (
        'utime("/nonexist", {actime=1700000000 /* 2023-11-14T22:13:20+0000 */, modtime=0})')
    buf32 = mem.put(0x3200, struct.pack("<ii", 0, 3))
    assert call(mem, "utime", [0x1000, buf32], -2, abi="i386")[0] == (
        'utime("/nonexist", {actime=0, modtime=3 /* 1970-01-01T00:00:03+0000 */})')


def test_descriptor_creation_and_namespace_flags_print_by_name(mem: GuestMemory) -> None:
    path = mem.put(0x1000, b"/nonexist\0")
    its = 0x7FFE00001000
    lines = {  # strace 6.1 on the host
        ("inotify_init1", (0o4000 | 0o2000000,), 3): "inotify_init1(IN_NONBLOCK|IN_CLOEXEC)",
        ("inotify_init1", (0x1,), -22): "inotify_init1(0x1 /* IN_??? */)",
        ("timerfd_create", (1, 0o2000000 | 0o4000), 11):
            "timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC|TFD_NONBLOCK)",
        ("timerfd_create", (1, 0x1), -22): "timerfd_create(CLOCK_MONOTONIC, TFD_TIMER_ABSTIME)",
        ("timerfd_settime", (6, 0x10, its, 0), -22):
            "timerfd_settime(6, 0x10 /* TFD_??? */, 0x7ffe00001000, NULL)",
        ("eventfd2", (0, 0o4000 | 1), 4): "eventfd2(0, EFD_SEMAPHORE|EFD_NONBLOCK)",
        ("eventfd2", (0, 0x2), -22): "eventfd2(0, 0x2 /* EFD_??? */)",
        ("close_range", (100, 200, 6), 0):
            "close_range(100, 200, CLOSE_RANGE_UNSHARE|CLOSE_RANGE_CLOEXEC)",
        ("close_range", (100, 200, 1), -22): "close_range(100, 200, 0x1 /* CLOSE_RANGE_??? */)",
        ("fallocate", (99, 1, 0, 10), -9): "fallocate(99, FALLOC_FL_KEEP_SIZE, 0, 10)",
        ("fallocate", (99, 0x80, 0, 10), -9): "fallocate(99, 0x80 /* FALLOC_FL_??? */, 0, 10)",
        ("umount2", (path, 11), -2):
            'umount2("/nonexist", MNT_FORCE|MNT_DETACH|UMOUNT_NOFOLLOW)',
        ("umount2", (path, 0x20), -22): 'umount2("/nonexist", 0x20 /* MNT_??? */)',
        ("pidfd_open", (1, 0o4000), 5): "pidfd_open(1, PIDFD_NONBLOCK)",
        ("pidfd_open", (1, 0x1), -22): "pidfd_open(1, 0x1 /* PIDFD_??? */)",
        ("setns", (0, 0x40000000), -22): "setns(0, CLONE_NEWNET)",
        ("setns", (0, 0), -22): "setns(0, 0)",
        ("setns", (0, 0x1), -22): "setns(0, 0x1 /* CLONE_NEW??? */)",
    }
    for (name, args, ret), expected in lines.items():
        assert call(mem, name, list(args), ret)[0] == expected
    assert call(mem, "umount", [0x1000], -2, abi="i386")[0] == 'umount("/nonexist")'


def test_a_timeout_or_sleep_request_is_the_callers_and_prints_at_entry(
        mem: GuestMemory) -> None:
    # The compat prototypes have no "const": nanosleep's request, pselect6's timeout and
    # i386's clock_nanosleep were decoded at exit (as the address when the call failed).
    req = mem.put(0x2000, struct.pack("<qq", 5, 0))
    # strace: nanosleep({tv_sec=5, tv_nsec=0}, NULL) = -1 EINTR (Interrupted system call)
    assert call(mem, "nanosleep", [req, 0], -4)[0] == "nanosleep({tv_sec=5, tv_nsec=0}, NULL)"
    req32 = mem.put(0x3000, struct.pack("<ii", 1, 500))
    assert call(mem, "clock_nanosleep", [0, 0, req32, 0], -4, abi="i386")[0] == (
        "clock_nanosleep(CLOCK_REALTIME, 0, {tv_sec=1, tv_nsec=500}, NULL)")
    assert call(mem, "clock_settime", [0, req32], -1, abi="i386")[0] == (
        "clock_settime(CLOCK_REALTIME, {tv_sec=1, tv_nsec=500})")
    # pselect6 writes the time left into its timeout: strace shows what the caller asked for.
    decoder = Decoder()
    template = SyscallTable.load("x86_64").by_name("pselect6")
    state = decoder.entry(template, [1, 0, 0, 0, req, 0], mem.read)
    mem.put(req, struct.pack("<qq", 4, 999))
    assert decoder.exit(state, 0, mem.read).text == (
        "pselect6(1, NULL, NULL, NULL, {tv_sec=5, tv_nsec=0}, NULL)")


def test_i386_ppoll_reads_a_32_bit_timespec(mem: GuestMemory) -> None:
    fds = mem.put(0x1000, struct.pack("<ihh", 3, 1, 0))
    ts = mem.put(0x2000, struct.pack("<ii", 2, 7) + b"\xff" * 8)
    assert call(mem, "ppoll", [fds, 1, ts, 0, 8], 0, abi="i386") == (
        "ppoll([{fd=3, events=POLLIN}], 1, {tv_sec=2, tv_nsec=7}, NULL, 8)", "0 (Timeout)")


def test_the_time_left_prints_when_the_sleep_returns_a_restart_code(mem: GuestMemory) -> None:
    # strace: nanosleep({tv_sec=2, tv_nsec=0}, {tv_sec=1, tv_nsec=56811})
    #   = ? ERESTART_RESTARTBLOCK (Interrupted by signal)
    req = mem.put(0x2000, struct.pack("<qq", 2, 0))
    rem = mem.put(0x3000, struct.pack("<qq", 1, 56811))
    assert call(mem, "nanosleep", [req, rem], -516) == (
        "nanosleep({tv_sec=2, tv_nsec=0}, {tv_sec=1, tv_nsec=56811})",
        "? ERESTART_RESTARTBLOCK (Interrupted by signal)")
    assert call(mem, "nanosleep", [req, rem], 0)[0] == (
        "nanosleep({tv_sec=2, tv_nsec=0}, 0x3000)")
    assert call(mem, "nanosleep", [req, rem], -4)[0] == (  # EINTR: strace shows the address
        "nanosleep({tv_sec=2, tv_nsec=0}, 0x3000)")
    assert call(mem, "clock_nanosleep", [1, 0, req, rem], -516)[0] == (
        "clock_nanosleep(CLOCK_MONOTONIC, 0, {tv_sec=2, tv_nsec=0}, {tv_sec=1, tv_nsec=56811})")
    assert call(mem, "clock_nanosleep", [1, 1, req, rem], -516)[0] == (
        "clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, {tv_sec=2, tv_nsec=0}, 0x3000)")


def test_interval_timers_print_their_settings(mem: GuestMemory) -> None:
    # strace: getitimer(ITIMER_REAL, {it_interval={tv_sec=0, tv_usec=0},
    #   it_value={tv_sec=0, tv_usec=0}}) = 0
    value = mem.put(0x2000, bytes(32))
    assert call(mem, "getitimer", [0, value], 0)[0] == (
        "getitimer(ITIMER_REAL, {it_interval={tv_sec=0, tv_usec=0}, "
        "it_value={tv_sec=0, tv_usec=0}})")
    assert call(mem, "getitimer", [7, value], -22)[0] == (
        "getitimer(0x7 /* ITIMER_??? */, 0x2000)")
    new = mem.put(0x3000, struct.pack("<4q", 1, 500, 2, 0))
    assert call(mem, "setitimer", [2, new, 0], 0)[0] == (
        "setitimer(ITIMER_PROF, {it_interval={tv_sec=1, tv_usec=500}, "
        "it_value={tv_sec=2, tv_usec=0}}, NULL)")
    new32 = mem.put(0x4000, struct.pack("<4i", 1, 500, 2, 0))
    assert call(mem, "setitimer", [0, new32, 0], 0, abi="i386")[0] == (
        "setitimer(ITIMER_REAL, {it_interval={tv_sec=1, tv_usec=500}, "
        "it_value={tv_sec=2, tv_usec=0}}, NULL)")
    # strace: timerfd_settime(6, TFD_TIMER_ABSTIME, {it_interval={tv_sec=0, tv_nsec=0},
    #   it_value={tv_sec=1, tv_nsec=0}}, NULL) = 0
    its = mem.put(0x5000, struct.pack("<4q", 0, 0, 1, 0))
    assert call(mem, "timerfd_settime", [6, 1, its, 0], 0)[0] == (
        "timerfd_settime(6, TFD_TIMER_ABSTIME, {it_interval={tv_sec=0, tv_nsec=0}, "
        "it_value={tv_sec=1, tv_nsec=0}}, NULL)")
    assert call(mem, "timer_gettime", [0, its], -22)[0] == "timer_gettime(0, 0x5000)"
    its32 = mem.put(0x6000, struct.pack("<4i", 0, 0, 1, 5))
    assert call(mem, "timerfd_gettime", [6, its32], 0, abi="i386")[0] == (
        "timerfd_gettime(6, {it_interval={tv_sec=0, tv_nsec=0}, it_value={tv_sec=1, tv_nsec=5}})")


def test_a_flag_set_prints_zero_as_each_caller_asks_whatever_came_first() -> None:
    """The format cache once returned clone's "" for unshare(0), by order of the calls."""
    flags = Constants.load().flags["clone_flags"]
    assert flags.format(0, "") == ""
    assert flags.format(0) == "0"
    assert flags.format(0, "") == ""


def test_i386_set_thread_area_prints_its_user_desc_and_the_entry_taken(
        mem: GuestMemory) -> None:
    # strace 6.1 (i386) in the lab guest: busybox's TLS set-up.
    # set_thread_area({entry_number=-1, base_addr=0x9946380, limit=0x0fffff, seg_32bit=1,
    #   contents=0, read_exec_only=0, limit_in_pages=1, seg_not_present=0, useable=1})
    #   = 0 (entry_number=6)
    desc = mem.put(0xBFDA_0AF0, struct.pack("<iIII", -1, 0x9946380, 0xFFFFF, 0x51))
    decoder = Decoder(32)
    template = SyscallTable.load("i386").by_name("set_thread_area")
    assert template is not None
    state = decoder.entry(template, [desc], mem.read)
    mem.put(desc, struct.pack("<I", 6))  # the kernel writes back the entry it took
    done = decoder.exit(state, 0, mem.read)
    assert done.text == (
        "set_thread_area({entry_number=-1, base_addr=0x9946380, limit=0x0fffff, seg_32bit=1, "
        "contents=0, read_exec_only=0, limit_in_pages=1, seg_not_present=0, useable=1})")
    assert done.ret_text == "0 (entry_number=6)"


def test_set_thread_area_unreadable_or_failed_prints_as_strace(mem: GuestMemory) -> None:
    assert call(mem, "set_thread_area", [0xBFDA_0AF0], 0, abi="i386") == (
        "set_thread_area(0xbfda0af0)", "0")
    desc = mem.put(0x2000, struct.pack("<IIII", 12, 0, 0, 0x2C))
    # An explicit entry, a zero base and limit (C's "%#08x" of 0), contents=2, not present.
    assert call(mem, "set_thread_area", [desc], -22, abi="i386") == (
        "set_thread_area({entry_number=12, base_addr=00000000, limit=00000000, seg_32bit=0, "
        "contents=2, read_exec_only=1, limit_in_pages=0, seg_not_present=1, useable=0})",
        "-1 EINVAL (Invalid argument)")
