#!/usr/bin/env bash
# OSPF point-to-multipoint between the stock strongSwan 6 + FRR 10 hub VM and a dmvpnd spoke running the host's
# FRR ospfd on dmvpn0 (docs/ospf.md, "FRR hubs"). The hub's gre1 has 10.250.0.1/32, as nhrpd wants, and its ospfd
# runs point-to-multipoint on it; nhrpd replicates the hub's multicast to the registered spokes
# (`nhrp multicast-nflog-group` + an nftables `log group` rule, FRR's nhrpd documentation). Passes when
#   0. (the problem, reproduced) a spoke addressed 10.250.0.9/24 registers but its ospfd refuses the hub's /32
#      hellos ("NetworkMask mismatch"): on point-to-multipoint the mask is checked (RFC 2328 §10.5 exempts only
#      point-to-point and virtual links; FRR >= 8.0 also a point-to-multipoint /32, which the hub is) -- no Full;
#   1. with `address = "10.250.0.9/32"` and `network = "10.250.0.0/24"` dmvpn0 holds only the /32 and dmvpnd routes
#      10.250.0.0/24 into it (proto 77), the spoke registers again,
#   2. the adjacency is Full on both ends within a bound,
#   3. the spoke's kernel has the hub's LAN 10.1.1.0/24 via 10.250.0.1 dev dmvpn0 proto ospf, and the hub's kernel
#      the spoke's LAN 172.16.3.0/24 via 10.250.0.9 dev gre1 proto ospf (no static route on either side),
#   4. LAN to LAN ping (172.16.3.1 -> 10.1.1.1 and back) works, through the hub's ESP SA (its counter grows).
# Hello 10 / dead 40 as the recipe; IX_OSPF_SKIP_MISMATCH=1 skips step 0 (about 40 s).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$IX_DIR/dmvpnd-lib.sh"
dx_init ospf-frr

HUB_LAN=10.1.1.0/24 HUB_LAN_IP=10.1.1.1          # the enterprise prefix behind the hub (conf/spoke.toml)
DUT_LAN=172.16.3.0/24 DUT_LAN_IP=172.16.3.1      # the reference spoke's LAN (docs/ospf.md)
HELLO=10 DEAD=40
FULL_TIMEOUT=$((DEAD + 50))                      # first hellos, 2-Way, DB exchange: ~10-30 s under TCG
FRR_SBIN=/usr/lib/frr
[ -x "$FRR_SBIN/ospfd" ] && [ -x "$FRR_SBIN/zebra" ] && command -v vtysh >/dev/null \
    || ix_fail "FRR (zebra, ospfd, vtysh) missing on the host: run tests/install-deps.sh"
id frr >/dev/null 2>&1 || ix_fail "no user frr on the host: install the Debian package frr"
ix_log "host FRR: $(dpkg-query -W -f '${Version}' frr 2>/dev/null)"

