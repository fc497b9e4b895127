"""Where an instruction sequence branches to, for the forms inline hooks write.

A hook overwrites the first bytes of a function with a jump to its own code. The forms
decoded, in 64-bit code (long mode) and 32-bit code (protected mode), each after an
optional ``endbr64`` / ``endbr32``:

- both: ``jmp rel32`` (e9), ``call rel32`` (e8), ``jmp rel8`` (eb), ``push imm32; ret``
  (68 imm32 c3);
- 64-bit: ``movabs rax, imm64; jmp rax`` (48 b8 imm64 ff e0) and ``movabs r11, imm64;
  jmp r11`` (49 bb imm64 41 ff e3);
- 32-bit: ``mov r32, imm32; jmp r32`` or ``call r32`` (b8+r imm32 ff e0+r / ff d0+r).

Anything else is not a branch this recognises (None): the caller decides what that means.
"""

from __future__ import annotations

import struct

ENDBR = {8: b"\xf3\x0f\x1e\xfa", 4: b"\xf3\x0f\x1e\xfb"}  # endbr64, endbr32


def branch_target(code: bytes, address: int, word_size: int = 8) -> int | None:
    """Where the instruction(s) at the start of ``code`` (loaded at ``address``) jump or
    call to, in code of the kernel's word size (8: 64-bit, 4: 32-bit); None if none of the
    forms above."""
    mask = (1 << 8 * word_size) - 1
    at = 4 if code[:4] == ENDBR[word_size] else 0
    op = code[at]
    if op in (0xE8, 0xE9):
        return (address + at + 5 + struct.unpack_from("<i", code, at + 1)[0]) & mask
    if op == 0xEB:
        return (address + at + 2 + struct.unpack_from("<b", code, at + 1)[0]) & mask
    if op == 0x68 and code[at + 5] == 0xC3:
        return struct.unpack_from("<i", code, at + 1)[0] & mask
    if word_size == 8:
        if code[at : at + 2] in (b"\x48\xb8", b"\x49\xbb") and \
                code[at + 10 : at + 12] in (b"\xff\xe0", b"\x41\xff"):
            return struct.unpack_from("<Q", code, at + 2)[0]
    elif 0xB8 <= op <= 0xBF and code[at + 5] == 0xFF and \
            code[at + 6] in (0xE0 + op - 0xB8, 0xD0 + op - 0xB8):
        return struct.unpack_from("<I", code, at + 1)[0]
    return None
