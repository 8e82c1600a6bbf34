//! Receipts and invoices by layout, not by a list of known vendors.
//!
//! The page's lines are grouped into [`rows`](super::rows) (a label and its amount printed far
//! apart are one row). Then, top to bottom:
//! - **company**: in the header (the rows above the first date, total or item row), the first
//!   row that carries a company form (`SDN BHD`, `LTD`, `GMBH`, `ENTERPRISE`, …), else the first
//!   row of mostly letters that is not a document title (`TAX INVOICE`, `RECEIPT`, …);
//! - **address**: the header rows after the company, skipping registration numbers and a
//!   branch's name, up to the first contact or tax row (`TEL`, `FAX`, `GST`, `EMAIL`, a phone
//!   number, …; a row that goes on into a contact gives the part before it), joined by spaces,
//!   with OCR's full stop for a thermal printer's comma mended;
//! - **date**: the first date on a row that says `DATE`, else the first date anywhere; formats
//!   `dd/mm/yyyy` (`-`, `.`), `yyyy-mm-dd`, `dd MMM yyyy`, `MMM dd, yyyy`, two-digit years, and
//!   failing those `ddmmyyyy` standing alone or before a time; the
//!   value as printed, `normalized` in ISO 8601, `valid` whether it is a calendar day;
//! - **total**: the amount of the strongest total row (`GRAND TOTAL`, `ROUNDED TOTAL`, `NETT
//!   TOTAL`, `TOTAL`, `AMOUNT DUE`, … but not `SUBTOTAL`, `TOTAL QTY` or `TOTAL EXCL. GST`),
//!   its amount on the row or just below, a row of two label/amount columns read pair by pair,
//!   `TOTAL`/`AMOUNT` as OCR misreads them mended and a lone decimal comma on a page of decimal
//!   points read as a point; **subtotal** and **tax** the same way; **currency**
//!   from a mark beside an amount (`RM`, `$`, `€`, `£`, …);
//! - **items**: the rows between the header and the subtotal or total that end in an amount,
//!   with a quantity where the row prints one (`2 x`, `2 @`, a leading count).
//!
//! Checks: `date.valid` (a calendar day) and `total.valid` (subtotal + tax, else the items' sum,
//! agree with the total within rounding); a failed check is listed in `problems`.

use std::sync::LazyLock;

use regex::Regex;

use super::rows::{Row, rows};
use super::{Extraction, Field, Kind, LineItem};
use crate::pipeline::{Line, Page};

/// A receipt's fields (see the module docs).
pub fn extract(page: &Page, number: usize) -> Extraction {
    let rows = rows(page);
    let mut e = Extraction::new(Kind::Receipt, number);
    let texts: Vec<String> = rows.iter().map(|r| key_words(&r.text())).collect();

    let date = find_date(&rows, &texts);
    let subtotal = find_amount(&rows, &texts, Role::Subtotal);
    // Without a total row, the last subtotal is what was paid (it is restated after rounding).
    let total = find_amount(&rows, &texts, Role::Total).or_else(|| subtotal.clone());
    let tax = find_amount(&rows, &texts, Role::Tax);
    // A lone decimal comma on a page that prints decimal points is OCR's misread of the point.
    let [subtotal, total, tax] = [subtotal, total, tax].map(|a| {
        a.map(|mut a| {
            a.text = page_decimal_point(&texts, &a.text);
            a
        })
    });
    // The header ends at the first row that holds a date or a total (amounts above it are
    // often a till's own numbers printed at the very top).
    let first_body = [date.as_ref().map(|d| d.row), total.as_ref().map(|t| t.row)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(rows.len())
        .min(rows.len());
    let header = &rows[..first_body];
    if let Some((company_row, company)) = find_company(header) {
        e.fields.insert("company".into(), company);
        if let Some(a) = find_address(&header[company_row + 1..]) {
            e.fields.insert("address".into(), a);
        }
    }
    if let Some(d) = date {
        if d.iso.is_none() {
            e.problems.push("date: not a calendar date".into());
        }
        let f = Field::from_lines(d.text, &d.lines).valid(d.iso.is_some());
        let f = match d.iso {
            Some(iso) => f.normalized(iso),
            None => f,
        };
        e.fields.insert("date".into(), f);
    }
    let items = find_items(
        &rows,
        &texts,
        first_body,
        [&subtotal, &total]
            .iter()
            .filter_map(|a| a.as_ref().map(|a| a.row))
            .min()
            .unwrap_or(rows.len()),
    );
    if let Some(cur) = total
        .iter()
        .chain(&subtotal)
        .chain(&tax)
        .find_map(|a| a.currency.clone())
    {
        let lines: Vec<&Line> = total.as_ref().map(|t| t.lines.clone()).unwrap_or_default();
        let code = currency_code(&cur);
        e.fields.insert(
            "currency".into(),
            Field::from_lines(cur, &lines).normalized(code),
        );
    }
    for (name, a) in [("subtotal", &subtotal), ("tax", &tax)] {
        if let Some(a) = a {
            e.fields.insert(
                name.into(),
                Field::from_lines(a.text.clone(), &a.lines).normalized(format!("{:.2}", a.value)),
            );
        }
    }
    if let Some(t) = &total {
        let sum_items: Option<f64> =
            (!items.is_empty()).then(|| items.iter().map(|i| i.1).sum::<f64>());
        // Within a few cents: receipts round the total to 0.05.
        let agrees = |x: f64| (x - t.value).abs() <= 0.05 + 1e-9;
        let valid = match (&subtotal, &tax) {
            (Some(s), Some(x)) => Some(agrees(s.value + x.value) || agrees(s.value)),
            (Some(s), None) => Some(agrees(s.value) || s.value <= t.value),
            _ => sum_items.map(|s| agrees(s) || s <= t.value + 0.05),
        };
        let mut f =
            Field::from_lines(t.text.clone(), &t.lines).normalized(format!("{:.2}", t.value));
        f.valid = valid;
        if valid == Some(false) {
            e.problems
                .push("total: disagrees with the subtotal, tax and items".into());
        }
        e.fields.insert("total".into(), f);
    }
    e.items = items.into_iter().map(|(it, _)| it).collect();
    let checked: Vec<bool> = e.fields.values().filter_map(|f| f.valid).collect();
    if !checked.is_empty() {
        e.valid = Some(checked.iter().all(|&v| v));
    }
    e
}

/// Legal forms that end a company's name.
static LEGAL_FORM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\b(SDN\.?\s*BHD|S/B|BHD|BERHAD|LTD|LIMITED|INC|LLC|L\.L\.C|CORP(ORATION)?|CO\.|PLC|GMBH|AG|S\.?A\.?R\.?L|PTE|PTY)\b\.?",
    )
    .expect("a constant pattern. This is a bug.")
});

