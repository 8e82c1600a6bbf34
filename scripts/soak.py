#!/usr/bin/env python3
"""Soak client for scripts/soak.sh (Python standard library only).

Sends N small real OCR requests (POST /v1/ocr, image/png) with C in flight over keep-alive
connections, samples the server's resident memory (VmRSS of /proc/PID/status) every K completed
requests, and prints the samples, two slopes of RSS over the samples after the warm-up (the
first 20 % of the requests): the least-squares slope, and the median of the slopes between
consecutive samples, the answers by status, connection errors and the time. Exit status 1 when
any answer was a 5xx, any request met a connection error, an OK answer had no text, or the
median slope is over --max-slope-kib (KiB per 1,000 requests).

Why the median is the check: a steady server's RSS grows in a few steps of tens of MiB (glibc
malloc arenas and ONNX Runtime's arena taking a new batch shape) at moments no warm-up fraction
predicts: one CI run (2026-12-03) stepped by 74 MiB at request 1,350 of 1,500, after 1,200 flat
requests, and its least-squares slope was 70,674 KiB per 1,000; a 10,000-request run stepped by
33 MiB at 2,500 and at 4,500, then grew 208 KiB over its last 5,000. A leak grows in every
interval, so the median interval slope sees it; a few steps move the least-squares slope (which
is printed too) but not the median.

The image: --image FILE as is, or by default a crop of samples/phototest.png (two text lines),
made here with a minimal PNG decoder/encoder (zlib + PNG filters), so no imaging library is
needed.
"""

import argparse
import http.client
import json
import os
import struct
import sys
import threading
import time
import urllib.parse
import zlib


# ---------------------------------------------------------------------------------------------
# Minimal PNG crop: non-interlaced greyscale/RGB/RGBA/grey+alpha at 1-16 bits (no palette) in,
# 8-bit greyscale (or RGB) out.
def _chunks(data):
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos = 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        yield kind, data[pos + 8 : pos + 8 + n]
        pos += 12 + n


def _unfilter(raw, height, stride, bpp):
    out = bytearray()
    prev = bytearray(stride)
    pos = 0
    for _ in range(height):
        ftype = raw[pos]
        line = bytearray(raw[pos + 1 : pos + 1 + stride])
        pos += 1 + stride
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + ((a + b) >> 1)) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        out += line
        prev = line
    return out


