#!/usr/bin/env python3
"""Generate xenhpt's system-call tables (``xenhpt/syscalls/data/*.json``) from kernel sources.

Source: Debian's ``linux-source-6.1`` package (the kernel tree Debian builds its 6.1 kernels
from), fetched with ``apt-get download``. From its tarball we read:

* ``arch/x86/entry/syscalls/syscall_64.tbl`` / ``syscall_32.tbl``: numbers, names, entry points;
* ``include/linux/syscalls.h``, ``include/linux/compat.h`` and the ``SYSCALL_DEFINEn(...)``
  lines of the kernel's C files: the C prototypes, from which argument kinds are derived
  (``tools/syscalls/kinds.py``), and which file defines each call (for trace classes);
* uapi headers: errno names, O_*/AT_*/PROT_*/MAP_*/CLONE_*/AF_*/SOCK_*/SIG* ... values
  (``tools/syscalls/xlat.py``).

errno messages are glibc's ``strerror()`` texts on the generating host (through
``os.strerror``), recorded with the glibc version; the kernel-internal restart codes get the
texts strace prints for them.

Usage (a developer re-runs this when the source changes; tests and set-up never do):

    python tools/gen_syscall_tables.py                 # apt-get download into a temp dir
    python tools/gen_syscall_tables.py --deb linux-source-6.1_6.1.192-2_all.deb
    python tools/gen_syscall_tables.py --tree /tmp/linux-source-6.1 --version 6.1.192-2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from syscalls import cparse, kinds, source, xlat  # noqa: E402

from xenhpt.syscalls.kinds import KINDS, RETURN_KINDS  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent.parent / "xenhpt" / "syscalls" / "data"
TABLES = {"x86_64": "arch/x86/entry/syscalls/syscall_64.tbl",
          "i386": "arch/x86/entry/syscalls/syscall_32.tbl"}
HEADERS = ["include/linux/syscalls.h", "include/linux/compat.h"]
# Patterns are fnmatch-style: "*" also matches "/", so "fs/*.c" takes fs/notify/... too.
DEFINITION_FILES = ["fs/*.c", "kernel/*.c", "mm/*.c", "ipc/*.c", "net/socket.c",
                    "net/compat.c", "security/*.c", "block/*.c", "io_uring/*.c",
                    "arch/x86/kernel/*.c", "arch/x86/ia32/*.c", "arch/x86/mm/*.c",
                    "drivers/char/random.c", "lib/*.c"]
MEMBERS = list(TABLES.values()) + HEADERS + DEFINITION_FILES + xlat.CONSTANT_HEADERS

# Kconfig facts that pick the right #if branch of a prototype (arch/x86/Kconfig,
# arch/x86/include/asm/unistd.h): e.g. i386 passes clone()'s tls before child_tid.
CONFIG = {
    "x86_64": {"CONFIG_64BIT": 1, "CONFIG_X86_64": 1, "CONFIG_COMPAT": 1, "CONFIG_MMU": 1,
               "BITS_PER_LONG": 64, "CONFIG_ADVISE_SYSCALLS": 1, "__ARCH_WANT_SYS_CLONE": 1,
               "__ARCH_WANT_COMPAT_STAT64": 1, "__ARCH_WANT_SYS_FORK": 1,
               "__ARCH_WANT_SYS_VFORK": 1, "__ARCH_WANT_SYS_CLONE3": 1},
    "i386": {"CONFIG_X86_32": 1, "CONFIG_CLONE_BACKWARDS": 1, "CONFIG_MMU": 1,
             "BITS_PER_LONG": 32, "CONFIG_HAVE_UID16": 1, "__ARCH_WANT_STAT64": 1,
             "__ARCH_WANT_SYS_OLD_GETRLIMIT": 1, "CONFIG_OLD_SIGSUSPEND3": 1,
             "CONFIG_OLD_SIGACTION": 1, "CONFIG_ADVISE_SYSCALLS": 1,
             "__ARCH_WANT_SYS_CLONE": 1, "__ARCH_WANT_SYS_SOCKETCALL": 1,
             "__ARCH_WANT_SYS_FORK": 1, "__ARCH_WANT_SYS_VFORK": 1,
             "__ARCH_WANT_SYS_CLONE3": 1},
}
WORD_SIZE = {"x86_64": 8, "i386": 4}
ENTRY_ABIS = {"x86_64": ("common", "64"), "i386": ("i386",)}

# What strace prints for the kernel-internal restart codes (no libc has texts for them).
RESTART_MESSAGES = {
    "ERESTARTSYS": "To be restarted if SA_RESTART is set",
    "ERESTARTNOINTR": "To be restarted",
    "ERESTARTNOHAND": "To be restarted if no handler",
    "ERESTART_RESTARTBLOCK": "Interrupted by signal",
}


class Prototypes:
    """Parameter lists per entry symbol for one ABI, and where each call is defined."""

    def __init__(self, src: source.KernelSource, abi: str) -> None:
        config = CONFIG[abi]
        self.params: dict[str, list[cparse.Param]] = {}
        self.defined_in: dict[str, str] = {}
        files = [m for pattern in DEFINITION_FILES for m in src.matching(pattern)]
        for member in files:
            text = src.text(member)
            if "SYSCALL_DEFINE" not in text:
                continue
            for symbol, params in cparse.syscall_defines(cparse.preprocess(text, config)).items():
                self.params.setdefault(symbol, params)
            for symbol, params in cparse.syscall_defines(text).items():
                self.params.setdefault(symbol, params)
                self.defined_in.setdefault(symbol, member)
        header_protos: dict[str, list[cparse.Param]] = {}
        for member in HEADERS:
            text = src.text(member)
            for symbol, params in cparse.prototypes(cparse.preprocess(text, config)).items():
                header_protos.setdefault(symbol, params)
            for symbol, params in cparse.prototypes(cparse.strip_comments(text)).items():
                header_protos.setdefault(symbol, params)
        for symbol, params in header_protos.items():
            named = self.params.get(symbol)
            if named is None or (len(named) != len(params) and all(p.name for p in params)):
                self.params[symbol] = params
        for symbol in list(self.defined_in):
            # A compat entry is defined beside its native one.
            native = symbol.replace("compat_sys_", "sys_")
            self.defined_in.setdefault(native, self.defined_in[symbol])

    def lookup(self, symbols: list[str]) -> tuple[list[cparse.Param], str] | None:
        for symbol in symbols:
            if symbol in self.params:
                where = self.defined_in.get(symbol) or self.defined_in.get(symbols[0], "")
                return self.params[symbol], where
        return None


def parse_table(text: str, abi: str) -> list[tuple[int, str, list[str]]]:
    rows = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if fields[1] in ENTRY_ABIS[abi]:
            rows.append((int(fields[0]), fields[2], fields[3:]))
    return rows


def build_abi(src: source.KernelSource, abi: str) -> tuple[list[dict[str, object]], list[str]]:
    protos = Prototypes(src, abi)
    problems: list[str] = []
    calls: list[dict[str, object]] = []
    for nr, name, entries in parse_table(src.text(TABLES[abi]), abi):
        entry: dict[str, object] = {"nr": nr, "name": name}
        if abi == "x86_64":
            entry["entry"] = f"__x64_{entries[0]}" if entries else None
        else:
            entry["entry"] = f"__ia32_{entries[-1]}" if entries else None
            entry["entry_native"] = f"__ia32_{entries[0]}" if entries else None
        found = protos.lookup(entries) if entries else None
        if found is None:
            if entries:
                problems.append(f"{abi} {nr} {name}: no prototype for {entries}")
            params, where = [], ""
        else:
            params, where = found
        args = kinds.derive_args(name, abi, params)
        _USED_OVERRIDES.update((name, p.name) for p in params)
        _USED_OVERRIDES.update((name, f"#{i}") for i in range(len(params)))
        ret = kinds.return_kind(name)
        _EMITTED_ARGS.extend(args)
        _EMITTED_RETURNS.add(ret)
        entry.update({"args": args, "ret": ret,
                      "classes": kinds.classes(name, args, ret, where), "defined_in": where})
        calls.append(entry)
    return calls, problems


_USED_OVERRIDES: set[tuple[str, str]] = set()
_EMITTED_ARGS: list[dict[str, object]] = []
_EMITTED_RETURNS: set[str] = set()


def unused_overrides() -> list[str]:
    """Overrides naming a parameter no prototype has (a typo, or the kernel renamed it)."""
    return [f"override {call}.{name} matches no parameter"
            for call, names in kinds.OVERRIDES.items() for name in names
            if (call, name) not in _USED_OVERRIDES]


def socketcall_subcalls(src: source.KernelSource, groups: dict[str, dict[str, object]]
                        ) -> dict[str, dict[str, object]]:
    """i386 ``socketcall(call, args)``: the call each SYS_* number stands for, with its args."""
    protos = Prototypes(src, "i386")
    out: dict[str, dict[str, object]] = {}
    entries = groups["socketcall_call"]["entries"]
    assert isinstance(entries, list)
    for name, value in entries:
        call = name[len("SYS_"):].lower()
        found = protos.lookup([f"sys_{call}"])
        if found is None:
            raise SystemExit(f"socketcall: no prototype for sys_{call}")
        args = kinds.derive_args(call, "i386", found[0])
        _USED_OVERRIDES.update((call, p.name) for p in found[0])
        out[str(value)] = {"name": call, "args": args, "ret": kinds.return_kind(call)}
    return out


def errno_table(src: source.KernelSource) -> list[dict[str, object]]:
    table = []
    for number, name in xlat.errno_names(src):
        message = RESTART_MESSAGES.get(name, os.strerror(number))
        row: dict[str, object] = {"nr": number, "name": name, "message": message}
        if name in RESTART_MESSAGES:
            row["restart"] = True
        table.append(row)
    return table


def libc_version() -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libc6"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        out = "unknown"
    return f"{os.confstr('CS_GNU_LIBC_VERSION')} (Debian libc6 {out})"


def metadata(src: source.KernelSource, members: list[str], **extra: object) -> dict[str, object]:
    meta: dict[str, object] = {
        "generator": "tools/gen_syscall_tables.py",
        "source_package": src.package,
        "source_version": src.version,
        "source_deb": src.deb_name,
        "source_deb_sha256": src.deb_sha256,
        "source_members": members,
    }
    meta.update(extra)
    return meta


def write_json(path: Path, data: dict[str, object]) -> None:
    """JSON with one system call (or one constant group) per line: reviewable in diffs."""
    parts = []
    for key, value in data.items():
        if key == "metadata" or not isinstance(value, list | dict):
            text = json.dumps(value, indent=2).replace("\n", "\n ")
        elif isinstance(value, list):
            text = "[\n" + ",\n".join("  " + json.dumps(item) for item in value) + "\n ]"
        else:
            text = "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}"
                                      for k, v in value.items()) + "\n }"
        parts.append(f" {json.dumps(key)}: {text}")
    path.write_text("{\n" + ",\n".join(parts) + "\n}\n")


def generate(src: source.KernelSource, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    groups, numbers = xlat.build_all(src)
    all_problems = []
    for abi in TABLES:
        calls, problems = build_abi(src, abi)
        all_problems += problems
        data: dict[str, object] = {
            "metadata": metadata(src, [TABLES[abi]] + HEADERS + DEFINITION_FILES, abi=abi,
                                 word_size=WORD_SIZE[abi],
                                 kinds_from="tools/syscalls/kinds.py"),
            "syscalls": calls,
        }
        if abi == "i386":
            data["socketcall"] = socketcall_subcalls(src, groups)
        write_json(out_dir / f"{abi}.json", data)
    write_json(out_dir / "constants.json", {
        "metadata": metadata(src, xlat.CONSTANT_HEADERS, order="tools/syscalls/xlat.py"),
        "numbers": numbers,
        "groups": groups,
    })
    write_json(out_dir / "errno.json", {
        "metadata": metadata(
            src, ["include/uapi/asm-generic/errno-base.h", "include/uapi/asm-generic/errno.h",
                  "include/linux/errno.h"],
            messages_source=f"strerror() of {libc_version()} via Python os.strerror; "
                            "restart codes (>= 512): the texts strace 6.1 prints"),
        "errno": errno_table(src),
    })
    all_problems += unused_overrides()
    unknown = {str(a["kind"]) for a in _EMITTED_ARGS} - KINDS
    if unknown or not _EMITTED_RETURNS <= RETURN_KINDS:
        raise SystemExit(f"kinds without a decoder in xenhpt/syscalls/kinds.py: "
                         f"{sorted(unknown | (_EMITTED_RETURNS - RETURN_KINDS))}")
    for problem in all_problems:
        print("warning:", problem, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deb", type=Path, help="a downloaded linux-source-6.1 .deb")
    parser.add_argument("--tree", type=Path, help="an unpacked kernel tree (development)")
    parser.add_argument("--version", default="unknown", help="package version for --tree")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    if args.tree:
        src = source.load_tree(args.tree, MEMBERS, args.version)
    elif args.deb:
        src = source.load(args.deb, MEMBERS)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            deb = source.download(Path(tmp))
            src = source.load(deb, MEMBERS)
    generate(src, args.out)
    print(f"wrote {args.out} from {src.package} {src.version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
