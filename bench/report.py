#!/usr/bin/env python3
"""Turns the raw files bench/run leaves in its work directory into Markdown tables.

    report.py throughput DIR | cpu DIR | attack DIR
"""
import datetime
import glob
import json
import os
import re
import statistics
import struct
import sys

UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def dur_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * UNIT[m.group(2)]


def parse_wrk(path):
    """req/s, p50/p99 (ms), requests, non-2xx, socket errors and Lua status lines of one run."""
    text = open(path).read()
    r = {"rps": None, "p50": None, "p99": None, "max": None, "requests": 0, "non2xx": 0, "errors": 0, "status": {}}
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(r"^\s+%s%%\s+(\S+)" % pct, text, re.M)
        if m:
            r[key] = dur_ms(m.group(1))
    m = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", text, re.M)
    if m:
        r["max"] = dur_ms(m.group(1))
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"^\s+(\d+) requests in", text, re.M)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        r["errors"] = sum(int(x) for x in m.groups())
    for code, n in re.findall(r"^status (\d+) (\d+)$", text, re.M):
        r["status"][int(code)] = int(n)
    return r


def read_num(path, default=None):
    try:
        return float(open(path).read().split()[0])
    except (OSError, IndexError, ValueError):
        return default


def fmt(x, nd=0):
    return "—" if x is None else f"{x:,.{nd}f}"


