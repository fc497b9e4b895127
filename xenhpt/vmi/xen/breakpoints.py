"""INT3 breakpoints in a live Xen guest's memory, and the bytes they displaced.

Every breakpoint is one 0xCC byte written over guest-physical memory (kernel text is
shared by every address space, so one byte traps every process). The original byte is
kept here and in a small state file, ``~/.cache/xenhpt/xen/<domain>.json``, rewritten
before each byte is changed, so that a tracer killed with SIGKILL (or a crashed Dom0
tool) leaves a record the next run uses to put the guest's code back
(:func:`repair_leftovers`).

Only memory access goes through the ``memory`` object (``read_physical`` /
``write_physical``), so everything here is testable without Xen.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ...errors import XenhptError
from ..x86.emulate import MAX_INSTRUCTION, InstructionForm, UnsupportedInstruction, decode

# Forms that leave the straight line: allowed only as the last displaced instruction.
_BRANCHES = ("call rel32", "jmp rel32", "jmp rel8")

INT3 = 0xCC
STATE_FORMAT = 1
# What a trap writes over the code: the INT3 byte, or ``sldt %eax`` (0f 00 c0), a
# descriptor-table read that Xen reports as a DESCRIPTOR_ACCESS monitor event. The latter
# is for hosts that never report INT3 to the monitor (QEMU TCG's nested SVM raises INT3
# without checking the #BP intercept: docs/xen.md, "The Xen lab").
TRAP_PATCHES = {"int3": bytes([INT3]), "sldt": bytes.fromhex("0f00c0")}


class WritableMemory(Protocol):
    def read_physical(self, address: int, size: int) -> bytes: ...

    def write_physical(self, address: int, data: bytes) -> None: ...


@dataclass(frozen=True)
class Step:
    """One displaced instruction: where it starts, its form and its bytes."""

    address: int
    form: InstructionForm
    code: bytes


@dataclass(frozen=True)
class Breakpoint:
    """One armed trap: where (virtual and physical), what it displaced, how to execute it.

    ``patch`` is what was written at ``physical`` (one INT3 byte, or the 3-byte
    ``sldt``); ``steps`` are the whole instructions it covers, executed in order by the
    tracer (one for INT3; a 1-byte ``push`` needs the next instruction too for ``sldt``).
    """

    address: int
    physical: int
    code: bytes  # the original bytes from ``address`` (up to MAX_INSTRUCTION)
    form: InstructionForm  # the first displaced instruction
    patch: bytes = bytes([INT3])
    steps: tuple[Step, ...] = ()

    @property
    def original(self) -> int:
        return self.code[0]

    @property
    def originals(self) -> bytes:
        return self.code[:len(self.patch)]


def displaced_steps(code: bytes, address: int, size: int) -> tuple[Step, ...]:
    """The whole instructions from ``address`` covering at least ``size`` bytes.

    Raises :class:`UnsupportedInstruction` for an instruction the emulator lacks, or a
    branch before the last one (the tracer could not go on to the next).
    """
    steps: list[Step] = []
    offset = 0
    while offset < size:
        rest = code[offset:]
        form = decode(rest, address + offset)
        length = form.length_of(rest)
        assert length is not None
        if steps and steps[-1].form.name in _BRANCHES:
            raise UnsupportedInstruction(
                f"cannot trap {address:#x}: its first instruction ({steps[-1].form.name}) "
                f"is shorter than the {size}-byte trap and leaves the straight line")
        steps.append(Step(address + offset, form, bytes(rest[:length])))
        offset += length
    return tuple(steps)


def default_state_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xenhpt" / "xen"


def state_path(domain: str, directory: Path | None = None) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in domain) or "_"
    return (directory or default_state_dir()) / f"{safe}.json"


def load_state(path: Path) -> dict | None:
    """The state file's content, or None if there is none (or it is unreadable junk)."""
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # present but unusable: nothing we can trust to write back
    return content if isinstance(content, dict) else {}


