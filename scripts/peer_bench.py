#!/usr/bin/env python3
"""Bulk throughput and single-call latency of one peer OCR engine (Python), as one JSON line.

The engines and their settings are scripts/peers.py's (imported, not copied): same packages,
same defaults, the ONNX Runtime intra-op thread count from --threads (and OpenCV limited to the
same count). Installed by scripts/setup_peers.sh into .venv-peers.

Usage:
  .venv-peers/bin/python scripts/peer_bench.py --engine rapidocr-v6 --threads 2 \
      [--passes 1] [--out PRED.jsonl] IMAGE_OR_DIR ...

Method: models load, then one untimed call on the first image (warm-up). Then each pass calls
the engine on every image in turn, reading the file inside the timed call, and times each call
with a monotonic clock. The engine is in-process and sequential, so a pass is at once the bulk
run (pages / wall time of the whole pass) and a run of single calls made one at a time (each
call's wall time is its latency); one pass gives both numbers.

stdout gets exactly one JSON line (everything the engines print goes to stderr):
  {"engine", "threads", "pages", "passes",
   "bulk": {"pages", "seconds", "pages_per_s"}       seconds: median pass time
   "latency_ms": {"n", "p50", "p90", "p99", "mean", "max"}   over every call of every pass,
                                                              nearest-rank percentiles
   "load_s", "warmup_s"}
--out gets the first pass's predictions as JSONL {"file", "text"} (score.py format).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # no scripts/__pycache__ in the checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (scripts/peers.py: engine factories and image collection)


def nearest_rank(sorted_values, pct):
    """The nearest-rank percentile: the smallest value with at least pct% of values <= it."""
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True, choices=peers.ENGINES)
    ap.add_argument("--threads", type=int, default=0,
                    help="ORT intra-op threads (0 = ORT default)")
    ap.add_argument("--angle-cls", choices=("default", "on", "off"), default="default",
                    help="text-line angle classifier: engine default or forced (see peers.py)")
    ap.add_argument("--passes", type=int, default=1,
                    help="timed passes over all images (bulk: median; latency: all calls)")
    ap.add_argument("--out", help="predictions JSONL of the first pass")
    ap.add_argument("inputs", nargs="+", help="images or directories")
    args = ap.parse_args()

    # stdout carries only the summary line; the engines' own printing goes to stderr.
    sys.stdout.flush()
    summary_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    files = peers.collect_images(args.inputs)
    if not files:
        sys.exit("no images")

    if args.threads > 0:
        import cv2
        cv2.setNumThreads(args.threads)

    t = time.perf_counter()
    cls = {"default": None, "on": True, "off": False}[args.angle_cls]
    run = peers.FACTORIES[args.engine](args.threads, cls)
    load_s = time.perf_counter() - t

    t = time.perf_counter()
    run(files[0])  # warm-up, untimed
    warmup_s = time.perf_counter() - t

    pass_s, call_s, first = [], [], None
    for _ in range(max(1, args.passes)):
        texts = []
        start = time.perf_counter()
        for f in files:
            t = time.perf_counter()
            lines = run(f)
            call_s.append(time.perf_counter() - t)
            texts.append("\n".join(text for text, _, _ in lines))
        pass_s.append(time.perf_counter() - start)
        if first is None:
            first = texts

    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", encoding="utf-8") as fh:
            for f, text in zip(files, first):
                fh.write(json.dumps({"file": f.name, "text": text}, ensure_ascii=False) + "\n")

    secs = statistics.median(pass_s)
    ms = sorted(x * 1000 for x in call_s)
    summary = {
        "engine": args.engine, "threads": args.threads, "angle_cls": args.angle_cls,
        "pages": len(files), "passes": len(pass_s),
        "bulk": {"pages": len(files), "seconds": round(secs, 3),
                 "pages_per_s": round(len(files) / secs, 4),
                 "pass_seconds": [round(x, 3) for x in pass_s]},
        "latency_ms": {"n": len(ms), "p50": round(nearest_rank(ms, 50), 1),
                       "p90": round(nearest_rank(ms, 90), 1),
                       "p99": round(nearest_rank(ms, 99), 1),
                       "mean": round(statistics.fmean(ms), 1), "max": round(ms[-1], 1)},
        "load_s": round(load_s, 3), "warmup_s": round(warmup_s, 3),
    }
    summary_out.write(json.dumps(summary) + "\n")
    summary_out.flush()


if __name__ == "__main__":
    main()
