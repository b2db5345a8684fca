#!/usr/bin/env bash
# Install a drsdtp node on a device (Debian/systemd), idempotently; or remove it.
#
#   deploy/install.sh [--wheel FILE] [--wheelhouse DIR] [--python PY] [--root DIR] [--enable]
#   deploy/install.sh --uninstall [--purge] [--root DIR]
#
# Install: a venv at /opt/drsdtp with the wheel (`make dist`; default: the newest dist/drsdtp-*.whl next to
# this script; dependencies from --wheelhouse only, else from the package index), /usr/local/bin/drsdtp, the
# system user drsdtp (systemd-sysusers), /var/lib/drsdtp (0750, the user's), the hardened unit
# /etc/systemd/system/drsdtp.service, and /etc/drsdtp/{drsdtp.toml,drsdtp.env} unless they exist (a starter
# config named after the host: edit it, it is never overwritten). Running it again upgrades the package and
# the unit and keeps the config and the data. --enable also runs `systemctl enable --now drsdtp`.
# Uninstall: stops and removes the unit, the venv and the command; keeps /etc/drsdtp, /var/lib/drsdtp and the
# user unless --purge. --root DIR works on another root (an image being built); the venv then records
# DIR in its paths, so use it from a chroot into DIR, not from outside.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=/ wheel="" wheelhouse="" python=python3 uninstall=0 purge=0 enable=0
while (($#)); do
  case $1 in
    --wheel) wheel=$2; shift ;;
    --wheelhouse) wheelhouse=$2; shift ;;
    --python) python=$2; shift ;;
    --root) root=$2; shift ;;
    --uninstall) uninstall=1 ;;
    --purge) purge=1 ;;
    --enable) enable=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
((purge && !uninstall)) && { echo "install.sh: --purge goes with --uninstall" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "install.sh: run as root" >&2; exit 1; }
root=${root%/}
opt=$root/opt/drsdtp unit=$root/etc/systemd/system/drsdtp.service etc=$root/etc/drsdtp
data=$root/var/lib/drsdtp sysusers=$root/usr/lib/sysusers.d/drsdtp.conf bin=$root/usr/local/bin/drsdtp
live=0  # a running systemd on this very root: start, stop and reload units
[[ -z $root && -d /run/systemd/system ]] && command -v systemctl >/dev/null && live=1
say() { echo "drsdtp install: $*"; }

if ((uninstall)); then
  if ((live)); then
    systemctl disable --now drsdtp.service 2>/dev/null || true
  fi
  rm -f "$unit" "$bin"
  rm -rf "$opt"
  ((live)) && systemctl daemon-reload
  say "removed the unit, /opt/drsdtp and /usr/local/bin/drsdtp"
  if ((purge)); then
    rm -rf "$data" "$etc"
    rm -f "$sysusers"
    if grep -q '^drsdtp:' "$root/etc/passwd" 2>/dev/null; then
      userdel ${root:+--root "$root"} drsdtp
    fi
    if grep -q '^drsdtp:' "$root/etc/group" 2>/dev/null; then
      groupdel ${root:+--root "$root"} drsdtp
    fi
    say "purged /var/lib/drsdtp, /etc/drsdtp and the drsdtp user"
  else
    say "kept /etc/drsdtp, /var/lib/drsdtp and the drsdtp user (--purge removes them)"
  fi
  exit 0
fi

if [[ -z $wheel ]]; then
  wheel=$(ls -t "$here"/../dist/drsdtp-*.whl 2>/dev/null | head -n1 || true)
  [[ -n $wheel ]] || { echo "install.sh: no wheel: run \`make dist\` or pass --wheel FILE" >&2; exit 1; }
fi
[[ -f $wheel ]] || { echo "install.sh: --wheel $wheel: no such file" >&2; exit 1; }
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  { echo "install.sh: $python is older than Python 3.11" >&2; exit 1; }

# The user first: the data dir and the unit need it.
install -D -m 0644 "$here/systemd/drsdtp.sysusers" "$sysusers"
systemd-sysusers ${root:+--root "$root"} "$sysusers"

# The package: a venv of its own, so the system's Python packages stay untouched; an upgrade reuses it.
[[ -x $opt/bin/python ]] || "$python" -m venv "$opt"
pip=("$opt/bin/python" -m pip install -q --disable-pip-version-check --upgrade)
[[ -n $wheelhouse ]] && pip+=(--no-index --find-links "$wheelhouse")
"${pip[@]}" --force-reinstall --no-deps "$wheel"
"${pip[@]}" "$wheel[all]"
mkdir -p "$(dirname "$bin")"
ln -sfn /opt/drsdtp/bin/drsdtp "$bin"

install -D -m 0644 "$here/systemd/drsdtp.service" "$unit"
install -d -m 0755 "$etc"
if [[ ! -e $etc/drsdtp.toml ]]; then
  node_id=$(hostname -s 2>/dev/null | tr -c 'A-Za-z0-9._\n-' '-' || true)
  sed "s/@NODE_ID@/${node_id:-edge-01}/" "$here/drsdtp.starter.toml" > "$etc/drsdtp.toml.new"
  chmod 0644 "$etc/drsdtp.toml.new" && mv "$etc/drsdtp.toml.new" "$etc/drsdtp.toml"
  say "wrote a starter config, /etc/drsdtp/drsdtp.toml (node_id ${node_id:-edge-01}): edit it"
fi
[[ -e $etc/drsdtp.env ]] || install -m 0644 "$here/systemd/drsdtp.env" "$etc/drsdtp.env"
install -d -m 0750 "$data"
uid=$(awk -F: '$1 == "drsdtp" {print $3 ":" $4}' "$root/etc/passwd")
chown "$uid" "$data"

if ((live)); then
  systemctl daemon-reload
  if ((enable)); then
    systemctl enable --now drsdtp.service
  elif systemctl is-active --quiet drsdtp.service; then
    systemctl restart drsdtp.service  # an upgrade: the running node takes the new package
  fi
fi
say "installed $("$opt/bin/drsdtp" --version 2>/dev/null || basename "$wheel") under /opt/drsdtp"
((enable)) || say "next: drsdtp check-config /etc/drsdtp/drsdtp.toml && systemctl enable --now drsdtp"
