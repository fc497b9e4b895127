#!/usr/bin/env bash
# Set up everything xenhpt and its lab need on a Debian 12 machine (run as root).
# Idempotent: a re-run installs nothing and prints nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: QEMU for the lab, busybox for its initramfs, multilib gcc for the
# 32-bit test programs, strace for the in-guest cross-check, zstd for the kernel-image
# decompression test (kernels compressed with zstd are read through it), dwarves for
# pahole, which encodes a -dbg vmlinux's DWARF to BTF (profile build --dwarf), gdb as the
# independent DWARF reader that 'make dwarf' checks those profiles against.
packages=(qemu-system-x86 busybox-static gcc gcc-multilib strace zstd dwarves gdb)
python3 -c 'import ensurepip' 2>/dev/null || packages+=(python3-venv)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
        || missing+=("$pkg")
done
apt_updated=
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    apt_updated=1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
# The lab kernel is fetched with apt-get download, which needs package lists.
if [ -z "$apt_updated" ] && ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then
    apt-get update -qq
fi

# The Python environment, rebuilt when pyproject.toml changes.
if [ ! -x .venv/bin/xenhpt ] || [ pyproject.toml -nt .venv/.xenhpt-stamp ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
    touch .venv/.xenhpt-stamp
fi

# The lab's kernel, initramfs and profile, and QEMU 10 from bookworm-backports (unpacked
# into the cache beside the system QEMU) with the capture plugin built for it (cached).
.venv/bin/xenhpt lab prepare --quiet
