"""Profile loading, lookups, caching and banner search on small hand-written ISFs."""

from __future__ import annotations

import base64
import gzip
import json
import lzma
import os
from pathlib import Path
from typing import Any

import pytest

from xenhpt.errors import ProfileError
from xenhpt.profile import Profile, find_profile, write_profile
from xenhpt.profile import search as S

BANNER = "Linux version 6.1.0-test (x@y) #1 SMP\n"


def tiny_isf(banner: str = BANNER, banner_first: bool = True) -> dict[str, Any]:
    int_t = {"kind": "base", "name": "int"}
    banner_sym = {
        "type": {
            "kind": "array",
            "count": len(banner) + 1,
            "subtype": {"kind": "base", "name": "char"},
        },
        "address": 0xFFFFFFFF82000000,
        "constant_data": base64.b64encode(banner.encode() + b"\0").decode(),
    }
    symbols: dict[str, Any] = {
        "init_task": {"address": 0xFFFFFFFF82A1AA40},
        "signed_copy": {"address": -2130706432},  # LibVMI-style int64 storage
        "current_task": {"address": 0x1FB80},
    }
    symbols = (
        {"linux_banner": banner_sym, **symbols}
        if banner_first
        else {**symbols, "linux_banner": banner_sym}
    )
    return {
        "metadata": {"format": "6.2.0", "producer": {"name": "test", "version": "1"}},
        "base_types": {
            "int": {"size": 4, "signed": True, "kind": "int", "endian": "little"},
            "pointer": {"size": 8, "signed": False, "kind": "int", "endian": "little"},
        },
        "user_types": {
            "outer": {
                "kind": "struct",
                "size": 32,
                "fields": {
                    "first": {"type": int_t, "offset": 0},
                    "unnamed_field_8": {
                        "type": {"kind": "union", "name": "unnamed_1"},
                        "offset": 8,
                        "anonymous": True,
                    },
                    "inner": {"type": {"kind": "struct", "name": "inner"}, "offset": 16},
                },
            },
            "unnamed_1": {
                "kind": "union",
                "size": 8,
                "fields": {
                    "u_int": {"type": int_t, "offset": 0},
                    "unnamed_field_4": {
                        "type": {"kind": "struct", "name": "unnamed_2"},
                        "offset": 4,
                        "anonymous": True,
                    },
                },
            },
            "unnamed_2": {
                "kind": "struct",
                "size": 4,
                "fields": {"deep": {"type": int_t, "offset": 0}},
            },
            "inner": {"kind": "struct", "size": 16, "fields": {"x": {"type": int_t, "offset": 12}}},
        },
        "enums": {"color": {"size": 4, "base": "int", "constants": {"RED": 0, "BLUE": 7}}},
        "symbols": symbols,
    }


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Caches and the banner index go to a temporary directory, never the user's home."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "xenhpt"


@pytest.mark.parametrize("suffix", [".json", ".json.xz", ".json.gz"])
def test_profile_answers_symbols_offsets_sizes_and_banner(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"p{suffix}"
    write_profile(tiny_isf(), path)
    p = Profile.load(path)
    assert p.path == path
    assert p.symbol("init_task") == 0xFFFFFFFF82A1AA40
    assert p.symbol("signed_copy") == 0xFFFFFFFF81000000  # normalised to unsigned
    assert p.symbol("nope") is None and not p.has_symbol("nope") and p.has_symbol("current_task")
    assert p.offset("outer", "first") == 0
    assert p.offset("outer", "u_int") == 8  # lifted out of the anonymous union
    assert p.offset("outer", "deep") == 12  # two anonymous levels down
    assert p.offset("outer", "inner.x") == 28  # dotted path into an embedded struct
    assert p.field_type("outer", "inner") == {"kind": "struct", "name": "inner"}
    assert p.size("outer") == 32 and p.size("pointer") == 8
    assert p.has_field("outer", "deep") and not p.has_field("outer", "missing")
    assert not p.has_field("nostruct", "x")
    assert p.enum_constants("color") == {"RED": 0, "BLUE": 7}
    assert p.banner == BANNER.rstrip()


def test_missing_field_error_names_struct_and_field(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    write_profile(tiny_isf(), path)
    p = Profile.load(path)
    with pytest.raises(ProfileError, match=r"outer\.nothing"):
        p.offset("outer", "nothing")
    with pytest.raises(ProfileError, match="nostruct"):
        p.size("nostruct")


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"symbols": {}}', b""])
def test_broken_isf_files_raise_profile_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ProfileError):
        Profile.load(path)