# ---- the spoke's FRR (zebra + ospfd in the dmvpnd namespace, foreground, own path space as in tests/src/ospf.rs)
FRR_PIDS=()
FRR_NAME=
frr_stop() {
    local p i
    for p in "${FRR_PIDS[@]}"; do      # ospfd first, then zebra
        kill "$p" 2>/dev/null || continue
        for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    FRR_PIDS=()
    [ -z "$FRR_NAME" ] || rm -rf "/var/run/frr/$FRR_NAME"
    FRR_NAME=
}
# frr_start TAG: zebra, then ospfd once zebra's zserv socket exists, configuration in $LOGS/frr-TAG/
frr_start() {
    local tag=$1 dir="$LOGS/frr-$1" i
    FRR_NAME="dmvpnix-$$-$tag"
    FRR_DIR=$dir
    mkdir -p "$dir" "/var/run/frr/$FRR_NAME"
    printf 'hostname dut-%s\nlog file %s/zebra.log informational\n' "$tag" "$dir" > "$dir/zebra.conf"
    # `ip ospf passive` on the interface: FRR 8.4 deprecates `passive-interface IFNAME` under router ospf.
    cat > "$dir/ospfd.conf" <<EOF
hostname dut-$tag
log file $dir/ospfd.log informational
!
interface dmvpn0
 ip ospf network point-to-multipoint
 ip ospf hello-interval $HELLO
 ip ospf dead-interval $DEAD
!
interface lan0
 ip ospf passive
!
router ospf
 ospf router-id $IX_DUT_TUNNEL
 network $IX_TUNNEL_NET area 0
 network $DUT_LAN area 0
!
EOF
    # vtysh -N NAME reads CONFIG_DIR/NAME/vtysh.conf; an empty one keeps it quiet.
    mkdir -p "$dir/$FRR_NAME"
    : > "$dir/$FRR_NAME/vtysh.conf"
    chown -R frr:frr "$dir" "/var/run/frr/$FRR_NAME"
    chown frr:frr /var/run/frr
    local d
    for d in zebra ospfd; do
        ip netns exec "$IX_DUT_NS" "$FRR_SBIN/$d" -N "$FRR_NAME" -P 0 -f "$dir/$d.conf" -i "$dir/$d.pid" \
            > "$dir/$d.stderr" 2>&1 &
        FRR_PIDS=("$!" "${FRR_PIDS[@]}")
        if [ "$d" = zebra ]; then
            for i in $(seq 100); do [ -S "/var/run/frr/$FRR_NAME/zserv.api" ] && break; sleep 0.1; done
            [ -S "/var/run/frr/$FRR_NAME/zserv.api" ] || ix_fail "spoke zebra did not start:"$'\n'"$(cat "$dir/zebra.stderr")"
        fi
    done
    for i in $(seq 100); do
        dut_vtysh -c 'show ip ospf' 2>/dev/null | grep -q "$(dx_esc "$IX_DUT_TUNNEL")" && return 0
        sleep 0.1
    done
    ix_fail "spoke ospfd not answering:"$'\n'"$(cat "$dir/ospfd.stderr")"
}
dut_vtysh() { vtysh -N "$FRR_NAME" --config_dir "$FRR_DIR" "$@"; }
# dut_wait TIMEOUT REGEX VTYSH-ARGS...: poll the spoke's vtysh until the output matches; output in DUT_OUT
dut_wait() {
    local end=$((SECONDS + $1)) re=$2; shift 2
    while :; do
        DUT_OUT=$(dut_vtysh "$@" 2>&1) || true
        grep -Eq -- "$re" <<<"$DUT_OUT" && return 0
        ((SECONDS < end)) || return 1
        sleep 1
    done
}
trap 'frr_stop; dx_cleanup' EXIT

t=$SECONDS
"$RIG" up --no-hub --no-spoke
"$RIG" attach "$IX_DUT_NS" "$IX_DUT_NBMA/24"
# The spoke's LAN: a veth pair inside the namespace (the host kernel may lack the dummy driver).
ip -n "$IX_DUT_NS" link add lan0 type veth peer name lan0-peer
ip -n "$IX_DUT_NS" addr add "$DUT_LAN_IP/24" dev lan0
ip -n "$IX_DUT_NS" link set lan0-peer up
ip -n "$IX_DUT_NS" link set lan0 up
"$RIG" up --no-spoke || ix_fail "rig up (hub VM) failed"
ix_log "hub booted and configured in $((SECONDS - t))s"

# ---- the hub: a LAN, multicast replication by nhrpd, ospfd point-to-multipoint on gre1 (/32)
t=$SECONDS
ix_exec "$IX_HUB" sh -ec "
ip link add lan0 type dummy; ip addr add $HUB_LAN_IP/24 dev lan0; ip link set lan0 up
# nhrpd copies multicast leaving gre1 (OSPF to 224.0.0.5) to every registered spoke from NFLOG group 2; the
# original, with no NBMA destination, is dropped (FRR's nhrpd documentation, as nftables).
nft -f - <<'NFT'
table ip ix_mcast {
    chain out {
        type filter hook output priority 0; policy accept;
        oifname \"gre1\" ip daddr 224.0.0.0/24 log group 2
        oifname \"gre1\" ip daddr 224.0.0.0/24 drop
    }
}
NFT
/usr/lib/frr/ospfd -d -F traditional -A 127.0.0.1
i=0; until [ -S /var/run/frr/ospfd.vty ]; do i=\$((i + 1)); [ \$i -lt 600 ] || exit 1; sleep 0.1; done
vtysh -c 'configure terminal' -c 'nhrp multicast-nflog-group 2' \
    -c 'interface gre1' -c 'ip ospf network point-to-multipoint' -c 'ip ospf hello-interval $HELLO' \
    -c 'ip ospf dead-interval $DEAD' -c 'exit' \
    -c 'interface lan0' -c 'ip ospf passive' -c 'exit' \
    -c 'router ospf' -c 'ospf router-id $IX_HUB_TUNNEL' -c 'network $IX_TUNNEL_NET area 0' \
    -c 'network $HUB_LAN area 0'
