#!/usr/bin/env bash
# Install the host packages the interop VM harness needs (Debian/Ubuntu host, run as root).
# Idempotent: does nothing when every package is already installed.
set -euo pipefail

HOST_PACKAGES=(
    qemu-system-x86   # qemu-system-x86_64 (TCG)
    qemu-utils        # qemu-img (qcow2 base + overlays)
    mmdebstrap        # builds the trixie root file system without root-only chroot tricks
    debian-archive-keyring  # trixie's signing keys (bookworm's keyring package ships them)
    e2fsprogs         # mke2fs -d: turns the rootfs tarball/dir into an ext4 image without loop mounts
    iproute2          # ip netns / bridge / tap / veth
    nftables          # optional NAT namespace for the NAT-T scenario
    python3           # the VM manager (ixvm.py, stdlib only)
    iputils-ping      # pings from attached namespaces
    tcpdump           # captures on the WAN bridge
    tshark            # dissects the captures with dmvpnd's exported keys (dmvpnd-spoke.sh, wrong-keys.sh)
)

missing=()
for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
    echo "install-deps: all host packages present"
    exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
