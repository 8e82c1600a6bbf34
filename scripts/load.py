#!/usr/bin/env python3
"""Load test for the OCR HTTP server: throughput and latency at several concurrency levels.

What it does
------------
For every concurrency level C given in ``--concurrency`` (e.g. ``1,2,4,8,16``):

1. Warm-up: ``--warmup`` requests (default 1) are sent one after another over a fresh
   connection, cycling through the images. They are not timed and not counted in the
   level's statistics (a non-2xx warm-up still makes the exit status 1).
2. Timed phase: a shared work list of ``--passes`` x all images (pass by pass, images in
   the given order) is drained by C worker threads. Each worker keeps exactly one request
   in flight at a time over its own persistent ``http.client`` keep-alive connection, and
   reconnects after a connection failure (a request that fails on a *reused* connection
   before any response arrives -- the usual stale keep-alive race -- is retried once on a
   fresh connection; any other transport failure is recorded as an error).
3. Optionally (``--metrics``) ``GET {url}/metrics`` is fetched and its raw text stored in
   the JSON output under the level (key ``metrics_text``; null plus ``metrics_error``
   when the fetch fails).

Every request is ``POST {url}/v1/ocr?{query}`` with the raw file bytes as the body and a
``Content-Type`` chosen from the file extension (image/png, image/jpeg, image/tiff,
image/webp, image/bmp). A ``429`` answer is honoured: the worker sleeps for the
``Retry-After`` seconds (1 s when missing or unparsable) and sends the same image again;
such retries are counted (``retries_429``) and are not errors unless ``--max-retries`` is
exhausted, in which case the final 429 counts as an error.

What it measures
----------------
Per request: the wall latency with ``time.perf_counter`` and the HTTP status, plus the
server's timing headers when present -- ``x-queue-time``, ``x-detect-time``,
``x-recognize-time``, ``x-total-time`` (milliseconds, decimal numbers).

* ``latency`` is end-to-end as a client sees it: from sending the first attempt to the
  final response, so it includes any 429 back-off sleeps and retries. ``attempt_latency``
  (JSON only) is the latency of the final attempt alone.
* ``wall_s`` is the time from the start of the timed phase until the last worker is done;
  ``throughput_rps`` = ok requests / ``wall_s``.
* Percentiles are nearest-rank over the ok (2xx) requests of the level: sort the n
  latencies ascending and take the value at 1-based rank ``ceil(p/100 * n)`` (clamped to
  [1, n]); so p50 of 4 values is the 2nd, p99 of 10 values is the 10th (= max). No
  interpolation is done, so every reported percentile is a latency that really occurred.
* Header means are arithmetic means over the ok requests that carried the header.

Output: a Markdown table on stdout, progress on stderr and, with ``--out``, a JSON file
holding the argument values, the image count and list, and one object per level (with
per-request records). Exit status: 0 when every request (warm-up included) ended in 2xx
(after retried 429s), 1 otherwise, 2 for usage errors or an unreachable server.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import socket
import statistics
import sys
import threading
import time
import urllib.parse
from email.utils import parsedate_to_datetime
from typing import NoReturn

IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}

# Response header -> short name used in the report.
TIMING_HEADERS = {
    "x-queue-time": "queue",
    "x-detect-time": "detect",
    "x-recognize-time": "recognize",
    "x-total-time": "total",
}

PERCENTILES = (50, 90, 99)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def die(msg: str) -> NoReturn:
    """Usage / setup error: message on stderr, exit status 2."""
    log(f"error: {msg}")
    raise SystemExit(2)


def nearest_rank(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list; None for an empty list."""
    n = len(sorted_values)
    if n == 0:
        return None
    rank = math.ceil(p / 100.0 * n)
    rank = min(max(rank, 1), n)
    return sorted_values[rank - 1]


def latency_summary(values: list[float]) -> dict:
    s = sorted(values)
    out = {f"p{p}": nearest_rank(s, p) for p in PERCENTILES}
    out["min"] = s[0] if s else None
    out["max"] = s[-1] if s else None
    out["mean"] = statistics.fmean(s) if s else None
    return out


def parse_ms(value: str | None) -> float | None:
    """A header value in milliseconds ('12.5', tolerating a trailing 'ms')."""
    if value is None:
        return None
    v = value.strip().lower()
    if v.endswith("ms"):
        v = v[:-2].strip()
    try:
        x = float(v)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def parse_retry_after(value: str | None, default: float = 1.0) -> float:
    """Retry-After as seconds: a (decimal) number of seconds or an HTTP date."""
    if value is None:
        return default
    v = value.strip()
    try:
        secs = float(v)
        return max(0.0, secs) if math.isfinite(secs) else default
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(v)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return default


