"""``xenhpt ps``, ``pstree``, ``psxview`` and ``process_trace``: the guest's processes, from
outside."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from ..linux.containers import Container, ContainerReader
from ..linux.cross_view import cross_view
from ..linux.kernel import Kernel
from ..linux.process_tree import ProcessTree
from ..linux.tasks import Task, TaskReader, Walk
from ..output import processes as render
from ..output.escape import escape_text
from .targets import TARGET_HELP, open_target

profile_option = click.option(
    "--profile", "profile_path", type=click.Path(path_type=Path, dir_okay=False),
    help="ISF profile to use instead of the one matching the guest's banner.")


def scan_progress(done: int, total: int) -> None:
    """Progress of a long memory scan, only when a person watches stderr."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\rscanning guest memory {done >> 20}/{total >> 20} MiB\033[K")
        if done >= total:
            sys.stderr.write("\r\033[K")
        sys.stderr.flush()

containers_option = click.option(
    "--containers", "with_containers", is_flag=True,
    help="Add each task's pid namespace (inode, as /proc/PID/ns/pid), its pid there and "
         "its cgroup v2 path.")


def read_containers(kernel: Kernel, tasks: list[Task], asked: bool) -> dict[int, Container] | None:
    """The container facts of ``tasks`` by task address, or None when not ``asked``.

    Read while the guest is still paused, once per task. A guest without cgroup v2
    (v1 only) has no cgroup path to show: said once on stderr.
    """
    if not asked:
        return None
    reader = ContainerReader(kernel)
    if reader.cgroup_v2 is False:
        click.echo("xenhpt: warning: cgroup v2 is not mounted in the guest (cgroup v1 only, "
                   "or none): no cgroup paths", err=True)
    return {task.address: reader.read(task.address) for task in tasks}


@contextmanager
def kernel_of(target_spec: str, profile_path: Path | None) -> Iterator[Kernel]:
    """Open TARGET and its kernel; a live guest is paused while we read its lists."""
    target = open_target(target_spec)
    try:
        if target.live:
            target.pause()
        yield Kernel.open(target, profile_path, progress=scan_progress)
    finally:
        target.close()


def report_problems(walk: Walk) -> None:
    for problem in walk.problems:
        click.echo(f"xenhpt: warning: {problem}", err=True)


def read_processes(kernel: Kernel, threads: bool = False) -> Walk:
    reader = TaskReader(kernel)
    walk = reader.processes(include_swapper=True)
    if threads:
        leaders, walk.tasks = walk.tasks, []
        for leader in leaders:
            walk.tasks += reader.threads(leader, walk) if leader.pid else [leader]
    return walk


@click.command()
@click.argument("target", metavar="TARGET")
@click.option("--threads", is_flag=True, help="One row per thread (adds TID).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per task.")
@containers_option
@profile_option
def ps(target: str, threads: bool, as_json: bool, with_containers: bool,
       profile_path: Path | None) -> None:
    """List the processes of TARGET: PID, PPID, UID, task address, name.

    TARGET is """ + TARGET_HELP + """

    \b
    Examples:
      xenhpt ps lab --threads
      xenhpt ps guest.raw --json --profile profiles/6.1.0-56-cloud-amd64.json
      xenhpt ps lab --containers
    """
    with kernel_of(target, profile_path) as kernel:
        walk = read_processes(kernel, threads)
        tasks = [t for t in walk.tasks if t.pid != 0]  # the idle task is not a process
        found = read_containers(kernel, tasks, with_containers)
    click.echo(render.ps_json(tasks, found) if as_json
               else render.ps_table(tasks, threads, found), nl=False)
    report_problems(walk)


@click.command()
@click.argument("target", metavar="TARGET")
@click.option("--json", "as_json", is_flag=True, help="The tree as nested JSON.")
@containers_option
@profile_option
def pstree(target: str, as_json: bool, with_containers: bool,
           profile_path: Path | None) -> None:
    """Draw the process tree of TARGET, pstree -p style (name(pid)); with --containers,
    name(pid){pidns N pid M /cgroup/path}."""
    with kernel_of(target, profile_path) as kernel:
        walk = read_processes(kernel)
        found = read_containers(kernel, walk.tasks, with_containers)
    tree = ProcessTree.from_tasks(walk.tasks)
    click.echo(render.pstree_json(tree, found) if as_json else render.pstree_text(tree, found),
               nl=False)
    report_problems(walk)


@click.command(name="process_trace")
@click.argument("target", metavar="TARGET")
@profile_option
def process_trace(target: str, profile_path: Path | None) -> None:
    """Dump the process tree of TARGET as the Xen HPT tool does: root first, then each task
    with its task address, parent address, pid, name and child count."""
    with kernel_of(target, profile_path) as kernel:
        walk = read_processes(kernel)
        click.echo(f"# {escape_text(kernel.banner)}")
    click.echo(render.process_trace_text(ProcessTree.from_tasks(walk.tasks)), nl=False)
    report_problems(walk)


EXIT_FLAGGED = 3


@click.command()
@click.argument("target", metavar="TARGET")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per process.")
@click.option("--scan", is_flag=True, help="Also scan all physical memory for task_structs "
              "(finds a process no list leads to; about 1-2 s per 512 MiB).")
@containers_option
@profile_option
def psxview(target: str, as_json: bool, scan: bool, with_containers: bool,
            profile_path: Path | None) -> None:
    """Find hidden processes of TARGET: the task list, the process tree (children lists),
    the pid IDR and the runqueues (and with --scan, task_structs found in physical
    memory) side by side; a process missing from one of the first three is flagged with
    !, and the exit status is 3. (A sleeping process is on no runqueue: - there is normal.)

    \b
    Examples:
      xenhpt psxview guest.raw
      xenhpt psxview guest.raw --scan
      xenhpt psxview lab --json
    """
    with kernel_of(target, profile_path) as kernel:
        view = cross_view(TaskReader(kernel), scan=scan, progress=scan_progress)
        found = read_containers(kernel, [row.task for row in view.rows], with_containers)
    click.echo(render.psxview_json(view, found) if as_json
               else render.psxview_table(view, found), nl=False)
    for problem in view.problems:
        click.echo(f"xenhpt: warning: {problem}", err=True)
    if any(row.flagged for row in view.rows):
        sys.exit(EXIT_FLAGGED)
