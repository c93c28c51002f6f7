//! Names (stopgap; replaced by the full implementation).
use crate::{Error, Result};
use unicode_normalization::UnicodeNormalization;
/// Longest name in UTF-8 bytes.
pub const MAX_NAME_BYTES: usize = 255;
/// Canonical form of a name.
pub fn canonical(name: &str) -> Result<String> {
    let n: String = name.nfc().collect();
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.chars().take(80).collect(),
            reason,
        })
    };
    if n.is_empty() || n == "." || n == ".." {
        return bad("empty or dot name");
    }
    if n.chars()
        .any(|c| "/\\:*?\"<>|".contains(c) || c.is_control())
    {
        return bad("illegal character");
    }
    if n.ends_with('.') || n.ends_with(' ') {
        return bad("trailing dot or space");
    }
    if n.len() > MAX_NAME_BYTES {
        return bad("too long");
    }
    Ok(n)
}
/// Case-insensitive key.
pub fn fold_key(canonical: &str) -> String {
    canonical.to_lowercase().nfc().collect()
}
/// Make text a legal name.
pub fn sanitize(text: &str) -> String {
    let s: String = text
        .nfc()
        .map(|c| {
            if "/\\:*?\"<>|".contains(c) || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let s = s.trim_end_matches(['.', ' ']).to_string();
    if s.is_empty() { "_".into() } else { s }
}
/// OS junk files.
pub fn is_os_junk(name: &str) -> bool {
    name == ".DS_Store"
        || name.starts_with("._")
        || name.eq_ignore_ascii_case("thumbs.db")
        || name.eq_ignore_ascii_case("desktop.ini")
        || name.starts_with("~$")
}