/// A registration number printed after a name: `(1070687-M)`, `862725-U`, `(CO. NO:20154-T)`.
static TRAILING_REGISTRATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\s*(\([^()]*\d{3,}[^()]*\)?|\b\d{4,}\s*-?\s*[A-Z]\b)\W*$")
        .expect("a constant pattern. This is a bug.")
});

/// Titles and greetings that head a receipt but name no one.
static TITLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(\W*(TAX\s+INVOICE|SIMPLIFIED\s+TAX\s+INVOICE|INVOICE|RECEIPT|OFFICIAL\s+RECEIPT|CASH\s+(SALE|BILL|RECEIPT)|BILL|WELCOME|THANK\s+YOU|COPY|DUPLICATE|ORIGINAL)\W*)+$",
    )
    .expect("a constant pattern. This is a bug.")
});

/// Rows that end the address: contact details, tax registration, document titles.
static CONTACT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\b(TE[L1]|TELE?PHONE|PHONE|PH|HP|H/P|FAX|EMAIL|E-MAIL|WEBSITE|WWW|HTTP|GST|SST|VAT|TAX|INVOICE|RECEIPT|CASHIER|DATE|TIME|ABN|TIN|NPWP|OPEN|MON|DAILY)\b|@|\.COM\b",
    )
    .expect("a constant pattern. This is a bug.")
});

/// Registration numbers printed under a company's name: `(860671-D)`, `CO. REG: 123456-X`,
/// `ROC NO 123`.
static REGISTRATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\W*(\(?\s*[A-Z]{0,3}\s*\d[\d\s]*-?\s*[A-Z]?\s*\)?|.*\b(REG|ROC|CO\.?\s*NO|COMPANY\s+NO|BRN)\b.*)\W*$")
        .expect("a constant pattern. This is a bug.")
});

/// A row's text in upper case with OCR's misreads of the key words TOTAL (`TOTA1`, `T0TAL`,
/// `TOTA L`, `IUIAL`) and AMOUNT (`ANOUNT`) mended; amounts and dates are untouched.
fn key_words(t: &str) -> String {
    static TOTAL: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"[TI1][OU0][TI1]A ?[L1I]").expect("a constant pattern. This is a bug.")
    });
    static AMOUNT: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\bA[MN]{1,2}OUNT\b").expect("a constant pattern. This is a bug.")
    });
    let t = TOTAL.replace_all(&t.to_uppercase(), "TOTAL").into_owned();
    AMOUNT.replace_all(&t, "AMOUNT").into_owned()
}

fn is_contact(t: &str) -> bool {
    CONTACT.is_match(t)
}

/// The header's company row (index into `header`) and field: the first row of mostly letters
/// that is not a title, a registration or contact row, or a till's number; a row ending in `&`
/// continues on the next, and a name whose legal form (`SDN BHD`) is printed on the row below
/// takes that row too. A registration number after the name is not part of it.
fn find_company(header: &[Row<'_>]) -> Option<(usize, Field)> {
    let texts: Vec<String> = header.iter().map(|r| r.text().to_uppercase()).collect();
    let plausible = |t: &str| {
        let letters = t.chars().filter(|c| c.is_alphabetic()).count();
        let leading_digits = t.chars().take_while(char::is_ascii_digit).count();
        letters >= 3
            && letters * 2 >= t.chars().filter(|c| !c.is_whitespace()).count()
            && leading_digits < 4
            && !TITLE.is_match(t)
            && !REGISTRATION.is_match(t)
            && !is_contact(t)
    };
    // Rows as names: a registration number after a name is not part of it.
    let names: Vec<String> = texts
        .iter()
        .map(|t| TRAILING_REGISTRATION.replace(t.trim(), "").into_owned())
        .collect();
    let limit = header.len().min(8);
    // The legal entity when one is printed above the shop's contact rows (one printed below
    // them, `OWNED BY: … SDN BHD`, is the shop's owner), else the first name-like row (a
    // shop's sign).
    let contacts = (0..limit).find(|&i| is_contact(&texts[i])).unwrap_or(limit);
    let i = (0..contacts)
        .find(|&i| LEGAL_FORM.is_match(&names[i]) && plausible(&names[i]))
        .or_else(|| (0..limit).find(|&i| plausible(&names[i])))?;
    let texts = names;
    // "(SEMENYIH) SDN BHD" finishes the name on the row above.
    let i = if i > 0 && texts[i].trim_start().starts_with('(') && plausible(&texts[i - 1]) {
        i - 1
    } else {
        i
    };
    let mut last = i;
    let continues = |t: &str| t.trim_end().ends_with('&') || t.trim_end().ends_with(" AND");
    if last + 1 < header.len()
        && (continues(&texts[last])
            || (!LEGAL_FORM.is_match(&texts[last])
                && LEGAL_FORM.is_match(&texts[last + 1])
                && texts[last + 1].trim_start().starts_with('(')))
    {
        last += 1;
    }
    let rows = &header[i..=last];
    let text = rows.iter().map(Row::text).collect::<Vec<_>>().join(" ");
    let text = TRAILING_REGISTRATION.replace(text.trim(), "");
    let text = fix_legal_form(&text);
    let lines: Vec<&Line> = rows.iter().flat_map(|r| r.lines.iter().copied()).collect();
    Some((last, Field::from_lines(text.trim(), &lines)))
}

/// OCR's usual misreads of Malaysia's `SDN BHD` (`SON BHD`, `SDN BND`).
fn fix_legal_form(t: &str) -> String {
    static MISREAD: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\b(S[O0D]N)(\.?\s*)(B[HN]D)\b").expect("a constant pattern. This is a bug.")
    });
    MISREAD
        .replace_all(t, |c: &regex::Captures<'_>| {
            let up = |s: &str, good: &str| {
                if s.chars().all(|ch| !ch.is_lowercase()) {
                    good.to_string()
                } else {
                    good.to_lowercase()
                }
            };
            format!("{}{}{}", up(&c[1], "SDN"), &c[2], up(&c[3], "BHD"))
        })
        .into_owned()
}

