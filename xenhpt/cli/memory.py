"""``xenhpt psaux``, ``envars``, ``maps``, ``lsof``, ``sockstat``: what each process holds.

Each composes the ``linux`` readers (tasks, then each process's ``mm_struct``) and hands
the rows to a renderer in ``output/process_memory.py``. A live guest is paused while the
lists are read, as for ``ps``.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..linux.files import FilesReader, process_files
from ..linux.kernel import Kernel
from ..linux.mm import MmReader, process_strings
from ..linux.sockets import SocketReader, process_sockets
from ..linux.tasks import Task
from ..linux.vma import VmaReader, process_mappings
from ..output import open_files
from ..output import process_memory as render
from .process import containers_option, kernel_of, profile_option, read_containers, read_processes

pid_option = click.option("-p", "--pid", "pids", type=int, multiple=True, metavar="PID",
                          help="Only this process (repeat for several).")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="One JSON object per line.")


def selected(kernel: Kernel, pids: tuple[int, ...], problems: list[str]) -> list[Task]:
    """The processes asked for (all but the idle task when ``pids`` is empty)."""
    walk = read_processes(kernel)
    problems += walk.problems
    tasks = [t for t in walk.tasks if t.pid != 0]
    if pids:
        tasks = [t for t in tasks if t.pid in pids]
        missing = sorted(set(pids) - {t.pid for t in tasks})
        problems += [f"no process with pid {pid}" for pid in missing]
    return tasks


def warn(problems: list[str]) -> None:
    for problem in problems:
        click.echo(f"xenhpt: warning: {problem}", err=True)


@click.command()
@click.argument("target", metavar="TARGET")
@pid_option
@json_option
@containers_option
@profile_option
def psaux(target: str, pids: tuple[int, ...], as_json: bool, with_containers: bool,
          profile_path: Path | None) -> None:
    """The command line of every process of TARGET: PID, PPID, UID, name, arguments.

    Arguments are read from the process's own memory (mm->arg_start..arg_end, at most
    256 KiB); a kernel thread shows as [name]; memory that cannot be read ends the line
    with <unreadable at ADDRESS>.

    TARGET is lab, qemu:HOST:PORT, xen:NAME|DOMID or a snapshot file (.raw, .elf, ...).

    \b
    Examples:
      xenhpt psaux lab
      xenhpt psaux guest.raw -p 1 --json --profile guest-kernel.json
      xenhpt psaux lab --containers
    """
    problems: list[str] = []
    with kernel_of(target, profile_path) as kernel:
        tasks = selected(kernel, pids, problems)
        rows = process_strings(MmReader(kernel), tasks, "arguments")
        found = read_containers(kernel, tasks, with_containers)
    click.echo(render.psaux_json(rows, found) if as_json else render.psaux_table(rows, found),
               nl=False)
    warn(problems)


@click.command()
@click.argument("target", metavar="TARGET")
@pid_option
@json_option
@profile_option
def envars(target: str, pids: tuple[int, ...], as_json: bool,
           profile_path: Path | None) -> None:
    """The environment of each user process of TARGET, one variable a line.

    Read from the process's memory (mm->env_start..env_end, at most 256 KiB): what it
    was started with, as /proc/PID/environ shows it.

    \b
    Examples:
      xenhpt envars lab -p 1
      xenhpt envars guest.elf --json
    """
    problems: list[str] = []
    with kernel_of(target, profile_path) as kernel:
        rows = process_strings(MmReader(kernel), selected(kernel, pids, problems),
                               "environment")
    click.echo(render.envars_json(rows) if as_json else render.envars_table(rows), nl=False)
    warn(problems)


@click.command(name="maps")
@click.argument("target", metavar="TARGET")
@pid_option
@json_option
@profile_option
def maps(target: str, pids: tuple[int, ...], as_json: bool,
         profile_path: Path | None) -> None:
    """The memory mappings of each user process of TARGET, like /proc/PID/maps:
    start-end, permissions, file offset, device, inode, then the file's path or [heap],
    [stack], [vdso], [vvar] (nothing for anonymous memory).

    \b
    Examples:
      xenhpt maps lab -p 1
      xenhpt maps guest.raw --json --profile guest-kernel.json
    """
    problems: list[str] = []
    with kernel_of(target, profile_path) as kernel:
        tasks = selected(kernel, pids, problems)
        rows = process_mappings(VmaReader(kernel), MmReader(kernel), tasks, problems)
    click.echo(render.maps_json(rows) if as_json else render.maps_table(rows), nl=False)
    warn(problems)


@click.command()
@click.argument("target", metavar="TARGET")
@pid_option
@json_option
@profile_option
def lsof(target: str, pids: tuple[int, ...], as_json: bool,
         profile_path: Path | None) -> None:
    """The open files of each process of TARGET: descriptor, type, device, inode, name.

    Names are as ls -l /proc/PID/fd shows them: a path (to the process's root), or
    socket:[INODE], pipe:[INODE], anon_inode:[eventfd], net:[INODE] and the like.

    \b
    Examples:
      xenhpt lsof lab -p 1
      xenhpt lsof guest.raw --json --profile guest-kernel.json
    """
    problems: list[str] = []
    with kernel_of(target, profile_path) as kernel:
        tasks = selected(kernel, pids, problems)
        rows = process_files(FilesReader(kernel), tasks, problems)
    click.echo(open_files.lsof_json(rows) if as_json else open_files.lsof_table(rows),
               nl=False)
    warn(problems)


@click.command()
@click.argument("target", metavar="TARGET")
@pid_option
@json_option
@profile_option
def sockstat(target: str, pids: tuple[int, ...], as_json: bool,
             profile_path: Path | None) -> None:
    """The sockets of each process of TARGET: descriptor, family, type, protocol, state,
    local and remote address (and port for IPv4/IPv6; the bound path for unix sockets,
    @name for an abstract one).

    \b
    Examples:
      xenhpt sockstat lab
      xenhpt sockstat guest.raw -p 1 --json
    """
    problems: list[str] = []
    with kernel_of(target, profile_path) as kernel:
        tasks = selected(kernel, pids, problems)
        rows = process_sockets(SocketReader(kernel),
                               process_files(FilesReader(kernel), tasks, problems))
    click.echo(open_files.sockstat_json(rows) if as_json else open_files.sockstat_table(rows),
               nl=False)
    warn(problems)