" > "$LOGS/hub-ospf-setup.txt" 2>&1 || ix_fail "hub: ospfd setup failed:"$'\n'"$(cat "$LOGS/hub-ospf-setup.txt")"
ix_exec "$IX_HUB" sh -c 'ip -br addr show gre1; ip -d link show gre1 | head -n 2' | sed 's/^/    hub: /' >&2 || true
ix_log "hub ospfd on gre1 (point-to-multipoint, /32) after $((SECONDS - t))s"

hub_neighbor() { ix_exec "$IX_HUB" vtysh -c 'show ip ospf neighbor'; }

# ---- 0. the problem: a /24 spoke against the /32 hub
if [ "${IX_OSPF_SKIP_MISMATCH:-0}" != 1 ]; then
    t=$SECONDS
    dx_config dut24 spoke routes=none
    dx_start dut24 "$IX_DUT_NS"
    dx_wait_log dut24 90 'NHRP registered with NHS' || ix_fail "/24 spoke: no NHRP registration"
    frr_start p24
    end=$((SECONDS + HELLO * 3 + 10))
    until grep -q 'NetworkMask mismatch' "$FRR_DIR/ospfd.log" 2>/dev/null; do
        ((SECONDS < end)) || ix_fail "/24 spoke: no NetworkMask mismatch within $((HELLO * 3 + 10)) s, yet the hub is /32:"$'\n'"$(tail -n 20 "$FRR_DIR/ospfd.log")"$'\n'"$(dut_vtysh -c 'show ip ospf neighbor')"
        sleep 1
    done
    ix_log "/24 spoke: $(grep -m1 -o 'NetworkMask mismatch.*' "$FRR_DIR/ospfd.log")"
    nbr=$(dut_vtysh -c 'show ip ospf neighbor')
    grep -q 'Full' <<<"$nbr" && ix_fail "/24 spoke reached Full despite the mismatch:"$'\n'"$nbr"
    ix_log "/24 spoke: no adjacency, as expected ($((SECONDS - t))s); stopping it"
    frr_stop
    dx_stop dut24
fi

# ---- 1. the /32 spoke: address = "10.250.0.9/32", network = "10.250.0.0/24"
t=$SECONDS
dx_config dut spoke host=1 routes=none
sed -n '/^\[tunnel\]/,/^\[/p' "$LOGS/dut/dmvpnd.toml" | grep -E '^(address|network) = ' | sed 's/^/    dut [tunnel] /' >&2
dx_start dut "$IX_DUT_NS"
addr=$(ip -n "$IX_DUT_NS" -br -4 addr show dev dmvpn0)
grep -q "$(dx_esc "$IX_DUT_TUNNEL")/32" <<<"$addr" || ix_fail "dmvpn0 has not the /32: $addr"
rt=$(ip -n "$IX_DUT_NS" route show "$IX_TUNNEL_NET" dev dmvpn0)
grep -Eq "proto 77 .*scope link src $(dx_esc "$IX_DUT_TUNNEL")" <<<"$rt" \
    || ix_fail "no route of the tunnel network $IX_TUNNEL_NET into dmvpn0: '$rt'"$'\n'"$(ip -n "$IX_DUT_NS" route)"
ix_log "dmvpn0: $addr; route: $rt"
dx_wait_log dut 90 'NHRP registered with NHS' || ix_fail "/32 spoke: no NHRP registration"
ix_wait "$IX_HUB" 60 "dynamic +$(dx_esc "$IX_DUT_TUNNEL") +$(dx_esc "$IX_DUT_NBMA")" vtysh -c 'show ip nhrp cache' \
    || ix_fail "hub: $IX_DUT_TUNNEL not in the NHRP cache:"$'\n'"$IX_OUT"
ix_log "/32 spoke registered after $((SECONDS - t))s"