/// A five-digit postcode (Malaysia, Germany, France, the US, …).
static POSTCODE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d{5}\b").expect("a constant pattern. This is a bug."));

/// A telephone number printed without its label (or with a misread one): a leading `0` or `+`
/// and eight or more digits in dash- or space-separated groups (`05-60952052`, `+603-3362 4137`).
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(^|[\s:])(\+\d{1,3}[-\s]?|0)\d{1,3}[-\s]\d{3,4}\s?\d{3,5}\b|#\s*\d{6,}")
        .expect("a constant pattern. This is a bug.")
});

/// The address: the header rows after the company from the first that looks like an address
/// (a number, or a street word), registration and tax-ID rows and a branch name in brackets
/// skipped, up to the first contact row, at most five rows. A row that starts with the address
/// and goes on with a contact (`81750 JOHOR BAHRU. TEL: 07-…`) gives the part before it. A word
/// or two without a street word or postcode before the first contact row was a branch's name
/// (`BENTONG-2`), not its address, and the search goes on below it. The punctuation is mended as an address prints it (see
/// [`address_punctuation`]).
fn find_address(after: &[Row<'_>]) -> Option<Field> {
    static STREET: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\b(NO|LOT|JALAN|JLN|LEVEL|LVL|BLOCK|BLK|TAMAN|LORONG|PERSIARAN|STREET|ST|ROAD|RD|AVENUE|AVE|FLOOR|UNIT|SUITE|PLAZA|MENARA|WISMA|KOMPLEKS|BANGUNAN)\b|\d")
            .expect("a constant pattern. This is a bug.")
    });
    static STREET_WORD: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\b(NO|LOT|JALAN|JLN|LEVEL|LVL|BLOCK|BLK|TAMAN|LORONG|PERSIARAN|STREET|ST|ROAD|RD|AVENUE|AVE|FLOOR|UNIT|SUITE|PLAZA|MENARA|WISMA|KOMPLEKS|BANGUNAN|SEKSYEN|SECTION|BANDAR|KAWASAN|PUSAT)\b")
            .expect("a constant pattern. This is a bug.")
    });
    let contact_at = |t: &str| {
        CONTACT
            .find(t)
            .map(|m| m.start())
            .into_iter()
            .chain(PHONE.find(t).map(|m| m.start()))
            .min()
            // A label too short to be an address (`LEL:`, OCR's `TEL:`) goes with its number.
            .map(|at| if t[..at].trim().len() <= 5 { 0 } else { at })
    };
    let mut parts: Vec<String> = Vec::new();
    let mut lines: Vec<&Line> = Vec::new();
    let mut i = 0;
    while i < after.len() {
        let r = &after[i];
        i += 1;
        let text = r.text();
        let t = text.to_uppercase();
        if parts.is_empty() {
            let tax_id = CONTACT.is_match(&t) && !t.contains("TEL") && !t.contains("FAX");
            let bracketed = t.trim_start().starts_with('(') && t.trim_end().ends_with(')');
            if REGISTRATION.is_match(&t)
                || bracketed
                || tax_id && (t.contains("GST") || t.contains("SST") || t.contains("REG"))
            {
                continue;
            }
            if !STREET.is_match(&t) || contact_at(&t) == Some(0) {
                continue;
            }
        }
        let after_postcode = parts.iter().any(|p: &String| POSTCODE.is_match(p));
        // The row's own address part: all of it, or what precedes a contact on it.
        let own = match contact_at(&t) {
            Some(at) if at > 0 && t.len() == text.len() && text.is_char_boundary(at) => {
                Some(text[..at].trim_end_matches([' ', ',', ':']).to_string())
            }
            Some(_) => None,
            None => Some(text.clone()),
        };
        let stop = own.is_none()
            || TITLE.is_match(&t)
            || (!parts.is_empty() && REGISTRATION.is_match(&t))
            || AMOUNT_END.is_match(&t)
            || parts.len() == 5
            // After the postcode's row only a state or country name (no digits) follows.
            || (after_postcode && (t.chars().any(|c| c.is_ascii_digit()) || parts.len() > 1 && POSTCODE.is_match(&parts[parts.len() - 2])));
        if stop {
            let joined = parts.join(" ").to_uppercase();
            let branch = !STREET_WORD.is_match(&joined)
                && !POSTCODE.is_match(&joined)
                && joined.split_whitespace().count() <= 2;
            if !parts.is_empty() && branch {
                // A branch's name: look again from this row on (past it when it is a contact
                // or registration row).
                parts.clear();
                lines.clear();
                if own.is_some() && !REGISTRATION.is_match(&t) {
                    i -= 1;
                }
                continue;
            }
            break;
        }
        let own = own.unwrap_or_default();
        let cut = own.len() < text.len();
        if !own.is_empty() {
            parts.push(own);
            lines.extend(&r.lines);
        }
        if after_postcode || cut {
            break;
        }
    }
    (!parts.is_empty()).then(|| Field::from_lines(address_punctuation(&parts.join(" ")), &lines))
}

/// An address's punctuation as printed: OCR reads a thermal printer's comma as a full stop. A
/// full stop between two parts of an address is a comma: after a word of three or more letters
/// or a number, before a space, before a five-digit postcode, or between two words of three or
/// more letters (`RAWANG.SELANGOR`); abbreviations (`NO.`, `KG.`, `D.E`) and the final full
/// stop stay. A house number's label `NO,` is `NO.`, and a letter O ending a number is a zero
/// (`29O`).
fn address_punctuation(t: &str) -> String {
    static STOP: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\b([A-Za-z]{3,}|\d+)\.(\s+\S|\d{5}\b|[A-Za-z]{3,})")
            .expect("a constant pattern. This is a bug.")
    });
    static NO_COMMA: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^(?i)(NO),(\s*\d)").expect("a constant pattern. This is a bug.")
    });
    static ZERO: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\b(\d{2,})O\b").expect("a constant pattern. This is a bug."));
    let t = NO_COMMA.replace(t, "$1.$2");
    let t = ZERO.replace_all(&t, "${1}0");
    STOP.replace_all(&t, |c: &regex::Captures<'_>| {
        let word = &c[1];
        if ["NO", "KG", "JLN", "LOT", "BLK", "LRG", "TMN", "SG", "BT"]
            .contains(&word.to_uppercase().as_str())
        {
            c[0].to_string()
        } else {
            format!("{},{}", word, &c[2])
        }
    })
    .into_owned()
}

