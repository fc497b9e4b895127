"""Sockets of a process: family, type, state and addresses, from its open files.

A socket descriptor's ``struct file`` has ``f_op == &socket_file_ops`` and
``private_data`` pointing at its ``struct socket``, whose ``sk`` is the protocol's
``struct sock`` (``sock_common`` first: family, state, IPv4 addresses and ports, IPv6
addresses). AF_UNIX sockets are ``unix_sock``s: their bound name is ``addr->name``
(a ``sockaddr_un`` of ``addr->len`` bytes; a leading NUL is an abstract name, shown as
``@name`` like ``ss`` does) and ``peer`` is the other end.

Families other than UNIX, INET and INET6 get their family, type and state only.
Everything read is bounded; an unreadable ``sock`` gives a row with what is known.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import MemoryReadError
from .files import OpenFile, ProcessFiles
from .kernel import Kernel
from .tasks import Task

AF_UNIX, AF_INET, AF_INET6 = 1, 2, 10
FAMILIES = {0: "AF_UNSPEC", 1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6", 16: "AF_NETLINK",
            17: "AF_PACKET", 40: "AF_VSOCK", 44: "AF_XDP"}
TYPES = {1: "STREAM", 2: "DGRAM", 3: "RAW", 4: "RDM", 5: "SEQPACKET", 6: "DCCP",
         10: "PACKET"}
TCP_STATES = ("", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2",
              "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING",
              "NEW_SYN_RECV")
SOCKET_STATES = ("FREE", "UNCONNECTED", "CONNECTING", "CONNECTED", "DISCONNECTING")
PROTOCOLS = {0: "IP", 1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 136: "UDPLITE",
             255: "RAW"}
SUN_PATH_MAX = 108


@dataclass(frozen=True)
class Socket:
    """One socket descriptor of a process. Addresses are text; unix paths are guest
    bytes (escape them). Ports are None where the family has none."""

    fd: int
    inode: int
    family: str
    type: str
    protocol: str
    state: str
    local: bytes = b""
    local_port: int | None = None
    remote: bytes = b""
    remote_port: int | None = None
    complete: bool = True


@dataclass(frozen=True)
class ProcessSockets:
    task: Task
    sockets: list[Socket]
    unreadable: str | None = None


class SocketReader:
    """Reads the ``struct sock`` behind a socket file through a kernel profile."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        p = kernel.profile
        self.f_op = p.offset("file", "f_op")
        self.private_data = p.offset("file", "private_data")
        self.socket_ops = kernel.symbol("socket_file_ops") \
            if kernel.has_symbol("socket_file_ops") else None
        self.socket_state = p.offset("socket", "state")
        self.socket_sk = p.offset("socket", "sk")
        self.off = {name: p.offset("sock_common", name) for name in (
            "skc_family", "skc_state", "skc_rcv_saddr", "skc_daddr", "skc_num", "skc_dport")}
        self.v6 = {name: p.offset("sock_common", name)
                   for name in ("skc_v6_rcv_saddr", "skc_v6_daddr")
                   if p.has_field("sock_common", name)}
        self.sk_type = p.offset("sock", "sk_type")
        self.sk_protocol = p.offset("sock", "sk_protocol")
        self.unix_addr = p.offset("unix_sock", "addr")
        self.unix_peer = p.offset("unix_sock", "peer")
        self.addr_len = p.offset("unix_address", "len")
        self.addr_name = p.offset("unix_address", "name")
        self.sun_path = p.offset("sockaddr_un", "sun_path")

    def socket(self, open_file: OpenFile) -> Socket | None:
        """The socket behind a descriptor, or None if it is not one."""
        k = self.kernel
        unknown = Socket(open_file.fd, open_file.inode, "?", "?", "", "?", complete=False)
        try:
            if self.socket_ops is not None and \
                    k.pointer(open_file.file + self.f_op) != self.socket_ops:
                return None
            if self.socket_ops is None and open_file.kind != "SOCK":
                return None
            sock_struct = k.pointer(open_file.file + self.private_data)
            state = k.u32(sock_struct + self.socket_state)
            sk = k.pointer(sock_struct + self.socket_sk)
            o = self.off
            family = struct.unpack("<H", k.read(sk + o["skc_family"], 2))[0]
            sk_state = k.read(sk + o["skc_state"], 1)[0]
            sk_type, protocol = struct.unpack("<HH", k.read(sk + self.sk_type, 2)
                                              + k.read(sk + self.sk_protocol, 2))
        except MemoryReadError:
            return unknown
        type_name = TYPES.get(sk_type, str(sk_type))
        if family in (AF_INET, AF_INET6, AF_UNIX) and sk_type == 1:  # streams: TCP states
            state_name = TCP_STATES[sk_state] if sk_state < len(TCP_STATES) else str(sk_state)
        else:
            state_name = SOCKET_STATES[state] if state < len(SOCKET_STATES) else str(state)
        base = {"fd": open_file.fd, "inode": open_file.inode,
                "family": FAMILIES.get(family, str(family)), "type": type_name,
                "state": state_name,
                "protocol": PROTOCOLS.get(protocol, str(protocol))
                if family in (AF_INET, AF_INET6) else ""}
        try:
            if family == AF_INET:
                return Socket(**base, **self._inet(sk))
            if family == AF_INET6 and self.v6:
                return Socket(**base, **self._inet6(sk))
            if family == AF_UNIX:
                return Socket(**base, local=self._unix_name(sk),
                              remote=self._unix_name(k.pointer(sk + self.unix_peer)))
        except MemoryReadError:
            return Socket(**base, complete=False)
        return Socket(**base)

    def _inet(self, sk: int) -> dict[str, object]:
        o, k = self.off, self.kernel
        return {"local": str(ipaddress.IPv4Address(k.read(sk + o["skc_rcv_saddr"], 4))).encode(),
                "local_port": struct.unpack("<H", k.read(sk + o["skc_num"], 2))[0],
                "remote": str(ipaddress.IPv4Address(k.read(sk + o["skc_daddr"], 4))).encode(),
                "remote_port": struct.unpack(">H", k.read(sk + o["skc_dport"], 2))[0]}

    def _inet6(self, sk: int) -> dict[str, object]:
        o, k = self.off, self.kernel
        return {"local": ipv6_text(k.read(sk + self.v6["skc_v6_rcv_saddr"], 16)),
                "local_port": struct.unpack("<H", k.read(sk + o["skc_num"], 2))[0],
                "remote": ipv6_text(k.read(sk + self.v6["skc_v6_daddr"], 16)),
                "remote_port": struct.unpack(">H", k.read(sk + o["skc_dport"], 2))[0]}

    def _unix_name(self, sk: int) -> bytes:
        """The bound name of a unix socket (b"" if unbound or no socket)."""
        if not sk:
            return b""
        k = self.kernel
        addr = k.pointer(sk + self.unix_addr)
        if not addr:
            return b""
        length = min(k.u32(addr + self.addr_len), 2 + SUN_PATH_MAX) - 2  # minus sun_family
        if length <= 0:
            return b""
        path = k.read(addr + self.addr_name + self.sun_path, length)
        if path[:1] == b"\0":
            return b"@" + path[1:]  # an abstract name
        return path.split(b"\0", 1)[0]


def ipv6_text(raw: bytes) -> bytes:
    """An IPv6 address as inet_ntop writes it (``::ffff:127.0.0.1`` for a mapped IPv4)."""
    address = ipaddress.IPv6Address(raw)
    if address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}".encode()
    return str(address).encode()


def process_sockets(reader: SocketReader, rows: Iterable[ProcessFiles]) -> list[ProcessSockets]:
    """The sockets among each process's open files."""
    out = []
    for row in rows:
        sockets = [s for s in (reader.socket(f) for f in row.files if f.file) if s is not None]
        out.append(ProcessSockets(row.task, sockets, row.unreadable))
    return out
