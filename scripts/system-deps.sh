#!/usr/bin/env bash
# Debian packages the test suite needs (outside programs that check our files).
# Installs only what is missing; uses sudo when not root.
set -euo pipefail
packages=$(sed -e 's/#.*//' "$(dirname "$0")/system-packages.txt" | xargs)
[ -n "$packages" ] || exit 0
missing=$(for p in $packages; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"; done)
[ -n "$missing" ] || exit 0
if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
echo "installing Debian packages for the tests: $missing"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
