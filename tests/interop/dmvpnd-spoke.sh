#!/usr/bin/env bash
# dmvpnd as the spoke (conf/spoke.toml, only addresses/secrets/socket/key-export changed) against the stock
# strongSwan 6 + FRR 10 hub VM. Passes when
#   1. the hub lists the IKE SA as AES_GCM_16-256/PRF_HMAC_SHA2_512/ECP_256 on UDP 500 with a TRANSPORT child
#      SA ESP:AES_GCM_16-256 protecting [gre], and dmvpnd logs "IKE SA up" / "child SA installed",
#   2. the hub's NHRP cache lists 10.250.0.9 as dynamic with NBMA 198.51.100.9, dmvpnd logs
#      "NHRP registered with NHS" and `dmvpnctl show dmvpn` shows the hub UP,
#   3. ping over the tunnel works both ways and went through the hub's ESP SA,
#   4. the ESP keys (key + salt) the hub's kernel installed (`ip xfrm state`) equal dmvpnd's exported ones,
#      SPI by SPI, in both directions,
#   5. (dissection, item 7) every packet captured on br-wan dissects in tshark with dmvpnd's exported keys:
#      no "Malformed", no "Expert Info (Error"; IKE_AUTH decrypts (AUTH payloads visible); the NHRP
#      Registration Request and Reply inside ESP+GRE dissect; no cleartext GRE crossed the WAN.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$IX_DIR/dmvpnd-lib.sh"
dx_init dmvpnd-spoke
command -v tshark >/dev/null || ix_fail "tshark missing: run tests/interop/install-deps.sh"

t=$SECONDS
"$RIG" up --no-hub --no-spoke
dx_capture "$LOGS/wan.pcap"
"$RIG" attach "$IX_DUT_NS" "$IX_DUT_NBMA/24"
"$RIG" up --no-spoke || ix_fail "rig up (hub VM) failed"
ix_log "hub booted and configured in $((SECONDS - t))s"
dx_config dut spoke
t=$SECONDS
dx_start dut "$IX_DUT_NS"

# 1. IKE SA + transport child SA, as the hub sees them.
sa_re='AES_GCM_16-256/PRF_HMAC_SHA2_512/ECP_256'
ix_wait "$IX_HUB" 120 'INSTALLED, TRANSPORT, ESP:AES_GCM_16-256' swanctl --list-sas \
    || ix_fail "hub: no installed TRANSPORT child SA with dmvpnd:"$'\n'"$IX_OUT"
grep -q "$sa_re" <<<"$IX_OUT" || ix_fail "hub: IKE SA is not $sa_re:"$'\n'"$IX_OUT"
grep -q 'ESTABLISHED, IKEv2' <<<"$IX_OUT" || ix_fail "hub: IKE SA not ESTABLISHED:"$'\n'"$IX_OUT"
grep -q '\[gre\]' <<<"$IX_OUT" || ix_fail "hub: child SA selectors are not GRE:"$'\n'"$IX_OUT"
grep -Eq "remote .*@ $(dx_esc "$IX_DUT_NBMA")\[500\]" <<<"$IX_OUT" \
    || ix_fail "hub: peer is not $IX_DUT_NBMA on UDP 500:"$'\n'"$IX_OUT"
ix_log "hub's view of the SA after $((SECONDS - t))s:"
grep -E 'ESTABLISHED|AES_GCM|TRANSPORT|\[gre\]|remote' <<<"$IX_OUT" | sed 's/^/    /' >&2
dx_wait_log dut 10 'IKE SA up' || ix_fail "dmvpnd did not log 'IKE SA up'"
dx_wait_log dut 10 'child SA installed' || ix_fail "dmvpnd did not log 'child SA installed'"

# 2. NHRP registration.
ix_wait "$IX_HUB" 90 "dynamic +$(dx_esc "$IX_DUT_TUNNEL") +$(dx_esc "$IX_DUT_NBMA")" vtysh -c 'show ip nhrp cache' \
    || ix_fail "hub: $IX_DUT_TUNNEL not in the NHRP cache as dynamic:"$'\n'"$IX_OUT"
ix_log "hub's NHRP cache after $((SECONDS - t))s:"
sed 's/^/    /' <<<"$IX_OUT" >&2
dx_wait_log dut 30 'NHRP registered with NHS' || ix_fail "dmvpnd did not log 'NHRP registered with NHS'"
dx_wait_ctl dut 30 "$(dx_esc "$IX_HUB_NBMA") +$(dx_esc "$IX_HUB_TUNNEL") +UP " show dmvpn \
    || ix_fail "dmvpnctl show dmvpn: hub not UP:"$'\n'"$DX_OUT"
grep -E "$(dx_esc "$IX_HUB_NBMA")" <<<"$DX_OUT" | sed 's/^/    dmvpnctl: /' >&2

