#!/bin/sh
# Kernel mGRE interface for nhrpd (rendered by ixvm.py): key @GRE_KEY@, tunnel address @TUNNEL_IP@ as a /32
# (nhrpd wants a host prefix on the GRE interface), no fixed remote (multipoint, NOARP).
set -e
ip link del gre1 2>/dev/null || true
ip tunnel add gre1 mode gre key @GRE_KEY@ ttl 64 dev @NBMA_DEV@
ip addr add @TUNNEL_IP@/32 dev gre1
ip link set gre1 mtu @MTU@ up
# IOS "no ip redirects"
sysctl -q -w net.ipv4.conf.gre1.send_redirects=0 net.ipv4.conf.all.send_redirects=0
