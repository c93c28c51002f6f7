//! Request checks done before dav-server sees a request, and the small parsers behind the client
//! quirks the front end supports.
//!
//! - **Paths** ([`check_path`]): percent-decoding is checked segment by segment on the raw path, so
//!   encoded tricks are refused with 400 and a reason instead of being normalised by someone
//!   else: `.`/`..` segments (also `%2e%2e`), an encoded `/` or NUL (`%2f`, `%00`), backslashes
//!   (raw or `%5c`), invalid percent-encoding or UTF-8 (overlong `%C0%AE` dots); paths over [`MAX_PATH_BYTES`] get 414. Double
//!   slashes are harmless (dav-server merges them). Unicode look-alikes of `/` and `.` are left to
//!   [`crate::names::canonical`], which refuses the dot look-alikes; `／` is an ordinary character
//!   in a name. None of this is an access decision: every path is resolved inside the principal's
//!   own tree, so the checks only make the answer clear.
//! - **Depth** ([`depth`]): only `0`, `1` and `infinity`, once; anything else is 400.
//! - **Headers dav-server 0.11 would panic on** ([`check_condition_headers`], [`sanitize_range`]):
//!   an unterminated token in `If` or a lone `"` as an entity tag (out-of-bounds slicing, found
//!   by the malformed-request test) are refused with 400, `If` headers dav-server would silently
//!   ignore too; `Range` positions of 19+ digits (arithmetic overflow) or more than
//!   [`MAX_RANGES`] ranges make the server ignore the `Range` header.
//! - **XML bodies** ([`check_xml_body`]): must be UTF-8, carry no DTD (`<!DOCTYPE`/`<!ENTITY`),
//!   which rules out entity-expansion attacks whatever the XML parser would do, and nest at most
//!   [`MAX_XML_DEPTH`] deep (the recursive tree builders would otherwise overflow the stack: a
//!   63 KB PROPFIND of nested elements aborted the whole server before this check).
//! - **Times**: `X-OC-Mtime` (Unix seconds, [`parse_oc_mtime`]) and the HTTP dates Windows puts in
//!   `Win32LastModifiedTime` ([`parse_http_date`], [`win32_mtime`]).

use http::{HeaderMap, StatusCode};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest request path accepted, in bytes of its raw (encoded) form.
pub const MAX_PATH_BYTES: usize = 8192;

/// A request refused before any filesystem work, with the reason for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    /// The status.
    pub status: StatusCode,
    /// Why, in words.
    pub reason: String,
}