def png_crop(data, box):
    """Crops the PNG bytes `data` to box = (left, top, right, bottom); returns PNG bytes."""
    ihdr = idat = None
    parts = []
    for kind, body in _chunks(data):
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            parts.append(body)
    width, height, depth, ctype, _, _, interlace = ihdr
    if interlace or ctype == 3:
        raise ValueError("interlaced or palette PNG: pass --image with a plain PNG instead")
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    idat = zlib.decompress(b"".join(parts))
    bits = depth * channels
    stride = (width * bits + 7) // 8
    px = _unfilter(idat, height, stride, max(1, bits // 8))
    left, top, right, bottom = box
    right, bottom = min(right, width), min(bottom, height)
    colour = ctype in (2, 6)
    out_ch = 3 if colour else 1
    rows = []
    for y in range(top, bottom):
        row = px[y * stride : (y + 1) * stride]
        line = bytearray()
        for x in range(left, right):
            vals = []
            for ch in range(out_ch):
                s = x * channels + ch
                if depth == 8:
                    v = row[s]
                elif depth == 16:
                    v = row[2 * s]
                else:  # 1, 2, 4 bits, greyscale only
                    bit = s * depth
                    v = (row[bit // 8] >> (8 - depth - bit % 8)) & ((1 << depth) - 1)
                    v = v * 255 // ((1 << depth) - 1)
                vals.append(v)
            line += bytes(vals)
        rows.append(b"\x00" + bytes(line))
    w, h = right - left, bottom - top

    def chunk(kind, body):
        c = struct.pack(">I", len(body)) + kind + body
        return c + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2 if colour else 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
        + chunk(b"IEND", b"")
    )


# ---------------------------------------------------------------------------------------------
def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def slope_per_1000(points):
    """Least-squares slope of (requests, KiB) in KiB per 1,000 requests."""
    n = len(points)
    if n < 2:
        return None
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    sxy = sum((x - mx) * (y - my) for x, y in points)
    return sxy / sxx * 1000


def median_interval_slope(points):
    """Median of the slopes between consecutive (requests, KiB) samples, KiB per 1,000."""
    slopes = sorted((y1 - y0) / (x1 - x0) * 1000
                    for (x0, y0), (x1, y1) in zip(points, points[1:]) if x1 > x0)
    if not slopes:
        return None
    mid = len(slopes) // 2
    return slopes[mid] if len(slopes) % 2 else (slopes[mid - 1] + slopes[mid]) / 2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--pid", type=int, required=True, help="the server's pid (for VmRSS)")
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--sample-every", type=int, default=500)
    ap.add_argument("--warmup-fraction", type=float, default=0.2)
    ap.add_argument("--max-slope-kib", type=float, default=2048)
    ap.add_argument("--image", help="image file sent as is (default: a crop of --sample)")
    ap.add_argument("--sample", default="samples/phototest.png")
    ap.add_argument("--crop", default="25,85,290,152", help="left,top,right,bottom")
    ap.add_argument("--timeout", type=float, default=120, help="per request, seconds")
    ap.add_argument("--max-seconds", type=float, default=0,
                    help="stop sending after this long and fail (0: no bound)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()

    if a.image:
        with open(a.image, "rb") as f:
            body = f.read()
        ctype = "application/octet-stream"
    else:
        with open(a.sample, "rb") as f:
            body = png_crop(f.read(), tuple(int(v) for v in a.crop.split(",")))
        ctype = "image/png"
    u = urllib.parse.urlsplit(a.url)
    host, port = u.hostname, u.port or 80
    path = "/v1/ocr?format=json"

    # A first request: the crop is real text (fails loudly here rather than 10,000 times).
    conn = http.client.HTTPConnection(host, port, timeout=a.timeout)
    conn.request("POST", path, body=body, headers={"Content-Type": ctype})
    r = conn.getresponse()
    first = r.read()
    conn.close()
    if r.status != 200:
        print(f"soak: the probe request got {r.status}: {first[:500]!r}", file=sys.stderr)
        return 1
    probe_text = json.loads(first).get("text", "")
    print(f"soak: image {len(body)} bytes ({ctype}); the server reads: {probe_text!r}",
          flush=True)
    if not probe_text.strip():
        print("soak: the probe request found no text (the models did not run?)", file=sys.stderr)
        return 1

    lock = threading.Lock()
    state = {"next": 0, "done": 0, "statuses": {}, "conn_errors": {}, "empty": 0,
             "overtime": False}
    samples = [(0, rss_kib(a.pid), 0.0)]
    t0 = time.monotonic()

    def sample_if_due(done):
        # Called with the lock held, once per completed request.
        if done % a.sample_every == 0 or done == a.requests:
            samples.append((done, rss_kib(a.pid), time.monotonic() - t0))
            n, kib, t = samples[-1]
            print(f"soak: {n} done, VmRSS {kib} KiB, {t:.1f} s", flush=True)

    def worker():
        conn = None
        while True:
            with lock:
                if state["next"] >= a.requests:
                    break
                if a.max_seconds and time.monotonic() - t0 > a.max_seconds:
                    state["overtime"] = True
                    break
                state["next"] += 1
            status, err, empty = None, None, False
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=a.timeout)
                conn.request("POST", path, body=body, headers={"Content-Type": ctype})
                r = conn.getresponse()
                data = r.read()
                status = r.status
                if status == 200:
                    empty = not json.loads(data).get("text", "").strip()
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                err = type(e).__name__
                print(f"soak: request error {err}: {e}", flush=True)
                if conn is not None:
                    conn.close()
                conn = None
            with lock:
                if status is not None:
                    state["statuses"][status] = state["statuses"].get(status, 0) + 1
                else:
                    state["conn_errors"][err] = state["conn_errors"].get(err, 0) + 1
                state["empty"] += empty
                state["done"] += 1
                sample_if_due(state["done"])
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0

    warm = a.warmup_fraction * a.requests
    fit = [(n, kib) for n, kib, _ in samples if n > warm]
    slope = slope_per_1000(fit)
    median = median_interval_slope(fit)
    print(f"soak: {a.requests} requests, concurrency {a.concurrency}, {elapsed:.1f} s "
          f"({a.requests / elapsed:.1f} requests/s)")
    print("soak: RSS samples (requests, VmRSS KiB, seconds):")
    for n, kib, t in samples:
        mark = "" if n > warm else "  (warm-up)"
        print(f"  {n:>7} {kib:>9} {t:>8.1f}{mark}")
    first_kib, last_kib = samples[0][1], samples[-1][1]
    print(f"soak: RSS {first_kib} KiB before, {last_kib} KiB after "
          f"({last_kib - first_kib:+d} KiB), peak {max(k for _, k, _ in samples)} KiB")
    if median is None:
        print(f"soak: slope: too few samples after the warm-up ({len(fit)})")
    else:
        print(f"soak: after the first {a.warmup_fraction:.0%} ({len(fit)} samples): "
              f"least-squares slope {slope:+.1f} KiB per 1000 requests; median interval slope "
              f"{median:+.1f} KiB per 1000 requests (checked, limit {a.max_slope_kib:g})")
    statuses = dict(sorted(state["statuses"].items()))
    print(f"soak: answers by status: {json.dumps(statuses)}; connection errors: "
          f"{json.dumps(state['conn_errors'])}; 200 without text: {state['empty']}")

    failures = []
    if state["overtime"]:
        failures.append(f"only {state['done']} of {a.requests} requests within --max-seconds "
                        f"{a.max_seconds:g}")
    five = sum(v for k, v in statuses.items() if k >= 500)
    if five:
        failures.append(f"{five} 5xx answers")
    if state["conn_errors"]:
        failures.append(f"{sum(state['conn_errors'].values())} connection errors")
    if state["empty"]:
        failures.append(f"{state['empty']} OK answers without text")
    other = sum(v for k, v in statuses.items() if k != 200 and k < 500)
    if other:
        # 429 overloaded is the server's back-pressure, not a fault: reported, not failed.
        print(f"soak: note: {other} non-200 answers under 500")
    if median is None:
        failures.append(f"too few RSS samples after the warm-up ({len(fit)}) to check a leak")
    elif median > a.max_slope_kib:
        failures.append(f"median RSS slope {median:.1f} KiB/1000 requests over "
                        f"{a.max_slope_kib:g}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"requests": a.requests, "concurrency": a.concurrency,
                       "seconds": elapsed, "samples": samples, "slope_kib_per_1000": slope,
                       "median_interval_slope_kib_per_1000": median,
                       "statuses": statuses, "connection_errors": state["conn_errors"],
                       "empty_ok": state["empty"], "failures": failures}, f, indent=1)
    if failures:
        print("soak: FAILED: " + "; ".join(failures))
        return 1
    print("soak: PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
