#!/bin/bash
# The Xen lab: Debian's Xen 4.17 booted by QEMU 7.2 (TCG, -cpu max: SVM + NPT), a PV dom0
# (generic -amd64 kernel, busybox initramfs with the Xen tools, Python, the libvmi wheel
# and this package) and a domU "lab": by default HVM (Debian's Xen device model), booting
# the QEMU lab's cloud kernel and initramfs (its workloads, strace and exec agent), traced
# with INT3. Inside dom0 it runs xenhpt against the domU and the QEMU lab's trace checks
# (tools/xenlab/checks.py), prints `xenlab: N passed, M failed`, then powers off.
#
# QEMU is the lab's own build of Debian's 7.2 with qemu-svm-int3.patch (build-qemu.sh,
# built on first use, ~15 min): stock QEMU never delivers a nested guest's INT3 to Xen.
#
#   tools/xenlab/run.sh            build what is missing, boot, print the dom0 results
#   XENLAB_DOMU=pvh XENHPT_XEN_TRAP=sldt tools/xenlab/run.sh
#                                  the earlier case: a PVH domU with its own small initrd,
#                                  trapped with sldt (works with the host's stock QEMU)
#   XENLAB_QEMU=qemu-system-x86_64 tools/xenlab/run.sh   the host's QEMU instead
#   XENLAB_TIMEOUT=900 tools/xenlab/run.sh
#   XENLAB_STEPS=my-steps.sh tools/xenlab/run.sh   run these dom0 shell lines instead of the
#                                                  default checks (e.g. python3.11 /lab/probe.py)
#   XENLAB_STEPS=tools/xenlab/guardian-steps.sh tools/xenlab/run.sh
#                                                  SIGKILL a tracer: the guardian's Xen path
#
# Everything lives in ~/.cache/xenhpt/xenlab (Debian packages fetched with
# `apt-get download`, never installed on this host). The serial log is console.log there;
# the lines between XENLAB-BEGIN and XENLAB-END are xenhpt's output inside dom0.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${XENLAB_CACHE:-$HOME/.cache/xenhpt/xenlab}
TIMEOUT=${XENLAB_TIMEOUT:-1200}
XENV=4.17
DOMU_TYPE=${XENLAB_DOMU:-hvm}
TRAP=${XENHPT_XEN_TRAP:-int3}
case "$DOMU_TYPE" in hvm|pvh) ;; *) echo "xenlab: XENLAB_DOMU is hvm or pvh" >&2; exit 1 ;; esac
say() { echo "xenlab: $*" >&2; }

# The domU boots the kernel the lab fetched (Debian moves it every few weeks); dom0 boots
# the generic -amd64 image of the same release.
DOMU_KERNEL=$(ls "$HOME"/.cache/xenhpt/kernel/root/boot/vmlinuz-*-cloud-amd64 2>/dev/null \
              | sort -V | tail -n 1 || true)
