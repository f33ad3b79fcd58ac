#!/usr/bin/env bash
# Build (or reuse) the systemd variant of the interop image: the plain image's packages (../guest/packages.txt)
# plus systemd, dbus and passwd, booted with systemd as PID 1 (ixvm.py up --init /usr/lib/systemd/systemd).
# The exec agent runs as ix-agent.service. strongSwan's and FRR's own units are masked: the scenario starts
# the hub daemons itself, in a network namespace (conf/common/start-daemons.sh, as in the plain image).
# Nothing of the plain image's recipe changes, so its cache stays valid.
#
#   tests/interop/systemd/build-image.sh     # prints the image directory (last line)
#
# Cache: $IX_CACHE/images/trixie-systemd-<hash>/ (base.qcow2, vmlinuz, initrd.img, packages.txt, versions.txt);
# <hash> covers this directory and ../guest/{packages.txt,ix-agent}.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GUEST="$HERE/../guest"
CACHE=${IX_CACHE:-/var/tmp/dmvpnd-interop}
SUITE=${IX_SUITE:-trixie}
log() { echo "build-image-systemd: $*" >&2; }

host_mirror() {   # as in ../build-image.sh
    local f uri
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        uri=$(grep -hoE '^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)[a-z]+://[^[:space:]]+' "$f" \
            | grep -oE '[a-z]+://[^[:space:]]+' | grep -E '/debian/?$' | grep -v security | head -n1 || true)
        if [ -n "$uri" ]; then echo "${uri%/}"; return; fi
    done
    echo http://deb.debian.org/debian
}

HASH=$( (cd "$HERE" && for f in build-image.sh packages.txt ix-agent.service ../guest/packages.txt ../guest/ix-agent; do
    echo "== $f"; cat "$f"; done) | sha256sum | cut -c1-16)
OUT="$CACHE/images/$SUITE-systemd-$HASH"
if [ -z "${IX_REBUILD:-}" ] && [ -f "$OUT/ready" ]; then log "cached image $OUT"; echo "$OUT"; exit 0; fi

mkdir -p "$CACHE/images"
exec 9>"$CACHE/images/.build.lock"
flock 9
if [ -z "${IX_REBUILD:-}" ] && [ -f "$OUT/ready" ]; then echo "$OUT"; exit 0; fi
MIRROR=${IX_MIRROR:-$(host_mirror)}
command -v mmdebstrap >/dev/null || { log "mmdebstrap missing: run tests/interop/install-deps.sh"; exit 1; }
WORK="$CACHE/images/.work-systemd-$HASH"
rm -rf "$WORK" "$OUT"
mkdir -p "$WORK" "$OUT"
trap 'rm -rf "$WORK"' EXIT
PKGS=$(cat "$GUEST/packages.txt" "$HERE/packages.txt" | sed -e 's/#.*//' | tr -s ' \t\n' ',' | sed -e 's/^,//' -e 's/,$//')
log "suite $SUITE from $MIRROR; packages $PKGS"
start=$(date +%s)
mmdebstrap --variant=apt --components=main --include="$PKGS" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook="install -m 0755 '$GUEST/ix-agent' \"\$1/usr/local/sbin/ix-agent\"" \
    --customize-hook="install -m 0644 '$HERE/ix-agent.service' \"\$1/etc/systemd/system/ix-agent.service\"" \
    --customize-hook='systemctl --root="$1" enable ix-agent.service' \
    --customize-hook='systemctl --root="$1" mask frr.service strongswan.service strongswan-starter.service ipsec.service cron.service logrotate.timer dpkg-db-backup.timer apt-daily.timer apt-daily-upgrade.timer fstrim.timer e2scrub_all.timer e2scrub_reap.service getty@tty1.service serial-getty@ttyS0.service systemd-timesyncd.service' \
    --customize-hook='echo ix-systemd > "$1/etc/hostname"; printf "127.0.0.1 localhost\n127.0.1.1 ix-systemd\n" > "$1/etc/hosts"' \
    --customize-hook='cp -L "$1/vmlinuz" "'"$OUT"'/vmlinuz"; cp -L "$1/initrd.img" "'"$OUT"'/initrd.img"' \
    --customize-hook='chroot "$1" dpkg-query -W -f "\${Package} \${Version}\n" > "'"$OUT"'/packages.txt"' \
    --customize-hook='echo "root:dmvpn" | chroot "$1" chpasswd' \
    "$SUITE" "$WORK/root" "$MIRROR" >&2
size_mb=$(( $(du -sm "$WORK/root" | cut -f1) * 13 / 10 + 512 ))
mke2fs -q -t ext4 -L ixroot -d "$WORK/root" "$WORK/root.img" "${size_mb}M"
qemu-img convert -O qcow2 "$WORK/root.img" "$OUT/base.qcow2"
{
    echo "suite $SUITE mirror $MIRROR built $(date -u +%FT%TZ) in $(( $(date +%s) - start ))s"
    grep -E '^(linux-image-[0-9][^ ]*|systemd|apt|strongswan-charon|frr|iproute2) ' "$OUT/packages.txt"
} > "$OUT/versions.txt"
touch "$OUT/ready"
log "built $OUT in $(( $(date +%s) - start ))s"
cat "$OUT/versions.txt" >&2
echo "$OUT"
