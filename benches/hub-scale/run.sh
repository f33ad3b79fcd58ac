#!/usr/bin/env bash
# Hub-scale benchmark: N simulated spokes (benches/hub-scale, the `hub-scale` load generator)
# against a real dmvpnd hub, each in its own network namespace on this machine.
#
#   sudo benches/hub-scale/run.sh [--spokes 1000,5000,10000] [--cores 1|2|1,2] [--in-flight 32]
#                                 [--natt | --one-address [--same-id]] [--soak SECS] [--soak-sample SECS] [--timeout SECS]
#                                 [--holding-time SECS] [--json FILE] [--keep] [--set KEY=VALUE]...
#
# For each N of --spokes and each mode of --cores, a fresh hub: dmvpnd (release build) from
# conf/hub.toml with the tunnel widened to 10.250.0.1/16 (65,533 spokes fit), in namespace H
# at 198.51.100.1; the generator in namespace G, its spokes at 198.18.0.1, 198.18.0.2, ...
# (one `local` route over 198.18.0.0/15, no address per spoke; three sockets whatever N is).
# --cores 1 pins the hub to CPU 0 and the generator to CPU 1 (taskset); --cores 2 pins
# neither (the hub and generator share both). Each spoke: IKE_SA_INIT + IKE_AUTH (PSK) with a
# transport-mode Child SA, an NHRP Registration Request in GRE (key 100) inside ESP, the
# Registration Reply; at most --in-flight setups at once. --natt forces UDP encapsulation
# (ESP in UDP 4500) by faking NAT detection. --one-address puts every spoke on 198.18.0.1 with a
# UDP port of its own (20000, 20001, ...), as behind one masquerading NAT, with an FQDN
# identity each (--same-id: all the address's ID_IPV4_ADDR); one socket per spoke, so keep N
# to a few hundred there. --soak keeps the spokes up that long afterwards
# (registration refreshes at a third of --holding-time, the hub's DPD answered) and samples
# the hub's RSS every --soak-sample seconds.
#
# Prints one table per run and a summary; writes every run as JSON (default
# benches/hub-scale/last-run.json; benches/hub-scale/report.py FILE prints the summary again).
# --set section.key=VALUE (a TOML value) changes a key of the hub's configuration.
# --keep keeps the scratch directory (configurations, hub logs).
#
# Installs what it needs (iproute2, python3, util-linux with apt-get) and builds dmvpnd,
# dmvpnctl and hub-scale with cargo. Sends traffic only inside its own namespaces (named
# dhs-<pid>-...), stops every process it started by PID and deletes its namespaces on exit,
# also after failures and on Ctrl-C.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=../tunnel/lib.sh
source "$ROOT/benches/tunnel/lib.sh"
NS_PREFIX="dhs-$$"

SPOKES=1000,5000,10000
CORES=1
IN_FLIGHT=32
NATT=0
ONE_ADDR=()
SOAK=0
SOAK_SAMPLE=10
TIMEOUT=900
HOLDING=""
JSON_OUT="$HERE/last-run.json"
KEEP_WORK=0
HUB_SET=()

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit "${1:-0}"; }
while (($#)); do
    case $1 in
        --spokes) SPOKES=$2; shift 2 ;;
        --cores) CORES=$2; shift 2 ;;
        --in-flight) IN_FLIGHT=$2; shift 2 ;;
        --natt) NATT=1; shift ;;
        --one-address) ONE_ADDR+=(--one-address); NATT=1; shift ;;
        --same-id) ONE_ADDR+=(--same-id); shift ;;
        --soak) SOAK=$2; shift 2 ;;
        --soak-sample) SOAK_SAMPLE=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --holding-time) HOLDING=$2; shift 2 ;;
        --json) JSON_OUT=$2; shift 2 ;;
        --keep) KEEP_WORK=1; shift ;;
        --set) HUB_SET+=("$2"); shift 2 ;;
        -h | --help) usage 0 ;;
        *) echo "run.sh: unknown argument $1" >&2; usage 2 ;;
    esac
