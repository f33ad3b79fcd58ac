#!/bin/sh
# Hub role: mGRE + NFLOG rule for nhrp redirect + charon + FRR (rendered by ixvm.py).
set -e
/etc/ix/gre-setup.sh
# Traffic hairpinning gre1 -> gre1 is logged to NFLOG group 1, where nhrpd picks it up and sends a
# Traffic Indication (redirect); rate-limited like FRR's documented iptables hashlimit rule.
nft -f - <<'NFT'
table ip ix_nhrp {
    chain redirect_log {
        type filter hook forward priority 0; policy accept;
        iifname "gre1" oifname "gre1" limit rate 4/minute log group 1
    }
}
NFT
/etc/ix/start-daemons.sh
