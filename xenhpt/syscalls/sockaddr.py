"""Socket addresses as strace prints them.

``{sa_family=AF_INET, sin_port=htons(80), sin_addr=inet_addr("127.0.0.1")}``, the AF_INET6,
AF_UNIX (``sun_path="/run/x"``, abstract ``sun_path=@"name"``) and AF_NETLINK shapes, and for
other families the raw ``sa_data``. Layouts: ``linux/in.h``, ``linux/in6.h``, ``linux/un.h``,
``linux/netlink.h`` (the same for both ABIs).
"""

from __future__ import annotations

import socket
import struct

from .memory import ReadFn, read_bytes
from .render import escape, pointer, quote
from .xlat import Constants

SOCKADDR_STORAGE_SIZE = 128
_FAMILY = struct.Struct("<H")


def format_sockaddr(c: Constants, read: ReadFn, address: int, length: int) -> str:
    """The sockaddr at ``address`` of ``length`` bytes; the address itself if unreadable."""
    if address == 0:
        return "NULL"
    if length < _FAMILY.size:
        return pointer(address)
    data = read_bytes(read, address, min(length, SOCKADDR_STORAGE_SIZE))
    if data is None:
        return pointer(address)
    return format_sockaddr_bytes(c, data)


def format_sockaddr_bytes(c: Constants, data: bytes) -> str:
    (family,) = _FAMILY.unpack_from(data)
    n = c.numbers
    head = f"sa_family={c.values['sock_domain'].format(family)}"
    if family == n["AF_UNIX"]:
        return "{" + head + _unix(data) + "}"
    if family == n["AF_INET"] and len(data) >= 8:
        port, addr = struct.unpack_from(">H4s", data, 2)
        return (f"{{{head}, sin_port=htons({port}), "
                f'sin_addr=inet_addr("{socket.inet_ntop(socket.AF_INET, addr)}")}}')
    if family == n["AF_INET6"] and len(data) >= 24:
        port, flowinfo, addr = struct.unpack_from(">HI16s", data, 2)
        text = (f"{{{head}, sin6_port=htons({port}), sin6_flowinfo=htonl({flowinfo}), "
                f'inet_pton(AF_INET6, "{socket.inet_ntop(socket.AF_INET6, addr)}", '
                f"&sin6_addr)")
        if len(data) >= 28:
            text += f", sin6_scope_id={struct.unpack_from('<I', data, 24)[0]}"
        return text + "}"
    if family == n["AF_NETLINK"] and len(data) >= 12:
        pid, groups = struct.unpack_from("<II", data, 4)
        return f"{{{head}, nl_pid={pid}, nl_groups={groups:08x}}}"
    return f"{{{head}, sa_data={quote(data[2:])}}}"


def _unix(data: bytes) -> str:
    path = data[2:]
    if not path:
        return ""
    if path[0] == 0:
        return f', sun_path=@"{escape(path[1:])}"'
    end = path.find(b"\0")
    return f", sun_path={quote(path if end < 0 else path[:end])}"