struct FoundDate<'a> {
    row: usize,
    text: String,
    iso: Option<String>,
    lines: Vec<&'a Line>,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

static DATE_NUMERIC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(\d{4})([-/.])(\d{1,2})[-/.](\d{1,2})\b|\b(\d{1,2})([-/.])(\d{1,2})[-/.](\d{4}|\d{2}\b)")
        .expect("a constant pattern. This is a bug.")
});

static DATE_WORDS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(\d{1,2})[\s\-/]*(JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|SEPT|OCT|NOV|DEC)[A-Z]*[\s\-/,]*(\d{4}|\d{2}\b)|\b(JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|SEPT|OCT|NOV|DEC)[A-Z]*\.?\s+(\d{1,2}),?\s+(\d{4})\b")
        .expect("a constant pattern. This is a bug.")
});

/// The first date on a row that says DATE, else the first date on the page.
fn find_date<'a>(rows: &[Row<'a>], texts: &[String]) -> Option<FoundDate<'a>> {
    let mut first: Option<FoundDate<'a>> = None;
    for (i, t) in texts.iter().enumerate() {
        // Dates are read from the row's own text in upper case (not the key-word-mended one,
        // whose byte offsets may differ), and printed from the row's own case where the same
        // bytes of it upper-case to the match.
        let raw = rows[i].text();
        let up = raw.to_uppercase();
        let Some((m, iso)) = parse_date(&up) else {
            continue;
        };
        let upper = &up[m.0..m.1];
        let text = raw
            .get(m.0..m.1)
            .filter(|r| r.to_uppercase() == upper)
            .unwrap_or(upper)
            .to_string();
        let found = FoundDate {
            row: i,
            text,
            iso,
            lines: rows[i].lines.clone(),
        };
        if t.contains("DATE") || t.contains("TARIKH") {
            return Some(found);
        }
        if first.is_none() {
            first = Some(found);
        }
    }
    first.or_else(|| compact_date(rows))
}

/// Without a separated date, a date printed without separators (`25032018`, day first) that is
/// a calendar day of this century and stands as a word of its own, followed by a time of day or
/// with no other number on its row.
fn compact_date<'a>(rows: &[Row<'a>]) -> Option<FoundDate<'a>> {
    static COMPACT: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?:^|\s)(\d{2})(\d{2})(20\d{2})(?:$|\s+(\d{1,2}:\d{2})?)")
            .expect("a constant pattern. This is a bug.")
    });
    rows.iter().enumerate().find_map(|(i, r)| {
        let up = r.text().to_uppercase();
        COMPACT.captures_iter(&up).find_map(|c| {
            let whole = c.get(0)?;
            let others = up[..whole.start()]
                .chars()
                .chain(up[whole.end()..].chars())
                .any(|ch| ch.is_ascii_digit());
            if c.get(4).is_none() && others {
                return None;
            }
            let n = |k: usize| c[k].parse::<u32>().ok();
            let iso = iso_date(n(3)?, n(2)?, n(1)?)?;
            Some(FoundDate {
                row: i,
                text: format!("{}{}{}", &c[1], &c[2], &c[3]),
                iso: Some(iso),
                lines: r.lines.clone(),
            })
        })
    })
}

/// The first date in `t` (upper case): its byte range and its ISO form when it is a calendar
/// day. A numeric date uses one separator throughout (`18/01/2018`, not `19-18/01`).
fn parse_date(t: &str) -> Option<((usize, usize), Option<String>)> {
    let num =
        |c: &regex::Captures<'_>, i: usize| c.get(i).and_then(|m| m.as_str().parse::<u32>().ok());
    let numeric = DATE_NUMERIC.captures_iter(t).find_map(|c| {
        let whole = c.get(0)?;
        let seps: Vec<char> = whole
            .as_str()
            .chars()
            .filter(|ch| !ch.is_ascii_digit())
            .collect();
        if seps.windows(2).any(|w| w[0] != w[1]) {
            return None;
        }
        let (y, m, d) = if c.get(1).is_some() {
            (num(&c, 1)?, num(&c, 3)?, num(&c, 4)?)
        } else {
            let (a, b) = (num(&c, 5)?, num(&c, 7)?);
            // Day first, as receipts outside the US print it, unless that cannot be.
            let (d, m) = if b > 12 && a <= 12 { (b, a) } else { (a, b) };
            (num(&c, 8)?, m, d)
        };
        Some(((whole.start(), whole.end()), y, m, d))
    });
    let words = DATE_WORDS.captures(t).and_then(|c| {
        let whole = c.get(0)?;
        let month = |s: &str| {
            let s = s.to_uppercase();
            MONTHS
                .iter()
                .position(|m| s.starts_with(m))
                .map(|i| i as u32 + 1)
        };
        let (y, m, d) = if let Some(mon) = c.get(2) {
            (num(&c, 3)?, month(mon.as_str())?, num(&c, 1)?)
        } else {
            (num(&c, 6)?, month(c.get(4)?.as_str())?, num(&c, 5)?)
        };
        Some(((whole.start(), whole.end()), y, m, d))
    });
    let (range, y, m, d) = match (numeric, words) {
        (Some(n), Some(w)) => {
            if n.0.0 <= w.0.0 {
                n
            } else {
                w
            }
        }
        (Some(n), None) => n,
        (None, Some(w)) => w,
        (None, None) => return None,
    };
    let y = if y < 100 { 2000 + y } else { y };
    Some((range, iso_date(y, m, d)))
}

