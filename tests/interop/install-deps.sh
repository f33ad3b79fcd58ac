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
    frr               # zebra + ospfd beside the dmvpnd spoke (ospf-frr.sh)
    iperf3            # TCP load through the tunnel during the rekeys (rekey.sh)
)

# The commands the harness runs and the package that provides each: checked after installing,
# because installing one package can remove another. (A host image that ships a newer
# qemu-utils, e.g. a backport, loses it when apt installs the distribution's qemu-system-x86,
# whose qemu-system-common conflicts with it; asking for qemu-utils again then installs the
# version that matches.)
COMMANDS=(qemu-img:qemu-utils qemu-system-x86_64:qemu-system-x86 mmdebstrap:mmdebstrap
          mke2fs:e2fsprogs ip:iproute2 nft:nftables python3:python3 ping:iputils-ping
          tcpdump:tcpdump tshark:tshark vtysh:frr iperf3:iperf3)

missing_commands() {
    local c
    for c in "${COMMANDS[@]}"; do
        command -v "${c%%:*}" >/dev/null 2>&1 || echo "${c#*:}"
    done
}

missing=()
for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
mapfile -t lost < <(missing_commands)
if ((${#missing[@]} == 0 && ${#lost[@]} == 0)); then
    echo "install-deps: all host packages present"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
if ((${#missing[@]} > 0)); then
    echo "install-deps: installing ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
mapfile -t lost < <(missing_commands)
if ((${#lost[@]} > 0)); then
    echo "install-deps: reinstalling ${lost[*]} (removed by a conflict, or its command is missing)"
    apt-get install -y -q --no-install-recommends "${lost[@]}"
fi
mapfile -t lost < <(missing_commands)
if ((${#lost[@]} > 0)); then
    echo "install-deps: still missing the commands of: ${lost[*]}" >&2
    exit 1
fi
