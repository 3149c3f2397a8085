#!/usr/bin/env bash
# Runs every test. Installs what the tests need (FUSE 3, Apache with mod_dav, nginx with its
# WebDAV modules, lighttpd with mod_webdav, rclone, chezdav, PHP with SabreDAV, htpasswd,
# openssl, attr, LibreOffice, gnome-keyring) with apt-get and WsgiDAV with pip (into
# target/test-wsgidav) when missing, then runs cargo test.
# Needs root (or sudo) for apt-get and for FUSE mounts.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
[ -x /usr/sbin/apache2 ] || need+=(apache2)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v setfattr >/dev/null 2>&1 || need+=(attr)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v rsync >/dev/null 2>&1 || need+=(rsync)
command -v git >/dev/null 2>&1 || need+=(git)
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
[ -e /usr/lib/nginx/modules/ngx_http_dav_ext_module.so ] || need+=(libnginx-mod-http-dav-ext)
[ -x /usr/sbin/lighttpd ] || need+=(lighttpd)
[ -e /usr/lib/lighttpd/mod_webdav.so ] || need+=(lighttpd-mod-webdav)
[ -x /usr/bin/rclone ] || need+=(rclone)
# GNOME's phodav WebDAV server (Digest authentication, ISO 8601 dates).
[ -x /usr/bin/chezdav ] || need+=(chezdav)
# SabreDAV (the PHP library Nextcloud's WebDAV is built on), run by PHP's built-in server.
[ -x /usr/bin/php ] || need+=(php-cli)
[ -e /usr/share/php/Sabre/autoload.php ] || need+=(php-sabre-dav)
# LibreOffice (without its desktop parts) and its Python bridge: a test saves documents with it.
command -v soffice >/dev/null 2>&1 || need+=(libreoffice-writer-nogui)
[ -e /usr/lib/python3/dist-packages/uno.py ] || need+=(python3-uno)
# A desktop keyring (GNOME's Secret Service) on a private session bus: a test saves an app
# password there; another watches the desktop notifications sent on such a bus.
command -v gnome-keyring-daemon >/dev/null 2>&1 || need+=(gnome-keyring)
command -v dbus-daemon >/dev/null 2>&1 || need+=(dbus-daemon)
command -v dbus-send >/dev/null 2>&1 || need+=(dbus-bin)
command -v dbus-monitor >/dev/null 2>&1 || need+=(dbus-bin)
command -v secret-tool >/dev/null 2>&1 || need+=(libsecret-tools)
# A Python virtual environment for WsgiDAV (below).
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  # Packages install without starting their services (nginx would listen on port 80): the
  # tests start their own servers on 127.0.0.1.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
  fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  [ -z "$policy" ] || $SUDO rm -f "$policy"
fi
# WsgiDAV, one more WebDAV server nobody here wrote (from PyPI, in its own virtual environment
# under target/, so nothing is installed system-wide).
WSGIDAV_ENV=target/test-wsgidav
if [ ! -x "$WSGIDAV_ENV/bin/wsgidav" ]; then
  echo "installing: WsgiDAV 4.4.0 into $WSGIDAV_ENV"
  rm -rf "$WSGIDAV_ENV"
  python3 -m venv "$WSGIDAV_ENV"
  "$WSGIDAV_ENV/bin/pip" install --quiet --disable-pip-version-check \
    wsgidav==4.4.0 cheroot==11.1.2 PyYAML==6.0.3
fi
if [ ! -e /dev/fuse ]; then
  echo "error: /dev/fuse is missing; the tests mount real FUSE filesystems (load the fuse module)" >&2
  exit 1
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is missing; install Rust from https://rustup.rs" >&2
  exit 1
fi
exec cargo test --locked "$@"