/// `yyyy-mm-dd` when it is a calendar day (years 1900–2099).
fn iso_date(y: u32, m: u32, d: u32) -> Option<String> {
    let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    ((1900..2100).contains(&y) && (1..=12).contains(&m) && d >= 1 && d <= days[m as usize - 1])
        .then(|| format!("{y:04}-{m:02}-{d:02}"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Total,
    Subtotal,
    Tax,
}

#[derive(Clone)]
struct FoundAmount<'a> {
    row: usize,
    /// As printed (without a currency mark).
    text: String,
    value: f64,
    currency: Option<String>,
    lines: Vec<&'a Line>,
}

/// An amount: an optional currency mark, digits with optional thousands separators, two
/// decimals (`RM 1,234.50`, `$12.00`, `12,50 €`).
static AMOUNT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(RM|MYR|USD|US\$|SGD|S\$|EUR|GBP|\$|€|£)?\s?(-?\d{1,3}(?:,\d{3})+\.\d{2}|-?\d+[.,]\d{2})\b\s?(€|EUR)?")
        .expect("a constant pattern. This is a bug.")
});

/// A row that ends in an amount.
static AMOUNT_END: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\d[.,]\d{2}\s*[A-Z]{0,2}\s*$").expect("a constant pattern. This is a bug.")
});

/// The rightmost amount of a row (the value column), if any: as printed (with its currency
/// mark when the mark touches it), its value and the mark. A
/// rate (`@6.00%`) is not an amount.
fn last_amount(t: &str) -> Option<(String, f64, Option<String>)> {
    let c = AMOUNT
        .captures_iter(t)
        .filter(|c| {
            let end = c.get(2).map_or(0, |m| m.end());
            !t[end..].trim_start().starts_with('%')
        })
        .last()?;
    let raw = c.get(2)?.as_str();
    let value: f64 = if raw.contains(',') && raw.contains('.') {
        raw.replace(',', "").parse().ok()?
    } else {
        raw.replace(',', ".").parse().ok()?
    };
    let cur = c.get(1).or(c.get(3)).map(|m| m.as_str().to_string());
    // The mark belongs to the printed value when it touches the number (`RM53.60`), as a
    // receipt's token; `RM 53.60` prints the value alone.
    let printed = match c.get(1) {
        Some(m) if m.end() == c.get(2)?.start() => t[m.start()..c.get(2)?.end()].to_string(),
        _ => raw.to_string(),
    };
    Some((printed, value, cur))
}

/// How strongly a row (upper case) says it is `role`'s row; 0 when it is not.
fn strength(t: &str, role: Role) -> u8 {
    let has = |w: &str| t.contains(w);
    match role {
        Role::Subtotal => {
            if has("SUBTOTAL") || has("SUB TOTAL") || has("SUB-TOTAL") {
                2
            } else {
                0
            }
        }
        Role::Tax => {
            let is_tax = ["GST", "SST", "VAT", "TAX"].iter().any(|w| has(w));
            let not = [
                "ID", "REG", "NO.", "NO:", "INVOICE", "EXCL", "INCL", "TOTAL", "SUMMARY", "CODE",
            ]
            .iter()
            .any(|w| has(w));
            u8::from(is_tax && !not) * 2
        }
        Role::Total => {
            let not = [
                "SUB",
                "QTY",
                "QUANTITY",
                "ITEM",
                "DISC",
                "SAVING",
                "EXCL",
                "TAX AMOUNT",
                "GST AMOUNT",
                "TOTAL GST",
                "TOTAL TAX",
                "TOTAL SST",
                "POINT",
                "CHANGE",
                "TOTAL NO",
                "PAID",
                "TENDER",
                "RECEIVED",
                "ACCEPTED",
                "GROSS",
            ];
            // "GST @6% included in total" is a tax row.
            let tax_first = ["GST", "SST", "VAT", "TAX"]
                .iter()
                .any(|w| t.trim_start().starts_with(w));
            if not.iter().any(|w| has(w)) || tax_first {
                return 0;
            }
            if has("ROUND") && has("TOTAL")
                || has("GRAND TOTAL")
                || has("NETT TOTAL")
                || has("NET TOTAL")
                || has("TOTAL PAYABLE")
                || has("AMOUNT DUE")
                || has("TOTAL DUE")
                || has("NET AMT")
                || has("NETT AMT")
                || has("NET AMOUNT")
                || has("NETT AMOUNT")
            {
                4
            } else if has("TOTAL") && (has("INCL") || has("AMOUNT") || has("RM") || has("SALES")) {
                3
            } else if has("TOTAL") || has("JUMLAH") || has("AMOUNT") {
                2
            } else {
                0
            }
        }
    }
}

/// `amount` as printed, with a decimal comma read as the point the rest of the page prints
/// (`174,90` on a page of `150.00`, `25.10`).
fn page_decimal_point(texts: &[String], amount: &str) -> String {
    static POINT: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\d\.\d{2}\b").expect("a constant pattern. This is a bug."));
    static COMMA: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\d,\d{2}\b").expect("a constant pattern. This is a bug."));
    static COMMA_END: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^([^.]*\d),(\d{2})$").expect("a constant pattern. This is a bug.")
    });
    if !COMMA_END.is_match(amount) {
        return amount.to_string();
    }
    let count = |re: &Regex| texts.iter().map(|t| re.find_iter(t).count()).sum::<usize>();
    if count(&POINT) > 2 * count(&COMMA) {
        COMMA_END.replace(amount, "$1.$2").into_owned()
    } else {
        amount.to_string()
    }
}

/// A row's label-and-amount pairs: the text up to and including each amount (a row of one
/// pair, or none, is itself).
fn pairs(t: &str) -> Vec<&str> {
    // Byte ranges of the pairs so far.
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut from = 0;
    for c in AMOUNT.captures_iter(t) {
        let (Some(m), Some(whole)) = (c.get(2), c.get(0)) else {
            continue;
        };
        if t[m.end()..].trim_start().starts_with('%') {
            continue;
        }
        // A pair needs a label: an amount right after the last one (a price and its total)
        // stays with it.
        let label = t[from..m.start()].chars().any(char::is_alphabetic);
        match out.last_mut() {
            Some(last) if !label => last.1 = whole.end(),
            _ => out.push((from, whole.end())),
        }
        from = whole.end();
    }
    if out.is_empty() {
        return vec![t];
    }
    // What follows the last amount: a pair of its own when it is a label, else its tail.
    let rest = &t[from..];
    if rest.chars().any(char::is_alphabetic) && rest.trim().len() > 3 {
        out.push((from, t.len()));
    } else if let Some(last) = out.last_mut() {
        last.1 = t.len();
    }
    out.into_iter().map(|(a, b)| t[a..b].trim()).collect()
}