[ -n "$DOMU_KERNEL" ] || { say "no lab kernel in ~/.cache/xenhpt/kernel: run 'make setup' first"; exit 1; }
KREL=$(basename "$DOMU_KERNEL"); KREL=${KREL#vmlinuz-}; KREL=${KREL%-cloud-amd64}
for tool in cpio gzip; do
    command -v "$tool" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "$tool" >/dev/null || { say "cannot install $tool"; exit 1; }
done
PY=python3.11
PACKAGES=(xen-hypervisor-$XENV-amd64 xen-utils-$XENV xen-utils-common libxenmisc$XENV
          libxenstore4 xenstore-utils libxentoollog1 libxenevtchn1 libxengnttab1 libxenforeignmemory1
          libxendevicemodel1 libxencall1 libxentoolcore1 libxenhypfs1 libyajl2
          linux-image-$KREL-amd64 busybox-static
          # the HVM domU's device model and firmware, and the libraries it adds
          qemu-system-xen qemu-system-data seabios libspice-server1 libusb-1.0-0
          libjpeg62-turbo libfdt1 libpixman-1-0)

[ -f "$DOMU_KERNEL" ] || { say "missing $DOMU_KERNEL: run 'make test' (or xenhpt lab up) once"; exit 1; }
mkdir -p "$CACHE/debs"

# 1. Debian packages, downloaded only.
for p in "${PACKAGES[@]}"; do
    ls "$CACHE/debs/${p}_"*.deb >/dev/null 2>&1 || (cd "$CACHE/debs" && apt-get -q -o APT::Sandbox::User=root download "$p" >/dev/null)
done
mkdir -p "$CACHE/root/.unpacked"
for deb in "$CACHE"/debs/*.deb; do  # each package unpacked once (new ones too)
    seen=$CACHE/root/.unpacked/$(basename "$deb")
    [ -f "$seen" ] || { dpkg-deb -x "$deb" "$CACHE/root" && touch "$seen"; }
done
R=$CACHE/root
[ -f "$CACHE/xen.elf" ] || gunzip -c "$R/boot/xen-$XENV-amd64.gz" > "$CACHE/xen.elf"

# 2. The domU's initramfs: busybox and a workload that makes system calls every second.
build_domu() {
    local d=$CACHE/domu
    rm -rf "$d"; mkdir -p "$d/bin" "$d/proc" "$d/sys" "$d/dev" "$d/tmp"
    cp "$R/bin/busybox" "$d/bin/busybox"
    cat > "$d/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev
hostname lab
echo "domU: up"
( while true; do cat /proc/version > /tmp/v; ls / > /dev/null; echo tick > /tmp/t; sleep 1; done ) &
exec sh -c 'while true; do sleep 3600; done'
EOF
    chmod +x "$d/init"
    (cd "$d" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$CACHE/domu.cpio.gz"
}
[ -f "$CACHE/domu.cpio.gz" ] || build_domu
# The HVM domU boots the QEMU lab's own initramfs (busybox init, the exec agent on ttyS1,
# strace, mech32 and the other workloads), so the QEMU lab's checks run unchanged.
LAB_INITRD=
if [ "$DOMU_TYPE" = hvm ]; then
    LAB_INITRD=$(ls -t "$HOME"/.cache/xenhpt/initramfs/initramfs-*.cpio 2>/dev/null | head -n 1 || true)
    if [ -z "$LAB_INITRD" ]; then
        "$REPO/.venv/bin/xenhpt" lab prepare --quiet
        LAB_INITRD=$(ls -t "$HOME"/.cache/xenhpt/initramfs/initramfs-*.cpio | head -n 1)
    fi
fi

# The lab's QEMU (patched; built once) unless XENLAB_QEMU names another.
QEMU=${XENLAB_QEMU:-}
[ -n "$QEMU" ] || QEMU=$("$HERE/build-qemu.sh")

# 3. dom0's initramfs.
copy_libs() {  # copy the shared libraries of $@ (resolved with the Xen libs first)
    LD_LIBRARY_PATH="$R/usr/lib/x86_64-linux-gnu" ldd "$@" 2>/dev/null \
        | awk '/=> \// {print $3} /^\t\/lib64/ {print $1}' | sort -u | while read -r lib; do
            mkdir -p "$D$(dirname "$lib")"
            case "$lib" in
                "$R"/*) mkdir -p "$D/usr/lib/x86_64-linux-gnu"; cp -L "$lib" "$D/usr/lib/x86_64-linux-gnu/" ;;
                *) cp -L "$lib" "$D$lib" ;;
            esac
        done
}
build_dom0() {
    D=$CACHE/dom0
    rm -rf "$D"; mkdir -p "$D"/{bin,sbin,proc,sys,dev,tmp,run,root,lab,etc/xen,lib/modules}
    mkdir -p "$D"/var/{lib/xen,log/xen,run/xen,run/xenstored,lib/xenstored} "$D/usr/lib/xen-$XENV/bin"
    cp "$R/bin/busybox" "$D/bin/busybox"
    for m in xen-privcmd xenfs/xenfs xen-evtchn xen-gntdev xen-gntalloc; do
        cp "$R/lib/modules/$KREL-amd64/kernel/drivers/xen/$m.ko" "$D/lib/modules/"
    done
    local tools="xl xenstored xen-init-dom0 xenconsoled xen-access xenctx"
    for t in $tools; do
        [ -f "$R/usr/lib/xen-$XENV/bin/$t" ] && cp "$R/usr/lib/xen-$XENV/bin/$t" "$D/usr/lib/xen-$XENV/bin/"
    done
    # xenstore-read and the others (xenstore-utils, which every Debian dom0 has through
    # xen-utils-common): the tracer asks xenstore whether its domain still exists.
    mkdir -p "$D/usr/bin" && cp -a "$R"/usr/bin/xenstore* "$D/usr/bin/"
    cp -a "$R/usr/lib/x86_64-linux-gnu/." "$D/usr/lib/x86_64-linux-gnu/" 2>/dev/null || true
    copy_libs "$D"/usr/lib/xen-$XENV/bin/* "$D"/usr/bin/xenstore
    # dlopen()ed, so ldd does not list it: pthread_cancel in xl aborts without it.
    mkdir -p "$D/lib/x86_64-linux-gnu" && cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$D/lib/x86_64-linux-gnu/"
    : > "$D/etc/xen/xl.conf"
    # LibVMI dlopen()s the unversioned names (libxenstore.so, ...), which only -dev ships.
    for lib in "$D"/usr/lib/x86_64-linux-gnu/libxen*.so.*; do
        ln -sf "$(basename "$lib")" "${lib%%.so.*}.so"
    done
    # Python, its standard library, and the venv's packages with this tree's xenhpt.
    mkdir -p "$D/usr/bin" "$D/usr/lib/$PY" "$D/opt/site"
    cp "/usr/bin/$PY" "$D/usr/bin/$PY"
    (cd "/usr/lib/$PY" && tar cf - --exclude=test --exclude=idlelib --exclude=tkinter \
        --exclude=lib2to3 --exclude=ensurepip --exclude=turtledemo .) | (cd "$D/usr/lib/$PY" && tar xf -)
    copy_libs "/usr/bin/$PY" "/usr/lib/$PY"/lib-dynload/*.so
    local site="$REPO/.venv/lib/$PY/site-packages"
    (cd "$site" && tar cf - --exclude=pip --exclude=ruff --exclude=volatility3 \
        --exclude=setuptools --exclude='*.pth' \
        --exclude='__editable__*' .) | (cd "$D/opt/site" && tar xf -)
    copy_libs "$site"/_libvmi.abi3.so "$site"/libvmi.libs/*.so* "$site"/_cffi_backend*.so
    (cd "$REPO" && tar cf - --exclude=__pycache__ xenhpt) | (cd "$D/opt/site" && tar xf -)
    mkdir -p "$D/root/.cache/xenhpt"
    cp -r "$HOME/.cache/xenhpt/profiles" "$D/root/.cache/xenhpt/"
    cp "$HOME/.cache/xenhpt/profile-banners.json" "$D/root/.cache/xenhpt/" 2>/dev/null || true
    cat > "$D/usr/bin/xenhpt" <<EOF
#!/bin/sh
exec /usr/bin/$PY -c 'from xenhpt.cli.main import main; main()' "\$@"
EOF
    chmod +x "$D/usr/bin/xenhpt"
    cp "$DOMU_KERNEL" "$D/lab/vmlinuz"
    cp "$HERE/probe.py" "$HERE/checks.py" "$D/lab/"
    if [ -n "${XENLAB_STEPS:-}" ]; then cp "$XENLAB_STEPS" "$D/lab/steps.sh"; fi
    echo "export XENHPT_XEN_TRAP=$TRAP XENLAB_DOMU=$DOMU_TYPE" > "$D/lab/env"
    if [ "$DOMU_TYPE" = pvh ]; then
        cp "$CACHE/domu.cpio.gz" "$D/lab/initrd"
        cat > "$D/etc/xen/lab.cfg" <<'EOF'
name = "lab"
type = "pvh"
kernel = "/lab/vmlinuz"
ramdisk = "/lab/initrd"
extra = "console=hvc0 nokaslr"
memory = 256
vcpus = 1
tsc_mode = "native"
on_crash = "preserve"
EOF
    else
        cp "$LAB_INITRD" "$D/lab/initrd"
        # The tests' code runs in dom0 (tools/xenlab/checks.py imports their checks).
        (cd "$REPO" && tar cf - --exclude=__pycache__ tests) | (cd "$D/opt/site" && tar xf -)
        # Debian's Xen device model, hvmloader (in xen-utils) and its firmware.
        mkdir -p "$D/usr/libexec" "$D/usr/share/qemu" "$D/usr/share/seabios"
        cp "$R/usr/libexec/xen-qemu-system-i386" "$D/usr/libexec/"
        copy_libs "$D/usr/libexec/xen-qemu-system-i386"
        mkdir -p "$D/usr/lib/xen-$XENV/boot"
        cp "$R/usr/lib/xen-$XENV/boot/hvmloader" "$D/usr/lib/xen-$XENV/boot/"
        cp "$R"/usr/share/seabios/bios-256k.bin "$D/usr/share/seabios/"
        for f in linuxboot.bin linuxboot_dma.bin kvmvapic.bin; do
            cp "$R/usr/share/qemu/$f" "$D/usr/share/qemu/"
        done
        # read at start even with -vnc none ("could not read keymap file: 'en-us'")
        mkdir -p "$D/usr/share/qemu/keymaps" && cp "$R/usr/share/qemu/keymaps/en-us" "$D/usr/share/qemu/keymaps/"
        # ttyS0: a pty (unused); ttyS1: the lab's exec agent, a socket in dom0 (checks.py).
        cat > "$D/etc/xen/lab.cfg" <<'EOF'
name = "lab"
type = "hvm"
kernel = "/lab/vmlinuz"
ramdisk = "/lab/initrd"
cmdline = "console=hvc0 nokaslr panic=-1 quiet"
memory = 256
vcpus = 1
tsc_mode = "native"
on_crash = "preserve"
vga = "none"
nographic = 1
vnc = 0
sdl = 0
serial = [ "pty", "unix:/var/run/xenlab-agent.sock,server,nowait" ]
EOF
    fi
    cp "$HERE/dom0-init.sh" "$D/init"
    chmod +x "$D/init"
    (cd "$D" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$CACHE/dom0.cpio.gz"
}
build_dom0
say "dom0 initramfs: $(du -h "$CACHE/dom0.cpio.gz" | cut -f1)"

# 4. Boot (QEMU 7.2 TCG; smap=0 smep=0 or the PV dom0 dies at 6 s, DESIGN.md).
LOG=$CACHE/console.log
say "booting Xen (log: $LOG, timeout ${TIMEOUT}s)"
set +e
timeout "$TIMEOUT" "$QEMU" -accel tcg -cpu max -m 2048 -smp 2 -nographic \
    -no-reboot -serial "file:$LOG" -monitor none -display none -nic none \
    -L /usr/share/qemu -L /usr/share/seabios -L /usr/lib/ipxe/qemu \
    -kernel "$CACHE/xen.elf" \
    -append "console=com1 com1=115200 dom0_mem=1024M smap=0 smep=0 loglvl=all guest_loglvl=all" \
    -initrd "$R/boot/vmlinuz-$KREL-amd64 console=hvc0 earlyprintk=xen rdinit=/init,$CACHE/dom0.cpio.gz"
rc=$?
set -e
say "QEMU exited ($rc)"
sed -n '/XENLAB-BEGIN/,/XENLAB-END/p' "$LOG"
summary=$(grep -a -o 'xenlab: [0-9]* passed, [0-9]* failed' "$LOG" | tail -n 1 || true)
echo "${summary:-xenlab: 0 passed, 1 failed (dom0 never reported: see $LOG)}"
grep -q "XENLAB-PASS" "$LOG"
