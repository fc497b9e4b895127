"""Find the profile for a running kernel by its banner, like Volatility's symbol dirs.

A guest says who it is with ``linux_banner`` ("Linux version 6.1.0-56-cloud-amd64 ... #1 SMP
PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)"); every ISF stores the same bytes as the
``constant_data`` of its ``linux_banner`` symbol. Matching must not json-load every
(possibly 100 MB) ISF on the path, so each file's banner is read by streaming its text up
to that one key (our own ISFs put it in the first few hundred bytes) and remembered in a
small index, ``~/.cache/xenhpt/profile-banners.json``, keyed by path, size and mtime.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from xenhpt.errors import ProfileError
from xenhpt.profile.isf import decode_banner, default_cache_dir, open_isf

ISF_SUFFIXES = (".json", ".json.xz", ".json.gz")
MAX_DEPTH = 3  # subdirectories searched (Volatility keeps ISFs in e.g. symbols/linux/)
MAX_FILES = 10_000  # per search-path entry
CHUNK = 1 << 20
MAX_SCAN = 1 << 30  # decompressed bytes read looking for the banner of one ISF
_KEY = re.compile(rb'"linux_banner"\s*:\s*\{')
_DATA = re.compile(rb'"constant_data"\s*:\s*"([A-Za-z0-9+/=]*)"')
INDEX_NAME = "profile-banners.json"


def default_search_path() -> list[Path]:
    """Directories searched for ISFs, in order: ``$XENHPT_PROFILE_PATH`` (colon separated),
    ``<repo>/profiles``, ``~/.cache/xenhpt/profiles``."""
    dirs = [Path(p).expanduser() for p in os.environ.get("XENHPT_PROFILE_PATH", "").split(":") if p]
    dirs.append(Path(__file__).resolve().parents[2] / "profiles")
    dirs.append(default_cache_dir() / "profiles")
    return dirs


def normalize_banner(banner: str | bytes) -> str:
    """Banner text for comparison: up to the first NUL, trailing whitespace removed."""
    if isinstance(banner, bytes):
        banner = banner.decode("utf-8", "replace")
    return banner.split("\0", 1)[0].rstrip()


def read_isf_banner(path: Path) -> str | None:
    """The ``linux_banner`` of an ISF file, read without parsing the whole JSON."""
    tail = b""
    seen = 0
    try:
        with open_isf(path) as f:
            while seen < MAX_SCAN:
                chunk = f.read(CHUNK)
                if not chunk:
                    break
                seen += len(chunk)
                buf = tail + chunk
                found = _banner_in(buf)
                if found is not None:
                    return found or None
                tail = buf[-8192:]  # a split "linux_banner" entry is < 8 KiB
    except (OSError, EOFError, ValueError, ProfileError):
        return None
    return None


def _banner_in(buf: bytes) -> str | None:
    """Banner of the linux_banner entry in ``buf``; "" if the entry is there but has none,
    None if the entry is not (wholly) in ``buf``."""
    m = _KEY.search(buf)
    if m is None:
        return None
    depth, i = 1, m.end()
    limit = min(len(buf), i + 8192)
    while i < limit and depth:  # find the end of this symbol's object
        c = buf[i]
        depth += (c == 0x7B) - (c == 0x7D)  # "{" / "}"; neither occurs in ISF names
        i += 1
    if depth:
        return None if limit == len(buf) else ""
    data = _DATA.search(buf, m.end(), i)
    if data is None:
        return ""
    return decode_banner(data.group(1).decode("ascii")) or ""


def _candidates(root: Path) -> Iterator[Path]:
    count = 0
    if root.is_file():
        yield root
        return
    stack = [(root, 0)]
    while stack:
        d, depth = stack.pop()
        try:
            entries = sorted(d.iterdir())
        except OSError:
            continue
        for p in entries:
            if p.name.startswith("."):
                continue
            if p.is_dir():
                if depth < MAX_DEPTH:
                    stack.append((p, depth + 1))
            elif p.name.endswith(ISF_SUFFIXES):
                count += 1
                if count > MAX_FILES:
                    return
                yield p


class BannerIndex:
    """Remembered banners of ISF files: path → (size, mtime_ns, banner)."""

    def __init__(self, file: Path | None = None) -> None:
        self.file = file or default_cache_dir() / INDEX_NAME
        self.entries: dict[str, list] = {}
        self.dirty = False
        try:
            data = json.loads(self.file.read_text())
            if isinstance(data, dict):
                self.entries = data
        except (OSError, ValueError):
            pass

    def banner(self, path: Path) -> str | None:
        try:
            st = path.stat()
        except OSError:
            return None
        key = str(path.resolve())
        entry = self.entries.get(key)
        if (
            isinstance(entry, list)
            and len(entry) == 3
            and entry[:2] == [st.st_size, st.st_mtime_ns]
        ):
            return entry[2]
        banner = read_isf_banner(path)
        self.entries[key] = [st.st_size, st.st_mtime_ns, banner]
        self.dirty = True
        return banner

    def save(self) -> None:
        if not self.dirty:
            return
        tmp = self.file.with_name(f".{self.file.name}.{os.getpid()}.tmp")
        try:  # an index is an optimisation: a read-only cache dir is not an error
            self.file.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.entries))
            os.replace(tmp, self.file)
        except OSError:
            tmp.unlink(missing_ok=True)


def find_profile(banner: str | bytes, search_path: list[Path] | None = None) -> Path | None:
    """The first ISF on ``search_path`` (default: :func:`default_search_path`) whose
    ``linux_banner`` equals ``banner``; None if there is none."""
    want = normalize_banner(banner)
    if not want:
        return None
    index = BannerIndex()
    try:
        for root in search_path if search_path is not None else default_search_path():
            for path in _candidates(Path(root)):
                found = index.banner(path)
                if found is not None and normalize_banner(found) == want:
                    return path
    finally:
        index.save()
    return None
