"""x86 interrupt descriptor table gates: where each vector leads.

A gate is 16 bytes in long mode and 8 in protected mode (Intel SDM vol. 3A, 6.11 and
6.14.1). Both start alike: the handler's offset bits 0-15 in bytes 0-1, the code segment
selector in bytes 2-3, the type and present bit in byte 5, offset bits 16-31 in bytes 6-7;
a long-mode gate adds offset bits 32-63 in bytes 8-11. A task gate (protected mode only)
has no offset: it switches to the TSS its selector names.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# the kernel's word size (4: protected mode, 8: long mode) -> bytes per gate
GATE_SIZES = {4: 8, 8: 16}
TASK_GATE = 0x5  # the type of a task gate; 0xE and 0xF are interrupt and trap gates


@dataclass(frozen=True)
class Gate:
    """One IDT entry."""

    handler: int  # the offset the gate jumps to (0 for a task gate)
    selector: int  # the handler's code segment, or a task gate's TSS
    gate_type: int
    present: bool

    @property
    def is_task_gate(self) -> bool:
        return self.gate_type == TASK_GATE


def gate_size(word_size: int) -> int:
    """Bytes per IDT gate for a kernel whose words are ``word_size`` bytes."""
    return GATE_SIZES[word_size]


def decode_gate(raw: bytes, word_size: int) -> Gate:
    """The gate in the first :func:`gate_size` bytes of ``raw``."""
    low, selector, _ist, attributes, middle = struct.unpack_from("<HHBBH", raw)
    high = struct.unpack_from("<I", raw, 8)[0] if word_size == 8 else 0
    gate_type = attributes & 0xF
    handler = 0 if gate_type == TASK_GATE else low | middle << 16 | high << 32
    return Gate(handler, selector, gate_type, bool(attributes & 0x80))