fn bad(reason: impl Into<String>) -> Reject {
    Reject {
        status: StatusCode::BAD_REQUEST,
        reason: reason.into(),
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes one path segment; `None` if an escape is malformed.
fn decode_segment(seg: &str) -> Option<Vec<u8>> {
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hi = b.get(i + 1).copied().and_then(hex)?;
            let lo = b.get(i + 2).copied().and_then(hex)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Some(out)
}

/// Checks the raw path of a request URI (or of a `Destination`).
pub fn check_path(raw: &str) -> Result<(), Reject> {
    if raw.len() > MAX_PATH_BYTES {
        return Err(Reject {
            status: StatusCode::URI_TOO_LONG,
            reason: format!("The path is too long (more than {MAX_PATH_BYTES} bytes)."),
        });
    }
    let path = raw.split(['?', '#']).next().unwrap_or("");
    for seg in path.split('/') {
        let Some(d) = decode_segment(seg) else {
            return Err(bad("The path has an invalid percent-encoding."));
        };
        if d == b"." || d == b".." {
            return Err(bad(
                "\".\" and \"..\" are not allowed in paths (also not percent-encoded).",
            ));
        }
        if d.contains(&b'/') {
            return Err(bad(
                "An encoded \"/\" (%2F) inside a name is not allowed; use \"/\" between names.",
            ));
        }
        if d.contains(&0) {
            return Err(bad("A NUL character is not allowed in a path."));
        }
        if std::str::from_utf8(&d).is_err() {
            return Err(bad("The path is not valid UTF-8 once percent-decoded."));
        }
        if d.contains(&b'\\') {
            return Err(bad(
                "A backslash is not allowed in a path; use \"/\" between names.",
            ));
        }
    }
    Ok(())
}

/// The path of a `Destination` header value (absolute URL or absolute path), checked like a
/// request path. Returns the raw path.
pub fn destination_path(value: &http::HeaderValue) -> Result<String, Reject> {
    let s = value
        .to_str()
        .map_err(|_| bad("The Destination header is not valid ASCII."))?;
    if s.contains('\\') {
        return Err(bad(
            "A backslash is not allowed in the Destination; use \"/\" between names.",
        ));
    }
    let path = if s.starts_with('/') {
        s.to_string()
    } else {
        let uri: http::Uri = s
            .parse()
            .map_err(|_| bad("The Destination header is not a valid URL."))?;
        uri.path().to_string()
    };
    check_path(&path)?;
    Ok(path)
}

/// A `Depth` header value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// `0`
    Zero,
    /// `1`
    One,
    /// `infinity`
    Infinity,
}

/// The request's `Depth`, if any: `0`, `1` or `infinity` (any case), given once.
pub fn depth(headers: &HeaderMap) -> Result<Option<Depth>, Reject> {
    let mut it = headers.get_all("depth").iter();
    let Some(v) = it.next() else {
        return Ok(None);
    };
    if it.next().is_some() {
        return Err(bad("The Depth header may be given only once."));
    }
    let s = v.to_str().unwrap_or("").trim();
    if s == "0" {
        Ok(Some(Depth::Zero))
    } else if s == "1" {
        Ok(Some(Depth::One))
    } else if s.eq_ignore_ascii_case("infinity") {
        Ok(Some(Depth::Infinity))
    } else {
        Err(bad("The Depth header must be 0, 1 or infinity."))
    }
}

/// An entity tag that dav-server's parser can't take: `"` alone (optionally weak) makes it slice
/// out of bounds.
fn bad_etag(t: &str) -> bool {
    let t = t.trim();
    t.strip_prefix("W/").unwrap_or(t) == "\""
}

/// Checks the conditional headers (`If`, `If-Match`, `If-None-Match`, `If-Range`) for the forms
/// that make dav-server 0.11's parsers panic (an unterminated `<…`/`[…` token in `If`, a lone `"`
/// as an entity tag), so they are answered with 400 instead of a dropped connection.
pub fn check_condition_headers(headers: &HeaderMap) -> Result<(), Reject> {
    for name in ["if-match", "if-none-match", "if-range"] {
        for v in headers.get_all(name) {
            let s = v.to_str().unwrap_or("");
            if s.split(',').any(bad_etag) {
                return Err(bad(format!(
                    "The {name} header holds a malformed entity tag."
                )));
            }
        }
    }
    for v in headers.get_all("if") {
        check_if(v.as_bytes())?;
    }
    Ok(())
}

/// One token of an `If` header.
#[derive(PartialEq)]
enum IfTok {
    Open,
    Close,
    Not,
    /// `<…>`
    Pointy,
    /// `[…]`
    Tag,
    /// Anything else up to a delimiter; a state token if it holds a `:`.
    Word(bool),
}

/// Parses an `If` header (RFC 4918 §10.4) strictly enough that dav-server's own parser neither
/// panics nor silently drops it: `[<resource>] ( [Not] (<token>|[etag]) … )` repeated.
fn check_if(b: &[u8]) -> Result<(), Reject> {
    let malformed = || bad("The If header is malformed (RFC 4918 section 10.4).");
    let ws = |c: u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let mut toks = Vec::new();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if ws(c) {
            i += 1;
            continue;
        }
        match c {
            b'(' => {
                toks.push(IfTok::Open);
                i += 1;
            }
            b')' => {
                toks.push(IfTok::Close);
                i += 1;
            }
            b'<' | b'[' => {
                let close = if c == b'<' { b'>' } else { b']' };
                let mut j = i + 1;
                let mut quote = false;
                loop {
                    let Some(&d) = b.get(j) else {
                        return Err(malformed());
                    };
                    if !quote && d == close {
                        break;
                    }
                    if ws(d) {
                        return Err(malformed());
                    }
                    if d == b'"' {
                        quote = !quote;
                    }
                    j += 1;
                }
                let inner = b.get(i + 1..j).unwrap_or(&[]);
                if c == b'[' {
                    let tag = String::from_utf8_lossy(inner);
                    let t = tag.strip_prefix("W/").unwrap_or(&tag);
                    if t.len() < 2 || !t.starts_with('"') || !t.ends_with('"') {
                        return Err(malformed());
                    }
                    toks.push(IfTok::Tag);
                } else {
                    if inner.is_empty() || std::str::from_utf8(inner).is_err() {
                        return Err(malformed());
                    }
                    toks.push(IfTok::Pointy);
                }
                i = j + 1;
            }
            _ => {
                let mut j = i;
                while let Some(&d) = b.get(j) {
                    if ws(d) || b"<>()[]".contains(&d) || d < 32 {
                        break;
                    }
                    j += 1;
                }
                let w = b.get(i..j).unwrap_or(&[]);
                if w.is_empty() || std::str::from_utf8(w).is_err() {
                    return Err(malformed());
                }
                toks.push(if w == b"Not" {
                    IfTok::Not
                } else {
                    IfTok::Word(w.contains(&b':'))
                });
                i = j;
            }
        }
    }
    // [Pointy] Open (Not? (Pointy|Tag|Word(true)))+ Close, repeated at least once.
    let mut it = toks.into_iter().peekable();
    let mut lists = 0;
    while it.peek().is_some() {
        if it.peek() == Some(&IfTok::Pointy) {
            it.next();
        }
        if it.next() != Some(IfTok::Open) {
            return Err(malformed());
        }
        let mut conds = 0;
        loop {
            match it.next() {
                Some(IfTok::Close) if conds > 0 => break,
                Some(IfTok::Not) => match it.next() {
                    Some(IfTok::Pointy | IfTok::Tag | IfTok::Word(true)) => conds += 1,
                    _ => return Err(malformed()),
                },
                Some(IfTok::Pointy | IfTok::Tag | IfTok::Word(true)) => conds += 1,
                _ => return Err(malformed()),
            }
        }
        lists += 1;
    }
    if lists == 0 {
        return Err(malformed());
    }
    Ok(())
}

