#!/usr/bin/env bash
# Build (or reuse) the interop VM base image: Debian trixie + kernel + strongSwan + FRR + tcpdump.
#
#   tests/interop/build-image.sh          # prints the image directory on stdout (last line)
#   IX_REBUILD=1 tests/interop/build-image.sh   # force a rebuild
#
# Cache: $IX_CACHE (default /var/tmp/dmvpnd-interop)/images/<hash>/ with base.qcow2, vmlinuz, initrd.img,
# versions.txt. <hash> covers this script and guest/ (package list, init, agent), so any recipe change
# builds a new image. Only Debian packages from the host's own Debian mirror are used.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${IX_CACHE:-/var/tmp/dmvpnd-interop}
SUITE=${IX_SUITE:-trixie}

log() { echo "build-image: $*" >&2; }

# The first Debian (non-security) archive URI in the host's apt sources; override with IX_MIRROR.
host_mirror() {
    local f uri
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        uri=$(grep -hoE '^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)[a-z]+://[^[:space:]]+' "$f" \
            | grep -oE '[a-z]+://[^[:space:]]+' | grep -E '/debian/?$' | grep -v security | head -n1 || true)
        if [ -n "$uri" ]; then echo "${uri%/}"; return; fi
    done
    echo http://deb.debian.org/debian
}

recipe_hash() {
    (cd "$HERE" && cat build-image.sh && find guest -type f | LC_ALL=C sort | while read -r f; do
        echo "== $f"; cat "$f"; done) | sha256sum | cut -c1-16
}

HASH=$(recipe_hash)
OUT="$CACHE/images/$SUITE-$HASH"
if [ -z "${IX_REBUILD:-}" ] && [ -f "$OUT/ready" ]; then
    log "cached image $OUT"
    echo "$OUT"
    exit 0
fi

mkdir -p "$CACHE/images"
exec 9>"$CACHE/images/.build.lock"
flock 9
if [ -z "${IX_REBUILD:-}" ] && [ -f "$OUT/ready" ]; then echo "$OUT"; exit 0; fi

MIRROR=${IX_MIRROR:-$(host_mirror)}
command -v mmdebstrap >/dev/null || { log "mmdebstrap missing: run tests/interop/install-deps.sh"; exit 1; }
curl -fsS -o /dev/null "$MIRROR/dists/$SUITE/InRelease" 2>/dev/null \
    || log "warning: could not fetch $MIRROR/dists/$SUITE/InRelease (continuing, mmdebstrap will tell)"

WORK="$CACHE/images/.work-$HASH"
rm -rf "$WORK" "$OUT"
mkdir -p "$WORK" "$OUT"
trap 'rm -rf "$WORK"' EXIT
PKGS=$(sed -e 's/#.*//' "$HERE/guest/packages.txt" | tr -s ' \t\n' ',' | sed -e 's/^,//' -e 's/,$//')
log "suite $SUITE from $MIRROR"
log "packages $PKGS"
start=$(date +%s)

# Keys for trixie: the host's debian-archive-keyring (bookworm's 2023.3+deb12u2 already carries them).
mmdebstrap --variant=apt --components=main --include="$PKGS" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook="install -m 0755 '$HERE/guest/ix-init' \"\$1/sbin/ix-init\"" \
    --customize-hook="install -m 0755 '$HERE/guest/ix-agent' \"\$1/usr/local/sbin/ix-agent\"" \
    --customize-hook='cp -L "$1/vmlinuz" "'"$OUT"'/vmlinuz"; cp -L "$1/initrd.img" "'"$OUT"'/initrd.img"' \
    --customize-hook='chroot "$1" dpkg-query -W -f "\${Package} \${Version}\n" > "'"$OUT"'/packages.txt"' \
    --customize-hook='echo "root:dmvpn" | chroot "$1" chpasswd' \
    "$SUITE" "$WORK/root" "$MIRROR" >&2

# ext4 image straight from the directory (no loop mount needed), then qcow2 so each VM gets an overlay.
size_mb=$(( $(du -sm "$WORK/root" | cut -f1) * 13 / 10 + 512 ))
mke2fs -q -t ext4 -L ixroot -d "$WORK/root" "$WORK/root.img" "${size_mb}M"
qemu-img convert -O qcow2 "$WORK/root.img" "$OUT/base.qcow2"
{
    echo "suite $SUITE mirror $MIRROR built $(date -u +%FT%TZ) in $(( $(date +%s) - start ))s"
    grep -E '^(linux-image-[0-9][^ ]*|strongswan-charon|strongswan-swanctl|frr|tcpdump|python3|iproute2) ' "$OUT/packages.txt"
} > "$OUT/versions.txt"
touch "$OUT/ready"
log "built $OUT in $(( $(date +%s) - start ))s"
cat "$OUT/versions.txt" >&2
echo "$OUT"