done
[[ $SPOKES =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--spokes: comma-separated counts"
[[ $CORES =~ ^[12](,[12])?$ ]] || die "--cores: 1, 2 or 1,2"
[[ $IN_FLIGHT =~ ^[1-9][0-9]*$ ]] || die "--in-flight: a positive count"
if [[ " ${ONE_ADDR[*]} " == *" --same-id "* && " ${ONE_ADDR[*]} " != *" --one-address "* ]]; then
    die "--same-id goes with --one-address"
fi
[[ $SOAK =~ ^[0-9]+$ ]] || die "--soak: seconds"
[[ $SOAK_SAMPLE =~ ^[1-9][0-9]*$ ]] || die "--soak-sample: seconds"
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout: seconds"
[[ -z $HOLDING || $HOLDING =~ ^[1-9][0-9]*$ ]] || die "--holding-time: seconds"
IFS=, read -r -a SIZES <<<"$SPOKES"
IFS=, read -r -a MODES <<<"$CORES"
for n in "${SIZES[@]}"; do ((n <= 65533)) || die "--spokes: at most 65533 fit the /16 tunnel"; done
[[ $EUID -eq 0 ]] || die "run as root (namespaces, TUN devices, raw sockets): sudo $0"

WORK=$(mktemp -d "/tmp/dhs-$$.XXXXXX")
PIDFILE="$WORK/pids"
: >"$PIDFILE"
FG_PID=""

fg_run() {
    local rc=0
    "$@" &
    FG_PID=$!
    wait "$FG_PID" || rc=$?
    FG_PID=""
    return "$rc"
}

on_exit() {
    local rc=$? pid ns
    trap - EXIT INT TERM
    if [[ -n $FG_PID ]]; then stop_pid "$FG_PID"; fi
    if [[ -s $PIDFILE ]]; then
        while read -r pid _; do
            if kill -0 "$pid" 2>/dev/null; then stop_pid "$pid"; fi
        done < <(tac "$PIDFILE")
    fi
    while read -r ns _; do
        if [[ $ns == "$NS_PREFIX"-* ]]; then ip netns del "$ns" 2>/dev/null || true; fi
    done < <(ip netns list 2>/dev/null)
    if ((KEEP_WORK)); then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Namespaces of an earlier run that died without cleaning up.
while read -r ns _; do
    [[ $ns =~ ^dhs-([0-9]+)- ]] || continue
    pid=${BASH_REMATCH[1]}
    [[ $pid == "$$" || -d /proc/$pid ]] && continue
    log "removing stale namespace $ns (run $pid is gone)"
    ip netns del "$ns" 2>/dev/null || true
done < <(ip netns list 2>/dev/null)

# ---- dependencies and build -----------------------------------------------------------------

pkgs=()
for c in ip:iproute2 python3:python3 taskset:util-linux timeout:coreutils; do
    command -v "${c%%:*}" >/dev/null || pkgs+=("${c#*:}")
done
if ((${#pkgs[@]})); then
    log "apt-get install -y ${pkgs[*]}"
    apt-get update -q >"$WORK/apt.log" 2>&1 || { tail -n 20 "$WORK/apt.log" >&2; die "apt-get update failed"; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${pkgs[@]}" >>"$WORK/apt.log" 2>&1 ||
        { tail -n 20 "$WORK/apt.log" >&2; die "apt-get install ${pkgs[*]} failed"; }
fi

log "building dmvpnd, dmvpnctl, hub-scale (cargo build --release; waits for other builds of this checkout)"
fg_run sh -c 'cd "$1" && exec cargo build --release -q -p dmvpnd -p dmvpnctl -p dmvpn-hub-scale' sh "$ROOT" ||
    die "cargo build --release failed"
TARGET=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
DMVPND="$TARGET/release/dmvpnd"
DMVPNCTL="$TARGET/release/dmvpnctl"
GEN="$TARGET/release/hub-scale"
for b in "$DMVPND" "$DMVPNCTL" "$GEN"; do [[ -x $b ]] || die "no $b after the build"; done

# ---- one run ---------------------------------------------------------------------------------

HUB_WAN=198.51.100.1
GEN_WAN=198.51.100.2
SPOKE_NET=198.18.0.0/15

# run_case N CORES: fresh namespaces and hub, the generator in the foreground; its JSON result
# goes to $WORK/result-N-CORES.json.
run_case() {
    local n=$1 cores=$2 d="$WORK/n$1-c$2" psk nhrp rc=0 hub_pin=() gen_pin=() natt=() label
    CASE="n$n-c$cores"
    mkdir -p "$d"
    ns_add H
    ns_add G
    veth_link H eth0 "$HUB_WAN/24" G eth0 "$GEN_WAN/24"
    # The hub reaches every spoke through one neighbour; the generator owns the whole prefix.
    nsx H ip route add "$SPOKE_NET" via "$GEN_WAN"
    nsx G ip route add local "$SPOKE_NET" dev lo
    psk=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    nhrp=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
    (umask 077; sed -e "s/^ANY = .*/ANY = \"$psk\"/" -e "s/^authentication = .*/authentication = \"$nhrp\"/" \
        "$ROOT/conf/secrets.example.toml" >"$d/secrets.toml")
    python3 "$ROOT/benches/tunnel/mkconf.py" "$ROOT/conf/hub.toml" "$d/hub.toml" \
        'underlay.interface="eth0"' "underlay.local-address=\"$HUB_WAN\"" \
        'tunnel.address="10.250.0.1/16"' "control.socket=\"$d/hub.sock\"" ${HUB_SET[@]+"${HUB_SET[@]}"}
    local spoke_set=('underlay.interface="eth0"' 'tunnel.address="10.250.0.9/16"'
        'nhrp.nhs.address="10.250.0.1"' "nhrp.nhs.nbma=\"$HUB_WAN\"")
    if [[ -n $HOLDING ]]; then spoke_set+=("nhrp.holding-time=$HOLDING"); fi
    python3 "$ROOT/benches/tunnel/mkconf.py" "$ROOT/conf/spoke.toml" "$d/spoke.toml" "${spoke_set[@]}"
    for f in hub spoke; do
        "$DMVPND" --check-config "$d/$f.toml" >"$d/check-$f.log" 2>&1 ||
            { cat "$d/check-$f.log" >&2; die "dmvpnd --check-config $d/$f.toml failed"; }
    done
    if ((cores == 1)); then hub_pin=(taskset -c 0); gen_pin=(taskset -c 1); fi
    if ((NATT)); then natt=(--natt); fi
    if ((${#ONE_ADDR[@]})); then natt=("${ONE_ADDR[@]}"); fi
    start_bg "$CASE" dmvpnd-hub "$d/hub.log" \
        ${hub_pin[@]+"${hub_pin[@]}"} ip netns exec "$(ns_name H)" "$DMVPND" --foreground --config "$d/hub.toml"
    HUB_PID=$LAST_PID
    wait_until "$CASE" 30 "the hub's control socket answering" "$DMVPNCTL" --socket "$d/hub.sock" show interface
    label="hub $( ((cores == 1)) && echo "pinned to CPU 0, generator to CPU 1" || echo "and generator unpinned on 2 CPUs")"
    log "$CASE: $n spokes, hub pid $HUB_PID ($label)"
    fg_run ${gen_pin[@]+"${gen_pin[@]}"} ip netns exec "$(ns_name G)" "$GEN" \
        --config "$d/spoke.toml" --spokes "$n" --in-flight "$IN_FLIGHT" --hub-pid "$HUB_PID" \
        --dmvpnctl "$DMVPNCTL" --hub-socket "$d/hub.sock" --soak "$SOAK" --soak-sample "$SOAK_SAMPLE" \
        --timeout "$TIMEOUT" --label "$label" --json "$WORK/result-$n-$cores.json" ${natt[@]+"${natt[@]}"} || rc=$?
    alive_or_explain "$CASE" || rc=1
    if ((rc)); then log "$CASE: the generator failed ($rc); last lines of the hub log:"; tail -n 15 "$d/hub.log" >&2; fi
    stop_group "$CASE"
    # The hub's log volume is part of what it pays per spoke, and its control loop's longest
    # turn is what any event may have waited (logged when it stops): record both.
    python3 - "$d/hub.log" >"$WORK/extra-$n-$cores.json" <<'EOF'
import json, re, sys
lines = open(sys.argv[1], errors="replace").read().splitlines()
out = {"hub_log_lines": len(lines)}
for l in lines:
    if "control loop: turns handled" in l:
        f = dict((k, v) for k, _, v in re.findall(r'(\w+)=("?)([^" ]+)\2', l))
        out["control_loop"] = {"turns": int(f["turns"]), "longest_ms": float(f["longest_ms"]),
                               "longest_event": f["longest_event"], "over_budget": int(f["over_budget"])}
print(json.dumps(out))
EOF
    ns_del H
    ns_del G
    return "$rc"
}

machine=$(python3 - <<'EOF'
import json, os
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
print(json.dumps({"cpu": model, "nproc": os.cpu_count(), "mem_gib": round(mem / 2**20, 1),
                  "kernel": os.uname().release, "load_before": open("/proc/loadavg").read().split()[:3]}))
EOF
)
log "machine: $machine"
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
failed=0
for cores in "${MODES[@]}"; do
    for n in "${SIZES[@]}"; do
        run_case "$n" "$cores" || failed=1
    done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$WORK" "$JSON_OUT" "$machine" "$commit" "$load_after" "$NATT" "$IN_FLIGHT" <<'EOF'
import glob, json, os, sys, time
work, out, machine, commit, load_after, natt, in_flight = sys.argv[1:8]
runs = []
for f in sorted(glob.glob(os.path.join(work, "result-*.json")),
                key=lambda p: tuple(int(x) for x in os.path.basename(p)[7:-5].split("-"))):
    r = json.load(open(f))
    n, c = os.path.basename(f)[7:-5].split("-")
    r["cores"] = int(c)
    extra = os.path.join(work, f"extra-{n}-{c}.json")
    if os.path.exists(extra):
        r.update(json.load(open(extra)))
    runs.append(r)
m = json.loads(machine)
m["load_after"] = load_after.split()
doc = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit,
       "machine": m, "natt": natt == "1", "in_flight": int(in_flight), "runs": runs}
with open(out, "w") as fh:
    json.dump(doc, fh, indent=2)
    fh.write("\n")
EOF
python3 "$HERE/report.py" "$JSON_OUT"
log "wrote $JSON_OUT"
exit "$failed"