/// The amount of `role`'s strongest row (the last such row on a tie: totals are restated after
/// rounding), read on the row itself or, when the row prints only the label, the row below.
fn find_amount<'a>(rows: &[Row<'a>], texts: &[String], role: Role) -> Option<FoundAmount<'a>> {
    let mut best: Option<(u8, FoundAmount<'a>)> = None;
    for (i, row) in texts.iter().enumerate() {
        // A row of two columns ("TOTAL SAVING 0.00   TOTAL 12.00") is read pair by pair.
        for t in pairs(row) {
            let s = strength(t, role);
            if s == 0 {
                continue;
            }
            let (at, (text, value, currency)) = match last_amount(t) {
                Some(a) => (i, a),
                None => match texts
                    .get(i + 1)
                    .filter(|n| strength(n, role) == 0)
                    .and_then(|n| last_amount(n))
                {
                    Some(a)
                        if role == Role::Total
                            && AMOUNT_END.is_match(&texts[i + 1])
                            && texts[i + 1].split_whitespace().count() <= 2 =>
                    {
                        (i + 1, a)
                    }
                    _ => continue,
                },
            };
            if value <= 0.0 {
                continue;
            }
            if best.as_ref().is_none_or(|(bs, _)| s >= *bs) {
                let lines = rows[i]
                    .lines
                    .iter()
                    .chain(if at != i {
                        rows[at].lines.iter()
                    } else {
                        [].iter()
                    })
                    .copied()
                    .collect();
                best = Some((
                    s,
                    FoundAmount {
                        row: i,
                        text,
                        value,
                        currency,
                        lines,
                    },
                ));
            }
        }
    }
    best.map(|(_, a)| a)
}

/// Line items: rows in `[from, to)` that end in an amount and hold a description.
fn find_items<'a>(
    rows: &[Row<'a>],
    texts: &[String],
    from: usize,
    to: usize,
) -> Vec<(LineItem, f64)> {
    static QTY: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^\s*(\d{1,3})\s*(?:[X@*]|PCS|UNIT)?\s+\D|\b(\d{1,3})\s*[X@*]\s*\d")
            .expect("a constant pattern. This is a bug.")
    });
    let mut out = Vec::new();
    for i in from..to.min(rows.len()) {
        let t = &texts[i];
        if is_contact(t) || strength(t, Role::Total) > 0 || strength(t, Role::Tax) > 0 {
            continue;
        }
        let Some((text, value, _)) = last_amount(t) else {
            continue;
        };
        let desc: String = rows[i]
            .lines
            .iter()
            .map(|l| l.text.trim())
            .filter(|s| {
                last_amount(&s.to_uppercase()).is_none_or(|(a, _, _)| a.len() + 4 < s.len())
            })
            .collect::<Vec<_>>()
            .join(" ");
        if desc.chars().filter(|c| c.is_alphabetic()).count() < 2 {
            continue;
        }
        let lines = rows[i].lines.clone();
        let quantity = QTY
            .captures(t)
            .and_then(|c| c.get(1).or(c.get(2)))
            .map(|m| Field::from_lines(m.as_str(), &lines));
        out.push((
            LineItem {
                description: Field::from_lines(desc, &lines),
                quantity,
                amount: Field::from_lines(text, &lines).normalized(format!("{value:.2}")),
            },
            value,
        ));
    }
    out
}

