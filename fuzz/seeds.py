#!/usr/bin/env python3
"""Writes generated seed inputs for the fuzz targets: python3 fuzz/seeds.py CORPUS_DIR

Called by scripts/fuzz.sh, which adds the real images and PDF from ../shared/eval. Standard
library only (no Pillow): small PNGs, BMPs, TIFFs (every colour model the decoder converts,
PackBits, several pages) and PDFs (text, Flate streams, an image, Rotate and CropBox, several
pages) are written byte by byte, plus handwritten request bodies, Prefer headers, page
selections and option strings. Each seed goes to CORPUS_DIR/TARGET/seed-NAME.
"""

import base64
import os
import struct
import sys
import zlib


def png(w, h, color_type, bit_depth, pixel, palette=None):
    """A PNG of w×h pixels, every pixel `pixel` (bytes of one pixel)."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\0" + pixel * w for _ in range(h))
    out = b"\x89PNG\r\n\x1a\n"
    out += chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0))
    if palette:
        out += chunk(b"PLTE", palette)
    out += chunk(b"IDAT", zlib.compress(raw))
    return out + chunk(b"IEND", b"")


def bmp(w, h):
    """A 24-bit bottom-up BMP with a gradient."""
    row = lambda y: bytes(v for x in range(w) for v in (x * 20 % 256, y * 30 % 256, 128))
    pad = (4 - (w * 3) % 4) % 4
    pixels = b"".join(row(y) + b"\0" * pad for y in range(h))
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


def packbits(data):
    """PackBits with literal runs only (valid, if not small)."""
    out = b""
    for i in range(0, len(data), 128):
        part = data[i : i + 128]
        out += bytes([len(part) - 1]) + part
    return out


def tiff(pages):
    """A little-endian TIFF, one IFD per page: (w, h, bits, samples, photometric, data,
    compression)."""
    out = bytearray(b"II*\0\0\0\0\0")
    prev_next = 4
    for w, h, bits, spp, photometric, data, compression in pages:
        if compression == 32773:
            data = packbits(data)
        # Strip data, then the BitsPerSample array when there are several samples.
        strip = len(out)
        out += data
        if len(out) % 2:
            out += b"\0"
        bps_off = len(out)
        if spp > 1:
            out += struct.pack("<" + "H" * spp, *([bits] * spp))
        entries = [
            (256, 4, 1, w),
            (257, 4, 1, h),
            (258, 3, spp, bps_off if spp > 2 else (bits | (bits << 16) if spp == 2 else bits)),
            (259, 3, 1, compression),
            (262, 3, 1, photometric),
            (273, 4, 1, strip),
            (277, 3, 1, spp),
            (278, 4, 1, h),
            (279, 4, 1, len(data)),
        ]
        if spp in (2, 4) and photometric != 5:
            entries.append((338, 3, 1, 2))  # ExtraSamples: unassociated alpha
        entries.sort()
        ifd = len(out)
        struct.pack_into("<I", out, prev_next, ifd)
        out += struct.pack("<H", len(entries))
        for tag, typ, count, value in entries:
            if typ == 3 and count == 1:
                out += struct.pack("<HHIHH", tag, typ, count, value, 0)
            else:
                out += struct.pack("<HHII", tag, typ, count, value)
        prev_next = len(out)
        out += b"\0\0\0\0"
    return bytes(out)


def pdf(pages, extra_objs=()):
    """A PDF with a correct xref: `pages` is a list of (page dictionary entries, content stream
    bytes, stream dictionary entries); `extra_objs` are more objects, numbered after them."""
    n = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    font = 3 + 2 * n
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Count {n} /Kids [{kids}] >>".encode(),
    ]
    for i, (page_extra, content, stream_dict) in enumerate(pages):
        objs.append(
            (
                f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] {page_extra} "
                f"/Contents {4 + 2 * i} 0 R /Resources << /Font << /F1 {font} 0 R >> "
                f"/XObject << /Im1 {font + 1} 0 R >> >> >>"
            ).encode()
        )
        objs.append(
            f"<< /Length {len(content)} {stream_dict} >>\nstream\n".encode()
            + content
            + b"\nendstream"
        )
    objs.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    objs.extend(extra_objs)
    out = b"%PDF-1.4\n"
    offsets = []
    for i, o in enumerate(objs):
        offsets.append(len(out))
        out += f"{i + 1} 0 obj\n".encode() + o + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    for o in offsets:
        out += f"{o:010} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def image_xobject():
    """An 8×8 RGB image XObject, Flate-compressed."""
    data = zlib.compress(bytes(v for i in range(64) for v in (i * 4, 255 - i * 4, 90)))
    return (
        f"<< /Type /XObject /Subtype /Image /Width 8 /Height 8 /ColorSpace /DeviceRGB "
        f"/BitsPerComponent 8 /Filter /FlateDecode /Length {len(data)} >>\nstream\n".encode()
        + data
        + b"\nendstream"
    )


def documents():
    text = b"BT /F1 24 Tf 72 720 Td (Hello, fuzzer) Tj ET"
    drawing = b"0 0 1 rg 100 100 200 300 re f 1 0 0 RG 5 w 50 50 m 500 700 l S"
    image = b"q 200 0 0 200 100 400 cm /Im1 Do Q"
    flate = zlib.compress(text + b"\n" + drawing)
    hexed = base64.b16encode(flate) + b">"
    xobj = [image_xobject()]
    yield "text.pdf", pdf([("", text, "")], xobj)
    yield "drawing-image.pdf", pdf([("", drawing + b"\n" + image, "")], xobj)
    yield "flate.pdf", pdf([("", flate, "/Filter /FlateDecode")], xobj)
    yield "hex-flate.pdf", pdf([("", hexed, "/Filter [/ASCIIHexDecode /FlateDecode]")], xobj)
    yield "rotate-crop.pdf", pdf([("/Rotate 90 /CropBox [50 50 400 500]", text, "")], xobj)
    yield "three-pages.pdf", pdf([("", text, ""), ("/Rotate 180", drawing, ""), ("", image, "")], xobj)
    yield "rgb8.tif", tiff([(4, 3, 8, 3, 2, bytes(range(36)), 1)])
    yield "gray8.tif", tiff([(5, 2, 8, 1, 1, bytes([10] * 10), 1)])
    yield "gray16.tif", tiff([(2, 2, 16, 1, 1, b"\xff\xff" * 4, 1)])
    yield "bilevel.tif", tiff([(10, 3, 1, 1, 0, b"\xaa\x80" * 3, 1)])
    yield "graya8.tif", tiff([(3, 3, 8, 2, 1, bytes(range(18)), 1)])
    yield "rgba8.tif", tiff([(3, 2, 8, 4, 2, bytes(range(24)), 1)])
    yield "cmyk8.tif", tiff([(2, 2, 8, 4, 5, bytes(range(16)), 1)])
    yield "packbits.tif", tiff([(6, 4, 8, 3, 2, bytes(range(72)), 32773)])
    yield "three-pages.tif", tiff(
        [
            (4, 3, 8, 3, 2, bytes([200] * 36), 1),
            (5, 2, 8, 1, 1, bytes([10] * 10), 32773),
            (2, 2, 16, 1, 1, b"\xff\xff" * 4, 1),
        ]
    )


def images():
    yield "rgb.png", png(8, 6, 2, 8, b"\x10\x80\xf0")
    yield "gray16.png", png(5, 5, 0, 16, b"\x12\x34")
    yield "rgba.png", png(4, 7, 6, 8, b"\x10\x80\xf0\x80")
    yield "palette.png", png(6, 2, 3, 8, b"\x01", palette=b"\0\0\0\xff\xff\xff")
    yield "gradient.bmp", bmp(7, 5)


def jpeg_with_orientation(jpeg, orientation):
    """The JPEG with an EXIF APP1 segment (big-endian TIFF, one Orientation entry) after SOI."""
    exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01" + struct.pack(">HHIHH", 0x112, 3, 1, orientation, 0)
    exif += b"\0\0\0\0"
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[2:]


def bodies(small_png):
    b64 = base64.b64encode(small_png).decode()
    yield "raw", b"r" + small_png
    yield "json", b"j" + f'{{"image": "{b64}", "det_limit_side": 960, "pages": "1"}}'.encode()
    yield "json-nopad", b"j" + f'{{"image": "{b64.rstrip("=")}", "classify": true}}'.encode()
    yield "json-unknown", b'j{"image": "AAAA", "min_confidance": 0.5}'
    part = lambda name, value, extra="": (
        f'--fuzzboundary\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n\r\n'.encode()
        + value
        + b"\r\n"
    )
    multipart = (
        part("file", small_png, '; filename="a.png"\r\nContent-Type: image/png')
        + part("det_limit_side", b"960")
        + part("min_confidence", b"0.5")
        + part("pages", b"1-3,7")
        + b"--fuzzboundary--\r\n"
    )
    yield "multipart", b"m" + multipart
    yield "multipart-free-boundary", (
        b'multipart/form-data; boundary="fuzzboundary"\n' + multipart
    )
    yield "pdf-free", b"application/pdf\n%PDF-1.4\n"
    yield "text-free", b"text/plain; charset=utf-8\nhello"


def write(corpus, target, name, data):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def main():
    corpus = sys.argv[1]
    small_png = png(8, 6, 2, 8, b"\x10\x80\xf0")
    for name, data in images():
        write(corpus, "image_decode", name, data)
        write(corpus, "document", name, data)
    for name, data in documents():
        write(corpus, "document", name, data)
        if name.endswith(".tif"):
            write(corpus, "image_decode", name, data)
    jpeg = sys.argv[2] if len(sys.argv) > 2 else None
    if jpeg:
        with open(jpeg, "rb") as f:
            j = f.read()
        for o in (3, 6, 8):
            write(corpus, "image_decode", f"exif-{o}.jpg", jpeg_with_orientation(j, o))
        write(corpus, "document", "exif-6.jpg", jpeg_with_orientation(j, 6))
    for name, data in bodies(small_png):
        write(corpus, "body", name, data)
    prefers = [
        "respond-async, wait=5",
        "respond-async",
        "wait=10\nrespond-async",
        'respond-async; foo=bar, wait="3"',
        "return=minimal, WAIT = 7 , Respond-Async",
        "wait=18446744073709551616",
    ]
    for i, p in enumerate(prefers):
        write(corpus, "prefer", str(i), p.encode())
    # 3 bytes of page count, 2 of max_pages, then the selection.
    selections = [
        (10, 10, "1-3,7"),
        (10, 10, "5-"),
        (10, 3, "1-3, 7,2"),
        (100000, 200, " 2 - 4 ,99999-"),
        (4096, 0xFFFF, "1-,3"),
        (5, 5, "0"),
        (5, 5, "3-1"),
        (5, 5, ""),
    ]
    for i, (count, max_pages, spec) in enumerate(selections):
        head = struct.pack("<I", count)[:3] + struct.pack("<H", max_pages)
        write(corpus, "pages", str(i), head + spec.encode())
    options = [
        "det_limit_side=960&classify=true",
        "model=v5&min_confidence=0.5&format=hocr&pages=1-3,7",
        "output=pdf&det_limit_side=4096&min_confidence=1",
        "model=v4&classify=false&min_confidence=NaN",
        "review_threshold=0.8&tag=batch%201&priority=-3&webhook_url=http%3A%2F%2Flocalhost%2Fhook"
        "&name=doc.pdf&pages=5-",
        "min_confidance=0.9&det_limit_side=31",
    ]
    for i, o in enumerate(options):
        write(corpus, "options", str(i), o.encode())


if __name__ == "__main__":
    main()
