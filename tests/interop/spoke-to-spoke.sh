#!/usr/bin/env bash
# Phase 3 (redirect + shortcut) behind the stock strongSwan + FRR hub VM.
#   Part 1, dmvpnd spoke A (10.250.0.9 @ .9) <-> stock spoke VM (10.250.0.5 @ .3):
#     traffic crosses the hub (ping works), the hub's Traffic Indication reaches dmvpnd (`show nhrp` counter
#     rx.traffic_indication), dmvpnd sends a Resolution Request. Whether the stock spoke's answer arrives is
#     recorded, not required: the stock spoke protects GRE only toward the hub (trap policy, no VICI), so its
#     reply/shortcut toward dmvpnd has no IPsec policy -- evidence: swanctl --list-sas, show ip nhrp cache,
#     nhrpd log, cleartext GRE .3 -> .9 on the WAN.
#   Part 2, dmvpnd spoke A <-> dmvpnd spoke B (10.250.0.11 @ .11, LAN 10.0.103.0/24), both behind the stock
#     hub: required are a Traffic Indication at A, a shortcut NHRP entry for 10.250.0.11 and a kernel shortcut
#     route (proto 77) to B's LAN via 10.250.0.11 on A ("NHRP shortcut installed"), pings over the shortcuts,
#     and ESP directly between 198.51.100.9 and 198.51.100.11 on br-wan (tcpdump in dmvpn-ix-wan).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$IX_DIR/dmvpnd-lib.sh"
dx_init spoke-to-spoke
B_NS=dmvpn-ix-dut2 B_NBMA=$IX_WAN_NET.11 B_TUNNEL=10.250.0.11 B_LAN=10.0.103.0/24 B_LAN_ADDR=10.0.103.1

counter() {  # counter INST rx|tx TYPE
    dx_ctl "$1" show nhrp --json | python3 -c '
import json, sys
d = json.load(sys.stdin); d = d.get("data", d)
print(d["counters"][sys.argv[1]][sys.argv[2]])' "$2" "$3"
}

t=$SECONDS
"$RIG" up --no-hub --no-spoke
dx_capture "$LOGS/wan.pcap"
"$RIG" attach "$IX_DUT_NS" "$IX_DUT_NBMA/24"
"$RIG" attach "$B_NS" "$B_NBMA/24"
"$RIG" up || ix_fail "rig up (hub + spoke VMs) failed"
ix_log "hub and stock spoke booted and configured in $((SECONDS - t))s"
ix_exec "$IX_HUB" vtysh -c 'debug nhrp common' -c 'debug nhrp event' >/dev/null || true
ix_exec "$IX_SPOKE" vtysh -c 'debug nhrp common' -c 'debug nhrp event' >/dev/null || true
dx_config a spoke
dx_start a "$IX_DUT_NS"
ix_wait "$IX_HUB" 150 "dynamic +$(dx_esc "$IX_SPOKE_TUNNEL") .*dynamic +$(dx_esc "$IX_DUT_TUNNEL")|dynamic +$(dx_esc "$IX_DUT_TUNNEL") .*dynamic +$(dx_esc "$IX_SPOKE_TUNNEL")" \
    sh -c "vtysh -c 'show ip nhrp cache' | tr '\n' ' '" \
    || ix_fail "hub: stock spoke and dmvpnd A not both registered:"$'\n'"$IX_OUT"
ix_log "stock spoke and dmvpnd A registered ($((SECONDS - t))s)"

# ---- Part 1: dmvpnd A <-> stock spoke
# FRR nhrpd (unlike IOS) does not send data for an unresolved tunnel address via its NHS: without a routing
# protocol the stock spoke's replies to 10.250.0.9 would wait for an NHRP resolution it cannot complete (seen:
# 0 echo replies). A /32 via the hub stands in for the route OSPF/BGP would give it.
ix_exec "$IX_SPOKE" ip route replace "$IX_DUT_TUNNEL/32" via "$IX_HUB_TUNNEL" dev gre1 onlink \
    || ix_fail "stock spoke: cannot add the route to $IX_DUT_TUNNEL via the hub"
