#!/usr/bin/env bash
# Fails, naming each option, when a .config lacks an option a fragment asks for.
# Kconfig drops options whose dependencies are missing without a word; this makes it loud.
# Usage: scripts/check-config.sh BUILD/.config FRAGMENT...
set -euo pipefail
. "$(dirname "$0")/lib.sh"
exec "$(harness_bin vmrun)" check-config "$@"
