#!/usr/bin/env bash
# The first thing a new user sees: boot the lab guest, look at it from outside, stop it.
set -euo pipefail
cd "$(dirname "$0")/.."
export XENHPT_LAB_DIR="${XENHPT_LAB_DIR:-$HOME/.cache/xenhpt/demo-lab}"
x=.venv/bin/xenhpt
trap '$x lab down >/dev/null' EXIT
$x lab down >/dev/null
$x lab up
echo; echo "== xenhpt info lab    (read from guest memory, not from inside)"
$x info lab
echo; echo "== xenhpt pstree lab  (the guest's process tree, from its task list)"
$x pstree lab | head -4; echo "   ..."
echo; echo "== xenhpt trace lab   (a workload's system calls, decoded from outside)"
$x lab exec -- 'sleep 1; cd /tmp && echo demo > note.txt && cat note.txt > /dev/null;
                /opt/xenhpt/bin/mech32 int80 > /dev/null; ls /nope 2>/dev/null; true' >/dev/null &
$x trace lab --comm sh -f --duration 8 --tree | grep -v -e '^\[pid [0-9]* sh\] \(rt_sig\|fcntl\)' | head -60
wait