ti0=$(counter a rx traffic_indication)
dx_ping "$IX_DUT_NS" "$IX_DUT_TUNNEL" "$IX_SPOKE_TUNNEL" 5 || ix_fail "A -> stock spoke ping (via hub) failed:"$'\n'"$DX_OUT"
ix_log "A -> stock spoke via the hub: $(grep 'packet loss' <<<"$DX_OUT")"
end=$((SECONDS + 30))
until (($(counter a rx traffic_indication) > ti0)); do
    ((SECONDS < end)) || ix_fail "A: no Traffic Indication from the hub for A -> stock spoke traffic"$'\n'"$(dx_ctl a show nhrp)"
    dx_ping "$IX_DUT_NS" "$IX_DUT_TUNNEL" "$IX_SPOKE_TUNNEL" 2 || true
done
ix_log "A received the hub's Traffic Indication (rx.traffic_indication $ti0 -> $(counter a rx traffic_indication))"
sleep 8
dx_ping "$IX_DUT_NS" "$IX_DUT_TUNNEL" "$IX_SPOKE_TUNNEL" 4 || true
sleep 4
res_tx=$(counter a tx resolution_request) res_rx=$(counter a rx resolution_reply)
ix_log "A: resolution requests sent $res_tx, resolution replies received $res_rx"
((res_tx >= 1)) || ix_fail "A sent no Resolution Request after the Traffic Indication"
{
    echo "== A: dmvpnctl show nhrp"; dx_ctl a show nhrp
    echo "== A: dmvpnctl show dmvpn"; dx_ctl a show dmvpn
    echo "== A: ip route"; ip -n "$IX_DUT_NS" route
    echo "== A: dmvpnd log about the stock spoke"; grep -E "$(dx_esc "$IX_SPOKE_NBMA")|10\.250\.0\.5" "$LOGS/a/dmvpnd.log"
    for vm in "$IX_SPOKE" "$IX_HUB"; do
        echo "== $vm: swanctl --list-sas"; ix_exec "$vm" swanctl --list-sas
        echo "== $vm: show ip nhrp cache"; ix_exec "$vm" vtysh -c 'show ip nhrp cache'
        echo "== $vm: ip xfrm policy"; ix_exec "$vm" ip xfrm policy
        echo "== $vm: nhrpd log (resolution/shortcut)"
        ix_exec "$vm" grep -iE 'resolution|shortcut|traffic|redirect|10\.250\.0\.9' /var/log/frr/frr.log | tail -n 25
    done
} > "$LOGS/part1-evidence.txt" 2>&1
# The stock spoke refuses IKE from A (NO_PROPOSAL_CHOSEN): traffic to it must keep flowing via the
# hub -- a shortcut is installed only once an SA to its next hop is up -- and A must not hammer it
# with IKE_SA_INIT (hold-down after a failed setup: 10 s, doubling to 60 s).
dx_ping "$IX_DUT_NS" "$IX_DUT_TUNNEL" "$IX_SPOKE_TUNNEL" 10 || true
ix_log "part 1: A -> stock spoke after the resolution: $(grep 'packet loss' <<<"$DX_OUT")"
received=$(grep -oE '[0-9]+ received' <<<"$DX_OUT" | grep -oE '^[0-9]+' || echo 0)
((received >= 9)) || ix_fail "A -> stock spoke lost traffic after the refused shortcut ($received/10 answered; it must stay on the hub path)"$'\n'"$DX_OUT"
attempts=$(grep -c "initiating IKE peer=$(dx_esc "$IX_SPOKE_NBMA")" "$LOGS/a/dmvpnd.log" || true)
ix_log "part 1: A's IKE toward the stock spoke: $attempts attempts, $(grep -c "could not be established peer=$(dx_esc "$IX_SPOKE_NBMA").*NO_PROPOSAL_CHOSEN" "$LOGS/a/dmvpnd.log") refused with NO_PROPOSAL_CHOSEN"
((attempts <= 6)) || ix_fail "A initiated IKE toward the refusing stock spoke $attempts times (hold-down not honoured)"
if ip -n "$IX_DUT_NS" route | grep -q "proto 77.*via $(dx_esc "$IX_SPOKE_TUNNEL")"; then
    ix_fail "A holds a shortcut route via the stock spoke without an SA to it:"$'\n'"$(ip -n "$IX_DUT_NS" route)"
