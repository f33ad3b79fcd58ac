#!/usr/bin/env python3
"""Table of a benches/tunnel/run.sh run: medians (min-max) over rounds, per tunnel.

    report.py RESULTS_DIR [--json FILE] [--markdown]
    report.py last-run.json [--markdown]        (the table again from a run's JSON)

RESULTS_DIR holds meta.json and TUNNEL/ROUND/{ping.txt,tcp1.json,tcp1r.json,tcp4.json,udp.json,udpgoal.json,
cpu.txt,info,error} as run.sh leaves them. Python standard library only.
"""

import json
import math
import os
import re
import statistics
import sys

TUNNELS = ["veth", "dmvpnd-esp", "dmvpnd-natt", "boringtun", "libipsec", "base-esp", "base-natt"]
# key, label, unit, decimals
METRICS = [
    ("tcp1", "TCP 1 stream", "Mbit/s", 0),
    ("tcp1r", "TCP 1 stream -R", "Mbit/s", 0),
    ("tcp4", "TCP 4 streams", "Mbit/s", 0),
    ("udp_offered_kpps", "UDP 1360 B sent", "kpps", 1),
    ("udp_kpps", "UDP 1360 B delivered", "kpps", 1),
    ("udp_loss", "UDP loss", "%", 1),
    ("udpgoal_kpps", "UDP 1360 B delivered at the goal rate", "kpps", 1),
    ("udpgoal_loss", "UDP loss at the goal rate", "%", 2),
    ("ping_avg", "ping avg (idle)", "ms", 3),
    ("ping_p99", "ping p99 (idle)", "ms", 3),
    ("cpu_per_gbit", "daemon CPU, TCP 1", "s/Gbit", 2),
]
RATIOS = [
    ("dmvpnd-esp", "boringtun"),
    ("dmvpnd-natt", "boringtun"),
    ("dmvpnd-esp", "libipsec"),
    ("dmvpnd-natt", "libipsec"),
    # With run.sh --baseline: the change against what it replaces.
    ("dmvpnd-esp", "base-esp"),
    ("dmvpnd-natt", "base-natt"),
]


def load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def tcp_mbps(doc):
    if not doc or doc.get("error"):
        return None, None
    s = doc.get("end", {}).get("sum_received")
    if not s:
        return None, None
    return s["bits_per_second"] / 1e6, s["bytes"]


def udp(doc):
    """(sent kpps, delivered kpps, loss %) from the client's JSON: the receiver's "packets" is
    the count it expected (highest sequence number), "lost_packets" those that never came."""
    if not doc or doc.get("error"):
        return None, None, None
    end = doc.get("end", {})
    rx, tx = end.get("sum_received") or end.get("sum"), end.get("sum_sent") or end.get("sum")
    if not rx or not rx.get("packets"):
        return None, None, None
    expected = rx["packets"]
    lost = rx.get("lost_packets", 0)
    secs = rx.get("seconds") or 1
    sent = tx["packets"] / (tx.get("seconds") or 1) / 1e3 if tx and tx.get("packets") else None
    return sent, (expected - lost) / secs / 1e3, 100.0 * lost / expected


