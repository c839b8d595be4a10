#!/usr/bin/env bash
# The shared libraries open3d and OCP (CadQuery) load: libGL, libEGL, libX11.
# A desktop Debian has them; a bare server does not. Installed with apt-get as
# root or with password-less sudo; otherwise, without root, the same Debian
# packages are downloaded (apt-get download needs no root) and unpacked into
# VENV/syslibs, from where orthocad preloads them (orthocad/_native.py).
# libusb, which open3d also needs, comes from the PyPI package libusb-package.
set -euo pipefail
venv=${1:?usage: runtime-deps.sh VENV}
libs="libGL.so.1 libEGL.so.1 libX11.so.6"
packages="libgl1 libglx0 libglvnd0 libegl1 libx11-6 libx11-data libxcb1 libxau6 libxdmcp6 libbsd0 libmd0"

missing=""
for lib in $libs; do
  ldconfig -p 2>/dev/null | grep -q " $lib " || /sbin/ldconfig -p 2>/dev/null | grep -q " $lib " || missing="$missing $lib"
done
[ -n "$missing" ] || exit 0
[ -d "$venv/syslibs/usr" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo"; else sudo="none"; fi
if [ "$sudo" != "none" ]; then
  echo "installing Debian packages for$missing"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $packages
  exit 0
fi

echo "no root: fetching$missing from Debian's packages into $venv/syslibs"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download $packages >/dev/null)
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
rm -rf "$venv/syslibs.tmp" && mv "$work/root" "$venv/syslibs.tmp" && mv "$venv/syslibs.tmp" "$venv/syslibs"
