"""``xenhpt lab ...``: the built-in test guest (a harness; tracing never depends on it)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ..errors import BadUsage
from ..lab import machine


@click.group()
def lab() -> None:
    """Boot, use and stop the built-in lab guest (Debian kernel under QEMU).

    \b
    Example:
      xenhpt lab up --smp 2 && xenhpt lab exec -- uname -r && xenhpt lab down
    """


@lab.command()
@click.option("--quiet", is_flag=True, help="Print nothing when everything is cached.")
@click.option("--no-plugin", is_flag=True,
              help="Skip QEMU 10 and the capture plugin (only 'lab up --capture plugin' "
                   "needs them).")
def prepare(quiet: bool, no_plugin: bool) -> None:
    """Fetch the guest kernel, build the initramfs, and fetch QEMU 10 and build the capture
    plugin (all cached; 'lab up' does what it needs by itself too)."""
    prepared = machine.prepare()
    if not quiet:
        click.echo(f"kernel {prepared.kernel.image}\ninitramfs {prepared.initramfs}")
    if not no_plugin:
        from ..lab.qemu10 import ensure_plugin, ensure_qemu10

        qemu10 = ensure_qemu10(quiet=quiet)
        plugin = ensure_plugin()
        if not quiet:
            click.echo(f"qemu {qemu10.binary} ({qemu10.version()})\nplugin {plugin}")


@lab.command()
@click.option("--smp", default=1, show_default=True, help="Number of vCPUs.")
@click.option("--memory", "memory_mib", default=512, show_default=True, help="RAM in MiB.")
@click.option("--kaslr", is_flag=True, help="Boot with KASLR on (default: nokaslr).")
@click.option("--accel", type=click.Choice(["tcg", "kvm"]), default="tcg", show_default=True,
              help="QEMU accelerator (this machine's /dev/kvm cannot boot a stock kernel).")
@click.option("--capture", type=click.Choice(machine.CAPTURES), default="gdbstub",
              show_default=True,
              help="How 'xenhpt trace lab' captures calls: breakpoints through the gdbstub "
                   "(system QEMU), or the in-VMM plugin (QEMU 10 from bookworm-backports, "
                   "fetched into the cache once); qemu10: QEMU 10 without the plugin, "
                   "traced through its gdbstub (the baseline the plugin's cost is measured "
                   "against).")
@click.option("--ring-mib", default=machine.DEFAULT_RING_MIB, show_default=True,
              help="Size of the plugin's record ring (a power of two).")
@click.option("--append", "extra_append", default="", metavar="WORDS",
              help="More kernel command-line words, e.g. --append 'pti=on'.")
@click.option("--kernel", "kernel_package", metavar="PACKAGE",
              help="Boot this Debian kernel image package instead of the current bookworm "
                   "cloud kernel, e.g. linux-image-cloud-amd64/trixie, "
                   "linux-image-5.10.0-32-cloud-amd64, or the 32-bit "
                   "linux-image-686-pae/bookworm (booted under qemu-system-i386 with an "
                   "i386 userland; its profile comes from the -dbg package, ~750 MB). "
                   "Fetched into the cache, never installed.")
def up(smp: int, memory_mib: int, kaslr: bool, accel: str, capture: str,
       ring_mib: int, extra_append: str, kernel_package: str | None) -> None:
    """Boot the lab guest and wait until it is ready.

    \b
    Examples:
      xenhpt lab up --capture plugin
      xenhpt lab up --smp 2 --kaslr --append 'pti=on'
      xenhpt lab up --kernel linux-image-cloud-amd64/trixie --capture plugin
    """
    if "\n" in extra_append or len(extra_append) > 1024:
        raise BadUsage("--append takes one line of kernel words (at most 1024 bytes)")
    started = time.monotonic()
    state = machine.up(smp=smp, memory_mib=memory_mib, kaslr=kaslr, accel=accel,
                       capture=capture, ring_mib=ring_mib, extra_append=extra_append,
                       kernel_package=kernel_package)
    click.echo(f"lab up: {state.release}, {smp} vCPU, {memory_mib} MiB, "
               f"gdbstub 127.0.0.1:{state.gdb_port}, capture {capture}, "
               f"ready in {time.monotonic() - started:.1f} s")


@lab.command()
def down() -> None:
    """Stop the lab guest's QEMU."""
    click.echo("lab down" if machine.down() else "lab was not running")


@lab.command()
def status() -> None:
    """Say whether the lab guest runs, and where."""
    try:
        state = machine.LabState.load()
    except machine.LabError:
        click.echo("lab: not running")
        return
    if not state.alive():
        click.echo("lab: not running (stale state; 'xenhpt lab down' cleans it)")
        return
    click.echo(f"lab: running, QEMU pid {state.pid}, {state.release}, {state.smp} vCPU, "
               f"{state.memory_mib} MiB, kaslr={'on' if state.kaslr else 'off'}, "
               f"capture {state.capture}\n"
               f"  gdbstub 127.0.0.1:{state.gdb_port}  qmp 127.0.0.1:{state.qmp_port}\n"
               f"  kernel {state.kernel_image}\n  console {state.console_log}")


@lab.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait.")
def exec_(command: tuple[str, ...], timeout: float) -> None:
    """Run a shell command in the guest; its stdout, stderr and exit status are ours."""
    result = machine.exec_in_guest(" ".join(command), timeout=timeout)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    sys.exit(result.status)


@lab.command()
@click.argument("file", type=click.Path(path_type=Path))
def snapshot(file: Path) -> None:
    """Save guest memory to FILE: .raw (flat physical) or .elf (QEMU dump)."""
    started = time.monotonic()
    path = machine.snapshot(file)
    click.echo(f"{path}: {path.stat().st_size >> 20} MiB in {time.monotonic() - started:.1f} s")
