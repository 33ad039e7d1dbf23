#!/usr/bin/env bash
# Builds the test kernel for `hvemu run` and the Linux tests: Debian's linux-source-6.1,
# tinyconfig + scripts/kernel/hvemu.config, an uncompressed vmlinux (booted through its PVH
# entry: no decompressor runs in the guest) and the bzImage of the same build (the 64-bit boot
# protocol path). Cached outside the repository, never committed: $HVEMU_KERNEL_CACHE (default
# ~/.cache/hvemu/kernel), one build directory per config fragment (out of tree, so builds of
# different fragments never share objects). Prints the vmlinux path on its last line, or the
# bzImage path with --bzimage.
set -euo pipefail
want=vmlinux
case "${1:-}" in
  --bzimage) want=bzImage ;;
  "") ;;
  *) echo "usage: build-test-kernel.sh [--bzimage]" >&2; exit 2 ;;
esac
here="$(cd "$(dirname "$0")" && pwd)"
cache="${HVEMU_KERNEL_CACHE:-$HOME/.cache/hvemu/kernel}"
fragment="$here/kernel/hvemu.config"
stamp="$(sha256sum "$fragment" | cut -c1-16)"
vmlinux="$cache/vmlinux-6.1-$stamp"
bzimage="$cache/bzImage-6.1-$stamp"
out="$vmlinux"; [ "$want" = bzImage ] && out="$bzimage"
if [ -f "$vmlinux" ] && [ -f "$bzimage" ]; then echo "$out"; exit 0; fi

need=()
[ -f /usr/src/linux-source-6.1.tar.xz ] || need+=(linux-source-6.1)
for tool in gcc make bc flex bison lz4; do command -v "$tool" >/dev/null 2>&1 || need+=("$tool"); done
[ -f /usr/include/libelf.h ] || need+=(libelf-dev)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

mkdir -p "$cache"
# A pristine source tree (never configured in place: out-of-tree builds need that).
src="$cache/src-6.1"
if [ ! -f "$src/.extracted" ]; then
  rm -rf "$src" && mkdir -p "$src"
  tar -C "$src" --strip-components=1 -xf /usr/src/linux-source-6.1.tar.xz
  touch "$src/.extracted"
fi
build="$cache/build-6.1-$stamp"
mkdir -p "$build"
make -s -C "$src" O="$build" tinyconfig >/dev/null
"$src/scripts/kconfig/merge_config.sh" -m -O "$build" "$build/.config" "$fragment" >/dev/null
make -s -C "$src" O="$build" olddefconfig >/dev/null
missing=0
while IFS= read -r line; do
  case "$line" in CONFIG_*=y) grep -qx "$line" "$build/.config" || { echo "build-test-kernel: $line did not stay on after olddefconfig" >&2; missing=1; } ;; esac
done < "$fragment"
[ "$missing" -eq 0 ] || exit 1
make -s -C "$src" O="$build" -j"$(nproc)" vmlinux bzImage >/dev/null
cp "$build/vmlinux" "$vmlinux"
cp "$build/arch/x86/boot/bzImage" "$bzimage"
echo "$out"
