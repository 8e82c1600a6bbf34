//! A tiny glyph-less TrueType font, generated at run time, for invisible PDF text layers.
//!
//! Same technique as Tesseract's `pdf.ttf` / OCRmyPDF's `GlyphLessFont`: the font has two glyphs,
//! `.notdef` (GID 0) and an empty glyph (GID 1) with an advance of half an em. The PDF maps every
//! CID to GID 1 (`/CIDToGIDMap`), so any character can be "shown" with a known width, and the
//! `/ToUnicode` CMap carries the actual text. Nothing is ever drawn (text render mode 3 anyway).
//!
//! Metrics (font units, `UNITS_PER_EM` = 1000): ascent 800, descent -200, so the glyph box
//! (ascent - descent) is exactly one em; every glyph advances 500 (0.5 em).

/// Font units per em.
pub const UNITS_PER_EM: u16 = 1000;
/// Ascent in font units (also the PDF FontDescriptor /Ascent, per 1000 em).
pub const ASCENT: i16 = 800;
/// Descent in font units (negative, below the baseline).
pub const DESCENT: i16 = -200;
/// Advance width of every glyph in font units (the PDF /DW).
pub const ADVANCE: u16 = 500;
/// PostScript / family name of the font.
pub const FONT_NAME: &str = "GlyphLessFont";

/// 2024-01-01T00:00:00Z in seconds since 1904-01-01 (TrueType LONGDATETIME, low 32 bits).
const FONT_DATE: u32 = 3_786_912_000;

/// The `.notdef` outline: a box, only so that `glyf` is not empty (never drawn).
const NOTDEF_BOX: [i16; 4] = [50, 0, 450, 700]; // xMin, yMin, xMax, yMax

struct Buf(Vec<u8>);
impl Buf {
    fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i16(&mut self, v: i16) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
}

fn table_checksum(data: &[u8]) -> u32 {
    let mut sum = 0u32;
    for chunk in data.chunks(4) {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        sum = sum.wrapping_add(u32::from_be_bytes(word));
    }
    sum
}

fn head() -> Vec<u8> {
    let mut b = Buf(Vec::new());
    b.u32(0x0001_0000) // version 1.0
        .u32(0x0001_0000) // fontRevision 1.0
        .u32(0) // checkSumAdjustment, patched after assembly
        .u32(0x5F0F_3CF5) // magicNumber
        .u16(0x000B) // flags: baseline at y=0, lsb at x=0, integer ppem
        .u16(UNITS_PER_EM)
        .u32(0)
        .u32(FONT_DATE) // created (LONGDATETIME, seconds since 1904)
        .u32(0)
        .u32(FONT_DATE) // modified
        .i16(0) // xMin
        .i16(DESCENT) // yMin
        .i16(ADVANCE as i16) // xMax
        .i16(ASCENT) // yMax
        .u16(0) // macStyle
        .u16(3) // lowestRecPPEM
        .i16(2) // fontDirectionHint
        .i16(0) // indexToLocFormat: short offsets
        .i16(0); // glyphDataFormat
    b.0
}

fn hhea() -> Vec<u8> {
    let mut b = Buf(Vec::new());
    b.u32(0x0001_0000)
        .i16(ASCENT)
        .i16(DESCENT)
        .i16(0) // lineGap
        .u16(ADVANCE) // advanceWidthMax
        .i16(0) // minLeftSideBearing
        .i16(0) // minRightSideBearing
        .i16(NOTDEF_BOX[2]) // xMaxExtent
        .i16(1) // caretSlopeRise
        .i16(0) // caretSlopeRun
        .i16(0) // caretOffset
        .i16(0)
        .i16(0)
        .i16(0)
        .i16(0) // reserved
        .i16(0) // metricDataFormat
        .u16(2); // numberOfHMetrics
    b.0
}

