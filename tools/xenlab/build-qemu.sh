#!/bin/bash
# Build the Xen lab's own qemu-system-x86_64: Debian bookworm's QEMU 7.2 source (the version
# of the host's qemu-system-x86) with qemu-svm-int3.patch, so that a nested guest's INT3
# reaches Xen's #BP intercept (docs/xen.md, "The lab's QEMU"). Only the Xen lab uses it.
#
#   tools/xenlab/build-qemu.sh      prints the binary's path (builds it first if missing)
#
# Everything lives in ~/.cache/xenhpt/xenlab/qemu-int3: a private apt list with deb-src
# lines (the host's /etc/apt is not touched), the source, the build. The build deps are
# installed on the host (meson, glib, pixman). ~15 min on 2 cores, niced.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${XENLAB_CACHE:-$HOME/.cache/xenhpt/xenlab}
DIR=$CACHE/qemu-int3
PATCH=$HERE/qemu-svm-int3.patch
BIN=$DIR/build/qemu-system-x86_64
say() { echo "xenlab: $*" >&2; }

# Rebuilt when the patch changes (its checksum is kept beside the binary).
sum=$(sha256sum "$PATCH" | cut -c1-16)
if [ -x "$BIN" ] && [ "$(cat "$DIR/build/.patch-sum" 2>/dev/null)" = "$sum" ]; then
    echo "$BIN"; exit 0
fi

# The host's QEMU version, so the lab's binary differs from it by the patch only.
version=$(dpkg-query -W -f='${source:Version}' qemu-system-x86 2>/dev/null || true)
[ -n "$version" ] || { say "qemu-system-x86 is not installed (run 'make setup')"; exit 1; }
say "building qemu-system-x86_64 $version + $(basename "$PATCH") in $DIR (~15 min)"

deps=(dpkg-dev meson ninja-build pkg-config gcc libglib2.0-dev libpixman-1-dev zlib1g-dev
      libfdt-dev)
missing=()
for p in "${deps[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    say "installing build deps: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

# Debian's source package, through a private apt list with deb-src lines.
apt=$DIR/apt
mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$DIR/src"
cat > "$apt/sources.list" <<LIST
deb-src http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian bookworm-updates main
deb-src http://deb.debian.org/debian-security bookworm-security main
LIST
opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o APT::Sandbox::User=root)
upstream=${version#*:}
if [ ! -f "$DIR/src/qemu_${upstream}.dsc" ]; then
    apt-get -qq "${opts[@]}" update
    (cd "$DIR/src" && apt-get -qq "${opts[@]}" source --download-only "qemu=$version")
fi
rm -rf "$DIR/src/qemu" "$DIR/build"
dpkg-source -x "$DIR/src/qemu_${upstream}.dsc" "$DIR/src/qemu" >"$DIR/src/unpack.log" 2>&1  # + Debian's patches
patch -d "$DIR/src/qemu" -p1 < "$PATCH" >/dev/null

# Only the x86_64 system emulator with TCG; nothing the lab's command line does not use.
mkdir -p "$DIR/build"
cd "$DIR/build"
"$DIR/src/qemu/configure" --target-list=x86_64-softmmu --without-default-features \
    --enable-tcg --disable-docs --disable-tools --disable-werror --disable-install-blobs \
    --disable-user --enable-fdt=system --meson=meson --prefix=/usr >configure.log 2>&1 \
    || { tail -n 20 configure.log >&2; say "configure failed ($DIR/build/configure.log)"; exit 1; }
nice -n 10 ninja -j"$(nproc)" qemu-system-x86_64 >ninja.log 2>&1 \
    || { tail -n 20 ninja.log >&2; say "build failed ($DIR/build/ninja.log)"; exit 1; }
echo "$sum" > .patch-sum
echo "$BIN"
