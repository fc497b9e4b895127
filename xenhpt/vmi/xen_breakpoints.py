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

from ..errors import XenhptError
from .xen_emulate import MAX_INSTRUCTION, InstructionForm, decode

INT3 = 0xCC
STATE_FORMAT = 1


class WritableMemory(Protocol):
    def read_physical(self, address: int, size: int) -> bytes: ...

    def write_physical(self, address: int, data: bytes) -> None: ...


@dataclass(frozen=True)
class Breakpoint:
    """One armed INT3: where (virtual and physical), what it displaced, how to execute it."""

    address: int
    physical: int
    code: bytes  # the original bytes from ``address`` (up to MAX_INSTRUCTION)
    form: InstructionForm

    @property
    def original(self) -> int:
        return self.code[0]


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

    def insert(self, address: int, physical: int, code: bytes) -> Breakpoint:
        """Arm ``address`` (at ``physical``) whose current bytes are ``code``.

        Decodes first, so an instruction we cannot execute is refused before a byte is
        written. Records the original byte on disk before writing 0xCC.
        """
        if address in self.armed:
            return self.armed[address]
        code = bytes(code[:MAX_INSTRUCTION])
        if code[:1] == bytes([INT3]):
            raise XenhptError(f"cannot trap {address:#x}: it already holds an INT3 "
                              "(a debugger inside the guest, or another VMI tool)")
        form = decode(code, address)
        breakpoint_ = Breakpoint(address, physical, code, form)
        self.armed[address] = breakpoint_
        self.retired.discard(address)
        self.save()
        self.memory.write_physical(physical, bytes([INT3]))
        return breakpoint_

    def remove(self, address: int) -> None:
        breakpoint_ = self.armed.pop(address, None)
        if breakpoint_ is None:
            return
        self.memory.write_physical(breakpoint_.physical, bytes([breakpoint_.original]))
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
        content = {"format": STATE_FORMAT, "domain": self.domain, "domid": self.domid,
                   "bytes": {f"{b.physical:#x}": b.original for b in self.armed.values()}}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(f".{self.state_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(content))
        os.replace(tmp, self.state_file)


def repair_leftovers(memory: WritableMemory, domid: int, state_file: Path) -> int:
    """Put back the bytes a killed tracer left in this domain; returns how many.

    A byte is written back only where the domain is the one the file was written for
    (same domid: a restarted domain has a new one and fresh memory) and the byte there
    is still 0xCC. The file is removed afterwards.
    """
    content = load_state(state_file)
    if content is None:
        return 0
    repaired = 0
    entries = content.get("bytes") if content.get("domid") == domid else None
    for key, original in (entries or {}).items():
        try:
            physical = int(key, 16)
        except (TypeError, ValueError):
            continue
        if not isinstance(original, int) or not 0 <= original <= 0xFF or original == INT3:
            continue
        if memory.read_physical(physical, 1) == bytes([INT3]):
            memory.write_physical(physical, bytes([original]))
            repaired += 1
    state_file.unlink(missing_ok=True)
    return repaired
