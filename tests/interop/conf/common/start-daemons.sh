#!/bin/sh
# Start charon and FRR without systemd (the VM has no init system), load the swanctl config.
set -e
t0=$(date +%s)
# charon (strongswan-charon) runs in the foreground: background it, logs go to /var/log/charon.log.
if ! pidof charon >/dev/null; then
    /usr/lib/ipsec/charon > /var/log/charon.stdout 2>&1 &
fi
i=0
until [ -S /var/run/charon.vici ]; do
    i=$((i + 1)); [ $i -lt 300 ] || { echo "charon did not open its vici socket" >&2; exit 1; }
    sleep 0.1
done
rm -f /run/ix-charon-ready
swanctl --load-all --noprompt
touch /run/ix-charon-ready   # rig.sh waits for this on the hub before it starts the spoke
echo "ix: charon up and configured after $(( $(date +%s) - t0 ))s"

# FRR: started directly, in dependency order, each waited for by its vty socket, then the integrated config
# is loaded with vtysh -b. Not through frrinit.sh/watchfrr: under TCG a daemon can take longer than
# watchfrr's timeout to answer, watchfrr then "restarts" it, the second copy fails on the pid-file lock
# and frrinit.sh never loads frr.conf.
sed -i -e 's/^nhrpd=no/nhrpd=yes/' /etc/frr/daemons
chown frr:frr /etc/frr/frr.conf
mkdir -p /var/log/frr /var/run/frr && chown frr:frr /var/log/frr /var/run/frr
for d in zebra mgmtd staticd nhrpd; do
    if ! [ -S /var/run/frr/$d.vty ]; then
        case $d in zebra) extra="-s 90000000";; *) extra="";; esac
        /usr/lib/frr/$d -d -F traditional -A 127.0.0.1 $extra
    fi
    i=0
    until [ -S /var/run/frr/$d.vty ]; do
        i=$((i + 1)); [ $i -lt 600 ] || { echo "FRR $d did not start" >&2; exit 1; }
        sleep 0.1
    done
done
vtysh -b
echo "ix: FRR up and configured after $(( $(date +%s) - t0 ))s"
