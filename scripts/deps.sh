#!/usr/bin/env bash
# Installs the Debian packages the project needs (bookworm), and says which ones
# (rsync: make headers_install uses it).
# Idempotent: with everything present it installs nothing.
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

pkgs=(linux-source-6.1 qemu-system-x86 qemu-system-data busybox-static e2fsprogs fio ccache flex bison
	libelf-dev libssl-dev bc cpio quilt sparse build-essential git python3 shellcheck rsync)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	say "deps: all ${#pkgs[@]} packages present"
	exit 0
fi
say "deps: installing ${missing[*]}"
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
command -v cargo >/dev/null || die "cargo is missing: install a Rust toolchain (rustup) first"
say "deps: done"
