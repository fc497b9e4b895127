#!/usr/bin/env python3
"""``xenhpt pstree`` against Volatility 3 ``linux.pstree``: same snapshot, same ISF, one run.

Three timings, each the median of ``--runs`` (after one untimed warm-up that fills
xenhpt's ISF cache, Volatility's identifier cache and the page cache):

* ``xenhpt pstree SNAP --profile ISF`` as a user runs it (a new Python process);
* the same command in this process, imports already done: what xenhpt itself costs
  beyond interpreter start-up and imports;
* ``vol -q -f SNAP -s DIR linux.pstree``, where DIR holds only that ISF.

With no SNAPSHOT it boots a lab guest of its own (512 MiB, 1 vCPU, in a temporary run
directory), starts a small process tree, pauses it, saves a raw snapshot and shuts it
down. ``--cprofile`` adds a cProfile of one in-process run (top functions by cumulative
time) and the import time of ``xenhpt.cli.main``.

Usage::

    .venv/bin/python tools/bench_pstree.py                     # fresh lab snapshot
    .venv/bin/python tools/bench_pstree.py /tmp/lab.raw --profile ISF --runs 5 --cprofile
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BIN = Path(sys.executable).parent
XENHPT = BIN / "xenhpt"
VOL = BIN / "vol"
TREE = "sh -c 'sleep 300 & sleep 301 & wait' > /dev/null 2>&1 & sleep 0.3"


@contextlib.contextmanager
def lab_snapshot(directory: Path, kaslr: bool) -> Iterator[tuple[Path, Path]]:
    """A raw snapshot of a freshly booted lab guest, and the lab's ISF."""
    from xenhpt.lab import machine
    from xenhpt.lab.qmp import Qmp

    state = machine.up(directory=directory / "lab", kaslr=kaslr)
    try:
        machine.exec_in_guest(TREE, directory=directory / "lab")
        with Qmp("127.0.0.1", state.qmp_port) as qmp:  # QMP serves one client at a time
            qmp.execute("stop")
        raw = machine.snapshot(directory / "lab.raw", directory / "lab")
    finally:
        machine.down(directory / "lab")
    yield raw, machine.profile_path(state.release)


def profile_of(snapshot: Path) -> Path:
    """The ISF xenhpt picks for ``snapshot`` by its banner."""
    from xenhpt.linux.kernel import Kernel
    from xenhpt.vmi.snapshot.target import open_snapshot

    with open_snapshot(snapshot) as target:
        return Kernel.open(target).profile.path


def median_time(action: Callable[[], object], runs: int) -> float:
    action()  # warm-up: caches filled, not timed
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_command(command: list[str]) -> None:
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")


def in_process(args: list[str]) -> None:
    """``xenhpt ARGS`` through the CLI entry point, in this interpreter, output dropped."""
    from xenhpt.cli.main import cli, run

    with contextlib.redirect_stdout(io.StringIO()):
        try:
            run(cli, args)
        except SystemExit as exc:
            if exc.code:
                raise SystemExit(f"xenhpt {' '.join(args)} exited {exc.code}") from None


def report_cprofile(args: list[str]) -> None:
    # Imports in a fresh interpreter (this one has them already): every CLI run pays them.
    code = ("import time; t = time.perf_counter(); import xenhpt.cli.main; "
            "print(time.perf_counter() - t)")
    imports = float(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                   text=True, check=True).stdout)
    print(f"\nimport xenhpt.cli.main: {imports:.3f} s "
          f"(details: {sys.executable} -X importtime -c 'import xenhpt.cli.main')")
    profiler = cProfile.Profile()
    profiler.enable()
    in_process(args)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(20)
    print(out.getvalue())


def bench(snapshot: Path, isf: Path, runs: int, cprofile: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-pstree-") as tmp:
        symbols = Path(tmp) / "symbols"
        symbols.mkdir()
        shutil.copy(isf, symbols / isf.name)  # Volatility sees exactly this one ISF
        args = ["pstree", str(snapshot), "--profile", str(isf)]
        cli = [str(XENHPT), *args]
        vol = [str(VOL), "-q", "-f", str(snapshot), "-s", str(symbols), "linux.pstree"]
        t_cli = median_time(lambda: run_command(cli), runs)
        t_inproc = median_time(lambda: in_process(args), runs)
        t_vol = median_time(lambda: run_command(vol), runs)
    size = snapshot.stat().st_size >> 20
    print(f"snapshot {snapshot} ({size} MiB), profile {isf}, median of {runs} runs")
    print(f"  xenhpt CLI         {t_cli:7.3f} s   {' '.join(cli)}")
    print(f"  xenhpt in-process  {t_inproc:7.3f} s   (imports done; CLI minus this = "
          f"interpreter start-up + imports)")
    print(f"  volatility 3       {t_vol:7.3f} s   {' '.join(vol[:-3])} <dir with the ISF> "
          "linux.pstree")
    print(f"  ratio vol/xenhpt   {t_vol / t_cli:7.1f}x (CLI)   {t_vol / t_inproc:7.1f}x "
          "(in-process)")
    if cprofile:
        report_cprofile(args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("snapshot", nargs="?", type=Path,
                        help="raw/ELF snapshot (default: make a fresh 512 MiB lab snapshot)")
    parser.add_argument("--profile", type=Path, help="ISF (default: the one xenhpt picks)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per tool (default 5)")
    parser.add_argument("--kaslr", action="store_true", help="boot the fresh lab with KASLR")
    parser.add_argument("--cprofile", action="store_true",
                        help="also profile one in-process xenhpt run")
    options = parser.parse_args()
    if options.snapshot is not None:
        isf = options.profile or profile_of(options.snapshot)
        bench(options.snapshot, isf, options.runs, options.cprofile)
        return
    with tempfile.TemporaryDirectory(prefix="bench-pstree-lab-") as tmp, \
            lab_snapshot(Path(tmp), options.kaslr) as (raw, lab_isf):
        bench(raw, options.profile or lab_isf, options.runs, options.cprofile)


if __name__ == "__main__":
    main()
