//! Fuzz `names::canonical`, `fold_key`, `sanitize` and `is_os_junk` on arbitrary UTF-8.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sdx_portal::Error;
use sdx_portal::names::{MAX_NAME_BYTES, canonical, fold_key, is_os_junk, sanitize};
use unicode_normalization::UnicodeNormalization;

const RESERVED: [char; 9] = ['/', '\\', ':', '*', '?', '"', '<', '>', '|'];

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let nfd: String = s.nfd().collect();
    let key = fold_key(s);
    // Keys don't depend on the normal form, and folding is idempotent.
    assert_eq!(fold_key(&nfd), key, "fold_key differs for NFD of {s:?}");
    assert_eq!(fold_key(&key), key, "fold_key not idempotent for {s:?}");

    match canonical(s) {
        Ok(c) => {
            assert!(!c.is_empty() && c.len() <= MAX_NAME_BYTES, "{c:?}");
            assert!(c != "." && c != "..");
            assert!(!c.contains(RESERVED), "{c:?}");
            assert!(!c.chars().any(char::is_control), "{c:?}");
            assert!(!c.ends_with('.') && !c.ends_with(' '), "{c:?}");
            assert_eq!(c.nfc().collect::<String>(), c, "not NFC: {c:?}");
            // Idempotent, and the same whatever the input's normal form.
            assert_eq!(canonical(&c).ok().as_deref(), Some(c.as_str()));
            assert_eq!(canonical(&nfd).ok().as_deref(), Some(c.as_str()));
            assert_eq!(fold_key(&c), key);
        }
        Err(Error::InvalidName { name, reason }) => {
            assert!(!reason.is_empty());
            // At most 80 characters of the input, each escaped to at most `\u{10ffff}`, plus `…`.
            assert!(
                name.len() <= 80 * 10 + 3,
                "error repeats too much: {name:?}"
            );
            assert!(
                !name.chars().any(char::is_control),
                "unescaped control in {name:?}"
            );
            let nfc: String = s.nfc().collect();
            assert!(
                canonical(&nfc).is_err(),
                "NFC of a refused name accepted: {s:?}"
            );
        }
        Err(e) => panic!("unexpected error kind for {s:?}: {e}"),
    }

    let clean = sanitize(s);
    assert!(
        !clean.is_empty() && clean.len() <= MAX_NAME_BYTES,
        "{clean:?}"
    );
    assert_eq!(
        canonical(&clean).ok().as_deref(),
        Some(clean.as_str()),
        "sanitize({s:?}) = {clean:?} is not canonical"
    );
    // A legal name needs no change, so sanitize gives its canonical form.
    if let Ok(c) = canonical(s) {
        assert_eq!(clean, c, "sanitize changed the legal name {s:?}");
    }

    let _ = is_os_junk(s);
});
