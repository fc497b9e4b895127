"""``xenhpt info TARGET``: which kernel runs in the guest, read from its memory."""

from __future__ import annotations

import sys

import click

from ..errors import XenhptError
from ..linux.banner import find_banner
from ..output.escape import escape_text
from ..vmi.target import Target
from .targets import TARGET_HELP, open_target

_EFER_LMA = 1 << 10


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\rscanning guest memory {done >> 20}/{total >> 20} MiB")
        sys.stderr.flush()


def _architecture(guest: Target) -> str:
    try:
        if guest.live:
            guest.pause()
        efer = guest.registers(0)["efer"]
    except XenhptError:
        return "unknown (no vCPU registers)"
    finally:
        if guest.live:
            guest.resume()
    return "x86_64 (long mode)" if efer & _EFER_LMA else "x86 (32-bit protected mode)"


@click.command()
@click.argument("target", metavar="TARGET")
def info(target: str) -> None:
    """Kernel banner, architecture, vCPUs, KASLR slide and profile of TARGET.

    TARGET is """ + TARGET_HELP
    guest = open_target(target)
    try:
        banner = find_banner(guest, progress=_progress)
        if sys.stderr.isatty():
            sys.stderr.write("\r\033[K")
        rows = [("target", getattr(guest, "description", target))]
        if banner is None:
            rows.append(("banner", "not found in guest memory"))
        else:
            rows += [("banner", escape_text(banner.text)), ("release", escape_text(banner.release)),
                     ("banner at", f"physical {banner.physical_address:#x}")]
        rows.append(("arch", _architecture(guest)))
        rows.append(("vcpus", str(guest.vcpu_count)))
        rows.append(("kaslr slide", "unknown (needs a profile)"))
        rows.append(("profile", "none"))
        for key, value in rows:
            click.echo(f"{key + ':':<13}{value}")
    finally:
        guest.close()
