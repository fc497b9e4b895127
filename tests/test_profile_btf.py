"""BTF parsing and BTF → ISF type translation on small hand-built BTF blobs."""

from __future__ import annotations

import random
import struct

import pytest

from xenhpt.errors import ProfileError
from xenhpt.profile import btf as B
from xenhpt.profile.isftypes import IsfTypeBuilder


class BtfWriter:
    """Assemble raw BTF the way pahole lays it out: header, types, strings."""

    def __init__(self) -> None:
        self.strings = bytearray(b"\0")
        self.types = bytearray()
        self.count = 0

    def s(self, name: str) -> int:
        if not name:
            return 0
        off = len(self.strings)
        self.strings += name.encode() + b"\0"
        return off

    def add(
        self,
        kind: int,
        name: str,
        size_or_type: int,
        vlen: int = 0,
        kflag: bool = False,
        trailer: bytes = b"",
    ) -> int:
        info = (kflag << 31) | (kind << 24) | vlen
        self.types += struct.pack("<III", self.s(name), info, size_or_type) + trailer
        self.count += 1
        return self.count

    def int_(self, name: str, size: int, signed: bool) -> int:
        enc = (B.INT_SIGNED if signed else 0) << 24
        return self.add(B.INT, name, size, trailer=struct.pack("<I", enc | size * 8))

    def struct_(
        self, name: str, size: int, members: list[tuple[str, int, int, int]], union: bool = False
    ) -> int:
        # members: (name, type id, bit offset, bitfield size); kind_flag encoding
        trailer = b"".join(
            struct.pack("<III", self.s(n), t, (bits << 24) | off) for n, t, off, bits in members
        )
        return self.add(B.UNION if union else B.STRUCT, name, size, len(members), True, trailer)

    def blob(self) -> bytes:
        header = struct.pack(
            "<HBBIIIII",
            B.BTF_MAGIC,
            1,
            0,
            24,
            0,
            len(self.types),
            len(self.types),
            len(self.strings),
        )
        return header + bytes(self.types) + bytes(self.strings)


def demo_btf() -> bytes:
    """struct demo { int a; unsigned int f1:3, f2:5; struct demo *next; char name[8];
    union { long x; u32 y; }; enum color c; void (*cb)(int); };"""
    w = BtfWriter()
    t_int = w.int_("int", 4, True)  # 1
    t_uint = w.int_("unsigned int", 4, False)  # 2
    t_char = w.int_("char", 1, True)  # 3
    t_long = w.int_("long int", 8, True)  # 4
    t_ulong = w.int_("long unsigned int", 8, False)  # 5
    t_u32 = w.add(B.TYPEDEF, "u32", t_uint)  # 6
    t_arr = w.add(B.ARRAY, "", 0, trailer=struct.pack("<III", t_char, t_int, 8))  # 7
    t_ptr = w.add(B.PTR, "", 9)  # 8 -> struct demo (9), declared before it as in real BTF
    t_union = 10
    t_demo = w.struct_(
        "demo",
        48,
        [
            ("a", t_int, 0, 0),
            ("f1", t_uint, 32, 3),
            ("f2", t_uint, 35, 5),
            ("next", t_ptr, 64, 0),
            ("name", t_arr, 128, 0),
            ("", t_union, 192, 0),
            ("c", 11, 256, 0),
            ("cb", 14, 320, 0),
        ],
    )  # 9
    assert t_demo == 9
    w.struct_("", 8, [("x", t_long, 0, 0), ("y", t_u32, 0, 0)], union=True)  # 10
    w.add(B.ENUM, "color", 4, 2, trailer=struct.pack("<IiIi", w.s("RED"), 0, w.s("BLUE"), 7))
    proto = w.add(B.FUNC_PROTO, "", 0, 1, trailer=struct.pack("<II", 0, t_int))  # 12
    w.add(B.CONST, "", proto)  # 13
    w.add(B.PTR, "", 13)  # 14
    w.add(
        B.DATASEC,
        ".data..percpu",
        8,
        1,
        trailer=struct.pack("<III", w.add(B.VAR, "cur", t_ptr, trailer=b"\0" * 4), 0x40, 8),
    )
    assert t_ulong == 5
    return w.blob()


def test_struct_with_bitfields_pointer_and_array_is_parsed() -> None:
    btf = B.parse_btf(demo_btf())
    demo = btf.types[9]
    assert demo is not None and demo.kind == B.STRUCT and demo.name == "demo"
    assert [(m.name, m.bit_offset, m.bit_size) for m in demo.members][:5] == [
        ("a", 0, 0),
        ("f1", 32, 3),
        ("f2", 35, 5),
        ("next", 64, 0),
        ("name", 128, 0),
    ]
    assert btf.types[7].array == (3, 8)
    assert btf.strip(6)[1].name == "unsigned int"
    assert btf.datasec(".data..percpu") == {"cur": (0x40, 8)}