fn maxp() -> Vec<u8> {
    let mut b = Buf(Vec::new());
    b.u32(0x0001_0000)
        .u16(2) // numGlyphs
        .u16(4) // maxPoints
        .u16(1) // maxContours
        .u16(0) // maxCompositePoints
        .u16(0) // maxCompositeContours
        .u16(2) // maxZones
        .u16(0) // maxTwilightPoints
        .u16(0) // maxStorage
        .u16(0) // maxFunctionDefs
        .u16(0) // maxInstructionDefs
        .u16(0) // maxStackElements
        .u16(0) // maxSizeOfInstructions
        .u16(0) // maxComponentElements
        .u16(0); // maxComponentDepth
    b.0
}

fn hmtx() -> Vec<u8> {
    let mut b = Buf(Vec::new());
    b.u16(ADVANCE).i16(NOTDEF_BOX[0]); // .notdef
    b.u16(ADVANCE).i16(0); // the empty glyph
    b.0
}

/// `glyf` and `loca` (short format): glyph 0 is a 4-point box, glyph 1 is empty.
fn glyf_loca() -> (Vec<u8>, Vec<u8>) {
    let [x0, y0, x1, y1] = NOTDEF_BOX;
    let mut g = Buf(Vec::new());
    g.i16(1).i16(x0).i16(y0).i16(x1).i16(y1); // numberOfContours, bbox
    g.u16(3); // endPtsOfContours[0]
    g.u16(0); // instructionLength
    g.u8(1).u8(1).u8(1).u8(1); // flags: on-curve, 16-bit signed deltas
    // Points (x0,y0) (x0,y1) (x1,y1) (x1,y0) as deltas.
    g.i16(x0).i16(0).i16(x1 - x0).i16(0);
    g.i16(y0).i16(y1 - y0).i16(0).i16(y0 - y1);
    while !g.0.len().is_multiple_of(4) {
        g.u8(0);
    }
    let len = g.0.len() as u16;
    let mut l = Buf(Vec::new());
    l.u16(0).u16(len / 2).u16(len / 2); // offsets / 2: glyph 1 has length 0
    (g.0, l.0)
}

/// A format-4 `cmap` (Windows Unicode BMP) that maps U+0020 to the empty glyph. PDF readers use
/// the `/CIDToGIDMap` instead; this only keeps the font a well-formed TrueType.
fn cmap() -> Vec<u8> {
    let mut b = Buf(Vec::new());
    b.u16(0).u16(1); // version, numTables
    b.u16(3).u16(1).u32(12); // platform 3, encoding 1, offset
    let seg_count: u16 = 2;
    let length = 14 + 2 * seg_count * 4 + 2;
    b.u16(4).u16(length).u16(0); // format, length, language
    b.u16(seg_count * 2).u16(4).u16(1).u16(0); // segCountX2, searchRange, entrySelector, rangeShift
    b.u16(0x0020).u16(0xFFFF); // endCode
    b.u16(0); // reservedPad
    b.u16(0x0020).u16(0xFFFF); // startCode
    b.i16(1 - 0x20).i16(1); // idDelta: 0x20 -> 1, 0xFFFF -> 0 (mod 65536)
    b.u16(0).u16(0); // idRangeOffset
    b.0
}

fn post() -> Vec<u8> {
    let mut b = Buf(Vec::new());
    b.u32(0x0003_0000) // version 3: no glyph names
        .u32(0) // italicAngle
        .i16(-100) // underlinePosition
        .i16(50) // underlineThickness
        .u32(1) // isFixedPitch
        .u32(0)
        .u32(0)
        .u32(0)
        .u32(0); // min/maxMemType42/1
    b.0
}

fn name() -> Vec<u8> {
    let records: [(u16, &str); 6] = [
        (1, FONT_NAME),
        (2, "Regular"),
        (3, "GlyphLessFont-1.0"),
        (4, FONT_NAME),
        (5, "Version 1.0"),
        (6, FONT_NAME),
    ];
    let mut strings = Vec::new();
    let mut b = Buf(Vec::new());
    b.u16(0)
        .u16(records.len() as u16)
        .u16(6 + 12 * records.len() as u16);
    for (id, s) in records {
        let utf16: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
        b.u16(3).u16(1).u16(0x0409).u16(id); // Windows, Unicode BMP, en-US
        b.u16(utf16.len() as u16).u16(strings.len() as u16);
        strings.extend_from_slice(&utf16);
    }
    b.bytes(&strings);
    b.0
}

