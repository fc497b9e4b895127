#!/bin/busybox sh
# PID 1 of the Xen lab's dom0: Xen services, the PVH domU "lab", then xenhpt against it.
/bin/busybox --install -s /bin
export PATH=/usr/lib/xen-4.17/bin:/usr/bin:/bin:/sbin
export HOME=/root PYTHONPATH=/opt/site LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts  # xenconsoled gives each domain a pty
mount -t tmpfs tmp /tmp
mount -t tmpfs run /var/run
mkdir -p /var/run/xen /var/run/xenstored /var/log/xen /var/lib/xen
for m in xen-privcmd xenfs xen-evtchn xen-gntdev xen-gntalloc; do insmod /lib/modules/$m.ko; done
mount -t xenfs xenfs /proc/xen
# profile/isf.py reads with f.read(MAX_ISF_BYTES + 1), which reserves that much up front.
echo 1 > /proc/sys/vm/overcommit_memory
echo "dom0: capabilities $(cat /proc/xen/capabilities)"
xenstored --pid-file /var/run/xenstored.pid
xen-init-dom0
xenconsoled --pid-file=/var/run/xenconsoled.pid
xl info | grep -E 'virt_caps|xen_version'
xl create /etc/xen/lab.cfg
sleep 20
xl list
step() {  # run one check, time it, mark it
    echo "XENLAB-STEP $*"
    start=$(date +%s)
    "$@"; rc=$?
    echo "XENLAB-RC $rc ($(( $(date +%s) - start ))s) $*"
    return $rc
}
echo XENLAB-BEGIN
ok=1
step xenhpt ps xen:lab || ok=0
step xenhpt ps xen:1 || ok=0
step xenhpt trace xen:lab --duration 10 -v -c -o /tmp/trace.txt 2>&1 | tee /tmp/trace.err || ok=0
grep -q " 0 traps" /tmp/trace.err && ok=0
head -20 /tmp/trace.txt
xl list | grep -q '^lab .*c-' && { echo "XENLAB-DOMU-CRASHED"; ok=0; }
step xenhpt trace xen:lab --duration 5 -e trace=openat,execve -v || ok=0
xl list
[ $ok = 1 ] && echo XENLAB-PASS || echo XENLAB-FAIL
echo XENLAB-END
poweroff -f