def test_corrupt_compressed_isf_raises_profile_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json.xz"
    path.write_bytes(lzma.compress(b'{"a": 1}')[:-9])
    with pytest.raises(ProfileError):
        Profile.load(path)


def test_missing_profile_file_is_a_profile_error(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="not found"):
        Profile.load(tmp_path / "absent.json")


def test_compressed_isf_is_cached_and_cache_follows_changes(
    tmp_path: Path, private_cache: Path
) -> None:
    path = tmp_path / "p.json.gz"
    write_profile(tiny_isf(), path)
    Profile.load(path)
    cached = list((private_cache / "isf").iterdir())
    assert len(cached) == 1
    assert Profile.load(path).offset("outer", "deep") == 12  # served from the cache
    isf = tiny_isf()
    isf["user_types"]["unnamed_2"]["fields"]["deep"]["offset"] = 2
    path.write_bytes(gzip.compress(json.dumps(isf).encode()))
    os.utime(path, ns=(1, 1))  # a different mtime, whatever the clock resolution
    assert Profile.load(path).offset("outer", "deep") == 14
    assert len(list((private_cache / "isf").iterdir())) == 1  # replaced, not accumulated


def test_array_symbol_length_is_kept_and_survives_the_cache(
    tmp_path: Path, private_cache: Path
) -> None:
    isf = tiny_isf()
    isf["symbols"]["sys_call_table"] = {"address": 0x1000, "type": {
        "kind": "array", "count": 451, "subtype": {"kind": "pointer"}}}
    path = tmp_path / "p.json.gz"
    write_profile(isf, path)
    for _ in range(2):  # parsed, then served from the cache
        profile = Profile.load(path)
        assert profile.array_length("sys_call_table") == 451
        assert profile.array_length("init_task") is None  # not an array


def test_find_profile_matches_the_banner_among_several(tmp_path: Path, private_cache: Path) -> None:
    root = tmp_path / "profiles"
    write_profile(tiny_isf("Linux version 5.10.0-other #1\n"), root / "other.json")
    # dwarf2json-like: linux_banner late, its "type" before "constant_data"
    write_profile(tiny_isf(banner_first=False), root / "linux" / "wanted.json.xz")
    (root / "notes.txt").write_text("not an ISF")
    found = find_profile(BANNER.rstrip("\n"), [root])
    assert found == root / "linux" / "wanted.json.xz"
    assert find_profile(BANNER.encode() + b"\0", [root]) == found  # raw guest bytes work too
    assert find_profile("Linux version 9.9.9 #1", [root]) is None
    index = json.loads((private_cache / "profile-banners.json").read_text())
    assert len(index) == 2


def test_banner_split_across_read_chunks_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isf = tiny_isf(banner_first=False)
    isf["user_types"]["padding"] = {
        "kind": "struct",
        "size": 0,
        "fields": {
            f"f{i}": {"type": {"kind": "base", "name": "int"}, "offset": i} for i in range(500)
        },
    }
    path = tmp_path / "p.json"
    write_profile(isf, path)
    monkeypatch.setattr(S, "CHUNK", 97)  # force the entry to straddle reads
    assert S.read_isf_banner(path) == BANNER.rstrip()


def test_isf_without_banner_is_never_matched(tmp_path: Path) -> None:
    isf = tiny_isf()
    del isf["symbols"]["linux_banner"]
    write_profile(isf, tmp_path / "p.json")
    assert S.read_isf_banner(tmp_path / "p.json") is None
    assert find_profile(BANNER, [tmp_path]) is None


def test_default_search_path_honours_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XENHPT_PROFILE_PATH", f"{tmp_path}/a::{tmp_path}/b")
    dirs = S.default_search_path()
    assert dirs[:2] == [tmp_path / "a", tmp_path / "b"]
    assert dirs[2].name == "profiles" and dirs[3] == tmp_path / "cache" / "xenhpt" / "profiles"


def test_write_profile_refuses_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="must end"):
        write_profile(tiny_isf(), tmp_path / "p.txt")