/// Most byte ranges served in one multipart answer.
pub const MAX_RANGES: usize = 64;

/// Drops a `Range` header the server would rather ignore (RFC 9110 allows that; the whole
/// document is sent): more than [`MAX_RANGES`] ranges, or a position of 19 digits or more, which
/// dav-server's arithmetic can't take (`bytes=0-18446744073709551615` overflows it). Returns
/// whether one was dropped.
pub fn sanitize_range(headers: &mut HeaderMap) -> bool {
    let drop = headers.get_all("range").iter().any(|v| {
        let s = v.as_bytes();
        let ranges = s.iter().filter(|&&c| c == b',').count() + 1;
        let longest_number = s
            .split(|c| !c.is_ascii_digit())
            .map(|d| d.len())
            .max()
            .unwrap_or(0);
        ranges > MAX_RANGES || longest_number >= 19
    });
    if drop {
        headers.remove("range");
    }
    drop
}

/// Refuses XML request bodies that are not UTF-8 or carry a DTD.
pub fn check_xml_body(body: &[u8]) -> Result<(), Reject> {
    if body.is_empty() {
        return Ok(());
    }
    if body.starts_with(&[0xFE, 0xFF]) || body.starts_with(&[0xFF, 0xFE]) || body.contains(&0) {
        return Err(bad("XML request bodies must be UTF-8."));
    }
    let found = |needle: &[u8]| {
        body.windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    if found(b"<!DOCTYPE") || found(b"<!ENTITY") {
        return Err(bad(
            "XML request bodies must not contain a DTD (<!DOCTYPE> or <!ENTITY>).",
        ));
    }
    if nesting_depth(body) > MAX_XML_DEPTH {
        return Err(bad(format!(
            "XML request bodies may nest elements at most {MAX_XML_DEPTH} deep."
        )));
    }
    Ok(())
}

/// Deepest element nesting accepted in an XML body. The XML tree builders used here (and in
/// dav-server) recurse once per level: a 64 KiB body of `<a><a><a>…` would overflow a worker
/// thread's stack and abort the whole server. Real WebDAV bodies nest less than ten deep.
pub const MAX_XML_DEPTH: usize = 64;

/// An upper bound of the element nesting depth of `body`, found with a linear scan (comments,
/// CDATA, processing instructions and quoted attribute values are skipped). Stops counting past
/// [`MAX_XML_DEPTH`].
fn nesting_depth(body: &[u8]) -> usize {
    let skip_to = |from: usize, end: &[u8]| -> usize {
        body.get(from..)
            .and_then(|rest| rest.windows(end.len()).position(|w| w == end))
            .map(|i| from + i + end.len())
            .unwrap_or(body.len())
    };
    let (mut depth, mut max, mut i) = (0usize, 0usize, 0usize);
    while i < body.len() {
        if body.get(i) != Some(&b'<') {
            i += 1;
            continue;
        }
        let rest = body.get(i..).unwrap_or(&[]);
        if rest.starts_with(b"<!--") {
            i = skip_to(i + 4, b"-->");
        } else if rest.starts_with(b"<![CDATA[") {
            i = skip_to(i + 9, b"]]>");
        } else if rest.starts_with(b"<?") {
            i = skip_to(i + 2, b"?>");
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            i = skip_to(i + 2, b">");
        } else {
            // An opening tag: find its end outside quoted attribute values.
            let mut j = i + 1;
            let mut quote = None;
            let mut self_closing = false;
            while let Some(&c) = body.get(j) {
                match (quote, c) {
                    (Some(q), c) if c == q => quote = None,
                    (Some(_), _) => {}
                    (None, b'"' | b'\'') => quote = Some(c),
                    (None, b'>') => {
                        self_closing = body.get(j.wrapping_sub(1)) == Some(&b'/');
                        break;
                    }
                    _ => {}
                }
                j += 1;
            }
            if !self_closing {
                depth += 1;
                max = max.max(depth);
                if max > MAX_XML_DEPTH {
                    return max;
                }
            }
            i = j + 1;
        }
    }
    max
}

/// `X-OC-Mtime`: Unix seconds, possibly with a fraction. `None` if malformed or absurd.
pub fn parse_oc_mtime(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() || int.len() > 12 || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = int.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An HTTP date in the RFC 1123 form (`Sun, 06 Nov 1994 08:49:37 GMT`), which Windows uses in
/// its `Win32*Time` properties. The weekday is not checked. `None` if malformed.
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let rest = s.split_once(", ").map(|(_, r)| r).unwrap_or(s);
    let mut it = rest.split_ascii_whitespace();
    let day: u32 = it.next()?.parse().ok()?;
    let mon = it.next()?;
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(mon))
        .and_then(|i| u32::try_from(i + 1).ok())?;
    let year: i64 = it.next()?.parse().ok()?;
    let time = it.next()?;
    let zone = it.next()?;
    if it.next().is_some() || !(zone.eq_ignore_ascii_case("GMT") || zone == "UTC") {
        return None;
    }
    let mut t = time.split(':');
    let h: u32 = t.next()?.parse().ok()?;
    let mi: u32 = t.next()?.parse().ok()?;
    let se: u32 = t.next()?.parse().ok()?;
    if t.next().is_some()
        || !(1..=31).contains(&day)
        || !(1970..=9999).contains(&year)
        || h > 23
        || mi > 59
        || se > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + se);
    UNIX_EPOCH.checked_add(Duration::from_secs(u64::try_from(secs).ok()?))
}