def collect_images(items: list[str]) -> list[str]:
    """Directories contribute their image files (sorted, non-recursive); files are kept."""
    paths: list[str] = []
    for item in items:
        if os.path.isdir(item):
            names = sorted(
                n
                for n in os.listdir(item)
                if os.path.splitext(n)[1].lower() in IMAGE_TYPES
                and os.path.isfile(os.path.join(item, n))
            )
            if not names:
                log(f"warning: no image files in directory {item}")
            paths.extend(os.path.join(item, n) for n in names)
        elif os.path.isfile(item):
            paths.append(item)
        else:
            die(f"no such file or directory: {item}")
    return paths


def content_type(path: str) -> str:
    return IMAGE_TYPES.get(os.path.splitext(path)[1].lower(), "application/octet-stream")


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}")
    if not levels or any(c < 1 for c in levels):
        raise argparse.ArgumentTypeError("concurrency levels must be integers >= 1")
    return levels


class Target:
    """Where to send requests, parsed once from --url."""

    def __init__(self, url: str, query: str, timeout: float):
        parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme not in ("http", "https"):
            die(f"unsupported URL scheme in {url!r}")
        if not parts.hostname:
            die(f"no host in URL {url!r}")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        q = query.lstrip("?")
        self.ocr_path = f"{self.prefix}/v1/ocr" + (f"?{q}" if q else "")
        self.metrics_path = f"{self.prefix}/metrics"

    def connect(self) -> http.client.HTTPConnection:
        cls = _HTTPSConnection if self.scheme == "https" else _HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout)


class _NoDelay:
    """Sets TCP_NODELAY on (re)connect: http.client writes the headers and the body in
    separate send() calls, which with Nagle and a delayed-ACK peer can add ~40 ms."""

    def connect(self) -> None:
        super().connect()
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class _HTTPConnection(_NoDelay, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_NoDelay, http.client.HTTPSConnection):
    pass


# --------------------------------------------------------------------------------------
# One request (with 429 retries) over a worker's connection
# --------------------------------------------------------------------------------------


class Client:
    """A persistent keep-alive connection that reconnects after failures."""

    def __init__(self, target: Target, max_retries: int, stop: threading.Event):
        self.target = target
        self.max_retries = max_retries
        self.stop = stop
        self.conn: http.client.HTTPConnection | None = None
        self.used = False  # whether the current connection has completed a request

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
        self.conn = None
        self.used = False

    def _attempt(self, method: str, path: str, body: bytes | None, headers: dict):
        """One HTTP exchange; returns (status, headers, body). Raises on transport errors."""
        for tries in (0, 1):
            if self.conn is None:
                self.conn = self.target.connect()
                self.used = False
            reused = self.used
            try:
                self.conn.request(method, path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    BrokenPipeError, ConnectionAbortedError) as e:
                self.close()
                if reused and tries == 0:
                    continue  # stale keep-alive connection: retry once on a fresh one
                raise e
            except Exception:
                self.close()
                raise
            if resp.will_close:
                self.close()
            else:
                self.used = True
            return resp.status, resp.headers, data
        raise AssertionError("unreachable")

    def ocr(self, path: str, body: bytes) -> dict:
        """POSTs one image, honouring 429 Retry-After; returns the per-request record."""
        headers = {"Content-Type": content_type(path), "Content-Length": str(len(body))}
        retries = 0
        t_first = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            try:
                status, resp_headers, _ = self._attempt("POST", self.target.ocr_path, body, headers)
            except socket.timeout:
                status, resp_headers, err = "timeout", None, "timeout"
            except Exception as e:  # transport failure: recorded, connection already reset
                status, resp_headers, err = "conn_error", None, f"{type(e).__name__}: {e}"
            else:
                err = None
            t1 = time.perf_counter()
            if status == 429 and retries < self.max_retries and not self.stop.is_set():
                retries += 1
                delay = parse_retry_after(resp_headers.get("Retry-After"))
                self.stop.wait(delay)
                continue
            rec = {
                "image": os.path.basename(path),
                "status": status,
                "latency_ms": (t1 - t_first) * 1000.0,
                "attempt_latency_ms": (t1 - t0) * 1000.0,
                "retries_429": retries,
            }
            if err is not None:
                rec["error"] = err
            if resp_headers is not None:
                for header, short in TIMING_HEADERS.items():
                    v = parse_ms(resp_headers.get(header))
                    if v is not None:
                        rec[f"{short}_ms"] = v
            return rec


def is_ok(status) -> bool:
    return isinstance(status, int) and 200 <= status < 300


# --------------------------------------------------------------------------------------
# One concurrency level
# --------------------------------------------------------------------------------------


