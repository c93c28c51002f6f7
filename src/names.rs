//! Names of documents and folders: one canonical form, legal on Windows, macOS and Linux.
//!
//! Every name that reaches the portal (from WebDAV, SFTP, the admin API or a matter's number and
//! title) goes through [`canonical`] before it is stored or looked up, so two spellings of the
//! same name (NFC vs NFD, as macOS clients send) are one name. Uniqueness inside a folder is
//! case-insensitive, decided by [`fold_key`]. [`sanitize`] turns free text into a legal name, and
//! [`is_os_junk`] recognises the housekeeping files desktop clients create on their own.
//!
//! Everything here takes untrusted input: no function panics, and the work done is bounded by a
//! small multiple of [`MAX_NAME_BYTES`] whatever the input's size.

use crate::{Error, Result};
use unicode_normalization::UnicodeNormalization;

/// The longest name, in UTF-8 bytes of its canonical (NFC) form. The common limit of NTFS, APFS
/// and ext4 (which count UTF-16 units or bytes; 255 bytes is the strictest reading).
pub const MAX_NAME_BYTES: usize = 255;

/// NFC can shrink a string at most threefold (a Hangul L+V+T jamo sequence, 9 bytes, composes to
/// one 3-byte syllable; U+212A KELVIN SIGN, 3 bytes, becomes `K`). Input longer than this many
/// bytes can therefore never be a legal name and is refused without normalising it.
const MAX_INPUT_BYTES: usize = 4 * MAX_NAME_BYTES;

/// How much of an offending name an error message repeats.
const SHOWN_CHARS: usize = 80;

/// Input to [`sanitize`] beyond this many bytes is ignored (the result is at most
/// [`MAX_NAME_BYTES`] anyway); this bounds the normaliser's buffer.
const SANITIZE_INPUT_BYTES: usize = 16 * 1024;

/// The replacement [`sanitize`] uses for characters a name can't hold.
const REPLACEMENT: char = '_';

/// Returns the canonical form of a document or folder name, or why it can't be one.
///
/// The name is put in Unicode NFC, then refused with [`Error::InvalidName`] if it is:
/// - empty, `.` or `..`;
/// - longer than [`MAX_NAME_BYTES`] UTF-8 bytes (after NFC);
/// - holding any of `/ \ : * ? " < > |` (illegal or a separator on some system);
/// - holding a control character (C0 U+0000–U+001F, DEL U+007F, C1 U+0080–U+009F);
/// - holding a byte-order mark (U+FEFF), a Unicode noncharacter (U+FDD0–U+FDEF and the last two
///   code points of every plane), or a bidirectional embedding/override/isolate control
///   (U+202A–U+202E, U+2066–U+2069), which are used to disguise a file's real extension;
/// - ending in a dot or a space (Windows silently drops them, so the name would change);
/// - a Windows device name, in any case, with or without an extension: `CON`, `PRN`, `AUX`,
///   `NUL`, `COM0`–`COM9`, `LPT0`–`LPT9`, `COM¹ COM² COM³ LPT¹ LPT² LPT³`, `CONIN$`, `CONOUT$`
///   (so `con.txt`, `Lpt1`, `NUL .tar.gz` are all refused);
/// - a look-alike of `.` or `..` made of compatibility characters (e.g. U+2024 ONE DOT LEADER,
///   U+2025 TWO DOT LEADER, U+FF0E FULLWIDTH FULL STOP), which tools applying NFKC would turn
///   into a traversal segment.
///
/// Leading spaces are allowed (Explorer and Finder both allow them).
pub fn canonical(name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(invalid(name, "a name can't be empty"));
    }
    if name.len() > MAX_INPUT_BYTES {
        return Err(invalid(name, TOO_LONG));
    }
    let n: String = name.nfc().collect();
    if n == "." || n == ".." {
        return Err(invalid(name, "\".\" and \"..\" are not names"));
    }
    if n.len() > MAX_NAME_BYTES {
        return Err(invalid(name, TOO_LONG));
    }
    if let Some(reason) = n.chars().find_map(char_problem) {
        return Err(invalid(name, reason));
    }
    if n.ends_with('.') {
        return Err(invalid(
            name,
            "a name can't end with a dot (Windows would drop it)",
        ));
    }
    if n.ends_with(' ') {
        return Err(invalid(
            name,
            "a name can't end with a space (Windows would drop it)",
        ));
    }
    if is_reserved_device(&n) {
        return Err(invalid(
            name,
            "this is a reserved device name on Windows (CON, PRN, AUX, NUL, COM1, LPT1…), with or without an extension",
        ));
    }
    if is_dot_lookalike(&n) {
        return Err(invalid(name, "a name can't look like \".\" or \"..\""));
    }
    Ok(n)
}