/// The `Win32LastModifiedTime` a PROPPATCH body sets (Windows' upload sequence), if any.
pub fn win32_mtime(body: &[u8]) -> Option<SystemTime> {
    const MS: &str = "urn:schemas-microsoft-com:";
    let root = xmltree::Element::parse(body).ok()?;
    if root.name != "propertyupdate" {
        return None;
    }
    let mut found = None;
    for set in root.children.iter().filter_map(|n| n.as_element()) {
        if set.name != "set" {
            continue;
        }
        for prop in set.children.iter().filter_map(|n| n.as_element()) {
            if prop.name != "prop" {
                continue;
            }
            for p in prop.children.iter().filter_map(|n| n.as_element()) {
                if p.name == "Win32LastModifiedTime" && p.namespace.as_deref() == Some(MS) {
                    found = p.get_text().and_then(|t| parse_http_date(&t));
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for ok in [
            "/dav/",
            "/dav/2026-001%20Smith%20v%20Jones/Client%20Documents/a.txt",
            "/dav//double//slash",
            "/dav/%EF%BC%8F", // fullwidth solidus: an ordinary character here
            "/dav/a.b/..c/c..",
        ] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
        for (badp, want) in [
            ("/dav/../x", StatusCode::BAD_REQUEST),
            ("/dav/a/%2e%2e/b", StatusCode::BAD_REQUEST),
            ("/dav/a/%2E%2e", StatusCode::BAD_REQUEST),
            ("/dav/a/./b", StatusCode::BAD_REQUEST),
            ("/dav/a%2fb", StatusCode::BAD_REQUEST),
            ("/dav/a%2F..%2Fb", StatusCode::BAD_REQUEST),
            ("/dav/a%00", StatusCode::BAD_REQUEST),
            ("/dav/a\\..\\b", StatusCode::BAD_REQUEST),
            ("/dav/a%5c..%5cb", StatusCode::BAD_REQUEST),
            ("/dav/a%zz", StatusCode::BAD_REQUEST),
            ("/dav/a%4", StatusCode::BAD_REQUEST),
            ("/dav/%C0%AE%C0%AE/x", StatusCode::BAD_REQUEST),
            ("/dav/%FF", StatusCode::BAD_REQUEST),
        ] {
            assert_eq!(check_path(badp).map_err(|r| r.status), Err(want), "{badp}");
        }
        let long = format!("/dav/{}", "a/".repeat(5000));
        assert_eq!(
            check_path(&long).map_err(|r| r.status),
            Err(StatusCode::URI_TOO_LONG)
        );
        let hv = |s: &str| http::HeaderValue::from_str(s).unwrap();
        assert_eq!(
            destination_path(&hv("http://h:1/dav/a%20b")).as_deref(),
            Ok("/dav/a%20b")
        );
        assert!(destination_path(&hv("http://h/dav/x/..%2fy")).is_err());
        assert!(destination_path(&hv("http://h/dav/x\\y")).is_err());
        assert!(destination_path(&hv("/dav/x/../y")).is_err());
    }

    #[test]
    fn depth_values() {
        let h = |v: &[&str]| {
            let mut m = HeaderMap::new();
            for x in v {
                m.append("depth", x.parse().unwrap());
            }
            m
        };
        assert_eq!(depth(&h(&[])), Ok(None));
        assert_eq!(depth(&h(&["0"])), Ok(Some(Depth::Zero)));
        assert_eq!(depth(&h(&[" 1 "])), Ok(Some(Depth::One)));
        assert_eq!(depth(&h(&["Infinity"])), Ok(Some(Depth::Infinity)));
        for b in ["99", "2", "-1", "", "one", "0,1"] {
            assert!(depth(&h(&[b])).is_err(), "{b}");
        }
        assert!(depth(&h(&["0", "1"])).is_err());
    }

    #[test]
    fn condition_headers() {
        let h = |k: &str, v: &str| {
            let mut m = HeaderMap::new();
            m.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
            m
        };
        for (k, v) in [
            ("if", "(<opaquelocktoken:abc>)"),
            ("if", "<http://h/dav/x> ([\"e1\"] Not <urn:x>)"),
            ("if", "(<opaquelocktoken:a>) (Not [W/\"x\"])"),
            ("if", "(urn:uuid:abc)"),
            ("if-match", "\"abc\", W/\"def\""),
            ("if-none-match", "*"),
            ("if-range", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ] {
            assert_eq!(check_condition_headers(&h(k, v)), Ok(()), "{k}: {v}");
        }
        for (k, v) in [
            ("if", "(<garbage"),
            ("if", "(["),
            ("if", "([\"x)"),
            ("if", "([\"])"),
            ("if", "([W/\"])"),
            ("if", "<"),
            ("if", "<http://x/> ("),
            ("if", "(Not)"),
            ("if", "((<a:b>))"),
            ("if", "(<nocolon-word> foo)"),
            ("if", "([\"a b\"])"),
            ("if", ""),
            ("if", "(<a:b>) junk"),
            ("if-match", "\""),
            ("if-match", "\"a\", W/\""),
            ("if-none-match", " \" "),
            ("if-range", "\""),
        ] {
            assert!(check_condition_headers(&h(k, v)).is_err(), "{k}: {v}");
        }
    }

    #[test]
    fn ranges() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert("range", v.parse().unwrap());
            m
        };
        for ok in ["bytes=0-99", "bytes=-500", "bytes=999999999999999999-"] {
            let mut m = h(ok);
            assert!(!sanitize_range(&mut m), "{ok}");
            assert!(m.contains_key("range"));
        }
        let many = format!("bytes={}", vec!["0-0"; MAX_RANGES + 1].join(","));
        for bad in [
            "bytes=0-18446744073709551615",
            "bytes=-18446744073709551615",
            "bytes=1000000000000000000-",
            many.as_str(),
        ] {
            let mut m = h(bad);
            assert!(sanitize_range(&mut m), "{bad}");
            assert!(!m.contains_key("range"));
        }
    }

    #[test]
    fn xml_bodies() {
        assert!(check_xml_body(b"").is_ok());
        assert!(check_xml_body(b"<?xml version=\"1.0\"?><D:propfind xmlns:D=\"DAV:\"/>").is_ok());
        assert!(
            check_xml_body(b"<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"b\">]><x/>").is_err()
        );
        assert!(check_xml_body(b"<!doctype x><x/>").is_err());
        assert!(check_xml_body(&[0xFF, 0xFE, b'<', 0]).is_err());
        let deep = |n: usize| format!("{}{}", "<a>".repeat(n), "</a>".repeat(n)).into_bytes();
        assert!(check_xml_body(&deep(MAX_XML_DEPTH)).is_ok());
        assert!(check_xml_body(&deep(MAX_XML_DEPTH + 1)).is_err());
        assert!(check_xml_body(&deep(20_000)).is_err());
        assert_eq!(
            nesting_depth(b"<a><b/><c x='>'>t</c><!-- <d><d><d> --></a>"),
            2
        );
        assert_eq!(nesting_depth(b"<a><![CDATA[<b><b><b>]]></a>"), 1);
        // Unclosed garbage still counts.
        assert_eq!(nesting_depth(b"<a<a<a"), 1);
        assert_eq!(nesting_depth(b"<a><a><a"), 3);
    }

    #[test]
    fn times() {
        let t = |s: u64| Some(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(parse_oc_mtime("1700000000"), t(1_700_000_000));
        assert_eq!(
            parse_oc_mtime("1700000000.5"),
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_500))
        );
        for b in ["", "-5", "abc", "1e9", "99999999999999999", "1.x"] {
            assert_eq!(parse_oc_mtime(b), None, "{b}");
        }
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            t(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), t(0));
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2028 23:59:59 GMT"),
            t(1_835_481_599)
        );
        for b in [
            "",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:49:37 PST",
        ] {
            assert_eq!(parse_http_date(b), None, "{b}");
        }
        let body = br#"<?xml version="1.0" encoding="utf-8" ?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:schemas-microsoft-com:"><D:set><D:prop><Z:Win32CreationTime>Sun, 06 Nov 1994 08:49:37 GMT</Z:Win32CreationTime><Z:Win32LastModifiedTime>Tue, 29 Feb 2028 23:59:59 GMT</Z:Win32LastModifiedTime><Z:Win32FileAttributes>00000020</Z:Win32FileAttributes></D:prop></D:set></D:propertyupdate>"#;
        assert_eq!(win32_mtime(body), t(1_835_481_599));
        assert_eq!(win32_mtime(b"<x/>"), None);
        assert_eq!(win32_mtime(b"not xml"), None);
    }
}
