#!/usr/bin/env python3
"""A legitimate client at a steady rate: the paced loop Debian's wrk cannot do.

    legit.py PORT RATE SECONDS XFF_IP OUT.json

Sends GET / on one keep-alive connection to 127.0.0.1:PORT at RATE req/s for SECONDS, with
`X-Forwarded-For: XFF_IP`, and writes latencies (ms, from the scheduled send time, so a stall
counts against the gateway as it would for a real client — no coordinated omission), the
service times (ms, send to full response; these exclude the client's own wake-up delay when
it is starved of CPU) and the status counts to OUT.json. A connection error is counted and the connection reopened.
"""
import http.client
import json
import sys
import time


def main():
    port, rate, seconds, ip, out = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
    headers = {"X-Forwarded-For": ip, "Host": "127.0.0.1"}
    conn = None
    lat, service, statuses, errors = [], [], {}, 0
    start = time.monotonic()
    n = int(rate * seconds)
    for k in range(n):
        due = start + k / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        sent = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/", headers=headers)
            resp = conn.getresponse()
            resp.read()
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            if resp.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        except Exception:
            errors += 1
            if conn is not None:
                conn.close()
            conn = None
            continue
        done = time.monotonic()
        lat.append((done - due) * 1000.0)
        service.append((done - sent) * 1000.0)
    with open(out, "w") as f:
        json.dump({"latencies_ms": lat, "service_ms": service, "statuses": statuses, "errors": errors, "sent": n,
                   "elapsed_s": time.monotonic() - start}, f)


if __name__ == "__main__":
    main()
