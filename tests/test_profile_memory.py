"""Profiles from guest memory alone: no kernel file on the host, only the guest.

On the lab guest (live, and its raw and ELF snapshots) the ISF built from memory must
equal the one ``profile build --kernel`` makes from the image the lab booted: same types,
same symbol addresses, same banner bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from xenhpt.errors import ProfileError
from xenhpt.lab import machine
from xenhpt.linux.kernel import profile_from_memory
from xenhpt.profile import build_profile
from xenhpt.profile import guest_memory as gm
from xenhpt.vmi.qemu.target import QemuTarget
from xenhpt.vmi.snapshot.target import open_snapshot

from .conftest import XENHPT, lab_kernel, run_xenhpt

# --- without a guest ------------------------------------------------------------------------


def test_the_kaslr_slide_is_taken_out_of_image_addresses_only() -> None:
    assert gm._slide(gm.LINK_TEXT + 0x40_0000) == 0x40_0000
    assert gm._slide(gm.LINK_TEXT + 0x12_3000) == 0  # not a 2 MiB step: no slide known

    class Table:
        def symbols(self) -> dict[str, int]:
            return {"_text": gm.LINK_TEXT + 0x40_0000, "current_task": 0x1FB80}

    assert gm._link_time(Table(), 0x40_0000) == {"_text": gm.LINK_TEXT,
                                                 "current_task": 0x1FB80}  # per-CPU: kept


def test_profiles_built_from_memory_are_cached_under_the_whole_banner() -> None:
    one = gm.cache_name("Linux version 9.9.0-1-test-amd64 (x@y) (gcc) #1 SMP Debian 1")
    other = gm.cache_name("Linux version 9.9.0-1-test-amd64 (x@y) (gcc) #1 SMP Debian 2")
    assert one.startswith("9.9.0-1-test-amd64-") and one != other
    assert "/" not in gm.cache_name("Linux version ../../etc (x) #1\n")


def test_the_largest_well_formed_btf_blob_is_taken() -> None:
    def blob(types: int, strings: int) -> bytes:
        header = b"\x9f\xeb\x01\x00" + (24).to_bytes(4, "little")
        header += b"".join(n.to_bytes(4, "little") for n in (0, types, types, strings))
        return header + bytes(types + strings)

    small, large = blob(16, 8), blob(4096, 512)
    torn = large[:100]  # its lengths run past the memory
    assert gm._find_btf(b"junk" + small + b"x" * 64 + large + torn) == large
    assert gm._find_btf(b"no blob here") is None


# --- on the lab guest --------------------------------------------------------------------------


def _image_profile() -> dict[str, Any]:
    return build_profile(kernel=lab_kernel().image)


def _same_profile(built: dict[str, Any], reference: dict[str, Any]) -> None:
    for key in ("base_types", "user_types", "enums"):
        assert built[key] == reference[key], key
    differ = {name for name in set(built["symbols"]) | set(reference["symbols"])
              if built["symbols"].get(name) != reference["symbols"].get(name)}
    assert not differ, sorted(differ)[:10]


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return _image_profile()


@pytest.fixture(scope="module")
def snapshot_files(lab: machine.LabState, tmp_path_factory: pytest.TempPathFactory
                   ) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("memory-profile")
    raw, elf = directory / "guest.raw", directory / "guest.elf"
    machine.snapshot(raw)
    machine.snapshot(elf)
    return raw, elf


@pytest.mark.lab
def test_a_profile_from_live_memory_equals_the_image_profile(
        lab: machine.LabState, reference: dict[str, Any]) -> None:
    target = QemuTarget("127.0.0.1", lab.gdb_port, ram_file=Path(lab.ram_file))
    try:
        target.pause()
        built = profile_from_memory(target)
    finally:
        target.close()
    _same_profile(built, reference)


@pytest.mark.lab
@pytest.mark.parametrize("kind", ["raw", "elf"])
def test_a_profile_from_a_snapshot_equals_the_image_profile_and_lists_its_processes(
        snapshot_files: tuple[Path, Path], reference: dict[str, Any], tmp_path: Path,
        kind: str) -> None:
    snapshot = snapshot_files[0] if kind == "raw" else snapshot_files[1]
    out = tmp_path / "from-memory.json"
    run_xenhpt("profile", "build", "--from", str(snapshot), "-o", str(out))
    _same_profile(json.loads(out.read_text()), reference)
    with_it = run_xenhpt("ps", str(snapshot), "--profile", str(out), "--json").stdout
    with_lab = run_xenhpt("ps", str(snapshot), "--json").stdout  # the lab's own profile
    assert with_it == with_lab and len(with_it.splitlines()) > 10


@pytest.mark.lab
def test_with_no_matching_profile_one_is_built_said_once_and_cached(
        snapshot_files: tuple[Path, Path], tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "XENHPT_PROFILE_PATH": str(tmp_path / "none")}
    first = subprocess.run([XENHPT, "ps", str(snapshot_files[0])], capture_output=True,
                           text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    notices = [line for line in first.stderr.splitlines() if "from guest memory" in line]
    assert len(notices) == 1 and first.stderr.count("\n") == 1, first.stderr
    cached = list((tmp_path / "cache" / "xenhpt" / "profiles" / "from-memory").glob("*.json"))
    assert len(cached) == 1 and str(cached[0]) in notices[0]
    second = subprocess.run([XENHPT, "ps", str(snapshot_files[0])], capture_output=True,
                            text=True, env=env, timeout=300)
    assert second.returncode == 0 and second.stderr == "" and second.stdout == first.stdout


@pytest.mark.lab
def test_a_kernel_without_btf_in_memory_is_one_clear_error(
        snapshot_files: tuple[Path, Path], tmp_path: Path) -> None:
    doctored = tmp_path / "no-btf.raw"
    data = bytearray(snapshot_files[0].read_bytes())
    at = data.find(b"\x9f\xeb\x01\x00")
    while at >= 0:
        data[at:at + 4] = bytes(4)
        at = data.find(b"\x9f\xeb\x01\x00", at + 4)
    doctored.write_bytes(bytes(data))
    with pytest.raises(ProfileError, match="CONFIG_DEBUG_INFO_BTF"):
        profile_from_memory(open_snapshot(doctored))
    done = run_xenhpt("profile", "build", "--from", str(doctored), "-o",
                      str(tmp_path / "x.json"), check=False)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    assert "--profile" in done.stderr and "Traceback" not in done.stderr
