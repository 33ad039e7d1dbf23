#!/usr/bin/env bash
# Builds the test kernel for `hvemu run` and the Linux tests: Debian's linux-source-6.1,
# tinyconfig + scripts/kernel/hvemu.config, an uncompressed vmlinux (booted through its PVH
# entry: no decompressor runs in the guest). Cached outside the repository, never committed:
# $HVEMU_KERNEL_CACHE (default ~/.cache/hvemu/kernel); prints the vmlinux path on its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${HVEMU_KERNEL_CACHE:-$HOME/.cache/hvemu/kernel}"
fragment="$here/kernel/hvemu.config"
stamp="$(sha256sum "$fragment" | cut -c1-16)"
out="$cache/vmlinux-6.1-$stamp"
if [ -f "$out" ]; then echo "$out"; exit 0; fi

need=()
[ -f /usr/src/linux-source-6.1.tar.xz ] || need+=(linux-source-6.1)
for tool in gcc make bc flex bison; do command -v "$tool" >/dev/null 2>&1 || need+=("$tool"); done
[ -f /usr/include/libelf.h ] || need+=(libelf-dev)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

mkdir -p "$cache"
src="$cache/linux-source-6.1"
if [ ! -d "$src" ]; then
  tar -C "$cache" -xf /usr/src/linux-source-6.1.tar.xz
fi
cd "$src"
make -s tinyconfig
./scripts/kconfig/merge_config.sh -m .config "$fragment" >/dev/null
make -s olddefconfig
missing=0
while IFS= read -r line; do
  case "$line" in CONFIG_*=y) grep -qx "$line" .config || { echo "build-test-kernel: $line did not stay on after olddefconfig" >&2; missing=1; } ;; esac
done < "$fragment"
[ "$missing" -eq 0 ] || exit 1
make -s -j"$(nproc)" vmlinux
cp vmlinux "$out"
echo "$out"
