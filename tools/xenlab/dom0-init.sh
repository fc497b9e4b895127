#!/bin/busybox sh
# PID 1 of the Xen lab's dom0: Xen services, the domU "lab" (HVM or PVH), then xenhpt
# against it. /lab/env (from run.sh) says which domU and which trap (int3 or sldt).
/bin/busybox --install -s /bin
export PATH=/usr/lib/xen-4.17/bin:/usr/bin:/bin:/sbin
export HOME=/root PYTHONPATH=/opt/site LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu
. /lab/env
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts  # xenconsoled gives each domain a pty
mount -t tmpfs tmp /tmp
mount -t tmpfs run /var/run
mkdir -p /var/run/xen /var/run/xenstored /var/log/xen/console /var/lib/xen
for m in xen-privcmd xenfs xen-evtchn xen-gntdev xen-gntalloc; do insmod /lib/modules/$m.ko; done
mount -t xenfs xenfs /proc/xen
# profile/isf.py reads with f.read(MAX_ISF_BYTES + 1), which reserves that much up front.
echo 1 > /proc/sys/vm/overcommit_memory
echo "dom0: capabilities $(cat /proc/xen/capabilities)"
xenstored --pid-file /var/run/xenstored.pid
xen-init-dom0
# --log=guest: the domU's console goes to /var/log/xen/console/guest-lab.log (dumped at the end)
xenconsoled --pid-file=/var/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
xl info | grep -E 'virt_caps|xen_version'
xl create /etc/xen/lab.cfg
if [ "$XENLAB_DOMU" = hvm ]; then  # hvmloader, SeaBIOS, the kernel: wait for its agent
    for i in $(seq 60); do
        grep -q XENHPT-READY /var/log/xen/console/guest-lab.log 2>/dev/null && break
        xl list lab >/dev/null 2>&1 || break  # not created (the device model died?)
        sleep 5
    done
    echo "dom0: domU ready after ~$((i * 5)) s"
    tail -n 15 /var/log/xen/qemu-dm-lab.log  # the device model's own log
else
    sleep 20
fi
xl list
step() {  # run one check, time it, mark it
    echo "XENLAB-STEP $*"
    start=$(date +%s)
    "$@"; rc=$?
    echo "XENLAB-RC $rc ($(( $(date +%s) - start ))s) $*"
    return $rc
}
check() {  # a line the trace must contain (fixed string)
    if grep -qF -- "$1" "$2"; then echo "XENLAB-CHECK ok: $1"; else echo "XENLAB-CHECK FAIL: $1"; ok=0; fi
}
# Everything from here also goes to /tmp/lab.out (the summary counts its XENLAB-CHECK
# lines); stderr is a pipe, not the console, so progress lines stay off the log.
mkfifo /tmp/out
tee /tmp/lab.out < /tmp/out &
teepid=$!
exec > /tmp/out 2>&1
domu_alive() {  # the domU must still run after xenhpt detached (not ---c- crashed)
    if xl list | grep -q '^lab .*c-'; then echo "XENLAB-DOMU-CRASHED"; ok=0
    else echo "XENLAB-CHECK ok: domU still running"; fi
}
echo XENLAB-BEGIN
ok=1
if [ -f /lab/steps.sh ]; then  # XENLAB_STEPS: a custom experiment instead
    . /lab/steps.sh
elif [ "$XENLAB_DOMU" = hvm ]; then
    # The QEMU lab's checks (tests/test_trace.py, test_processes.py) against the HVM domU.
    python3.11 /lab/checks.py || ok=0
    domu_alive
    python3.11 /lab/checks.py measure 30
    domu_alive
    python3.11 /lab/checks.py reboot || ok=0
    xl list
else
    step xenhpt ps xen:lab || ok=0
    step xenhpt ps xen:1 || ok=0
    # Full mode (every entry stub + the common exit): strace-like lines, checked below.
    step xenhpt trace xen:lab --duration 15 -v -o /tmp/trace.txt 2>/tmp/trace.err || ok=0
    cat /tmp/trace.err
    echo XENLAB-TRACE-BEGIN; head -60 /tmp/trace.txt; echo XENLAB-TRACE-END
    check 'execve("/proc/self/exe", ["cat", "/proc/version"], ' /tmp/trace.txt
    check 'openat(AT_FDCWD, "/proc/version", O_RDONLY) = 3' /tmp/trace.txt
    check ' = -1 ECHILD (No child processes)' /tmp/trace.txt
    domu_alive
    # Selective mode (only the chosen __x64_sys_* and their return sites), then -c.
    step xenhpt trace xen:lab --duration 10 -e trace=openat,execve,write -v -o /tmp/sel.txt \
        2>/tmp/sel.err || ok=0
    cat /tmp/sel.err; head -20 /tmp/sel.txt
    check 'write(1, "tick\n", 5) = 5' /tmp/sel.txt
    check 'openat(AT_FDCWD, "/tmp/t", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 3' /tmp/sel.txt
    step xenhpt trace xen:lab --duration 10 -v -c -o /tmp/summary.txt 2>&1 || ok=0
    cat /tmp/summary.txt
    domu_alive
    xl list
fi
echo XENLAB-GUEST-CONSOLE
tail -n 80 /var/log/xen/console/guest-lab.log 2>/dev/null
# A soft-lockup warning is not a crash: the tools pause the domain (ps walks, traps) and
# under nested TCG a pause lasts seconds; it is counted, not failed.
if grep -E 'int3: |double fault|Kernel panic|BUG: |general protection' \
        /var/log/xen/console/guest-lab.log 2>/dev/null | grep -qv 'BUG: soft lockup'; then
    echo XENLAB-GUEST-OOPS; ok=0
fi
echo "XENLAB-NOTE soft-lockup warnings in the domU: $(grep -c 'soft lockup' /var/log/xen/console/guest-lab.log)"
echo XENLAB-XL-DMESG
xl dmesg | grep -v 'save:' | tail -n 30
passed=$(grep -c 'XENLAB-CHECK ok' /tmp/lab.out)
failed=$(grep -c 'XENLAB-CHECK FAIL\|XENLAB-GUEST-OOPS\|XENLAB-DOMU-CRASHED' /tmp/lab.out)
[ $ok = 1 ] && [ "$failed" = 0 ] && [ "$passed" -gt 0 ] && echo XENLAB-PASS || echo XENLAB-FAIL
echo "xenlab: $passed passed, $failed failed"
echo XENLAB-END
exec > /dev/console 2>&1
sleep 1
poweroff -f