def run_warmup(target: Target, images: list[tuple[str, bytes]], n: int, args,
               stop: threading.Event) -> list[dict]:
    client = Client(target, args.max_retries, stop)
    recs = []
    try:
        for i in range(n):
            if stop.is_set():
                break
            path, body = images[i % len(images)]
            rec = client.ocr(path, body)
            recs.append(rec)
            if not is_ok(rec["status"]):
                log(f"  warm-up request {i + 1} ({rec['image']}) failed: {rec['status']}"
                    + (f" ({rec['error']})" if "error" in rec else ""))
    finally:
        client.close()
    return recs


def run_level(target: Target, images: list[tuple[str, bytes]], concurrency: int, args,
              stop: threading.Event) -> dict:
    work = [img for _ in range(args.passes) for img in images]
    lock = threading.Lock()
    next_index = [0]
    results: list[dict] = []

    def worker() -> None:
        client = Client(target, args.max_retries, stop)
        local: list[dict] = []
        try:
            while not stop.is_set():
                with lock:
                    i = next_index[0]
                    if i >= len(work):
                        break
                    next_index[0] = i + 1
                path, body = work[i]
                local.append(client.ocr(path, body))
        finally:
            client.close()
            with lock:
                results.extend(local)

    threads = [threading.Thread(target=worker, name=f"w{k}", daemon=True)
               for k in range(concurrency)]
    t_start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():  # join with a timeout so Ctrl-C is delivered promptly
            t.join(0.2)
    wall = time.perf_counter() - t_start

    ok = [r for r in results if is_ok(r["status"])]
    errors: dict[str, int] = {}
    for r in results:
        if not is_ok(r["status"]):
            errors[str(r["status"])] = errors.get(str(r["status"]), 0) + 1
    header_means = {}
    header_counts = {}
    for short in TIMING_HEADERS.values():
        vals = [r[f"{short}_ms"] for r in ok if f"{short}_ms" in r]
        header_counts[short] = len(vals)
        header_means[short] = statistics.fmean(vals) if vals else None

    return {
        "concurrency": concurrency,
        "requests": len(results),
        "ok": len(ok),
        "errors": dict(sorted(errors.items())),
        "retries_429": sum(r["retries_429"] for r in results),
        "wall_s": wall,
        "throughput_rps": len(ok) / wall if wall > 0 else None,
        "latency_ms": latency_summary([r["latency_ms"] for r in ok]),
        "attempt_latency_ms": latency_summary([r["attempt_latency_ms"] for r in ok]),
        "header_mean_ms": header_means,
        "header_count": header_counts,
        "interrupted": stop.is_set(),
        "per_request": results,
    }


def fetch_metrics(target: Target, stop: threading.Event) -> tuple[str | None, str | None]:
    """GET /metrics: (raw text, None) on 2xx, else (None, what went wrong)."""
    client = Client(target, 0, stop)
    try:
        status, _, data = client._attempt("GET", target.metrics_path, None, {})
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"
    finally:
        client.close()
    text = data.decode("utf-8", errors="replace")
    if not is_ok(status):
        return None, f"HTTP {status}: {text[:500]}"
    return text, None