# ---- 2. Full on both ends
frr_start p32
t=$SECONDS
dut_wait "$FULL_TIMEOUT" "^$(dx_esc "$IX_HUB_TUNNEL") +[0-9]+ +Full/" -c 'show ip ospf neighbor' \
    || ix_fail "spoke: no Full adjacency with $IX_HUB_TUNNEL within $FULL_TIMEOUT s:"$'\n'"$DUT_OUT"$'\n'"$(tail -n 20 "$FRR_DIR/ospfd.log")"$'\n'"hub:"$'\n'"$(hub_neighbor 2>&1)"
ix_log "spoke: Full after $((SECONDS - t))s:"
grep -E "^$(dx_esc "$IX_HUB_TUNNEL") " <<<"$DUT_OUT" | sed 's/^/    spoke: /' >&2
! grep -q 'NetworkMask mismatch' "$FRR_DIR/ospfd.log" || ix_fail "/32 spoke logged a NetworkMask mismatch"
ix_wait "$IX_HUB" 30 "^$(dx_esc "$IX_DUT_TUNNEL") +[0-9]+ +Full/" vtysh -c 'show ip ospf neighbor' \
    || ix_fail "hub: no Full adjacency with $IX_DUT_TUNNEL:"$'\n'"$IX_OUT"
ix_log "hub: Full after $((SECONDS - t))s:"
grep -E "^$(dx_esc "$IX_DUT_TUNNEL") " <<<"$IX_OUT" | sed 's/^/    hub: /' >&2

# ---- 3. the LANs in the kernels, from OSPF
t=$SECONDS
end=$((SECONDS + 30))
until rt=$(ip -n "$IX_DUT_NS" route show "$HUB_LAN") \
        && grep -Eq "via $(dx_esc "$IX_HUB_TUNNEL") dev dmvpn0 proto ospf" <<<"$rt"; do
    ((SECONDS < end)) || ix_fail "spoke kernel: no $HUB_LAN via $IX_HUB_TUNNEL proto ospf: '$rt'"$'\n'"$(dut_vtysh -c 'show ip route' 2>&1)"
    sleep 1
done
ix_log "spoke kernel: $rt"
ix_wait "$IX_HUB" 30 "via $(dx_esc "$IX_DUT_TUNNEL") dev gre1 proto ospf" ip route show "$DUT_LAN" \
    || ix_fail "hub kernel: no $DUT_LAN via $IX_DUT_TUNNEL proto ospf: '$IX_OUT'"$'\n'"$(ix_exec "$IX_HUB" vtysh -c 'show ip route' 2>&1)"
ix_log "hub kernel: $(head -n1 <<<"$IX_OUT") ($((SECONDS - t))s)"

# ---- 4. LAN to LAN through the hub's ESP SA
esp_in_packets() {
    ix_exec "$IX_HUB" swanctl --list-sas | sed -nE 's/^ +in +[0-9a-f]+, +[0-9]+ bytes, +([0-9]+) packets.*/\1/p' | head -n1
}
before=$(esp_in_packets)
dx_ping "$IX_DUT_NS" "$DUT_LAN_IP" "$HUB_LAN_IP" 5 || ix_fail "spoke LAN -> hub LAN ping failed:"$'\n'"$DX_OUT"
ix_log "spoke LAN $DUT_LAN_IP -> hub LAN $HUB_LAN_IP: $(grep 'packet loss' <<<"$DX_OUT")"
out=$(ix_exec "$IX_HUB" ping -c 3 -i 0.5 -W 2 -I "$HUB_LAN_IP" "$DUT_LAN_IP" 2>&1) \
    || ix_fail "hub LAN -> spoke LAN ping failed:"$'\n'"$out"
ix_log "hub LAN $HUB_LAN_IP -> spoke LAN $DUT_LAN_IP: $(grep 'packet loss' <<<"$out")"
after=$(esp_in_packets)
((after >= before + 8)) || ix_fail "hub: ESP inbound packets $before -> $after, the pings did not use the SA"
ix_log "hub ESP SA inbound packets $before -> $after"
dut_vtysh -c 'show ip ospf neighbor' -c 'show ip route' > "$LOGS/spoke-ospf.txt" 2>&1 || true
ix_exec "$IX_HUB" vtysh -c 'show ip ospf neighbor' -c 'show ip ospf interface gre1' -c 'show ip route' \
    > "$LOGS/hub-ospf.txt" 2>&1 || true

dx_pass
