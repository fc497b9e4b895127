"""Translate BTF types into the type sections of a Volatility 3 ISF.

The output follows what dwarf2json writes for a Linux kernel, so Volatility (and LibVMI's
``volatility_ist``) read it like any other ISF:

- ``base_types``: every BTF INT/FLOAT by its C name, plus ``pointer`` and ``void``.
- ``user_types``: every struct and union, field offsets in bytes. Anonymous aggregates are
  named ``unnamed_<btf id in hex>``; an anonymous member is ``unnamed_field_<offset>`` with
  ``"anonymous": true`` (ISF 6.2), which Volatility flattens into the parent.
- ``enums``: every enum with its constants and an integer base type of the same size.
- type descriptors: typedefs and qualifiers are resolved away; function pointers become
  ``{"kind": "pointer", "subtype": {"kind": "function"}}``; bitfields become
  ``{"kind": "bitfield", "bit_position", "bit_length", "type"}`` where, as Volatility reads
  them, ``offset`` is the byte offset of a storage unit of the base type's size and
  ``bit_position`` counts from that unit's least significant bit.
"""

from __future__ import annotations

from typing import Any

from xenhpt.errors import ProfileError
from xenhpt.profile import btf as B

Descriptor = dict[str, Any]
VOID: Descriptor = {"kind": "base", "name": "void"}
FUNCTION: Descriptor = {"kind": "function"}