/// The key that decides case-insensitive uniqueness of names inside a folder.
///
/// Two names clash exactly when their keys are equal. The key is the NFC form with every
/// character case-folded, then NFC again. Folding maps a character to the lowercase of its
/// uppercase when that uppercase is a single character (so `ς`/`σ`/`Σ`, `ſ`/`s`/`S` and
/// `ϐ`/`β`/`Β` fold together, as the NTFS and APFS case tables do) and to its plain lowercase
/// otherwise (so `ß` does not become `ss`: `Straße` and `STRASSE` are different names).
/// `Résumé.pdf`, `RÉSUMÉ.PDF` and their NFD spellings all give one key.
///
/// Accepts any text (also non-canonical names and whole paths) and never fails.
pub fn fold_key(canonical: &str) -> String {
    let mut folded = String::with_capacity(canonical.len());
    for c in canonical.nfc() {
        fold_char(c, &mut folded);
    }
    folded.nfc().collect()
}

/// Turns arbitrary text (such as a matter's `2026-001 Smith v Jones/Ltd: appeal`) into a legal
/// name: `canonical(&sanitize(x))` is always `Ok(sanitize(x))`.
///
/// Rules, in order: only the first 16 KiB of the text are looked at; the text is put in NFC; tab,
/// CR and LF become a space; every character [`canonical`] refuses (`/ \ : * ? " < > |`, controls,
/// BOM, noncharacters, bidi controls) becomes `_`, a run of such replacements leaving a single `_`;
/// the result is cut to [`MAX_NAME_BYTES`] on a character boundary; trailing dots and spaces are
/// removed; a Windows device name gets `_` after its stem (`CON` → `CON_`, `nul.txt` →
/// `nul_.txt`); a look-alike of `.`/`..` becomes `_`; an empty result becomes `_`.
pub fn sanitize(text: &str) -> String {
    let text = prefix_on_char_boundary(text, SANITIZE_INPUT_BYTES);
    let mut out = String::with_capacity(text.len().min(MAX_NAME_BYTES + 4));
    for c in text.nfc() {
        let mapped = match c {
            '\t' | '\n' | '\r' => ' ',
            c if char_problem(c).is_some() => REPLACEMENT,
            c => c,
        };
        let is_replacement = mapped != c && mapped == REPLACEMENT;
        if is_replacement && out.ends_with(REPLACEMENT) {
            continue;
        }
        out.push(mapped);
        if out.len() > MAX_NAME_BYTES + 4 {
            // Enough to fill a name; what follows would be cut anyway.
            break;
        }
    }
    // Replacing a character can change what its neighbours compose with: normalise again.
    let mut s: String = out.nfc().collect();
    for _ in 0..4 {
        s = fix_up(s);
        if matches!(canonical(&s), Ok(ref c) if *c == s) {
            return s;
        }
        s = s.nfc().collect();
    }
    // Not reachable as far as the tests and the fuzzer know; never hand out an illegal name.
    debug_assert!(false, "sanitize could not make {s:?} legal");
    REPLACEMENT.to_string()
}