/// ISO 4217 for a printed currency mark.
fn currency_code(mark: &str) -> &'static str {
    match mark {
        "RM" | "MYR" => "MYR",
        "USD" | "US$" | "$" => "USD",
        "SGD" | "S$" => "SGD",
        "EUR" | "€" => "EUR",
        "GBP" | "£" => "GBP",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::testing::page;

    #[test]
    fn dates_in_the_formats_receipts_print() {
        for (text, printed, iso) in [
            ("DATE: 18/01/2018 10:22", "18/01/2018", Some("2018-01-18")),
            ("Date 03-03-2018", "03-03-2018", Some("2018-03-03")),
            ("2018.12.31 23:59", "2018.12.31", Some("2018-12-31")),
            ("24 MAY 2018", "24 MAY 2018", Some("2018-05-24")),
            ("Tarikh 2-Jan-18", "2-Jan-18", Some("2018-01-02")),
            ("Mar 7, 2019", "Mar 7, 2019", Some("2019-03-07")),
            ("12/25/2018", "12/25/2018", Some("2018-12-25")),
            ("30/02/2018", "30/02/2018", None),
            ("01.06.18", "01.06.18", Some("2018-06-01")),
            ("18-03-201811:23", "18-03-2018", Some("2018-03-18")),
            ("01-NoV-2017_11:20:04AM", "01-NoV-2017", Some("2017-11-01")),
            ("Straße 3 · 12/03/2018", "12/03/2018", Some("2018-03-12")),
            ("19- 18/01/2018", "18/01/2018", Some("2018-01-18")),
        ] {
            let up = text.to_uppercase();
            let ((a, b), got_iso) = parse_date(&up).unwrap_or_else(|| panic!("{text}: no date"));
            assert_eq!(&text[a..b], printed, "{text}");
            assert_eq!(got_iso.as_deref(), iso, "{text}");
        }
        assert!(parse_date("TEL 03-7877 9808").is_none());
        assert!(parse_date("TOTAL 26.60").is_none());
        assert_eq!(key_words("Grand Tota1RM21.85"), "GRAND TOTALRM21.85");
    }

    #[test]
    fn amounts_with_thousands_separators_and_currency_marks() {
        for (text, printed, value, cur) in [
            ("TOTAL RM 26.60", "26.60", 26.6, Some("RM")),
            ("TOTAL RM26.60", "RM26.60", 26.6, Some("RM")),
            ("GRAND TOTAL $1,234.50", "$1,234.50", 1234.5, Some("$")),
            ("TOTAL SALES INCLUSIVE GST @6.00%", "", 0.0, None),
            ("Summe 12,50 €", "12,50", 12.5, Some("€")),
            ("TOTAL 3 ITEMS 189.75", "189.75", 189.75, None),
            ("TOTAL", "", 0.0, None),
        ] {
            match last_amount(text) {
                Some((p, v, c)) => {
                    assert_eq!(p, printed, "{text}");
                    assert!((v - value).abs() < 1e-9, "{text}");
                    assert_eq!(c.as_deref(), cur, "{text}");
                }
                None => assert!(printed.is_empty(), "{text}: no amount"),
            }
        }
    }

    #[test]
    fn total_rows_outrank_subtotals_and_tax() {
        for (t, want) in [
            ("SUB TOTAL 25.10", 0),
            ("TOTAL QTY: 3", 0),
            ("TOTAL EXCL. GST 25.10", 0),
            ("TOTAL 26.60", 2),
            ("TOTAL AMOUNT 26.60", 3),
            ("ROUNDED TOTAL (RM): 26.60", 4),
            ("GRAND TOTAL 26.60", 4),
        ] {
            assert_eq!(strength(t, Role::Total), want, "{t}");
        }
        assert_eq!(strength("GST 6% 1.50", Role::Tax), 2);
        assert_eq!(strength("GST ID: 000123", Role::Tax), 0);
    }

    fn receipt() -> Page {
        page(&[
            ("GERBANG ALAF RESTAURANTS SDN BHD", 60.0, 10.0),
            ("(65351-M)", 200.0, 40.0),
            ("LEVEL 6, BANGUNAN TH,", 100.0, 70.0),
            ("DAMANSARA UPTOWN3", 100.0, 100.0),
            ("47400 PETALING JAYA SELANGOR", 80.0, 130.0),
            ("TEL: 03-7710 1988", 120.0, 160.0),
            ("TAX INVOICE", 200.0, 190.0),
            ("DATE: 18/01/2018 10:22", 10.0, 220.0),
            ("1 MCCHICKEN", 10.0, 260.0),
            ("12.00", 450.0, 261.0),
            ("2 x FRIES", 10.0, 290.0),
            ("13.10", 450.0, 289.0),
            ("SUB TOTAL", 10.0, 330.0),
            ("25.10", 450.0, 331.0),
            ("GST 6%", 10.0, 360.0),
            ("1.50", 450.0, 359.0),
            ("TOTAL (RM)", 10.0, 390.0),
            ("RM 26.60", 420.0, 391.0),
            ("CASH", 10.0, 420.0),
            ("30.00", 450.0, 420.0),
            ("CHANGE", 10.0, 450.0),
            ("3.40", 450.0, 450.0),
        ])
    }

    #[test]
    fn a_receipt_by_layout() {
        let e = extract(&receipt(), 1);
        let v = |k: &str| e.fields.get(k).map(|f| f.value.as_str());
        assert_eq!(v("company"), Some("GERBANG ALAF RESTAURANTS SDN BHD"));
        assert_eq!(
            v("address"),
            Some("LEVEL 6, BANGUNAN TH, DAMANSARA UPTOWN3 47400 PETALING JAYA SELANGOR")
        );
        assert_eq!(v("date"), Some("18/01/2018"));
        assert_eq!(e.fields["date"].normalized.as_deref(), Some("2018-01-18"));
        assert_eq!(v("total"), Some("26.60"));
        assert_eq!(e.fields["total"].normalized.as_deref(), Some("26.60"));
        assert_eq!(e.fields["total"].valid, Some(true));
        assert_eq!(v("subtotal"), Some("25.10"));
        assert_eq!(v("tax"), Some("1.50"));
        assert_eq!(v("currency"), Some("RM"));
        assert_eq!(e.fields["currency"].normalized.as_deref(), Some("MYR"));
        let items: Vec<(&str, Option<&str>, &str)> = e
            .items
            .iter()
            .map(|i| {
                (
                    i.description.value.as_str(),
                    i.quantity.as_ref().map(|q| q.value.as_str()),
                    i.amount.value.as_str(),
                )
            })
            .collect();
        assert_eq!(
            items,
            [
                ("1 MCCHICKEN", Some("1"), "12.00"),
                ("2 x FRIES", Some("2"), "13.10")
            ]
        );
        assert_eq!(e.valid, Some(true));
        assert!(e.problems.is_empty());
    }

    #[test]
    fn a_total_that_disagrees_with_its_parts_is_named() {
        let mut p = receipt();
        for l in &mut p.lines {
            if l.text == "RM 26.60" {
                l.text = "RM 86.60".into();
            }
        }
        let e = extract(&p, 1);
        assert_eq!(e.fields["total"].valid, Some(false));
        assert_eq!(e.valid, Some(false));
        assert!(e.problems[0].starts_with("total:"), "{:?}", e.problems);
    }

    #[test]
    fn address_punctuation_is_mended_as_an_address_prints_it() {
        for (ocr, want) in [
            (
                "NO 290, JALAN AIR PANAS. SETAPAK, 53200, KUALA LUMPUR.",
                "NO 290, JALAN AIR PANAS, SETAPAK, 53200, KUALA LUMPUR.",
            ),
            (
                "NO.32 & 33. JALAN SR 1/9, SEKSYEN 9. TAMAN SERDANG RAYA",
                "NO.32 & 33, JALAN SR 1/9, SEKSYEN 9, TAMAN SERDANG RAYA",
            ),
            (
                "SRI PETALING.57000 KUALA LUMPUR.",
                "SRI PETALING,57000 KUALA LUMPUR.",
            ),
            ("48000 RAWANG.SELANGOR D.E", "48000 RAWANG,SELANGOR D.E"),
            ("NO, 89&91, JALAN UTAMA", "NO. 89&91, JALAN UTAMA"),
            ("NO 29O, JALAN AIR PANAS", "NO 290, JALAN AIR PANAS"),
            // Abbreviations and the final full stop stay; a comma is never moved.
            (
                "KG. DUSUN NANDING, NO. 1 JLN. 5",
                "KG. DUSUN NANDING, NO. 1 JLN. 5",
            ),
            ("107,JALAN BANDAR RAWANG 2.", "107,JALAN BANDAR RAWANG 2."),
        ] {
            assert_eq!(address_punctuation(ocr), want, "{ocr}");
        }
    }

    #[test]
    fn an_address_ends_at_a_contact_even_mid_row_and_skips_a_branch_name() {
        let p = page(&[
            ("MOONLIGHT CAKE HOUSE SDN BHD", 10.0, 10.0),
            ("(GST Reg No: 001559298048)", 10.0, 40.0),
            (
                "No.1, Jalan Permas 10/5, Bandar Baru Permas Jaya",
                10.0,
                70.0,
            ),
            (
                "81750 Johor Bahru, Johor. Tel No.: 07-387 3322",
                10.0,
                100.0,
            ),
            ("DATE 04/06/2018", 10.0, 130.0),
        ]);
        let e = extract(&p, 1);
        assert_eq!(
            e.fields["address"].value,
            "No.1, Jalan Permas 10/5, Bandar Baru Permas Jaya 81750 Johor Bahru, Johor."
        );
        let p = page(&[
            ("TF VALUE-MART SDN BHD (482123-U)", 10.0, 10.0),
            ("BENTONG-2", 10.0, 40.0),
            ("GST REG NO 000184401920", 10.0, 70.0),
            ("JALAN TRAS BATU 1", 10.0, 100.0),
            ("28700 BENTONG", 10.0, 130.0),
            ("PAHANG DARUL MAKMUR.", 10.0, 160.0),
            ("lel:05-60952052", 10.0, 190.0),
            ("DATE 19/05/18", 10.0, 220.0),
        ]);
        let e = extract(&p, 1);
        assert_eq!(
            e.fields["address"].value,
            "JALAN TRAS BATU 1 28700 BENTONG PAHANG DARUL MAKMUR."
        );
        // A branch in brackets under the name is not the address either.
        let p = page(&[
            ("DE LUXE FRESH MART SDN BHD", 10.0, 10.0),
            ("(Mutiara Rini 16)", 10.0, 40.0),
            ("No. 89&91, Jalan Utama,", 10.0, 70.0),
            ("81300 Skudai, Johor.", 10.0, 100.0),
            ("Tel:016-7780546", 10.0, 130.0),
        ]);
        assert_eq!(
            extract(&p, 1).fields["address"].value,
            "No. 89&91, Jalan Utama, 81300 Skudai, Johor."
        );
    }

    #[test]
    fn the_owner_printed_under_the_contacts_is_not_the_shop() {
        let p = page(&[
            ("SANYU STATIONERY SHOP", 10.0, 10.0),
            ("NO. 31G&33G, JALAN SETIA INDAH X ,U13/X", 10.0, 40.0),
            ("40170 SETIA ALAM", 10.0, 70.0),
            ("Tel: +603-3362 4137", 10.0, 100.0),
            ("Owned By:", 10.0, 130.0),
            ("SANYU SUPPLY SDN BHD (1135772K)", 10.0, 160.0),
            ("DATE 06/09/2017", 10.0, 190.0),
        ]);
        let e = extract(&p, 1);
        assert_eq!(e.fields["company"].value, "SANYU STATIONERY SHOP");
        assert_eq!(
            e.fields["address"].value,
            "NO. 31G&33G, JALAN SETIA INDAH X ,U13/X 40170 SETIA ALAM"
        );
    }

    #[test]
    fn two_columns_of_pairs_misread_key_words_and_a_stray_decimal_comma() {
        assert_eq!(
            pairs("TOTAL SAVING: 0.00 TOTAL 12.00"),
            ["TOTAL SAVING: 0.00", "TOTAL 12.00"]
        );
        assert_eq!(pairs("3 X 2.90 8.70 SR"), ["3 X 2.90 8.70 SR"]);
        assert_eq!(pairs("TOTAL"), ["TOTAL"]);
        assert_eq!(key_words("SUBIUIAL 2.28"), "SUBTOTAL 2.28");
        assert_eq!(key_words("Anount Incl. GST"), "AMOUNT INCL. GST");
        assert_eq!(strength("ACCEPTED TOTAL 10.00 RM", Role::Total), 0);
        assert_eq!(strength("NET AMT : 136.00", Role::Total), 4);
        let texts: Vec<String> = ["SUB TOTAL 150.00", "CASH 200.00", "CHANGE 25.10"]
            .map(String::from)
            .to_vec();
        assert_eq!(page_decimal_point(&texts, "174,90"), "174.90");
        assert_eq!(page_decimal_point(&texts, "1,174.90"), "1,174.90");
        let euro: Vec<String> = ["SUMME 12,50", "BAR 20,00"].map(String::from).to_vec();
        assert_eq!(page_decimal_point(&euro, "12,50"), "12,50");
        // A two-column row: the total is the pair that says TOTAL alone.
        let p = page(&[
            ("SHOP ENTERPRISE", 10.0, 10.0),
            ("DATE 12/05/18", 10.0, 40.0),
            ("TOTAL SAVING: 0.00", 10.0, 100.0),
            ("TOTAL 12.00", 300.0, 100.0),
        ]);
        assert_eq!(extract(&p, 1).fields["total"].value, "12.00");
    }

    #[test]
    fn a_date_printed_without_separators() {
        let p = page(&[
            ("WATSONS SDN BHD", 10.0, 10.0),
            ("00004285 9926016", 10.0, 40.0),
            ("00440010036 25032018 13:11:54 0003", 10.0, 70.0),
        ]);
        let e = extract(&p, 1);
        assert_eq!(e.fields["date"].value, "25032018");
        assert_eq!(e.fields["date"].normalized.as_deref(), Some("2018-03-25"));
        // A number with other numbers beside it and no time is not a date.
        let p = page(&[("SHOP", 10.0, 10.0), ("INV 25032018 QTY 3", 10.0, 40.0)]);
        assert!(!extract(&p, 1).fields.contains_key("date"));
    }

    #[test]
    fn an_impossible_date_is_named() {
        let p = page(&[
            ("SHOP ENTERPRISE", 10.0, 10.0),
            ("DATE 31/04/2018", 10.0, 50.0),
        ]);
        let e = extract(&p, 1);
        assert_eq!(e.fields["date"].valid, Some(false));
        assert!(e.problems.iter().any(|p| p.starts_with("date:")));
    }
}