class IsfTypeBuilder:
    """Build ISF type sections and descriptors from one parsed :class:`btf.Btf`."""

    def __init__(self, btf: B.Btf, endian: str = "little") -> None:
        self.btf = btf
        self.endian = endian
        self._desc: dict[int, Descriptor] = {}
        self._busy: set[int] = set()
        self.duplicates: list[str] = []  # struct/union/enum names defined more than once
        ulong = next(
            (t for t in btf.types if t and t.kind == B.INT and t.name == "long unsigned int"), None
        )
        self.pointer_size = ulong.size if ulong else 8

    # -- names ---------------------------------------------------------------------------
    @staticmethod
    def type_name(type_id: int, t: B.BtfType) -> str:
        """ISF name of a struct/union/enum: its C tag, or ``unnamed_<id>`` if anonymous."""
        return t.name or f"unnamed_{type_id:x}"

    # -- descriptors ---------------------------------------------------------------------
    def descriptor(self, type_id: int) -> Descriptor:
        """The ISF type descriptor of BTF type ``type_id`` (typedefs/qualifiers resolved)."""
        cached = self._desc.get(type_id)
        if cached is not None:
            return cached
        if type_id in self._busy or len(self._busy) > 4 * B.MAX_CHAIN:
            raise ProfileError(f"BTF: type id {type_id} refers to itself (corrupt BTF)")
        self._busy.add(type_id)
        try:
            desc = self._make_descriptor(type_id)
        finally:
            self._busy.discard(type_id)
        self._desc[type_id] = desc
        return desc

    def _make_descriptor(self, type_id: int) -> Descriptor:
        t = self.btf.get(type_id)
        if t is None:
            return VOID
        k = t.kind
        if k in (B.INT, B.FLOAT):
            return {"kind": "base", "name": t.name}
        if k == B.PTR:
            return {"kind": "pointer", "subtype": self.descriptor(t.ref)}
        if k == B.ARRAY:
            elem, count = t.array
            return {"kind": "array", "count": count, "subtype": self.descriptor(elem)}
        if k in (B.STRUCT, B.UNION):
            return {
                "kind": "struct" if k == B.STRUCT else "union",
                "name": self.type_name(type_id, t),
            }
        if k == B.FWD:  # declared only; the definition may exist under the same name
            return {"kind": "union" if t.kind_flag else "struct", "name": t.name}
        if k in (B.ENUM, B.ENUM64):
            return {"kind": "enum", "name": self.type_name(type_id, t)}
        if k in B.QUALIFIERS or k == B.VAR:
            return self.descriptor(t.ref)
        if k in (B.FUNC, B.FUNC_PROTO):
            return FUNCTION
        return VOID  # DATASEC, DECL_TAG: not data types

    # -- sections ------------------------------------------------------------------------
    def base_types(self) -> dict[str, Descriptor]:
        out: dict[str, Descriptor] = {
            "void": {"size": 0, "signed": False, "kind": "void", "endian": self.endian},
            "pointer": {
                "size": self.pointer_size,
                "signed": False,
                "kind": "int",
                "endian": self.endian,
            },
        }
        for t in self.btf.types:
            if t is None or not t.name or t.name in out:
                continue
            if t.kind == B.INT:
                if t.int_encoding & B.INT_BOOL:
                    kind = "bool"
                elif t.size == 1 and (t.int_encoding & B.INT_CHAR or "char" in t.name):
                    kind = "char"
                else:
                    kind = "int"
                signed = bool(t.int_encoding & B.INT_SIGNED)
            elif t.kind == B.FLOAT:
                kind, signed = "float", True
            else:
                continue
            out[t.name] = {"size": t.size, "signed": signed, "kind": kind, "endian": self.endian}
        return dict(sorted(out.items()))

    def user_types(self) -> dict[str, Descriptor]:
        out: dict[str, Descriptor] = {}
        for type_id, t in enumerate(self.btf.types):
            if t is None or t.kind not in (B.STRUCT, B.UNION):
                continue
            name = self.type_name(type_id, t)
            if name in out:
                self.duplicates.append(name)
                if out[name]["fields"] or not t.members:
                    continue  # first full definition wins, as nothing can tell them apart
            out[name] = {
                "kind": "struct" if t.kind == B.STRUCT else "union",
                "size": t.size,
                "fields": self._fields(t),
            }
        return dict(sorted(out.items()))

    def _fields(self, t: B.BtfType) -> dict[str, Descriptor]:
        fields: dict[str, Descriptor] = {}
        for m in t.members:
            sid, st = self.btf.strip(m.type_id)
            name = m.name
            entry: Descriptor
            bit_size, bit_offset = m.bit_size, m.bit_offset
            if (
                not bit_size
                and st is not None
                and st.kind == B.INT
                and (st.int_offset or st.int_bits != 8 * st.size)
            ):  # pre-kind_flag BTF encodes bitfields in the INT type itself
                bit_size, bit_offset = st.int_bits, bit_offset + st.int_offset
            if bit_size:
                entry = self._bitfield(sid, st, bit_offset, bit_size, t)
            else:
                entry = {"type": self.descriptor(m.type_id), "offset": bit_offset // 8}
            if not name:
                if st is None or st.kind not in (B.STRUCT, B.UNION):
                    continue  # unnamed padding bitfield: nothing to look up
                name = f"unnamed_field_{bit_offset // 8:x}"
                entry["anonymous"] = True
                base, n = name, 1
                while name in fields:  # several anonymous members at one offset (unions)
                    name, n = f"{base}_{n}", n + 1
            fields[name] = entry
        return fields

    def _bitfield(
        self, sid: int, st: B.BtfType | None, bit_offset: int, bit_size: int, parent: B.BtfType
    ) -> Descriptor:
        if st is None or st.kind not in (B.INT, B.ENUM, B.ENUM64) or st.size <= 0:
            raise ProfileError(f"BTF: bitfield of non-integer type in {parent.name or 'anonymous'}")
        unit = st.size
        byte_off = (bit_offset // (8 * unit)) * unit  # the naturally aligned storage unit
        pos = bit_offset - 8 * byte_off
        if pos + bit_size > 8 * unit:  # packed structs: start at the byte holding bit 0
            byte_off, pos = bit_offset // 8, bit_offset % 8
        base = self.descriptor(sid)
        return {
            "type": {"kind": "bitfield", "bit_position": pos, "bit_length": bit_size, "type": base},
            "offset": byte_off,
        }

    def enums(self, base_types: dict[str, Descriptor]) -> dict[str, Descriptor]:
        out: dict[str, Descriptor] = {}
        for type_id, t in enumerate(self.btf.types):
            if t is None or t.kind not in (B.ENUM, B.ENUM64):
                continue
            name = self.type_name(type_id, t)
            if name in out:
                self.duplicates.append(name)
                if out[name]["constants"] or not t.enumerators:
                    continue
            signed = t.kind_flag or any(v < 0 for _, v in t.enumerators)
            out[name] = {
                "size": t.size,
                "base": _enum_base(base_types, t.size, signed),
                "constants": dict(t.enumerators),
            }
        return dict(sorted(out.items()))


def _enum_base(base_types: dict[str, Descriptor], size: int, signed: bool) -> str:
    # Like dwarf2json: the first (by name) integer base type of that size and signedness;
    # small enums (1 byte) fall back to a char type, and signedness last of all.
    for kinds, want_signed in (
        ({"int"}, signed),
        ({"int", "char"}, signed),
        ({"int", "char"}, None),
    ):
        for name, bt in base_types.items():
            if bt["kind"] in kinds and bt["size"] == size and want_signed in (None, bt["signed"]):
                return name
    return "void"