def test_isf_fields_have_byte_offsets_bitfields_and_resolved_typedefs() -> None:
    b = IsfTypeBuilder(B.parse_btf(demo_btf()))
    fields = b.user_types()["demo"]["fields"]
    assert fields["a"] == {"type": {"kind": "base", "name": "int"}, "offset": 0}
    assert fields["f1"] == {
        "offset": 4,
        "type": {
            "kind": "bitfield",
            "bit_position": 0,
            "bit_length": 3,
            "type": {"kind": "base", "name": "unsigned int"},
        },
    }
    assert fields["f2"]["type"]["bit_position"] == 3 and fields["f2"]["offset"] == 4
    assert fields["next"] == {
        "type": {"kind": "pointer", "subtype": {"kind": "struct", "name": "demo"}},
        "offset": 8,
    }
    assert fields["name"]["type"] == {
        "kind": "array",
        "count": 8,
        "subtype": {"kind": "base", "name": "char"},
    }
    assert fields["c"]["type"] == {"kind": "enum", "name": "color"}
    assert fields["cb"]["type"] == {"kind": "pointer", "subtype": {"kind": "function"}}


def test_anonymous_union_gets_dwarf2json_style_names() -> None:
    b = IsfTypeBuilder(B.parse_btf(demo_btf()))
    types = b.user_types()
    anon = types["demo"]["fields"]["unnamed_field_18"]
    assert anon == {"type": {"kind": "union", "name": "unnamed_a"}, "offset": 24, "anonymous": True}
    assert types["unnamed_a"]["fields"]["y"]["type"] == {"kind": "base", "name": "unsigned int"}


def test_base_types_and_enums_are_complete() -> None:
    b = IsfTypeBuilder(B.parse_btf(demo_btf()))
    base = b.base_types()
    assert base["pointer"] == {"size": 8, "signed": False, "kind": "int", "endian": "little"}
    assert base["char"]["kind"] == "char" and base["int"]["signed"] is True
    assert b.enums(base)["color"] == {
        "size": 4,
        "base": "unsigned int",
        "constants": {"RED": 0, "BLUE": 7},
    }


def test_old_style_int_bitfield_encoding_is_understood() -> None:
    w = BtfWriter()
    bits = w.add(B.INT, "unsigned int", 4, trailer=struct.pack("<I", (2 << 16) | 4))
    w.add(B.STRUCT, "old", 4, 1, False, struct.pack("<III", w.s("v"), bits, 8))
    fields = IsfTypeBuilder(B.parse_btf(w.blob())).user_types()["old"]["fields"]
    assert fields["v"]["offset"] == 0
    assert fields["v"]["type"]["bit_position"] == 10 and fields["v"]["type"]["bit_length"] == 4


@pytest.mark.parametrize("damage", ["magic", "truncated", "kind", "strings", "header"])
def test_corrupt_btf_raises_profile_error(damage: str) -> None:
    blob = bytearray(demo_btf())
    if damage == "magic":
        blob[0] ^= 0xFF
    elif damage == "truncated":
        blob = blob[:100]
    elif damage == "kind":
        blob[24 + 7] = 0x1F  # first type's kind byte → 31, unknown
    elif damage == "strings":
        blob[24:28] = struct.pack("<I", 1 << 30)  # name offset far outside the strings
    elif damage == "header":
        blob[12:16] = struct.pack("<I", 1 << 31)  # type_len beyond the data
    with pytest.raises(ProfileError):
        B.parse_btf(bytes(blob))


def test_typedef_cycle_is_reported_not_followed_forever() -> None:
    w = BtfWriter()
    w.add(B.TYPEDEF, "a", 2)
    w.add(B.TYPEDEF, "b", 1)
    w.struct_("s", 4, [("x", 1, 0, 0)])
    b = IsfTypeBuilder(B.parse_btf(w.blob()))
    with pytest.raises(ProfileError):
        b.user_types()


def test_dangling_type_reference_is_a_profile_error() -> None:
    w = BtfWriter()
    w.struct_("s", 4, [("x", 99, 0, 0)])
    with pytest.raises(ProfileError, match="99"):
        IsfTypeBuilder(B.parse_btf(w.blob())).user_types()


def test_random_damage_never_escapes_as_another_exception() -> None:
    rng = random.Random(1234)
    good = demo_btf()
    for _ in range(300):
        blob = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        blob = blob[: rng.randrange(len(blob) + 1)] if rng.random() < 0.3 else blob
        try:
            b = IsfTypeBuilder(B.parse_btf(bytes(blob)))
            base = b.base_types()
            b.user_types()
            b.enums(base)
        except ProfileError:
            pass