/// Whether `name` is a housekeeping file a desktop client creates on its own, which must never
/// land in the firm's folders (front ends keep such files in a per-login scratch area instead).
///
/// The list (names compared ASCII-case-insensitively, prefixes and suffixes as written):
/// - macOS: `.DS_Store`, AppleDouble files `._*`, `.Spotlight-V100`, `.Trashes`, `.fseventsd`,
///   `.TemporaryItems`, `.VolumeIcon.icns`, `.apdisk`, `Icon\r`;
/// - Windows: `Thumbs.db`, `ehthumbs.db`, `ehthumbs_vista.db`, `desktop.ini`, and Microsoft
///   Office owner (lock) files `~$*`;
/// - Linux: LibreOffice lock files `.~lock.*#`, KDE's `.directory`.
///
/// Deliberately not junk: `.hidden` (GNOME's list of hidden names is written on the user's
/// request, so it carries intent), and editors' temporary save files such as `~WRL0001.tmp` or
/// `.goutputstream-*` (they are renamed onto the real document, so they must reach the folder).
pub fn is_os_junk(name: &str) -> bool {
    const EXACT: [&str; 13] = [
        ".DS_Store",
        ".Spotlight-V100",
        ".Trashes",
        ".fseventsd",
        ".TemporaryItems",
        ".VolumeIcon.icns",
        ".apdisk",
        "Icon\r",
        "Thumbs.db",
        "ehthumbs.db",
        "ehthumbs_vista.db",
        "desktop.ini",
        ".directory",
    ];
    EXACT.iter().any(|j| name.eq_ignore_ascii_case(j))
        || name.starts_with("._")
        || name.starts_with("~$")
        || (name.starts_with(".~lock.") && name.ends_with('#'))
}

const TOO_LONG: &str = "a name can't be longer than 255 bytes (UTF-8, after NFC)";

/// The error for `name`, repeating (a shortened, escaped form of) the offending name.
fn invalid(name: &str, reason: &'static str) -> Error {
    Error::InvalidName {
        name: shown(name),
        reason,
    }
}

/// A form of an untrusted name that is safe to put in an error message or a log line: at most
/// [`SHOWN_CHARS`] characters, with controls and invisible spoofing characters escaped.
pub(crate) fn shown(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if i == SHOWN_CHARS {
            out.push('…');
            break;
        }
        if char_problem(c).is_some() && !RESERVED_CHARS.contains(&c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

const RESERVED_CHARS: [char; 9] = ['/', '\\', ':', '*', '?', '"', '<', '>', '|'];

/// Why `c` can't appear in a name, if it can't.
fn char_problem(c: char) -> Option<&'static str> {
    Some(match c {
        '/' => "a name can't contain \"/\" (it separates folders)",
        '\\' => "a name can't contain \"\\\" (it separates folders on Windows)",
        ':' => "a name can't contain \":\" (not allowed on Windows, shown as \"/\" on macOS)",
        '*' | '?' => "a name can't contain \"*\" or \"?\" (wildcards, not allowed on Windows)",
        '"' => "a name can't contain '\"' (not allowed on Windows)",
        '<' | '>' => "a name can't contain \"<\" or \">\" (not allowed on Windows)",
        '|' => "a name can't contain \"|\" (not allowed on Windows)",
        c if c.is_control() => {
            "a name can't contain control characters (U+0000–U+001F, U+007F–U+009F)"
        }
        '\u{FEFF}' => "a name can't contain a byte-order mark (U+FEFF)",
        '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => {
            "a name can't contain bidirectional override or isolate controls (U+202A–U+202E, U+2066–U+2069)"
        }
        c if is_noncharacter(c) => {
            "a name can't contain Unicode noncharacters (U+FDD0–U+FDEF, U+xxFFFE, U+xxFFFF)"
        }
        _ => return None,
    })
}

/// Unicode noncharacters: U+FDD0–U+FDEF and the last two code points of each of the 17 planes.
fn is_noncharacter(c: char) -> bool {
    let u = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&u) || (u & 0xFFFE) == 0xFFFE
}

