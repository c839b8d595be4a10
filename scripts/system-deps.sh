#!/usr/bin/env bash
# Debian packages the test suite needs (outside programs that check our files).
# Installs only what is missing; uses sudo when not root.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then sudo=sudo; else sudo=; fi
# chromedriver and Selenium talk over "localhost"; every Debian install names it in /etc/hosts,
# but a bare chroot or container may have no /etc/hosts at all.
if ! getent hosts localhost >/dev/null; then
  echo "adding localhost to /etc/hosts (the browser test's driver needs it)"
  echo "127.0.0.1 localhost" | $sudo tee -a /etc/hosts >/dev/null
fi
packages=$(sed -e 's/#.*//' "$(dirname "$0")/system-packages.txt" | xargs)
[ -n "$packages" ] || exit 0
missing=$(for p in $packages; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"; done)
[ -n "$missing" ] || exit 0
echo "installing Debian packages for the tests: $missing"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
