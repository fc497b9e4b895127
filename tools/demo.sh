#!/usr/bin/env bash
# The first thing a new user sees: boot the lab guest, look at it from outside, stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
export XENHPT_LAB_DIR="${XENHPT_LAB_DIR:-$HOME/.cache/xenhpt/demo-lab}"
x=.venv/bin/xenhpt
work=$(mktemp -d)
trap '$x lab down >/dev/null; rm -rf "$work"' EXIT
$x lab down >/dev/null
$x lab up
echo; echo "== xenhpt info lab    (read from guest memory, not from inside)"
$x info lab
echo; echo "== xenhpt pstree lab  (the guest's process tree, from its task list)"
$x pstree lab | awk 'NR <= 4'; echo "   ..."

echo; echo "== xenhpt trace lab   (a workload's system calls, decoded from outside)"
# Trace into a file (a terminal or pipe that stalls would stall the guest), start the
# workload once the traps are armed, then end the trace with SIGINT, as Ctrl-C would.
$x trace lab --comm sh -f -v -o "$work/trace.txt" --tree > "$work/tree.txt" 2> "$work/err.txt" &
tracer=$!
until grep -q armed "$work/err.txt" 2>/dev/null; do sleep 0.2; done
$x lab exec --timeout 300 -- 'cd /tmp && echo demo > note.txt && cat note.txt > /dev/null;
    /opt/xenhpt/bin/mech32 int80 > /dev/null; ls /nope 2>/dev/null; true' >/dev/null
kill -INT "$tracer"; wait "$tracer"
grep -v -e '^\[pid [0-9]* [a-z]*\] \(rt_sig\|fcntl\|set_robust\|getuid\|getppid\)' \
    "$work/trace.txt" | awk 'NR <= 45'
echo "   ..."
cat "$work/err.txt"
echo; echo "== the live process tree when the trace ended (kept up to date from fork/exec/exit)"
awk 'NR <= 3' "$work/tree.txt"; echo "   ..."

echo; echo "== the same guest on QEMU 10 with xenhpt's capture plugin: calls cost microseconds"
$x lab down >/dev/null
# A ring big enough for a whole second of a syscall storm: nothing is dropped, and the
# tracer decodes the backlog after the guest is done (it never makes the guest wait).
$x lab up --capture plugin --ring-mib 512
$x lab exec -- /opt/xenhpt/bin/bench_syscall 1 | sed 's/^/untraced: /'
$x trace lab -v -c --duration 4 -o "$work/plugin.txt" 2> "$work/plugin-err.txt" &
tracer=$!
until grep -q armed "$work/plugin-err.txt" 2>/dev/null; do sleep 0.2; done
$x lab exec -- /opt/xenhpt/bin/bench_syscall 1 | sed 's/^/traced, every call captured: /'
wait "$tracer"
awk 'NR <= 8' "$work/plugin.txt"; echo "   ..."
cat "$work/plugin-err.txt"