fn os2() -> Vec<u8> {
    let mut b = Buf(Vec::new());
    b.u16(4) // version
        .i16(ADVANCE as i16) // xAvgCharWidth
        .u16(400) // usWeightClass
        .u16(5) // usWidthClass
        .u16(0) // fsType: installable embedding
        .i16(650)
        .i16(600)
        .i16(0)
        .i16(75) // subscript x/y size, x/y offset
        .i16(650)
        .i16(600)
        .i16(0)
        .i16(350) // superscript
        .i16(50)
        .i16(250) // strikeout size, position
        .i16(0); // sFamilyClass
    b.bytes(&[2, 0, 5, 9, 0, 0, 0, 0, 0, 0]); // panose (monospaced)
    b.u32(0).u32(0).u32(0).u32(0); // ulUnicodeRange1-4
    b.bytes(b"NONE"); // achVendID
    b.u16(0x0040) // fsSelection: REGULAR
        .u16(0x0020) // usFirstCharIndex
        .u16(0xFFFF) // usLastCharIndex
        .i16(ASCENT) // sTypoAscender
        .i16(DESCENT) // sTypoDescender
        .i16(0) // sTypoLineGap
        .u16(ASCENT as u16) // usWinAscent
        .u16((-DESCENT) as u16) // usWinDescent
        .u32(1) // ulCodePageRange1: Latin 1
        .u32(0)
        .i16(500) // sxHeight
        .i16(ASCENT) // sCapHeight
        .u16(0) // usDefaultChar
        .u16(0x20) // usBreakChar
        .u16(1); // usMaxContext
    b.0
}

/// Builds the font file (TrueType, 10 tables). Deterministic: same bytes every call.
pub fn glyphless_ttf() -> Vec<u8> {
    let (glyf, loca) = glyf_loca();
    // Sorted by tag, as the table directory requires.
    let tables: Vec<(&[u8; 4], Vec<u8>)> = vec![
        (b"OS/2", os2()),
        (b"cmap", cmap()),
        (b"glyf", glyf),
        (b"head", head()),
        (b"hhea", hhea()),
        (b"hmtx", hmtx()),
        (b"loca", loca),
        (b"maxp", maxp()),
        (b"name", name()),
        (b"post", post()),
    ];
    let num = tables.len() as u16;
    let mut entry_selector = 0u16;
    while (1u16 << (entry_selector + 1)) <= num {
        entry_selector += 1;
    }
    let search_range = 16 * (1u16 << entry_selector);
    let mut out = Buf(Vec::new());
    out.u32(0x0001_0000)
        .u16(num)
        .u16(search_range)
        .u16(entry_selector)
        .u16(num * 16 - search_range);
    let mut offset = 12 + 16 * tables.len();
    let mut body = Vec::new();
    let mut head_offset = 0;
    for (tag, data) in &tables {
        out.bytes(*tag)
            .u32(table_checksum(data))
            .u32(offset as u32)
            .u32(data.len() as u32);
        if *tag == b"head" {
            head_offset = offset;
        }
        body.extend_from_slice(data);
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        offset = 12 + 16 * tables.len() + body.len();
    }
    out.bytes(&body);
    let mut font = out.0;
    let adjustment = 0xB1B0_AFBAu32.wrapping_sub(table_checksum(&font));
    font[head_offset + 8..head_offset + 12].copy_from_slice(&adjustment.to_be_bytes());
    font
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_consistent() {
        let font = glyphless_ttf();
        assert_eq!(table_checksum(&font), 0xB1B0_AFBA);
        assert_eq!(font.len() % 4, 0);
        assert_eq!(glyphless_ttf(), font, "deterministic");
    }
}
