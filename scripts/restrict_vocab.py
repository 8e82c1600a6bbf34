#!/usr/bin/env python3
"""A copy of a model set whose recogniser reads only a smaller character set: its CTC head
(the last MatMul, 120 x classes, and its bias) is sliced to the kept classes and the
`character` metadata (the dictionary the server reads) to the kept characters, so the head's
arithmetic, the softmax and the CTC scan all shrink (issue 14's vocabulary restriction lever,
NOTES.md).

    .venv-quant/bin/python scripts/restrict_vocab.py OUT_DIR/v6 [--model-dir models/v6] [--set latin]

Needs `onnx` and `numpy`. `latin`: printable ASCII, Latin-1, Latin Extended-A, and the common
typographic symbols (dashes, quotes, bullet, ellipsis, euro, trademark). The blank (class 0) and
the trailing space class are always kept. A character outside the set can no longer be read:
the model picks the likeliest kept class instead. Detector and classifier are copied. Use the
result with `--models-dir OUT_DIR`.
"""
import argparse
import os
import shutil

import numpy as np
import onnx
from onnx import numpy_helper

LATIN = (
    [chr(c) for c in range(0x21, 0x7F)]
    + [chr(c) for c in range(0xA1, 0x180)]
    + list("‐‑‒–—―‘’‚“”„†‡•…‰′″‹›€™№")
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--model-dir", default="models/v6")
    ap.add_argument("--set", choices=["latin"], default="latin")
    args = ap.parse_args()
    keep_chars = set(LATIN)
    m = onnx.load(os.path.join(args.model_dir, "rec.onnx"))
    g = m.graph
    meta = {p.key: p.value for p in m.metadata_props}
    chars = meta["character"].split("\n")
    classes = len(chars) + 2  # blank, the dictionary, space
    keep = [0] + [i + 1 for i, c in enumerate(chars) if c in keep_chars] + [classes - 1]
    kept_chars = [chars[i - 1] for i in keep[1:-1]]
    init = {i.name: i for i in g.initializer}
    matmuls = [n for n in g.node if n.op_type == "MatMul"]
    head = matmuls[-1]
    w_name = head.input[1]
    w = numpy_helper.to_array(init[w_name])
    assert w.shape[1] == classes, f"head {w.shape} vs {classes} classes"
    # The bias: the Add that consumes the head's output.
    add = next(n for n in g.node if n.op_type == "Add" and head.output[0] in n.input)
    b_name = next(i for i in add.input if i in init)
    b = numpy_helper.to_array(init[b_name])
    init[w_name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w[:, keep]), w_name))
    init[b_name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(b[keep]), b_name))
    for out in g.output:
        dims = out.type.tensor_type.shape.dim
        if dims and dims[-1].dim_value == classes:
            dims[-1].dim_value = len(keep)
    # Shapes inferred for the old head would contradict the new one.
    del g.value_info[:]
    meta["character"] = "\n".join(kept_chars)
    del m.metadata_props[:]
    onnx.helper.set_model_props(m, meta)
    onnx.checker.check_model(m)
    os.makedirs(args.out_dir, exist_ok=True)
    onnx.save(m, os.path.join(args.out_dir, "rec.onnx"))
    for f in ("det.onnx", "cls.onnx"):
        shutil.copy(os.path.join(args.model_dir, f), os.path.join(args.out_dir, f))
    print(f"{args.out_dir}: {len(keep)} of {classes} classes kept ({len(kept_chars)} characters)")


if __name__ == "__main__":
    main()