fi
cleartext=$(tcpdump -r "$LOGS/wan.pcap" -nn "ip proto 47 and src $IX_SPOKE_NBMA and dst $IX_DUT_NBMA" 2>/dev/null | wc -l)
stock_sa=$(ix_exec "$IX_SPOKE" swanctl --list-sas | grep -c "$(dx_esc "$IX_DUT_NBMA")" || true)
if ((res_rx >= 1)); then
    ix_log "part 1: the stock spoke's Resolution Reply reached A"
else
    ix_log "part 1: NO Resolution Reply reached A. Stock spoke: $stock_sa IKE SA lines toward $IX_DUT_NBMA," \
        "$cleartext cleartext GRE packets $IX_SPOKE_NBMA -> $IX_DUT_NBMA on the WAN (evidence: $LOGS/part1-evidence.txt)"
fi
grep -A6 '== A: dmvpnd log about the stock spoke' "$LOGS/part1-evidence.txt" | sed 's/^/    /' >&2 || true
grep -A12 '== ix-spoke: swanctl' "$LOGS/part1-evidence.txt" | grep -E 'ESTABLISHED|remote|INSTALLED' | sed 's/^/    stock spoke: /' >&2 || true
grep -A8 '== ix-spoke: show ip nhrp cache' "$LOGS/part1-evidence.txt" | sed 's/^/    /' >&2 || true
grep -A25 '== ix-spoke: nhrpd log' "$LOGS/part1-evidence.txt" | tail -n 8 | sed 's/^/    /' >&2 || true

# ---- Part 2: dmvpnd A <-> dmvpnd B
# B owns a LAN 10.0.103.0/24 (a veth pair inside B's netns -- no dummy module here, and an address on lo makes
# only local-table routes: dmvpnd takes its main-table routes not out of the tunnel as its own prefixes); A and
# the hub route it the way OSPF would (A via the hub, the hub via B), so the first packets hairpin on the hub.
dx_config b spoke tunnel="$B_TUNNEL"
ip -n "$B_NS" link add lan0 type veth peer name lan1 || ix_fail "B: cannot create its LAN interface"
ip -n "$B_NS" addr add "$B_LAN_ADDR/24" dev lan0
ip -n "$B_NS" link set lan1 up
ip -n "$B_NS" link set lan0 up
dx_start b "$B_NS"
ix_wait "$IX_HUB" 90 "dynamic +$(dx_esc "$B_TUNNEL") +$(dx_esc "$B_NBMA")" vtysh -c 'show ip nhrp cache' \
    || ix_fail "hub: B ($B_TUNNEL) not registered:"$'\n'"$IX_OUT"
dx_wait_log b 30 'NHRP registered with NHS' || ix_fail "B did not log 'NHRP registered with NHS'"
# (an FRR static route: nhrpd forwards a Resolution Request along zebra's routes; with a plain kernel route the
# hub's nhrpd answered it itself with code 12, "No Interworking Layer Address to NBMA Address Binding Exists")
ix_exec "$IX_HUB" vtysh -c 'configure terminal' -c "ip route $B_LAN $B_TUNNEL gre1 onlink" >/dev/null \
    || ix_fail "hub: cannot route $B_LAN via B"
