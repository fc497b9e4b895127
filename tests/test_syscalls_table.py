"""The generated system-call tables: numbers, entry points, kinds, classes, selections."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from xenhpt.syscalls.kinds import EXIT_KINDS, KINDS, RETURN_KINDS
from xenhpt.syscalls.table import SelectionError, SyscallTable, Template, resolve_selection
from xenhpt.syscalls.xlat import Constants


def _number(abi: str, name: str) -> int:
    template = SyscallTable.load(abi).by_name(name)
    assert template is not None, f"{name} missing from {abi}"
    return template.nr


@pytest.mark.parametrize(("abi", "name", "nr"), [
    ("x86_64", "read", 0), ("x86_64", "write", 1), ("x86_64", "openat", 257),
    ("x86_64", "execve", 59), ("x86_64", "clone", 56), ("x86_64", "newfstatat", 262),
    ("x86_64", "exit_group", 231), ("x86_64", "clone3", 435),
    ("i386", "open", 5), ("i386", "execve", 11), ("i386", "socketcall", 102),
    ("i386", "mmap2", 192), ("i386", "fstatat64", 300),
])
def test_numbers_match_the_kernel_syscall_tables(abi: str, name: str, nr: int) -> None:
    assert _number(abi, name) == nr
    assert SyscallTable.load(abi).by_number(nr).name == name


def test_entry_points_are_the_kernel_symbols() -> None:
    x64, i386 = SyscallTable.load("x86_64"), SyscallTable.load("i386")
    assert x64.by_name("openat").entry == "__x64_sys_openat"
    assert x64.by_name("stat").entry == "__x64_sys_newstat"
    assert i386.by_name("close").entry == "__ia32_sys_close"
    # On a 64-bit kernel a 32-bit task goes through the compat entry when there is one.
    assert i386.by_name("open").entry == "__ia32_compat_sys_open"


def test_openat_arguments_come_from_the_prototype() -> None:
    openat = SyscallTable.load("x86_64").by_name("openat")
    assert [(a.name, a.kind) for a in openat.args] == [
        ("dfd", "dirfd"), ("filename", "path"), ("flags", "open_flags"), ("mode", "mode")]
    assert openat.ret == "fd"


def test_buffers_know_their_length_argument() -> None:
    write = SyscallTable.load("x86_64").by_name("write")
    assert write.args[1].kind == "buf_in" and write.args[1].length_arg == 2
    assert SyscallTable.load("x86_64").by_name("read").args[1].kind == "buf_out"


def test_clone_argument_order_differs_between_abis() -> None:
    names64 = [a.name for a in SyscallTable.load("x86_64").by_name("clone").args]
    names32 = [a.name for a in SyscallTable.load("i386").by_name("clone").args]
    assert names64[3:] == ["child_tidptr", "tls"]
    assert names32[3:] == ["tls", "child_tidptr"]  # CONFIG_CLONE_BACKWARDS


def test_i386_split_offsets_are_paired() -> None:
    pread = SyscallTable.load("i386").by_name("pread64")
    assert [a.kind for a in pread.args][-2:] == ["off64_lo", "off64_hi"]


@pytest.mark.parametrize("abi", ["x86_64", "i386"])
def test_every_kind_in_the_tables_has_a_decoder(abi: str) -> None:
    table = SyscallTable.load(abi)
    templates = list(table) + list(table.socketcall.values())
    used = {a.kind for t in templates for a in t.args}
    assert used <= KINDS, used - KINDS
    assert {t.ret for t in templates} <= RETURN_KINDS
    assert EXIT_KINDS <= KINDS


@pytest.mark.parametrize(("name", "trace_class"), [
    ("openat", "%file"), ("execve", "%file"), ("clone", "%process"), ("fork", "%process"),
    ("wait4", "%process"), ("exit_group", "%process"), ("kill", "%process"),
    ("mmap", "%memory"), ("brk", "%memory"), ("munmap", "%memory"),
    ("connect", "%network"), ("socket", "%network"), ("rt_sigaction", "%signal"),
    ("kill", "%signal"), ("read", "%desc"), ("close", "%desc"), ("mmap", "%desc"),
])
def test_trace_classes(name: str, trace_class: str) -> None:
    assert name in SyscallTable.load("x86_64").names_in_class(trace_class)


@pytest.mark.parametrize(("name", "trace_class"), [
    ("read", "%file"), ("getpid", "%process"), ("openat", "%memory"),
    ("connect", "%file"), ("set_tid_address", "%process"), ("fadvise64", "%memory"),
])
def test_trace_classes_exclude(name: str, trace_class: str) -> None:
    assert name not in SyscallTable.load("x86_64").names_in_class(trace_class)


def test_i386_classes_and_socketcall_subcalls() -> None:
    i386 = SyscallTable.load("i386")
    assert "socketcall" in i386.names_in_class("%network")
    assert "mmap2" in i386.names_in_class("%memory")
    assert i386.socketcall[1].name == "socket" and i386.socketcall[3].name == "connect"
    assert i386.socketcall[3].args[1].kind == "sockaddr"


def test_selection_takes_names_and_classes() -> None:
    selected = resolve_selection("openat,%process", "x86_64")
    assert 257 in selected and 56 in selected and 59 in selected
    assert 0 not in selected  # read
    assert resolve_selection("file", "x86_64") == resolve_selection("%file", "x86_64")
    assert resolve_selection("%net", "x86_64") == resolve_selection("%network", "x86_64")


def test_selection_negation_regex_and_all() -> None:
    everything = resolve_selection("all", "x86_64")
    assert resolve_selection("!read,write", "x86_64") == everything - {0, 1}
    assert resolve_selection("/^(open|close)$", "x86_64") == {2, 3}
    assert resolve_selection("none", "x86_64") == set()


def test_selection_of_a_name_of_the_other_abi_is_empty_not_an_error() -> None:
    assert resolve_selection("mmap2", "x86_64") == set()
    assert resolve_selection("mmap2", "i386") == {192}
    assert resolve_selection("openat@64", "i386") == set()


def test_selection_rejects_unknown_names() -> None:
    with pytest.raises(SelectionError):
        resolve_selection("opneat", "x86_64")
    with pytest.raises(SelectionError):
        resolve_selection("%files", "x86_64")
    assert resolve_selection("?opneat,read", "x86_64") == {0}


def test_unknown_number_prints_like_strace() -> None:
    template = Template.unknown("x86_64", 999)
    assert template.name == "syscall_0x3e7" and len(template.args) == 6


def test_constants_come_from_the_kernel_headers() -> None:
    c = Constants.load()
    assert c.flags["open_flags"].names["O_CLOEXEC"] == 0o2000000
    assert c.values["sock_domain"].get(10) == "AF_INET6"
    assert c.numbers["AT_FDCWD"] == -100
    assert c.signal(9) == "SIGKILL" and c.signal(34) == "SIGRT_2" and c.signal(99) == "99"
    assert c.errno[2].name == "ENOENT" and c.errno[2].message == "No such file or directory"


def test_data_files_name_their_source() -> None:
    base = resources.files("xenhpt.syscalls").joinpath("data")
    for name in ("x86_64.json", "i386.json", "constants.json", "errno.json"):
        meta = json.loads(base.joinpath(name).read_text())["metadata"]
        assert meta["source_package"] == "linux-source-6.1"
        assert meta["source_version"].startswith("6.1.")
        assert meta["source_members"]
        assert meta["generator"] == "tools/gen_syscall_tables.py"
    errno_meta = json.loads(base.joinpath("errno.json").read_text())["metadata"]
    assert "strerror" in errno_meta["messages_source"]
