#!/usr/bin/env bash
# The interop topology: a WAN bridge in its own network namespace, a strongSwan+FRR hub VM and spoke VM on
# it, and hooks to attach further namespaces (where dmvpnd runs), directly or through a NAT namespace.
#
#   rig.sh up [--no-hub] [--no-spoke] [--spoke-hub-nbma ADDR]   create netns + bridge, boot and configure VMs
#   rig.sh attach NS ADDR/PREFIX [GW]      veth from netns NS (created if missing) onto the WAN bridge
#   rig.sh attach-nat NS [HOST_OCTET]      NS behind a masquerading NAT netns (dmvpn-ix-nat); NS gets
#                                          192.168.77.HOST_OCTET/24 (default 10), default route via the NAT
#   rig.sh status                          namespaces, VMs, SAs and NHRP caches
#   rig.sh down                            stop the VMs, delete every namespace this rig created
#
#           netns dmvpn-ix-wan: bridge br-wan, 198.51.100.254/24 (observer)
#     +------------+-------------+-------------------+--------------------------+
#   tap          tap           veth (attach)       veth (attach-nat)
#   VM ix-hub    VM ix-spoke   netns NS            netns dmvpn-ix-nat: wan 198.51.100.100, masquerade
#   .1 / 10.250.0.1  .3 / 10.250.0.5  e.g. dmvpnd .9      lan 192.168.77.1 -- veth -- netns NS .77.10
#
# Environment overrides: see lib.sh (IX_WAN_NS, IX_HUB_NBMA, IX_SPOKE_TUNNEL, IX_PSK, IX_NHRP_KEY, ...).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
IX_TEST=${IX_TEST:-rig}
STATE="$IX_CACHE/rig-netns"   # one namespace per line, created by this rig, deleted by "down"

created_ns() { mkdir -p "$IX_CACHE"; echo "$1" >> "$STATE"; }

ensure_ns() {
    if ! ip netns list | grep -qw -- "$1"; then
        ip netns add "$1"
        created_ns "$1"
        ip -n "$1" link set lo up
    fi
}

cmd_up() {
    local hub=1 spoke=1 spoke_hub_nbma=$IX_HUB_NBMA
    while (($#)); do
        case $1 in
            --no-hub) hub=0 ;;
            --no-spoke) spoke=0 ;;
            --spoke-hub-nbma) spoke_hub_nbma=$2; shift ;;
            *) ix_fail "rig up: unknown option $1" ;;
        esac
        shift
    done
    ensure_ns "$IX_WAN_NS"
    if ! ip -n "$IX_WAN_NS" link show "$IX_BRIDGE" >/dev/null 2>&1; then
        ip -n "$IX_WAN_NS" link add "$IX_BRIDGE" type bridge
        ip -n "$IX_WAN_NS" addr add "$IX_OBSERVER/24" dev "$IX_BRIDGE"
        ip -n "$IX_WAN_NS" link set "$IX_BRIDGE" up
    fi
    ix_vm image > /dev/null   # build once before two VMs race for it
    # Boot in parallel (TCG boot is the slow part), then configure the hub before the spoke: a spoke whose
    # IKE_SA_INIT reaches a charon that has not loaded its connections yet gets NO_PROPOSAL_CHOSEN.
    local pids=() rc=0 p
    ((hub)) && { ix_vm up "$IX_HUB" --netns "$IX_WAN_NS" --bridge "$IX_BRIDGE" --ip "$IX_HUB_NBMA/24" & pids+=($!); }
    ((spoke)) && { ix_vm up "$IX_SPOKE" --netns "$IX_WAN_NS" --bridge "$IX_BRIDGE" --ip "$IX_SPOKE_NBMA/24" & pids+=($!); }
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    ((rc == 0)) || return 1
    pids=()
    if ((hub)); then
        ix_vm configure "$IX_HUB" --ip "$IX_HUB_NBMA/24" --role hub --tunnel-ip "$IX_HUB_TUNNEL" &
        pids+=($!)
        if ((spoke)); then
            sleep 2   # (a cheap poll: a command that keeps the hub's agent busy would delay its configure)
            ix_wait "$IX_HUB" 120 '^ready' sh -c 'test -e /run/ix-charon-ready && echo ready' \
                || ix_fail "hub: swanctl config not loaded"
        fi
    fi
    if ((spoke)); then
        ix_vm configure "$IX_SPOKE" --ip "$IX_SPOKE_NBMA/24" --role spoke --tunnel-ip "$IX_SPOKE_TUNNEL" \
            --hub-nbma "$spoke_hub_nbma" --hub-tunnel-ip "$IX_HUB_TUNNEL" &
        pids+=($!)
    fi
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    return $rc
}

