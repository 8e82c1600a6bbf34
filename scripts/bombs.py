#!/usr/bin/env python3
"""Memory-bomb client for scripts/bombs.sh (Python standard library only).

Builds a flate-bomb PDF (one page whose content stream is --inflate-mib MiB of spaces, deflated
at level 9: about 1 MB on the wire for 1 GiB inflated), sends --count of them at once to
POST /v1/ocr, and prints the server's resident memory (VmRSS of /proc/PID/status) before, its
peak (VmHWM) after, the answers by status and code, and the time. Exit status 1 when the server
died, a request met a connection error or an answer was a 5xx other than 503.
"""

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse
import zlib


def flate_bomb_pdf(inflate_mib):
    z = zlib.compressobj(9)
    chunk = b" " * (1 << 20)
    stream = b"".join(z.compress(chunk) for _ in range(inflate_mib)) + z.flush()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Count 1 /Kids [3 0 R] >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offs = []
    for i, o in enumerate(objs):
        offs.append(len(out))
        out += b"%d 0 obj\n" % (i + 1) + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    for o in offs:
        out += b"%010d 00000 n \n" % o
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def proc_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"no {field}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--count", type=int, default=16)
    ap.add_argument("--inflate-mib", type=int, default=1024)
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()

    bomb = flate_bomb_pdf(a.inflate_mib)
    u = urllib.parse.urlsplit(a.url)
    idle = proc_kib(a.pid, "VmRSS:")
    idle_hwm = proc_kib(a.pid, "VmHWM:")
    print(f"bombs: {a.count} PDFs of {len(bomb)} bytes inflating to {a.inflate_mib} MiB each; "
          f"server idle VmRSS {idle >> 10} MiB (VmHWM so far {idle_hwm >> 10} MiB)", flush=True)
    results = []
    lock = threading.Lock()
    peak_rss = [idle]

    def one():
        t = time.monotonic()
        try:
            c = http.client.HTTPConnection(u.hostname, u.port, timeout=a.timeout)
            c.request("POST", "/v1/ocr", body=bomb, headers={"Content-Type": "application/pdf"})
            r = c.getresponse()
            data = r.read()
            try:
                code = json.loads(data).get("code", "")
            except ValueError:
                code = ""
            res = (r.status, code)
        except (OSError, http.client.HTTPException) as e:
            res = ("error", type(e).__name__)
        with lock:
            results.append((res, time.monotonic() - t))

    threads = [threading.Thread(target=one, daemon=True) for _ in range(a.count)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    alive = True
    while any(t.is_alive() for t in threads):
        try:
            peak_rss[0] = max(peak_rss[0], proc_kib(a.pid, "VmRSS:"))
        except (OSError, RuntimeError):
            alive = False
            break
        time.sleep(0.05)
    for t in threads:
        t.join(timeout=a.timeout)
    elapsed = time.monotonic() - t0
    try:
        hwm = proc_kib(a.pid, "VmHWM:")
    except (OSError, RuntimeError):
        alive, hwm = False, None
    outcomes = {}
    for (status, code), _ in results:
        k = f"{status} {code}".strip()
        outcomes[k] = outcomes.get(k, 0) + 1
    slowest = max((s for _, s in results), default=0.0)
    print(f"bombs: answers {json.dumps(dict(sorted(outcomes.items())))} in {elapsed:.1f} s "
          f"(slowest {slowest:.1f} s)")
    if hwm is not None:
        print(f"bombs: server VmRSS idle {idle >> 10} MiB, sampled peak {peak_rss[0] >> 10} MiB, "
              f"VmHWM {hwm >> 10} MiB (+{(hwm - idle) >> 10} MiB over idle)")
    bad = [k for (k, _) in results if k[0] == "error" or (isinstance(k[0], int) and k[0] >= 500
                                                         and k[0] != 503)]
    if not alive:
        print("bombs: FAILED: the server died", file=sys.stderr)
        return 1
    if bad:
        print(f"bombs: FAILED: {len(bad)} connection errors or 5xx answers", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