class BreakpointBook:
    """The breakpoints armed in one domain, mirrored to its state file."""

    def __init__(self, memory: WritableMemory, domain: str, domid: int,
                 state_file: Path) -> None:
        self.memory = memory
        self.domain = domain
        self.domid = domid
        self.state_file = state_file
        self.armed: dict[int, Breakpoint] = {}  # virtual address -> breakpoint
        # Addresses whose byte we restored: an INT3 event still queued for one of them
        # must re-execute the (now original) instruction, not go to the guest.
        self.retired: set[int] = set()

    def insert(self, address: int, physical: int, code: bytes,
               patch: bytes = bytes([INT3])) -> Breakpoint:
        """Arm ``address`` (at ``physical``) whose current bytes are ``code``.

        Decodes first, so an instruction we cannot execute is refused before a byte is
        written. Records the original bytes on disk before writing ``patch``.
        """
        if address in self.armed:
            return self.armed[address]
        code = bytes(code[:MAX_INSTRUCTION])
        if code[:1] == bytes([INT3]) or (len(patch) > 1 and code.startswith(patch)):
            raise XenhptError(f"cannot trap {address:#x}: it already holds an INT3 "
                              "(a debugger inside the guest, or another VMI tool)")
        if (physical & 0xFFF) + len(patch) > 0x1000:
            raise XenhptError(f"cannot trap {address:#x}: the {len(patch)}-byte trap "
                              "would cross a page boundary")
        steps = displaced_steps(code, address, len(patch))
        breakpoint_ = Breakpoint(address, physical, code, steps[0].form, bytes(patch), steps)
        self.armed[address] = breakpoint_
        self.retired.discard(address)
        self.save()
        self.memory.write_physical(physical, breakpoint_.patch)
        return breakpoint_

    def remove(self, address: int) -> None:
        breakpoint_ = self.armed.pop(address, None)
        if breakpoint_ is None:
            return
        self.memory.write_physical(breakpoint_.physical, breakpoint_.originals)
        self.retired.add(address)
        self.save()

    def restore_all(self) -> list[str]:
        """Put every original byte back; returns a line per byte that could not be."""
        failures = []
        for address in list(self.armed):
            try:
                self.remove(address)
            except XenhptError as exc:
                failures.append(f"{address:#x}: {exc}")
        if not failures:
            self.state_file.unlink(missing_ok=True)
        return failures

    def save(self) -> None:
        originals: dict[str, int] = {}
        patched: dict[str, int] = {}
        for b in self.armed.values():
            for i, (was, now) in enumerate(zip(b.originals, b.patch, strict=True)):
                originals[f"{b.physical + i:#x}"] = was
                if now != INT3:
                    patched[f"{b.physical + i:#x}"] = now
        content = {"format": STATE_FORMAT, "domain": self.domain, "domid": self.domid,
                   "bytes": originals}
        if patched:  # bytes that hold something other than INT3 (the sldt trap)
            content["patched"] = patched
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(f".{self.state_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(content))
        os.replace(tmp, self.state_file)


def repair_leftovers(memory: WritableMemory, domid: int, state_file: Path) -> int:
    """Put back the bytes a killed tracer left in this domain; returns how many.

    A byte is written back only where the domain is the one the file was written for
    (same domid: a restarted domain has a new one and fresh memory) and the byte there
    is still the one the tracer wrote (0xCC, or what ``patched`` says). The file is
    removed afterwards.
    """
    content = load_state(state_file)
    if content is None:
        return 0
    repaired = 0
    entries = content.get("bytes") if content.get("domid") == domid else None
    patched = content.get("patched")
    patched = patched if isinstance(patched, dict) else {}
    for key, original in (entries or {}).items():
        try:
            physical = int(key, 16)
        except (TypeError, ValueError):
            continue
        written = patched.get(key, INT3)
        if not isinstance(original, int) or not 0 <= original <= 0xFF or original == written:
            continue
        if not isinstance(written, int) or not 0 <= written <= 0xFF:
            continue
        if memory.read_physical(physical, 1) == bytes([written]):
            memory.write_physical(physical, bytes([original]))
            repaired += 1
    state_file.unlink(missing_ok=True)
    return repaired
