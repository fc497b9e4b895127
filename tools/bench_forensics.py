#!/usr/bin/env python3
"""Each forensic view against its Volatility 3 counterpart: same snapshot, same ISF, one run.

``xenhpt VIEW SNAP --profile ISF`` (a new Python process, as a user runs it) against
``vol -q -f SNAP -s DIR PLUGIN`` (DIR holds only that ISF), each the median of ``--runs``
after one untimed warm-up (xenhpt's ISF cache, Volatility's identifier cache, the page
cache). With no SNAPSHOT it makes a fresh 512 MiB lab snapshot (``bench_pstree.py``'s).
linux.sockstat needs an ISF built by a profile builder that types socket_file_ops.

Usage::

    .venv/bin/python tools/bench_forensics.py                        # fresh lab snapshot
    .venv/bin/python tools/bench_forensics.py /tmp/lab.raw --profile ISF --runs 3
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pstree import VOL, XENHPT, lab_snapshot, median_time, profile_of  # noqa: E402

# xenhpt view -> Volatility 3 plugin
VIEWS = (("psaux", "linux.psaux"), ("envars", "linux.envars"), ("maps", "linux.proc.Maps"),
         ("lsof", "linux.lsof"), ("sockstat", "linux.sockstat"),
         ("check-syscalls", "linux.check_syscall"))


def run_quietly(command: list[str], ok: tuple[int, ...] = (0,)) -> None:
    import subprocess

    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if done.returncode not in ok:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")


def bench(snapshot: Path, isf: Path, runs: int) -> None:
    size = snapshot.stat().st_size >> 20
    print(f"snapshot {snapshot} ({size} MiB), profile {isf}, median of {runs} runs")
    print(f"  {'view':<15} {'xenhpt':>8} {'volatility 3':>13} {'ratio':>7}")
    with tempfile.TemporaryDirectory(prefix="bench-forensics-") as tmp:
        symbols = Path(tmp) / "symbols"
        symbols.mkdir()
        shutil.copy(isf, symbols / isf.name)
        for view, plugin in VIEWS:
            ours = [str(XENHPT), view, str(snapshot), "--profile", str(isf)]
            theirs = [str(VOL), "-q", "-f", str(snapshot), "-s", str(symbols), plugin]
            # check-syscalls exits 3 when it finds something: still a completed run
            t_ours = median_time(lambda: run_quietly(ours, (0, 3)), runs)  # noqa: B023
            t_vol = median_time(lambda: run_quietly(theirs), runs)  # noqa: B023
            print(f"  {view:<15} {t_ours:7.2f}s {t_vol:12.2f}s {t_vol / t_ours:6.1f}x   "
                  f"({plugin})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("snapshot", nargs="?", type=Path,
                        help="raw/ELF snapshot (default: make a fresh 512 MiB lab snapshot)")
    parser.add_argument("--profile", type=Path, help="ISF (default: the one xenhpt picks)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per tool (default 3)")
    options = parser.parse_args()
    if options.snapshot is not None:
        bench(options.snapshot, options.profile or profile_of(options.snapshot), options.runs)
        return
    with tempfile.TemporaryDirectory(prefix="bench-forensics-lab-") as tmp, \
            lab_snapshot(Path(tmp), kaslr=False) as (raw, lab_isf):
        bench(raw, options.profile or lab_isf, options.runs)


if __name__ == "__main__":
    main()