def check_server(target: Target) -> None:
    """--queue-url-check: fail fast when nothing answers HTTP at --url."""
    conn = target.connect()
    try:
        conn.request("GET", target.metrics_path)
        resp = conn.getresponse()
        resp.read()
        log(f"server check: GET {target.metrics_path} -> {resp.status}")
    except Exception as e:
        die(f"server at {target.scheme}://{target.host}:{target.port} "
            f"is not answering HTTP ({type(e).__name__}: {e})")
    finally:
        conn.close()


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def fmt(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown_table(levels: list[dict]) -> str:
    head = ("| concurrency | requests | ok | req/s | p50 ms | p90 ms | p99 ms | max ms "
            "| mean queue ms | mean detect ms | mean recognize ms |")
    sep = "|" + "|".join("---:" for _ in range(11)) + "|"
    rows = [head, sep]
    for lv in levels:
        lat, hm = lv["latency_ms"], lv["header_mean_ms"]
        rows.append(
            f"| {lv['concurrency']} | {lv['requests']} | {lv['ok']} "
            f"| {fmt(lv['throughput_rps'], 2)} | {fmt(lat['p50'])} | {fmt(lat['p90'])} "
            f"| {fmt(lat['p99'])} | {fmt(lat['max'])} | {fmt(hm['queue'])} "
            f"| {fmt(hm['detect'])} | {fmt(hm['recognize'])} |"
        )
    return "\n".join(rows)


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="load.py",
        description=(
            "Measure the OCR server's throughput and latency at several concurrency "
            "levels: POST each image to {url}/v1/ocr?{query} from C workers, each with "
            "one request in flight on its own keep-alive connection, and report "
            "req/s and nearest-rank latency percentiles per level."
        ),
        epilog=(
            "example: python3 scripts/load.py --url http://127.0.0.1:8080 "
            "--images samples/ --concurrency 1,2,4,8,16 --query output=json "
            "--out results.json --metrics\n\n"
            "Exit status: 0 if every request ended in 2xx (429s are retried after "
            "Retry-After), 1 if any did not, 2 on usage errors / unreachable server."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", default="http://127.0.0.1:8080",
                   help="server base URL (default: %(default)s)")
    p.add_argument("--images", nargs="+", required=True, metavar="DIR_OR_FILE",
                   help="image files and/or directories; a directory contributes its "
                        "*.png/.jpg/.jpeg/.tif/.tiff/.webp/.bmp files, sorted, non-recursive")
    p.add_argument("--concurrency", type=parse_levels, default=[1, 2, 4, 8, 16],
                   metavar="C1,C2,...",
                   help="comma-separated concurrency levels (default: 1,2,4,8,16)")
    p.add_argument("--passes", type=int, default=1,
                   help="timed passes over all images per level (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed sequential requests before each level (default: %(default)s)")
    p.add_argument("--query", default="",
                   help="query string appended to /v1/ocr, e.g. 'output=json' (default: none)")
    p.add_argument("--out", metavar="FILE",
                   help="write all numbers (args, image count, per-level and per-request) as JSON")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="socket timeout per request in seconds (default: %(default)s)")
    p.add_argument("--max-retries", type=int, default=1000,
                   help="most 429 retries of one image before it counts as an error "
                        "(default: %(default)s)")
    p.add_argument("--metrics", action="store_true",
                   help="after each level GET {url}/metrics and store the raw text in the "
                        "JSON under that level as 'metrics_text'")
    p.add_argument("--queue-url-check", action="store_true",
                   help="before starting, check that the server answers HTTP at --url "
                        "(GET {url}/metrics, any status) and exit 2 if it does not")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.passes < 1:
        parser.error("--passes must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if args.timeout <= 0:
        parser.error("--timeout must be > 0")
    if args.max_retries < 0:
        parser.error("--max-retries must be >= 0")

    paths = collect_images(args.images)
    if not paths:
        parser.error("no images found")
    for pth in paths:
        if content_type(pth) == "application/octet-stream":
            log(f"warning: unknown image extension, sending as application/octet-stream: {pth}")
    images = []
    for pth in paths:
        with open(pth, "rb") as f:
            images.append((pth, f.read()))
    total_bytes = sum(len(b) for _, b in images)

    target = Target(args.url, args.query, args.timeout)
    if args.queue_url_check:
        check_server(target)

    log(f"{len(images)} images ({total_bytes / 1e6:.1f} MB), passes={args.passes}, "
        f"warmup={args.warmup}, levels={args.concurrency}, "
        f"POST {target.scheme}://{target.host}:{target.port}{target.ocr_path}")

    stop = threading.Event()
    levels: list[dict] = []
    failed = False
    try:
        for c in args.concurrency:
            log(f"concurrency {c}: warm-up ({args.warmup})")
            warm = run_warmup(target, images, args.warmup, args, stop)
            warm_failed = [r for r in warm if not is_ok(r["status"])]
            log(f"concurrency {c}: {args.passes * len(images)} timed requests")
            lv = run_level(target, images, c, args, stop)
            lv["warmup_requests"] = len(warm)
            lv["warmup_errors"] = len(warm_failed)
            if args.metrics:
                lv["metrics_text"], err = fetch_metrics(target, stop)
                if err is not None:
                    lv["metrics_error"] = err
                    log(f"concurrency {c}: GET {target.metrics_path} failed: {err}")
            levels.append(lv)
            if lv["errors"] or warm_failed:
                failed = True
            lat = lv["latency_ms"]
            log(f"concurrency {c}: ok {lv['ok']}/{lv['requests']}, "
                f"{fmt(lv['throughput_rps'], 2)} req/s, p50 {fmt(lat['p50'])} ms, "
                f"p99 {fmt(lat['p99'])} ms, 429 retries {lv['retries_429']}, "
                f"errors {lv['errors'] or 'none'}")
    except KeyboardInterrupt:
        stop.set()
        failed = True
        log("interrupted; reporting the levels completed so far")

    print(markdown_table(levels), flush=True)

    if args.out:
        doc = {
            "args": {
                "url": args.url,
                "images": args.images,
                "concurrency": args.concurrency,
                "passes": args.passes,
                "warmup": args.warmup,
                "query": args.query,
                "timeout": args.timeout,
                "max_retries": args.max_retries,
                "metrics": args.metrics,
                "queue_url_check": args.queue_url_check,
            },
            "image_count": len(images),
            "image_bytes": total_bytes,
            "image_files": paths,
            "percentile_method": "nearest-rank over ok requests: value at 1-based rank ceil(p/100*n)",
            "levels": levels,
        }
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        log(f"wrote {args.out}")

    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