/// Whether the part of `name` before its first dot (trailing spaces ignored, as Windows does) is a
/// Windows device name, compared ASCII-case-insensitively.
fn is_reserved_device(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name).trim_end_matches(' ');
    const PLAIN: [&str; 6] = ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"];
    if PLAIN.iter().any(|r| stem.eq_ignore_ascii_case(r)) {
        return true;
    }
    let (Some(head), Some(tail)) = (stem.get(..3), stem.get(3..)) else {
        return false;
    };
    (head.eq_ignore_ascii_case("COM") || head.eq_ignore_ascii_case("LPT"))
        && matches!(
            tail,
            "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "¹" | "²" | "³"
        )
}

/// Whether `name` (already NFC) becomes `.` or `..` under NFKC, e.g. `․` (U+2024), `‥` (U+2025),
/// `．．` (U+FF0E twice).
fn is_dot_lookalike(name: &str) -> bool {
    // Every look-alike is at most two characters of at most four bytes each.
    if name.len() > 8 {
        return false;
    }
    let k: String = name.nfkc().collect();
    k == "." || k == ".."
}

/// Appends the case fold of `c` (see [`fold_key`]).
fn fold_char(c: char, out: &mut String) {
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(u), None) => out.extend(u.to_lowercase()),
        _ => out.extend(c.to_lowercase()),
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn prefix_on_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