def ping(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None, None
    times = sorted(float(m) for m in re.findall(r"time=([0-9.]+) ms", text))
    if not times:
        return None, None
    p99 = times[max(0, math.ceil(0.99 * len(times)) - 1)]
    return statistics.fmean(times), p99


def case_metrics(d):
    m = {}
    m["tcp1"], tcp1_bytes = tcp_mbps(load_json(os.path.join(d, "tcp1.json")))
    m["tcp1r"], _ = tcp_mbps(load_json(os.path.join(d, "tcp1r.json")))
    m["tcp4"], _ = tcp_mbps(load_json(os.path.join(d, "tcp4.json")))
    m["udp_offered_kpps"], m["udp_kpps"], m["udp_loss"] = udp(load_json(os.path.join(d, "udp.json")))
    _, m["udpgoal_kpps"], m["udpgoal_loss"] = udp(load_json(os.path.join(d, "udpgoal.json")))
    m["ping_avg"], m["ping_p99"] = ping(os.path.join(d, "ping.txt"))
    m["cpu_per_gbit"] = None
    try:
        with open(os.path.join(d, "cpu.txt"), encoding="utf-8") as f:
            before, after, hz = (int(x) for x in f.read().split())
        if tcp1_bytes:
            m["cpu_per_gbit"] = (after - before) / hz / (tcp1_bytes * 8 / 1e9)
    except (OSError, ValueError):
        pass
    return m


def summarize(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "rounds": values,
    }


def collect(res):
    meta = load_json(os.path.join(res, "meta.json")) or {}
    names = meta.get("tunnels") or [t for t in TUNNELS if os.path.isdir(os.path.join(res, t))]
    out = {}
    for t in names:
        tdir = os.path.join(res, t)
        entry = {"skipped": None, "failed_rounds": [], "info": [], "metrics": {}}
        skip = os.path.join(tdir, "skipped")
        if os.path.exists(skip):
            with open(skip, encoding="utf-8") as f:
                entry["skipped"] = f.read().strip()
        rounds = sorted((r for r in os.listdir(tdir) if r.isdigit()), key=int) if os.path.isdir(tdir) else []
        per_round = []
        for r in rounds:
            d = os.path.join(tdir, r)
            if os.path.exists(os.path.join(d, "error")):
                entry["failed_rounds"].append(int(r))
            info = os.path.join(d, "info")
            if os.path.exists(info):
                with open(info, encoding="utf-8") as f:
                    entry["info"].append(f"r{r}: " + "; ".join(f.read().split("\n")).strip("; "))
            per_round.append(case_metrics(d))
        for key, *_ in METRICS:
            entry["metrics"][key] = summarize([m[key] for m in per_round])
        out[t] = entry
    ratios = {}
    for a, b in RATIOS:
        if a in out and b in out:
            r = {}
            for key, *_ in METRICS:
                ma, mb = out[a]["metrics"].get(key), out[b]["metrics"].get(key)
                r[key] = ma["median"] / mb["median"] if ma and mb and mb["median"] else None
            ratios[f"{a}/{b}"] = r
    return meta, out, ratios


def fmt(v, dec):
    return "-" if v is None else f"{v:.{dec}f}"


def cell(s, dec):
    if s is None:
        return "n/a"
    if s["min"] == s["max"]:
        return fmt(s["median"], dec)
    return f"{fmt(s['median'], dec)} ({fmt(s['min'], dec)}-{fmt(s['max'], dec)})"


def table(meta, out, ratios, markdown):
    names = list(out)
    head = ["metric"] + names + list(ratios)
    rows = []
    for key, label, unit, dec in METRICS:
        row = [f"{label} [{unit}]"]
        for t in names:
            e = out[t]
            row.append("skipped" if e["skipped"] else cell(e["metrics"][key], dec))
        for r in ratios.values():
            row.append(fmt(r[key], 2))
        rows.append(row)
    lines = []
    if markdown:
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join("---" for _ in head) + "|")
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        for r in [head] + rows:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    notes = []
    for t, e in out.items():
        if e["skipped"]:
            notes.append(f"{t}: skipped: {e['skipped']}")
        if e["failed_rounds"]:
            notes.append(f"{t}: failed in round(s) {', '.join(map(str, e['failed_rounds']))} (medians over the rest)")
        if e["info"]:
            notes += [f"{t} {i}" for i in e["info"]]
    return lines, notes


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    res = args[0]
    json_out = args[args.index("--json") + 1] if "--json" in args else None
    markdown = "--markdown" in args
    if os.path.isfile(res):
        doc = load_json(res) or sys.exit(f"report: cannot read {res}")
        meta, out, ratios = doc["machine"], doc["tunnels"], doc["ratios"]
    else:
        meta, out, ratios = collect(res)
    lines, notes = table(meta, out, ratios, markdown)
    print(
        f"machine: {meta.get('cpu_model', '?')}, {meta.get('cpus', '?')} CPUs, kernel {meta.get('kernel', '?')}; "
        f"load average before {meta.get('load_before', '?')}, after {meta.get('load_after', '?')}; "
        f"dmvpnd {meta.get('commit', '?')}, {meta.get('boringtun') or 'boringtun ?'}"
    )
    print(
        f"{meta.get('rounds', '?')} rounds interleaved, {meta.get('seconds', '?')} s per iperf3 test, "
        f"UDP {meta.get('udp_len', 1360)} B at {meta.get('udp_rate', '?')} and {meta.get('udp_goal_rate', '-')} offered "
        f"(iperf3 -w {meta.get('udp_window', 'default')}), {meta.get('pings', '?')} pings at 10 ms; "
        "median (min-max) over rounds; ratios of medians"
    )
    print()
    print("\n".join(lines))
    if notes:
        print()
        print("\n".join(notes))
    if json_out:
        with open(json_out, "w", encoding="utf-8") as f:
            json.dump({"machine": meta, "tunnels": out, "ratios": ratios,
                       "units": {k: u for k, _, u, _ in METRICS}}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
