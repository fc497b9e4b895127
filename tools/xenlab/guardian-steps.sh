# XENLAB_STEPS=tools/xenlab/guardian-steps.sh tools/xenlab/run.sh
# A tracer killed with SIGKILL mid-trace: its guardian must put the domU's code back, take
# the dead monitor ring down and drop the domain pauses it held, so that the domU runs on
# and a new tracer can attach and capture calls.
step xenhpt ps xen:lab || ok=0
xenhpt trace xen:lab -v -o /tmp/killed.txt 2>/tmp/killed.err &
tp=$!
for i in $(seq 120); do grep -q armed /tmp/killed.err && break; sleep 1; done
sleep 8
echo "XENLAB-KILL $(date +%s)"
kill -9 $tp
sleep 5
cat /tmp/killed.err
echo "killed tracer wrote $(wc -l < /tmp/killed.txt) lines"
if grep -q "guardian" /tmp/killed.err; then echo "XENLAB-CHECK ok: the guardian acted"
else echo "XENLAB-CHECK FAIL: no word from the guardian"; ok=0; fi
domu_alive
xl list
if xl list | grep '^lab ' | grep -q -- '--p'; then echo "XENLAB-CHECK FAIL: domU left paused"; ok=0
else echo "XENLAB-CHECK ok: domU not paused"; fi
step xenhpt trace xen:lab --duration 15 -v -o /tmp/after.txt 2>/tmp/after.err || ok=0
cat /tmp/after.err
check 'openat(AT_FDCWD, "/proc/version", O_RDONLY) = 3' /tmp/after.txt
domu_alive
xl list