def pctl(values, p):
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def throughput(d):
    files = sorted(glob.glob(os.path.join(d, "tp-r*-*.wrk")))
    rounds = sorted({int(re.search(r"tp-r(\d+)-", f).group(1)) for f in files})
    targets = ["direct", "nginx", "portcullis", "haproxy"]
    print("| round | target | req/s | p50 (ms) | p99 (ms) | non-2xx | socket errors | proxy CPU s | proxy CPU s / 100k req |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    per = {t: [] for t in targets}
    ratios = []
    for rd in rounds:
        row = {}
        for t in targets:
            f = os.path.join(d, f"tp-r{rd}-{t}.wrk")
            if not os.path.exists(f):
                continue
            w = parse_wrk(f)
            cpu = read_num(os.path.join(d, f"tp-r{rd}-{t}.cpu"))
            per100k = cpu / w["requests"] * 1e5 if cpu is not None and w["requests"] else None
            row[t] = w
            per[t].append(w)
            print(f"| {rd} | {t} | {fmt(w['rps'])} | {fmt(w['p50'], 3)} | {fmt(w['p99'], 3)} | {w['non2xx']} | {w['errors']} | "
                  f"{fmt(cpu, 2) if t != 'direct' else '—'} | {fmt(per100k, 3) if t != 'direct' else '—'} |")
        for peer in ("nginx", "haproxy"):
            if peer in row and "portcullis" in row and row[peer]["rps"] and row[peer]["p99"] and row[peer]["p50"]:
                ratios.append((rd, row["portcullis"]["rps"] / row[peer]["rps"], row["portcullis"]["p99"] / row[peer]["p99"],
                               row["portcullis"]["p50"] / row[peer]["p50"], peer))
    print()
    print("| round | against | portcullis/peer req/s | portcullis/peer p50 | portcullis/peer p99 |")
    print("|---|---|---:|---:|---:|")
    for rd, a, b, c, peer in ratios:
        print(f"| {rd} | {peer} | {a:.2f}× | {c:.2f}× | {b:.2f}× |")
    for peer in ("nginx", "haproxy"):
        mine = [r for r in ratios if r[4] == peer]
        if mine:
            print(f"| median | {peer} | {statistics.median(r[1] for r in mine):.2f}× | {statistics.median(r[3] for r in mine):.2f}× | "
                  f"{statistics.median(r[2] for r in mine):.2f}× |")
    print()
    print("| target | median req/s | median p50 (ms) | median p99 (ms) |")
    print("|---|---:|---:|---:|")
    for t in targets:
        if per[t]:
            print(f"| {t} | {fmt(statistics.median(w['rps'] for w in per[t]))} | {fmt(statistics.median(w['p50'] for w in per[t]), 3)} | "
                  f"{fmt(statistics.median(w['p99'] for w in per[t]), 3)} |")


def cpu(d):
    print("| round | proxy | offered | completed req | achieved req/s | p50 (ms) | p99 (ms) | non-2xx | proxy CPU s | "
          "of which each worker | CPU s / 100k req | peak RSS (MiB) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    per = {}
    rounds = {}
    rate = read_num(os.path.join(d, "cpu.rate"))
    for f in sorted(glob.glob(os.path.join(d, "cpu-r*-*.wrk"))):
        rd, t = re.search(r"cpu-r(\d+)-(\w+)\.wrk", f).groups()
        w = parse_wrk(f)
        c = read_num(f[:-4] + ".cpu")
        rss = read_num(f[:-4] + ".rss")
        secs = read_num(os.path.join(d, "cpu.seconds"))
        p = c / w["requests"] * 1e5 if c is not None and w["requests"] else None
        per.setdefault(t, []).append(p)
        rounds.setdefault(rd, {})[t] = p
        try:
            split = open(f[:-4] + ".workers").read().strip() or "—"
        except OSError:
            split = "—"
        print(f"| {rd} | {t} | {fmt(rate)} r/s | {w['requests']:,} | {fmt(w['requests'] / secs if secs else None)} | {fmt(w['p50'], 3)} | "
              f"{fmt(w['p99'], 3)} | {w['non2xx']} | {fmt(c, 2)} | {split} | {fmt(p, 3)} | {fmt(rss / 1024 if rss else None, 1)} |")
    if "nginx" in per and "portcullis" in per:
        n = statistics.median(x for x in per["nginx"] if x is not None)
        pc = statistics.median(x for x in per["portcullis"] if x is not None)
        print()
        # A run too short for the clock-tick resolution of /proc (10 ms) can read 0 CPU seconds.
        ratio = f"{pc / n:.2f}×" if n else "— (nginx used less than one clock tick)"
        print(f"Median CPU seconds per 100k requests: nginx {n:.3f}, portcullis {pc:.3f} (portcullis/nginx = {ratio}).")
        ratios = [r["portcullis"] / r["nginx"] for r in rounds.values()
                  if r.get("nginx") and r.get("portcullis") is not None]
        if ratios:
            print(f"Per round, portcullis/nginx: {' / '.join(f'{x:.2f}×' for x in ratios)} "
                  f"(median {statistics.median(ratios):.2f}×).")


def legit_stats(path):
    try:
        j = json.load(open(path))
    except OSError:
        return None
    lat = j["latencies_ms"]
    svc = j.get("service_ms", [])
    return {"n": len(lat), "p50": pctl(lat, 50), "p99": pctl(lat, 99), "max": max(lat) if lat else None,
            "svc_p50": pctl(svc, 50), "svc_p99": pctl(svc, 99),
            "statuses": j["statuses"], "errors": j["errors"], "sent": j["sent"]}


def pcap_requests(path):
    """(time in ms, X-Real-IP) of every request in a tcpdump capture of the proxy's writes to
    the upstream (Linux loopback: Ethernet framing; IPv4)."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return out
    magic = struct.unpack("<I", data[:4])[0]
    kind = {0xA1B2C3D4: ("<", 1e-3), 0xA1B23C4D: ("<", 1e-6),
            0xD4C3B2A1: (">", 1e-3), 0x4D3CB2A1: (">", 1e-6)}.get(magic)
    if kind is None:  # not a classic pcap file (pcapng, or cut short)
        return out
    end, frac = kind
    pos = 24
    while pos + 16 <= len(data):
        sec, sub, incl, _ = struct.unpack(end + "IIII", data[pos:pos + 16])
        pkt = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        ip = pkt[14:]
        if len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        tcp = ip[(ip[0] & 0xF) * 4:]
        payload = tcp[(tcp[12] >> 4) * 4:]
        t = sec * 1000.0 + sub * frac
        for m in re.finditer(rb"\r\nx-real-ip: ([0-9a-fA-F.:]+)\r\n", payload, re.I):
            out.append((t, m.group(1).decode()))
    return out


def ban_log_times(path):
    """Client IP -> time (ms, microsecond precision) of its ban's log line."""
    out = {}
    if not os.path.exists(path):
        return out
    for line in open(path):
        if '"message":"ban"' not in line:
            continue
        try:
            e = json.loads(line)
            t = datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp() * 1000.0
        except (ValueError, KeyError):
            continue
        out.setdefault(e["client"].split("/")[0], t)
    return out


def attack(d):
    proxies = [p for p in ("portcullis", "nginx") if os.path.exists(os.path.join(d, f"attack-{p}.window"))]
    log = []
    logf = os.path.join(d, "upstream-access.log")
    if os.path.exists(logf):
        for line in open(logf):
            parts = line.split()
            if len(parts) >= 4:
                logged = float(parts[0]) * 1000.0
                # When the request reached the upstream: logged minus $request_time.
                arrived = logged - float(parts[4]) * 1000.0 if len(parts) >= 5 else logged
                log.append((logged, parts[1], int(parts[2]), parts[3], arrived))
    legit_ip = open(os.path.join(d, "legit.ip")).read().strip() if os.path.exists(os.path.join(d, "legit.ip")) else ""

    print("Legitimate client (GET /, steady rate, own X-Forwarded-For; latency from the scheduled send time, "
          "service = send to response):")
    print()
    print("| proxy | phase | sent | 200 | other statuses | errors | p50 (ms) | p99 (ms) | max (ms) | service p50 (ms) | service p99 (ms) |")
    print("|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for p in proxies:
        for phase in ("base", "flood"):
            s = legit_stats(os.path.join(d, f"attack-{p}-legit-{phase}.json"))
            if not s:
                continue
            other = {k: v for k, v in s["statuses"].items() if k != "200"}
            print(f"| {p} | {'no flood' if phase == 'base' else 'during flood'} | {s['sent']} | {s['statuses'].get('200', 0)} | "
                  f"{other or '—'} | {s['errors']} | {fmt(s['p50'], 2)} | {fmt(s['p99'], 2)} | {fmt(s['max'], 2)} | "
                  f"{fmt(s['svc_p50'], 2)} | {fmt(s['svc_p99'], 2)} |")
    print()

    print("Flood (wrk, random X-Forwarded-For from 198.18.0.0/15, probe paths and /missing/*):")
    print()
    print("| proxy | flood requests | flood req/s | answers by status | flood requests reaching the upstream | "
          "of which arrived after the client's ban (+0 ms / +10 ms / +1 s) | "
          "of which the proxy delivered after the ban (packet capture) | banned clients | gateway CPU s | CPU s / 100k flood req | peak RSS (MiB) | "
          "flood p99 / max (ms) | longest upstream silence (ms) |")
    print("|---|---:|---:|---|---:|---|---|---:|---:|---:|---:|---:|---:|")
    notes = []
    for p in proxies:
        start, end = (float(x) for x in open(os.path.join(d, f"attack-{p}.window")).read().split())
        w = parse_wrk(os.path.join(d, f"attack-{p}-flood.wrk"))
        flood = [e for e in log if start - 1000 <= e[0] <= end + 2000 and e[1] != legit_ip and e[1].startswith("198.1")]
        bans = {}
        bf = os.path.join(d, f"attack-{p}-bans.json")
        if os.path.exists(bf):
            for b in json.load(open(bf)):
                bans[b["net"].split("/")[0]] = b["created_ms"]
        after = []
        for slack in (0, 10, 1000):
            after.append(sum(1 for e in flood if e[1] in bans and e[4] > bans[e[1]] + slack))
        # The capture times each request as the proxy's write delivered it to the upstream's
        # socket: no upstream queueing in it. A ban's own record has whole milliseconds; its
        # log line has microseconds and is written by the thread that made the ban right after
        # making it. Compared with that line: how many came after, and how close the last one
        # before it came.
        delivered = "no capture"
        cap = os.path.join(d, f"attack-{p}-upstream.pcap")
        logged = ban_log_times(os.path.join(d, "portcullis-attack.log")) if p == "portcullis" else {}
        if bans and os.path.exists(cap) and logged:
            captured = pcap_requests(cap)
            sent = [t - logged[ip] for t, ip in captured if ip in logged]
            late = sum(1 for x in sent if x > 0)
            before = [x for x in sent if x <= 0]
            delivered = f"{late}" + (f" (the last before its ban: {-max(before) * 1000:.0f} µs before the ban's log line)"
                                     if before and not late else "")
            flood_captured = sum(1 for _, ip in captured if ip != legit_ip and ip.startswith("198.1"))
            if flood_captured != len(flood):
                notes.append(f"{p}: the capture holds {flood_captured:,} flood requests, the upstream's log {len(flood):,}")
        c = read_num(os.path.join(d, f"attack-{p}.cpu"))
        rss = read_num(os.path.join(d, f"attack-{p}.rss"))
        per = c / w["requests"] * 1e5 if c is not None and w["requests"] else None
        status = ", ".join(f"{k}: {v:,}" for k, v in sorted(w["status"].items()))
        # A stall of the gateway or the upstream shows as a gap in the upstream's arrivals.
        times = sorted(e[0] for e in log if start <= e[0] <= end)
        gaps = [(b - a, a) for a, b in zip(times, times[1:])]
        gap, gap_at = max(gaps) if gaps else (None, None)
        print(f"| {p} | {w['requests']:,} | {fmt(w['rps'])} | {status} | {len(flood):,} | "
              f"{' / '.join(str(a) for a in after) if bans else 'no bans'} | {delivered if bans else '—'} | {len(bans):,} | {fmt(c, 2)} | {fmt(per, 3)} | "
              f"{fmt(rss / 1024 if rss else None, 1)} | {fmt(w['p99'], 1)} / {fmt(w['max'], 1)} | {fmt(gap)} |")
        if gap is not None and gap >= 200:
            notes.append(f"{p}: nothing reached the upstream for {gap:.0f} ms, {(gap_at - start) / 1000:.1f} s into the "
                         f"flood: the gateway or the upstream stood still (compare the flood's max latency)")
        if bans:
            # Logged after the ban is not sent after it: a request already on its way when the
            # ban was made arrives (and is logged) a moment later; the capture column tells.
            late = sorted((e[4] - bans[e[1]], e[0] - bans[e[1]]) for e in flood if e[1] in bans and e[0] > bans[e[1]])
            if late:
                notes.append(f"{p}: {len(late)} request(s) logged by the upstream after their client's ban; arrival and "
                             f"log time minus ban time (ms): "
                             f"{', '.join(f'{a:.0f}/{l:.0f}' for a, l in late[:20])}")
    # After the table: a line inside it would end the table in Markdown.
    if notes:
        print()
        for n in notes:
            print(f"- {n}")


if __name__ == "__main__":
    {"throughput": throughput, "cpu": cpu, "attack": attack}[sys.argv[1]](sys.argv[2])
