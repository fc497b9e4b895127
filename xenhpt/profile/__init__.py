"""Kernel profiles: Volatility 3 ISF files — load them, find them, build them from BTF.

- :class:`Profile` answers symbol addresses and struct layouts from an ISF file.
- :func:`find_profile` picks the ISF whose banner matches a guest's ``linux_banner``.
- :func:`build_profile` / :func:`write_profile` make an ISF from a kernel image's own BTF
  and kallsyms (or BTF + System.map); :mod:`xenhpt.profile.dwarf` from a vmlinux's DWARF.
"""

from typing import Any

from xenhpt.profile.isf import Profile
from xenhpt.profile.search import default_search_path, find_profile

__all__ = ["Profile", "build_profile", "default_search_path", "find_profile", "write_profile"]


def __getattr__(name: str) -> Any:
    # The builder (BTF parser, kallsyms decoder, decompressors) is only needed to build a
    # profile; importing it lazily keeps every other command's start-up short.
    if name in ("build_profile", "write_profile"):
        from xenhpt.profile import build

        return getattr(build, name)
    raise AttributeError(name)