/// The structural part of [`sanitize`]: length, trailing dots/spaces, device names, look-alikes,
/// emptiness. `s` holds no character [`canonical`] refuses.
fn fix_up(s: String) -> String {
    let mut s = prefix_on_char_boundary(&s, MAX_NAME_BYTES)
        .trim_end_matches(['.', ' '])
        .to_string();
    if is_reserved_device(&s) {
        // Put `_` right after the device name, before any trailing spaces and extension.
        let stem_len = s.find('.').unwrap_or(s.len());
        let device_len = s
            .get(..stem_len)
            .map_or(0, |t| t.trim_end_matches(' ').len());
        s.insert(device_len, REPLACEMENT);
        s = prefix_on_char_boundary(&s, MAX_NAME_BYTES)
            .trim_end_matches(['.', ' '])
            .to_string();
    }
    if s.is_empty() || is_dot_lookalike(&s) {
        return REPLACEMENT.to_string();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reason(name: &str) -> &'static str {
        match canonical(name) {
            Err(Error::InvalidName { reason, .. }) => reason,
            other => panic!("{name:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn plain_names_pass_unchanged() {
        for n in [
            "Contract.pdf",
            "a",
            "Tax Returns 2025",
            "  leading spaces.txt",
            ".profile",
            "..hidden",
            "a..b",
            "%2e%2e",
            "日本語の書類.docx",
            "契約／2026",
            "Résumé.pdf",
            "~notes",
            "CONSOLE.txt",
            "COM10",
            "LPT",
            "file.CON",
            "NULL",
            "com¹0",
        ] {
            assert_eq!(canonical(n).unwrap(), n, "{n:?}");
        }
    }

    #[test]
    fn nfd_input_becomes_nfc() {
        let nfd = "Re\u{301}sume\u{301}.pdf";
        let nfc = "R\u{e9}sum\u{e9}.pdf";
        assert_eq!(canonical(nfd).unwrap(), nfc);
        assert_eq!(canonical(nfc).unwrap(), nfc);
        // Hangul jamo compose into syllables.
        assert_eq!(canonical("\u{1100}\u{1161}\u{11A8}").unwrap(), "\u{AC01}");
        // Singletons: KELVIN SIGN becomes K, ANGSTROM SIGN becomes Å.
        assert_eq!(canonical("\u{212A}\u{212B}").unwrap(), "K\u{C5}");
    }

    #[test]
    fn empty_and_dots_refused() {
        for n in ["", ".", ".."] {
            reason(n);
        }
        assert!(reason(".").contains("not names"));
        assert!(reason("").contains("empty"));
    }

    #[test]
    fn each_illegal_char_refused() {
        for c in ['/', '\\', ':', '*', '?', '"', '<', '>', '|'] {
            for n in [format!("{c}"), format!("a{c}b"), format!("{c}x.txt")] {
                let r = reason(&n);
                assert!(r.contains(c), "{n:?}: {r}");
            }
        }
    }

    #[test]
    fn control_chars_refused() {
        let controls = (0u32..0x20).chain([0x7F]).chain(0x80..0xA0);
        for u in controls {
            let c = char::from_u32(u).unwrap();
            assert!(reason(&format!("a{c}b")).contains("control"), "U+{u:04X}");
        }
        // Just outside the ranges: fine.
        assert!(canonical("a\u{A0}b").is_ok());
        assert!(canonical("a~b").is_ok());
    }

    #[test]
    fn bom_noncharacters_and_bidi_refused() {
        assert!(reason("\u{FEFF}a").contains("byte-order"));
        for u in (0x202Au32..=0x202E).chain(0x2066..=0x2069) {
            let c = char::from_u32(u).unwrap();
            assert!(
                reason(&format!("invoice{c}fdp.exe")).contains("bidi"),
                "U+{u:04X}"
            );
        }
        for u in [
            0xFDD0u32, 0xFDEF, 0xFFFE, 0xFFFF, 0x1FFFE, 0x10FFFF, 0x8FFFF,
        ] {
            let c = char::from_u32(u).unwrap();
            assert!(
                reason(&format!("a{c}")).contains("noncharacter"),
                "U+{u:04X}"
            );
        }
        // Neighbours are allowed.
        for u in [
            0x2029u32, 0x202F, 0x2065, 0x206A, 0xFDCF, 0xFDF0, 0xFFFD, 0x1FFFD,
        ] {
            let n = format!("a{}", char::from_u32(u).unwrap());
            assert!(canonical(&n).is_ok(), "U+{u:04X}");
        }
    }

    #[test]
    fn trailing_dot_or_space_refused_leading_space_allowed() {
        assert!(reason("report.").contains("dot"));
        assert!(reason("report ").contains("space"));
        assert!(reason("...").contains("dot"));
        assert!(reason(" ").contains("space"));
        assert!(reason("a. ").contains("space"));
        assert_eq!(canonical(" report").unwrap(), " report");
        // Other trailing whitespace is not dropped by Windows: allowed.
        assert!(canonical("report\u{A0}").is_ok());
    }

    #[test]
    fn every_reserved_device_name_refused() {
        let mut names: Vec<String> = ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for p in ["COM", "LPT"] {
            for d in [
                "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "¹", "²", "³",
            ] {
                names.push(format!("{p}{d}"));
            }
        }
        assert_eq!(names.len(), 6 + 26);
        for n in &names {
            for form in [
                n.clone(),
                n.to_lowercase(),
                n.to_ascii_lowercase(),
                format!("{n}.txt"),
                format!("{}.tar.gz", n.to_lowercase()),
                format!("{n} .txt"),
            ] {
                assert!(reason(&form).contains("reserved"), "{form:?}");
            }
        }
        for n in ["con.txt", "Lpt1", "cOm¹.doc", "nul"] {
            assert!(reason(n).contains("reserved"), "{n:?}");
        }
    }

    #[test]
    fn length_limit_counts_nfc_bytes() {
        let max = "a".repeat(MAX_NAME_BYTES);
        assert_eq!(canonical(&max).unwrap(), max);
        assert!(reason(&"a".repeat(MAX_NAME_BYTES + 1)).contains("255"));
        // 127 × "é": 381 bytes NFD, 254 bytes NFC: accepted, because the limit applies after NFC.
        let nfd = "e\u{301}".repeat(127);
        assert_eq!(canonical(&nfd).unwrap().len(), 254);
        // Three-byte characters: 85 fit, 86 don't.
        assert!(canonical(&"€".repeat(85)).is_ok());
        assert!(canonical(&"€".repeat(86)).is_err());
        // Huge input is refused without normalising it.
        let huge = "x".repeat(10_000_000);
        assert!(reason(&huge).contains("255"));
    }

    #[test]
    fn dot_lookalikes_refused_but_other_lookalikes_are_plain_names() {
        for n in [
            "\u{2024}",
            "\u{2025}",
            "\u{FF0E}",
            "\u{FF0E}\u{FF0E}",
            "\u{2024}\u{2024}",
        ] {
            assert!(reason(n).contains("look like"), "{n:?}");
        }
        for n in ["a\u{2215}b", "a\u{FF0F}b", "\u{2026}", "\u{FF0E}x"] {
            assert_eq!(canonical(n).unwrap(), n, "{n:?}");
        }
    }

    #[test]
    fn error_names_are_escaped_and_short() {
        let Err(Error::InvalidName { name, .. }) = canonical("evil\u{202E}txt.exe\u{0}") else {
            panic!("should be refused");
        };
        assert_eq!(name, "evil\\u{202e}txt.exe\\u{0}");
        let Err(Error::InvalidName { name, .. }) = canonical(&"x".repeat(5000)) else {
            panic!("should be refused");
        };
        assert_eq!(name.chars().count(), SHOWN_CHARS + 1);
        assert!(name.ends_with('…'));
        let Err(Error::InvalidName { name, .. }) = canonical("a/b") else {
            panic!("should be refused");
        };
        assert_eq!(name, "a/b");
    }

    #[test]
    fn fold_key_collisions() {
        let k = fold_key("Résumé.pdf");
        assert_eq!(fold_key("RÉSUMÉ.PDF"), k);
        assert_eq!(fold_key("Re\u{301}sume\u{301}.pdf"), k);
        assert_eq!(fold_key("RE\u{301}SUME\u{301}.PDF"), k);
        assert_eq!(fold_key("Contract.PDF"), fold_key("contract.pdf"));
        // Case-fold equivalences the plain lowercase misses.
        assert_eq!(fold_key("ΟΔΟΣ"), fold_key("οδος"));
        assert_eq!(fold_key("οδος"), fold_key("οδοσ"));
        assert_eq!(fold_key("ſ"), fold_key("S"));
        assert_eq!(fold_key("ẞ"), fold_key("ß"));
        assert_eq!(fold_key("\u{212A}"), fold_key("k"));
        // Not collisions.
        assert_ne!(fold_key("Straße"), fold_key("STRASSE"));
        assert_ne!(fold_key("Résumé.pdf"), fold_key("Resume.pdf"));
        assert_ne!(fold_key("a"), fold_key("b"));
        assert_ne!(fold_key("İ"), fold_key("i"));
        // Keys are NFC.
        let k = fold_key("E\u{301}");
        assert_eq!(k, "\u{e9}");
    }

    #[test]
    fn sanitize_examples() {
        assert_eq!(
            sanitize("2026-001 Smith v Jones/Ltd: appeal"),
            "2026-001 Smith v Jones_Ltd_ appeal"
        );
        assert_eq!(sanitize("a//\\\\b"), "a_b");
        assert_eq!(sanitize("a_/b"), "a_b");
        assert_eq!(sanitize("a__b"), "a__b");
        assert_eq!(sanitize("what? <why>"), "what_ _why_");
        assert_eq!(sanitize("line1\nline2\ttab"), "line1 line2 tab");
        assert_eq!(sanitize("report. . ."), "report");
        assert_eq!(sanitize("CON"), "CON_");
        assert_eq!(sanitize("nul.txt"), "nul_.txt");
        assert_eq!(sanitize("Com1 .txt"), "Com1_ .txt");
        assert_eq!(sanitize("LPT¹"), "LPT¹_");
        assert_eq!(sanitize(""), "_");
        assert_eq!(sanitize("."), "_");
        assert_eq!(sanitize(".."), "_");
        assert_eq!(sanitize("   "), "_");
        assert_eq!(sanitize("\u{2025}"), "_");
        assert_eq!(sanitize("\u{202E}exe.pdf"), "_exe.pdf");
        assert_eq!(sanitize("Re\u{301}sume\u{301}"), "R\u{e9}sum\u{e9}");
        let long = sanitize(&"€".repeat(300));
        assert_eq!(long, "€".repeat(85));
        // Truncation then trimming can't leave a device name behind.
        assert_eq!(sanitize(&format!("CON{}x", " ".repeat(300))), "CON_");
        // A device name with a long extension stays within the limit.
        let s = sanitize(&format!("aux.{}", "e".repeat(300)));
        assert!(s.starts_with("aux_.") && s.len() == MAX_NAME_BYTES, "{s}");
    }

    #[test]
    fn junk_list() {
        for n in [
            ".DS_Store",
            ".ds_store",
            "._Contract.pdf",
            "._",
            ".Spotlight-V100",
            ".Trashes",
            ".fseventsd",
            ".TemporaryItems",
            ".VolumeIcon.icns",
            ".apdisk",
            "Icon\r",
            "Thumbs.db",
            "THUMBS.DB",
            "ehthumbs.db",
            "ehthumbs_vista.db",
            "desktop.ini",
            "Desktop.ini",
            "~$Contract.docx",
            ".~lock.Contract.odt#",
            ".directory",
        ] {
            assert!(is_os_junk(n), "{n:?}");
        }
        for n in [
            "Contract.pdf",
            ".hidden",
            "~WRL0001.tmp",
            ".goutputstream-ABC123",
            "DS_Store",
            "_.pdf",
            "Thumbs.db.pdf",
            ".~lock.Contract.odt",
            "a~$b",
            "Icon",
            "",
        ] {
            assert!(!is_os_junk(n), "{n:?}");
        }
    }

    /// Strings built from pieces that are known to be tricky, plus arbitrary characters.
    fn tricky() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just(".".to_string()),
            Just("..".to_string()),
            Just(" ".to_string()),
            Just("/".to_string()),
            Just("\\".to_string()),
            Just("\0".to_string()),
            Just("%2e".to_string()),
            Just("\u{301}".to_string()),
            Just("\u{345}".to_string()),
            Just("\u{1100}\u{1161}".to_string()),
            Just("\u{11A8}".to_string()),
            Just("\u{2024}".to_string()),
            Just("\u{FF0E}".to_string()),
            Just("\u{2215}".to_string()),
            Just("\u{FF0F}".to_string()),
            Just("\u{202E}".to_string()),
            Just("\u{FEFF}".to_string()),
            Just("CON".to_string()),
            Just("lpt\u{B9}".to_string()),
            Just("e".to_string()),
            Just("\u{3A3}".to_string()),
            Just("\u{212A}".to_string()),
            Just("\u{130}".to_string()),
            Just("€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€€".to_string()),
            any::<char>().prop_map(String::from),
            "\\PC{0,8}",
        ];
        prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
    }

    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![tricky(), any::<String>(), "\\PC{0,300}"]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn sanitize_is_always_canonical(x in any_text()) {
            let s = sanitize(&x);
            prop_assert_eq!(canonical(&s).ok(), Some(s.clone()));
            prop_assert!(!s.is_empty() && s.len() <= MAX_NAME_BYTES);
            // A legal name needs no change: sanitize gives its canonical form.
            if let Ok(c) = canonical(&x) {
                prop_assert_eq!(s, c);
            }
        }

        #[test]
        fn canonical_is_idempotent_and_nf_independent(x in any_text()) {
            let nfd: String = x.nfd().collect();
            let nfc: String = x.nfc().collect();
            match canonical(&x) {
                Ok(c) => {
                    prop_assert_eq!(canonical(&c).ok(), Some(c.clone()));
                    prop_assert_eq!(canonical(&nfd).ok(), Some(c.clone()));
                    prop_assert_eq!(canonical(&nfc).ok(), Some(c.clone()));
                    prop_assert!(c.len() <= MAX_NAME_BYTES && !c.contains('/'));
                }
                Err(e) => {
                    prop_assert!(matches!(e, Error::InvalidName { .. }), "{:?}", e);
                    prop_assert!(canonical(&nfc).is_err());
                }
            }
        }

        #[test]
        fn fold_key_ignores_normal_form_and_is_stable(x in any_text()) {
            let nfd: String = x.nfd().collect();
            let k = fold_key(&x);
            prop_assert_eq!(&fold_key(&nfd), &k);
            prop_assert_eq!(&fold_key(&x.to_uppercase()), &fold_key(&x.to_uppercase().to_lowercase()));
            prop_assert_eq!(fold_key(&k), k);
        }
    }
}