ix_wait "$IX_HUB" 20 "$(dx_esc "${B_LAN%/*}")" vtysh -c 'show ip route static' \
    || ix_fail "hub: static route to $B_LAN not installed:"$'\n'"$IX_OUT"
ip -n "$IX_DUT_NS" route replace "$B_LAN" via "$IX_HUB_TUNNEL" dev dmvpn0
ix_log "dmvpnd B registered; $B_LAN behind B, routed via the hub on A and via B on the hub"

# 2a. B's tunnel address: redirect, resolution, shortcut entry, direct SA (a /32 on the connected tunnel subnet
#     needs no kernel route: dmvpnd forwards it itself). A's echo requests and B's echo replies both cross the
#     hub, so the hub redirects both spokes; whichever resolves first answers the other's traffic directly from
#     then on (the responder learns the requester from its Resolution Request, RFC 2332 §5.3.1), so the second
#     spoke's traffic may never reach the hub again and it then gets no redirect of its own. Either order is
#     correct; what must hold is a shortcut entry on the spoke that was redirected, and direct traffic.
ti0_a=$(counter a rx traffic_indication)
ti0_b=$(counter b rx traffic_indication)
t=$SECONDS
dx_ping "$IX_DUT_NS" "$IX_DUT_TUNNEL" "$B_TUNNEL" 5 || ix_fail "A -> B ping (via hub) failed:"$'\n'"$DX_OUT"
ix_log "A -> B ($B_TUNNEL) via the hub: $(grep 'packet loss' <<<"$DX_OUT")"
shortcut_to() {  # shortcut_to INST PREFIX: the NHRP cache has a shortcut entry for PREFIX
    dx_ctl "$1" show nhrp --json | python3 -c '
import json, sys
d = json.load(sys.stdin); d = d.get("data", d)
sys.exit(0 if any(e["kind"] == "shortcut" and e["protocol_addr"] == sys.argv[1] for e in d["entries"]) else 1)' "$2"
}
end=$((SECONDS + 60))
resolver=
until [[ -n $resolver ]]; do
    if shortcut_to a "$B_TUNNEL"; then resolver=a
    elif shortcut_to b "$IX_DUT_TUNNEL"; then resolver=b
    else
        ((SECONDS < end)) || ix_fail "no shortcut entry on A for $B_TUNNEL nor on B for $IX_DUT_TUNNEL (rx.traffic_indication A $ti0_a -> $(counter a rx traffic_indication), B $ti0_b -> $(counter b rx traffic_indication)):"$'\n'"A: $(dx_ctl a show nhrp)"$'\n'"B: $(dx_ctl b show nhrp)"
        dx_ping "$IX_DUT_NS" "$IX_DUT_TUNNEL" "$B_TUNNEL" 2 || true
    fi
done
if [[ $resolver == a ]]; then ti0=$ti0_a; target=$B_TUNNEL; else ti0=$ti0_b; target=$IX_DUT_TUNNEL; fi
(($(counter "$resolver" rx traffic_indication) > ti0)) || ix_fail "$resolver: the shortcut to $target came without a Traffic Indication"
ix_log "${resolver^^}: shortcut entry for $target after $((SECONDS - t))s (traffic indications A $ti0_a -> $(counter a rx traffic_indication), B $ti0_b -> $(counter b rx traffic_indication))"
grep -m1 "NHRP shortcut installed prefix=$(dx_esc "$target")" "$LOGS/$resolver/dmvpnd.log" | sed 's/^/    /' >&2 || true

# 2b. B's LAN: the shortcut becomes a kernel route (proto 77) on A.
sleep 16   # the hub's NFLOG rule allows 4 redirects a minute: let a token come back
ti0=$(counter a rx traffic_indication)
t=$SECONDS
dx_ping "$IX_DUT_NS" "$IX_DUT_TUNNEL" "$B_LAN_ADDR" 5 || ix_fail "A -> B's LAN $B_LAN_ADDR ping (via hub) failed:"$'\n'"$DX_OUT"
ix_log "A -> $B_LAN_ADDR via the hub: $(grep 'packet loss' <<<"$DX_OUT")"
end=$((SECONDS + 90))
until ip -n "$IX_DUT_NS" route show proto 77 | grep -Eq "^10\.0\.103\.[0-9]+(/[0-9]+)? via $(dx_esc "$B_TUNNEL")"; do
    ((SECONDS < end)) || ix_fail "A: no proto 77 shortcut route to $B_LAN via $B_TUNNEL (rx.traffic_indication $ti0 -> $(counter a rx traffic_indication), resolution tx $(counter a tx resolution_request) rx $(counter a rx resolution_reply)):"$'\n'"$(ip -n "$IX_DUT_NS" route)"$'\n'"$(dx_ctl a show nhrp)"$'\n'"$(ix_exec "$IX_HUB" grep -iE 'resolution|10\.0\.103' /var/log/frr/frr.log | tail -n 10)"
    dx_ping "$IX_DUT_NS" "$IX_DUT_TUNNEL" "$B_LAN_ADDR" 2 || true
done
ix_log "A: proto 77 shortcut route after $((SECONDS - t))s: $(ip -n "$IX_DUT_NS" route show proto 77 | grep -E "via $(dx_esc "$B_TUNNEL")")"
(($(counter a rx traffic_indication) > ti0)) || ix_log "note: no new Traffic Indication for the LAN (the /32 shortcut's resolution covered it?)"
grep "NHRP shortcut installed" "$LOGS/a/dmvpnd.log" | grep -v "$(dx_esc "$IX_SPOKE_NBMA")" | sed 's/^/    /' >&2 || true

# Traffic over the shortcuts, and what the WAN saw.
dx_ping "$IX_DUT_NS" "$IX_DUT_TUNNEL" "$B_LAN_ADDR" 5 || ix_fail "A -> $B_LAN_ADDR over the shortcut failed:"$'\n'"$DX_OUT"
dx_ping "$IX_DUT_NS" "$IX_DUT_TUNNEL" "$B_TUNNEL" 5 || ix_fail "A -> B ping over the shortcut failed:"$'\n'"$DX_OUT"
dx_ping "$B_NS" "$B_TUNNEL" "$IX_DUT_TUNNEL" 5 || ix_fail "B -> A ping over the shortcut failed:"$'\n'"$DX_OUT"
ix_log "pings over the shortcuts: A -> LAN, A -> B, B -> A all answered"
sleep 1
dx_stop_bg
direct=$(tcpdump -r "$LOGS/wan.pcap" -nn "ip proto 50 and host $IX_DUT_NBMA and host $B_NBMA" 2>/dev/null | wc -l)
ike=$(tcpdump -r "$LOGS/wan.pcap" -nn "udp port 500 and host $IX_DUT_NBMA and host $B_NBMA" 2>/dev/null | wc -l)
# dmvpnd never sends GRE outside ESP. The stock spoke may (part 1: its nhrpd answers A directly while its
# strongSwan has no policy toward A), so cleartext GRE is counted per sender.
gre=$(tcpdump -r "$LOGS/wan.pcap" -nn "ip proto 47 and (src $IX_DUT_NBMA or src $B_NBMA)" 2>/dev/null | wc -l)
stock_gre=$(tcpdump -r "$LOGS/wan.pcap" -nn "ip proto 47 and src $IX_SPOKE_NBMA" 2>/dev/null | wc -l)
ix_log "on br-wan: $ike IKE and $direct ESP packets directly between $IX_DUT_NBMA and $B_NBMA; cleartext GRE: $gre from dmvpnd, $stock_gre from the stock spoke (its policy gap, part 1)"
((direct >= 20)) || ix_fail "only $direct ESP packets directly between A and B"
((gre == 0)) || ix_fail "$gre cleartext GRE packets from dmvpnd on the WAN"
dx_ctl a show dmvpn | grep -E "$(dx_esc "$B_NBMA")|$(dx_esc "$IX_SPOKE_NBMA")" | sed 's/^/    A dmvpn: /' >&2

dx_pass