# attach NS ADDR/PREFIX [GW]: a veth pair, one end in NS with ADDR, the other a port of the WAN bridge.
cmd_attach() {
    local ns=$1 addr=$2 gw=${3:-}
    ensure_ns "$ns"
    local port="ixv-${ns: -8}"
    ip link add "$port" netns "$IX_WAN_NS" type veth peer name eth0 netns "$ns"
    ip -n "$IX_WAN_NS" link set "$port" master "$IX_BRIDGE" up
    ip -n "$ns" addr add "$addr" dev eth0
    ip -n "$ns" link set eth0 up
    [ -z "$gw" ] || ip -n "$ns" route add default via "$gw"
    ix_log "netns $ns: eth0 $addr on $IX_WAN_NS/$IX_BRIDGE${gw:+, default via $gw}"
}

# attach-nat NS [OCTET]: NS --veth-- NAT netns (masquerade) --veth-- WAN bridge. Models the EC2 1:1 NAT
# closely enough for NAT-T: the hub sees the NAT's WAN address and a translated source port.
cmd_attach_nat() {
    local ns=$1 octet=${2:-10}
    if ! ip netns list | grep -qw -- "$IX_NAT_NS"; then
        cmd_attach "$IX_NAT_NS" "$IX_NAT_WAN/24"
        ip netns exec "$IX_NAT_NS" sysctl -q -w net.ipv4.ip_forward=1
        ip -n "$IX_NAT_NS" link add lan type bridge
        ip -n "$IX_NAT_NS" addr add "$IX_NAT_LAN_NET.1/24" dev lan
        ip -n "$IX_NAT_NS" link set lan up
        ip netns exec "$IX_NAT_NS" nft -f - <<EOF
table ip ix_nat {
    chain post {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "eth0" ip saddr $IX_NAT_LAN_NET.0/24 masquerade
    }
}
EOF
    fi
    ensure_ns "$ns"
    local port="ixn-${ns: -8}"
    ip link add "$port" netns "$IX_NAT_NS" type veth peer name eth0 netns "$ns"
    ip -n "$IX_NAT_NS" link set "$port" master lan up
    ip -n "$ns" addr add "$IX_NAT_LAN_NET.$octet/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$IX_NAT_LAN_NET.1"
    ix_log "netns $ns: eth0 $IX_NAT_LAN_NET.$octet/24 behind NAT $IX_NAT_NS ($IX_NAT_WAN)"
}

cmd_status() {
    ip netns list | grep -E "^($IX_WAN_NS|$IX_NAT_NS)" || true
    [ -f "$STATE" ] && echo "created by rig: $(sort -u "$STATE" | tr '\n' ' ')"
    ix_vm list
    local vm
    for vm in "$IX_HUB" "$IX_SPOKE"; do
        [ -f "$IX_CACHE/vms/$vm/qemu.pid" ] || continue
        echo "== $vm"
        ix_exec "$vm" sh -c 'swanctl --list-sas; vtysh -c "show ip nhrp cache" -c "show ip nhrp nhs"' || true
    done
}

cmd_down() {
    local vms=() vm
    for vm in "$IX_HUB" "$IX_SPOKE"; do [ -d "$IX_CACHE/vms/$vm" ] && vms+=("$vm"); done
    ((${#vms[@]} == 0)) || ix_vm down "${vms[@]}"
    if [ -f "$STATE" ]; then
        local ns
        # the NAT and attached namespaces first, the WAN namespace last
        for ns in $(tac "$STATE" | awk '!seen[$0]++'); do
            ip netns del "$ns" 2>/dev/null || true
        done
        rm -f "$STATE"
    fi
}

case ${1:-} in
    up) shift; cmd_up "$@" ;;
    attach) shift; (($# >= 2)) || ix_fail "usage: rig.sh attach NS ADDR/PREFIX [GW]"; cmd_attach "$@" ;;
    attach-nat) shift; (($# >= 1)) || ix_fail "usage: rig.sh attach-nat NS [OCTET]"; cmd_attach_nat "$@" ;;
    status) cmd_status ;;
    down) cmd_down ;;
    *) sed -n '2,22p' "$0"; exit 2 ;;
esac