# 3. Pings both ways, carried by ESP.
esp_in_packets() {
    ix_exec "$IX_HUB" swanctl --list-sas | sed -nE 's/^ +in +[0-9a-f]+, +[0-9]+ bytes, +([0-9]+) packets.*/\1/p' | head -n1
}
before=$(esp_in_packets)
dx_ping "$IX_DUT_NS" "$IX_DUT_TUNNEL" "$IX_HUB_TUNNEL" || ix_fail "dmvpnd -> hub ping failed:"$'\n'"$DX_OUT"
ix_log "dmvpnd -> hub: $(grep 'packet loss' <<<"$DX_OUT")"
out=$(ix_exec "$IX_HUB" ping -c 3 -i 0.5 -W 2 -I "$IX_HUB_TUNNEL" "$IX_DUT_TUNNEL" 2>&1) \
    || ix_fail "hub -> dmvpnd ping failed:"$'\n'"$out"
ix_log "hub -> dmvpnd: $(grep 'packet loss' <<<"$out")"
after=$(esp_in_packets)
((after >= before + 6)) || ix_fail "hub: ESP inbound packets $before -> $after, the pings did not use the SA"
ix_log "hub ESP SA inbound packets $before -> $after"

# 4. ESP keys: the hub's kernel SAs vs dmvpnd's export, matched by SPI.
xfrm=$(ix_exec "$IX_HUB" ip xfrm state)
hub_keys=$(awk '/proto esp spi/ {spi=$4} /aead rfc4106/ {print tolower(spi), tolower($3)}' <<<"$xfrm" | sort)
dut_keys=$(sed -nE 's/^"IPv4","[^"]*","[^"]*","(0x[0-9a-f]+)","AES-GCM[^"]*","(0x[0-9a-f]+)".*/\1 \2/p' \
    "$LOGS/dut/keys/wireshark/esp_sa" | sort -u)
printf '%s\n' "$xfrm" > "$LOGS/hub-xfrm-state.txt"
[ "$(wc -l <<<"$hub_keys")" -ge 2 ] || ix_fail "hub: expected 2 ESP SAs in ip xfrm state:"$'\n'"$xfrm"
while read -r spi key; do
    grep -qx "$spi $key" <<<"$dut_keys" \
        || ix_fail "ESP SA $spi: hub key $key not among dmvpnd's exported keys:"$'\n'"$dut_keys"
    ix_log "ESP SA $spi: hub kernel key == dmvpnd key (${key:0:10}...${key: -8}, 32-byte key + 4-byte salt)"
done <<<"$hub_keys"

# 5. Dissection of the whole capture with dmvpnd's keys.
sleep 1
dx_stop_bg
prefs="$LOGS/dut/keys/wireshark/preferences"
printf 'esp.enable_encryption_decode: TRUE\nnhrp.auth_ext_has_addr: FALSE\n' > "$prefs"
ts() { XDG_CONFIG_HOME="$LOGS/dut/keys" HOME="$LOGS/dut" tshark -n -r "$LOGS/wan.pcap" "$@" 2>>"$LOGS/tshark.stderr"; }
ts -V > "$LOGS/wan-dissected.txt"
total=$(ts | wc -l)
gre=$(tcpdump -r "$LOGS/wan.pcap" -nn 'ip proto 47' 2>/dev/null | wc -l)
((gre == 0)) || ix_fail "$gre GRE packets crossed the WAN unencrypted"
bad=$(grep -cE 'Malformed|Expert Info \(Error' "$LOGS/wan-dissected.txt" || true)
((bad == 0)) || ix_fail "$bad malformed/error lines dissecting $LOGS/wan.pcap:"$'\n'"$(grep -E 'Malformed|Expert Info \(Error' -B3 "$LOGS/wan-dissected.txt" | head -40)"
auth=$(ts -Y 'isakmp.exchangetype == 35' -V | grep -c 'Payload: Authentication' || true)
((auth >= 2)) || ix_fail "IKE_AUTH did not decrypt with dmvpnd's keys ($auth AUTH payloads)"
regreq=$(ts -Y 'esp && gre && nhrp.hdr.op.type == 3' | wc -l)
regrep=$(ts -Y 'esp && gre && nhrp.hdr.op.type == 4' | wc -l)
((regreq >= 1 && regrep >= 1)) \
    || ix_fail "NHRP registration in ESP+GRE did not dissect: $regreq requests, $regrep replies"
ts -Y 'esp && gre && (nhrp.hdr.op.type == 3 || nhrp.hdr.op.type == 4)' -V \
    | grep -E 'NHRP Packet Type|Code:|Client Protocol Address|Client NBMA Address|Authentication' | head -n 12 \
    | sed 's/^/    /' >&2 || true
icmp=$(ts -Y 'esp && icmp' | wc -l)
ix_log "dissection: $total packets, 0 malformed/error; IKE_AUTH decrypted ($auth AUTH payloads); NHRP in ESP+GRE: $regreq registration requests, $regrep replies; $icmp ICMP in ESP ($LOGS/wan.pcap)"

dx_pass
