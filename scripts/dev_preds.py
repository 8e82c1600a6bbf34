#!/usr/bin/env python3
"""CLI JSONL (one object per image, "file" = path) -> score.py predictions (file = base name).

Rendered PDF pages NAME_p-N.png are also joined, in page order, into an entry for NAME.pdf.
"""
import json, os, re, sys

rows = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
pdf_pages = {}
for r in rows:
    name = os.path.basename(r["file"])
    text = r.get("text") or ""
    print(json.dumps({"file": name, "text": text}, ensure_ascii=False))
    m = re.match(r"(.+)_p-(\d+)\.png$", name)
    if m:
        pdf_pages.setdefault(m.group(1) + ".pdf", []).append((int(m.group(2)), text))
for pdf, pages in pdf_pages.items():
    print(json.dumps({"file": pdf, "text": "\n\n".join(t for _, t in sorted(pages))}, ensure_ascii=False))
