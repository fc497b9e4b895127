#!/usr/bin/env bash
# The first thing a new user sees: boot the lab guest, look at it from outside, stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
export XENHPT_LAB_DIR="${XENHPT_LAB_DIR:-$HOME/.cache/xenhpt/demo-lab}"
x=.venv/bin/xenhpt
trap '$x lab down >/dev/null' EXIT
$x lab down >/dev/null
$x lab up
echo; echo "== xenhpt info lab  (read from guest memory, not from inside)"
$x info lab
echo; echo "== 3 seconds of raw system calls, trapped at entry_SYSCALL_64"
$x lab exec -- 'for i in 1 2 3 4 5; do ls /proc > /dev/null; sleep 0.4; done' >/dev/null &
$x syscalls lab --duration 3 --limit 25
wait
