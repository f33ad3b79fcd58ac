#!/usr/bin/env bash
# dmvpnd spoke behind a NAT (rig.sh attach-nat: 192.168.77.10 masqueraded to 198.51.100.100) against the stock
# strongSwan + FRR hub VM. NAT detection forces ESP into UDP 4500. Passes when
#   1. the hub's `swanctl --list-sas` shows the peer at 198.51.100.100 on port 4500 and the child SA as
#      TRANSPORT-in-UDP (UDP encapsulation, NAT-T), and dmvpnd reports nat_local and a udp_encap child SA,
#   2. the hub's NHRP cache lists 10.250.0.9 as dynamic with the NATed NBMA 198.51.100.100 (claimed
#      192.168.77.10) and dmvpnd logs "NHRP registered with NHS",
#   3. ping over the tunnel works both ways; the WAN carried ESP only in UDP 4500 (no IP proto 50, no GRE).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$IX_DIR/dmvpnd-lib.sh"
dx_init dmvpnd-spoke-nat
lan_addr=$IX_NAT_LAN_NET.10

t=$SECONDS
"$RIG" up --no-hub --no-spoke
dx_capture "$LOGS/wan.pcap"
"$RIG" attach-nat "$IX_DUT_NS"
"$RIG" up --no-spoke || ix_fail "rig up (hub VM) failed"
ix_log "hub booted and configured in $((SECONDS - t))s"
dx_config dut spoke
t=$SECONDS
dx_start dut "$IX_DUT_NS"

# 1. NAT-T as the hub sees it.
ix_wait "$IX_HUB" 120 'INSTALLED, TRANSPORT' swanctl --list-sas \
    || ix_fail "hub: no installed TRANSPORT child SA with dmvpnd:"$'\n'"$IX_OUT"
grep -q 'AES_GCM_16-256/PRF_HMAC_SHA2_512/ECP_256' <<<"$IX_OUT" || ix_fail "hub: wrong IKE proposal:"$'\n'"$IX_OUT"
grep -Eq "remote .*@ $(dx_esc "$IX_NAT_WAN")\[[0-9]+\]" <<<"$IX_OUT" \
    || ix_fail "hub: peer is not the NAT's address $IX_NAT_WAN:"$'\n'"$IX_OUT"
grep -q 'INSTALLED, TRANSPORT-in-UDP, ESP:AES_GCM_16-256' <<<"$IX_OUT" \
    || ix_fail "hub: child SA is not UDP-encapsulated (TRANSPORT-in-UDP):"$'\n'"$IX_OUT"
grep -Eq "local .*\[4500\]" <<<"$IX_OUT" || ix_fail "hub: IKE did not float to UDP 4500:"$'\n'"$IX_OUT"
ix_log "hub's view of the SA after $((SECONDS - t))s:"
grep -E 'ESTABLISHED|AES_GCM|TRANSPORT|local|remote' <<<"$IX_OUT" | sed 's/^/    /' >&2
dx_wait_ctl dut 20 '"nat_local": true' show ike --json || ix_fail "dmvpnd: IKE SA not marked nat_local:"$'\n'"$DX_OUT"
dx_wait_ctl dut 20 '"udp_encap": true' show sa --json || ix_fail "dmvpnd: child SA not udp_encap:"$'\n'"$DX_OUT"

# 2. Registration with the NATed NBMA.
ix_wait "$IX_HUB" 90 "dynamic +$(dx_esc "$IX_DUT_TUNNEL") +$(dx_esc "$IX_NAT_WAN")" vtysh -c 'show ip nhrp cache' \
    || ix_fail "hub: $IX_DUT_TUNNEL not in the NHRP cache as dynamic with NBMA $IX_NAT_WAN:"$'\n'"$IX_OUT"
ix_log "hub's NHRP cache after $((SECONDS - t))s:"
sed 's/^/    /' <<<"$IX_OUT" >&2
grep -Eq "$(dx_esc "$IX_NAT_WAN") +$(dx_esc "$lan_addr")" <<<"$IX_OUT" \
    || ix_log "note: the hub's cache does not show the claimed NBMA $lan_addr next to $IX_NAT_WAN"
dx_wait_log dut 30 'NHRP registered with NHS' || ix_fail "dmvpnd did not log 'NHRP registered with NHS'"
dx_wait_ctl dut 30 "$(dx_esc "$IX_HUB_NBMA") +$(dx_esc "$IX_HUB_TUNNEL") +UP " show dmvpn \
    || ix_fail "dmvpnctl show dmvpn: hub not UP:"$'\n'"$DX_OUT"

# 3. Pings both ways.
dx_ping "$IX_DUT_NS" "$IX_DUT_TUNNEL" "$IX_HUB_TUNNEL" || ix_fail "dmvpnd -> hub ping failed:"$'\n'"$DX_OUT"
ix_log "dmvpnd -> hub: $(grep 'packet loss' <<<"$DX_OUT")"
out=$(ix_exec "$IX_HUB" ping -c 3 -i 0.5 -W 2 -I "$IX_HUB_TUNNEL" "$IX_DUT_TUNNEL" 2>&1) \
    || ix_fail "hub -> dmvpnd ping failed:"$'\n'"$out"
ix_log "hub -> dmvpnd: $(grep 'packet loss' <<<"$out")"

sleep 1
dx_stop_bg
count() { tcpdump -r "$LOGS/wan.pcap" -nn "$1" 2>/dev/null | wc -l; }
gre=$(count 'ip proto 47') esp=$(count 'ip proto 50') natt=$(count 'udp port 4500') ike=$(count 'udp port 500')
ix_log "on the WAN bridge: $ike UDP 500, $natt UDP 4500, $esp plain ESP, $gre cleartext GRE ($LOGS/wan.pcap)"
((gre == 0 && esp == 0)) || ix_fail "ESP/GRE outside UDP 4500 crossed the WAN: $esp ESP, $gre GRE"
((natt >= 12)) || ix_fail "only $natt UDP 4500 packets on the WAN"

dx_pass
