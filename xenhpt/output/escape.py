"""Guest text is data: make it safe before it reaches a terminal.

Process names, paths and buffers are chosen by the guest (or by malware in it).
Printed raw they could move the cursor, rewrite earlier lines or change the
terminal's title; so every byte outside printable ASCII is shown as an escape,
the way strace does.

This is the one encoding of guest bytes in every output of xenhpt: trace lines and their
JSON, process events, ``ps``/``pstree``/``process_trace`` in text and JSON. It is
reversible (a backslash is itself escaped) and plain ASCII, so a JSON consumer gets the
same characters a terminal shows (docs/tracing.md, "Guest text").
"""

from __future__ import annotations

_SIMPLE = {0x07: "\\a", 0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0B: "\\v", 0x0C: "\\f",
           0x0D: "\\r", 0x22: '\\"', 0x5C: "\\\\"}


def escape_bytes(data: bytes, quote: bool = True) -> str:
    """C-style escapes for everything but printable ASCII (``"`` only escaped when quoting)."""
    out = []
    for byte in data:
        if byte == 0x22 and not quote:
            out.append('"')
        elif byte in _SIMPLE:
            out.append(_SIMPLE[byte])
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def escape_text(text: str | bytes) -> str:
    """Escape a guest string for a one-line display (no surrounding quotes)."""
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogateescape")
    return escape_bytes(text, quote=False)
