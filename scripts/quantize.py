#!/usr/bin/env python3
"""Static INT8 (QDQ, per-channel weights) copies of a model set's detector and recogniser,
calibrated on dev-set tensors, for the INT8 lever of issue 14 (NOTES.md).

    .venv-quant/bin/python scripts/quantize.py CLI_JSONL OUT_DIR [--model-dir models/v6]

Needs `onnxruntime==1.31.1`, `onnx`, `numpy`, `pillow` (a venv of its own, e.g.
`python3 -m venv .venv-quant && .venv-quant/bin/pip install onnxruntime==1.31.1 onnx numpy
pillow`). CLI_JSONL is `ocr-server ocr --format jsonl` over the calibration pages: its file names
give the pages, its boxes the line crops. The calibration inputs are prepared as the server
prepares them (BGR, (x/255 - 0.5)/0.5; detector: short side to at least 736, long side at most
`--det-side`, multiples of 32; recogniser: height 48, width to the next multiple of 8), with
axis-aligned crops instead of the server's perspective crops. Sensitive layers are kept in
float: the detector's last two layers (transposed convolutions and the probability map's
sigmoid) and the recogniser's CTC head (its last MatMul and Softmax). OUT_DIR gets det.onnx,
rec.onnx and a copy of cls.onnx, as a model set `--models-dir` can point at (OUT_DIR/../).
"""
import argparse
import json
import os
import random
import shutil

import numpy as np
import onnx
import onnx.version_converter
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image


def norm(img):
    a = np.asarray(img.convert("RGB"), dtype=np.float32)[:, :, ::-1]  # BGR
    a = (a / 255.0 - 0.5) / 0.5
    return a.transpose(2, 0, 1)[None].copy()


def det_input(img, side):
    w, h = img.size
    r = 736 / min(w, h) if min(w, h) < 736 else 1.0
    r = min(r, side / max(w, h))
    nw, nh = (max(32, int(round(int(v * r) / 32)) * 32) for v in (w, h))
    return norm(img.resize((nw, nh), Image.BILINEAR))


def rec_input(crop):
    w, h = crop.size
    nw = max(8, int(round(48 * w / max(h, 1))))
    nw = min(nw, 2400)
    x = norm(crop.resize((nw, 48), Image.BILINEAR))
    pad = -nw % 8
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (0, 0), (0, pad)))
    return x


class Reader(CalibrationDataReader):
    def __init__(self, tensors):
        self.it = iter([{"x": t} for t in tensors])

    def get_next(self):
        return next(self.it, None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cli_jsonl")
    ap.add_argument("out_dir")
    ap.add_argument("--model-dir", default="models/v6")
    ap.add_argument("--det-pages", type=int, default=12)
    ap.add_argument("--det-side", type=int, default=1280)
    ap.add_argument("--rec-lines", type=int, default=300)
    ap.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="minmax")
    ap.add_argument(
        "--rec-ops",
        default="Conv,MatMul",
        help="operator types quantized in the recogniser (its attention MatMuls are sensitive)",
    )
    ap.add_argument(
        "--rec-width",
        type=int,
        default=0,
        help="pad (or squeeze) every recogniser input to this width: one shape, which the "
        "histogram calibrators (percentile, entropy) need",
    )
    ap.add_argument("--only", choices=["det", "rec"], help="quantize one model, copy the other")
    args = ap.parse_args()
    random.seed(14)
    rows = [json.loads(l) for l in open(args.cli_jsonl)]
    rows = [r for r in rows if "pages" in r and not r["file"].endswith(".pdf")]
    det_t, crops = [], []
    for r in rows:
        img = Image.open(r["file"]).convert("RGB")
        det_t.append(det_input(img, args.det_side))
        for ln in r["pages"][0]["lines"]:
            xs = [p[0] for p in ln["box"]]
            ys = [p[1] for p in ln["box"]]
            box = (max(0, min(xs)), max(0, min(ys)), min(img.width, max(xs)), min(img.height, max(ys)))
            if box[2] - box[0] >= 4 and box[3] - box[1] >= 4:
                crops.append(img.crop(box))
    random.shuffle(det_t)
    random.shuffle(crops)
    det_t = det_t[: args.det_pages]
    rec_t = [rec_input(c) for c in crops[: args.rec_lines]]
    if args.rec_width:
        fixed = []
        for t in rec_t:
            w = t.shape[3]
            if w > args.rec_width:
                continue
            fixed.append(np.pad(t, ((0, 0), (0, 0), (0, 0), (0, args.rec_width - w))))
        rec_t = fixed
    print(f"calibration: {len(det_t)} detector pages, {len(rec_t)} recogniser lines")
    method = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[args.method]
    os.makedirs(args.out_dir, exist_ok=True)
    for name, tensors, tail in (("det", det_t, 2), ("rec", rec_t, 2)):
        src = os.path.join(args.model_dir, f"{name}.onnx")
        if args.only and args.only != name:
            shutil.copy(src, os.path.join(args.out_dir, f"{name}.onnx"))
            continue
        pre = os.path.join(args.out_dir, f"{name}.pre.onnx")
        # The exports are opset 11; per-channel DequantizeLinear (its `axis`) needs opset 13.
        up = os.path.join(args.out_dir, f"{name}.opset17.onnx")
        m = onnx.load(src)
        meta = {p.key: p.value for p in m.metadata_props}
        m = onnx.version_converter.convert_version(m, 17)
        onnx.helper.set_model_props(m, meta)
        onnx.save(m, up)
        quant_pre_process(up, pre, skip_symbolic_shape=True)
        os.remove(up)
        g = onnx.load(pre).graph
        compute = [n for n in g.node if n.op_type not in ("Identity",)]
        exclude = [n.name for n in compute[-tail:]]
        if name == "rec":
            # The CTC head: the last MatMul (120 x classes) and everything after it.
            last_mm = max(i for i, n in enumerate(g.node) if n.op_type == "MatMul")
            exclude = [n.name for n in g.node[last_mm:]]
        else:
            exclude += [n.name for n in g.node if n.op_type == "ConvTranspose"]
        print(f"{name}: excluding {exclude}")
        quantize_static(
            pre,
            os.path.join(args.out_dir, f"{name}.onnx"),
            Reader(tensors),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            nodes_to_exclude=exclude,
            op_types_to_quantize=["Conv", "MatMul"] if name == "det" else args.rec_ops.split(","),
            extra_options={"CalibMovingAverage": False},
        )
        os.remove(pre)
    shutil.copy(os.path.join(args.model_dir, "cls.onnx"), os.path.join(args.out_dir, "cls.onnx"))
    print(f"wrote {args.out_dir}")


if __name__ == "__main__":
    main()
