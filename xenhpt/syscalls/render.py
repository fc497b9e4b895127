"""strace's ways of printing numbers and guest bytes.

Strings are quoted C literals. Printable ASCII stays as it is, except ``"`` and ``\\``;
``\\t \\n \\v \\f \\r`` use their letters; every other byte is an octal escape, as short as
possible (``\\0``, ``\\33``, ``\\177``) unless the next character is an octal digit, when it
takes three digits (``\\0001``) so the text reads back unambiguously. So an ANSI escape
sequence from the guest prints as ``\\33[31m``, never raw. ``quote_hex`` prints every byte as
``\\xNN`` (strace does this for random data, e.g. getrandom). A string cut at the ``-s`` limit
gets ``...`` after its closing quote.
"""

from __future__ import annotations

import re

_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0B: "\\v", 0x0C: "\\f", 0x0D: "\\r", 0x22: '\\"',
          0x5C: "\\\\"}
_SHORT = [_NAMED.get(b) or (chr(b) if 0x20 <= b < 0x7F else f"\\{b:o}") for b in range(256)]
_LONG = [_NAMED.get(b) or (chr(b) if 0x20 <= b < 0x7F else f"\\{b:03o}") for b in range(256)]
_NEEDS_ESCAPE = re.compile(rb'[^\x20-\x7e]|["\\]')
_OCTAL_DIGITS = frozenset(b"01234567")


def escape(data: bytes) -> str:
    """The C-escaped text of ``data`` (no quotes)."""
    if not _NEEDS_ESCAPE.search(data):
        return data.decode("ascii")
    out = []
    last = len(data) - 1
    for i, byte in enumerate(data):
        if i < last and data[i + 1] in _OCTAL_DIGITS:
            out.append(_LONG[byte])
        else:
            out.append(_SHORT[byte])
    return "".join(out)


def quote(data: bytes, truncated: bool = False) -> str:
    """``"text"``, followed by ``...`` when the guest's string went on past what we show."""
    return f'"{escape(data)}"...' if truncated else f'"{escape(data)}"'


def quote_hex(data: bytes, truncated: bool = False) -> str:
    text = '"' + "".join(f"\\x{b:02x}" for b in data) + '"'
    return text + "..." if truncated else text


def hex_or_zero(value: int) -> str:
    """C's ``%#x``: ``0x1f``, but plain ``0`` for zero."""
    return f"{value:#x}" if value else "0"


def pointer(value: int) -> str:
    """An address: ``NULL`` or ``0x7ffd1234``."""
    return f"{value:#x}" if value else "NULL"


def octal(value: int) -> str:
    """C's ``%#03o``: ``0644``, ``022``, ``000``."""
    return (f"0{value:o}" if value else "0").rjust(3, "0")


def signed(value: int, bits: int) -> int:
    """``value`` (a raw register) read as a signed ``bits``-bit integer."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def format_call(name: str, arg_texts: list[str] | tuple[str, ...]) -> str:
    """``name(arg, arg, ...)``."""
    return f"{name}({', '.join(arg_texts)})"


def align_result(call_text: str, ret_text: str) -> str:
    """strace's line: the ``=`` goes in column 40 unless the call text is longer."""
    return f"{call_text:<39} = {ret_text}"
