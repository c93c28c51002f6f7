//! Fuzz `PortalPath::parse` on arbitrary UTF-8 and check the path invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sdx_portal::Error;
use sdx_portal::names::canonical;
use sdx_portal::path::{MAX_DEPTH, MAX_PATH_BYTES, PortalPath};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match PortalPath::parse(s) {
        Ok(p) => {
            let named = s
                .split('/')
                .filter(|x| !matches!(*x, "" | "." | ".."))
                .count();
            assert!(p.depth() <= named && p.depth() <= MAX_DEPTH, "{s:?} -> {p}");
            for seg in p.segments() {
                assert!(!seg.contains('/'));
                assert_eq!(canonical(seg).ok().as_deref(), Some(seg.as_str()));
            }
            let printed = p.to_string();
            assert!(printed.len() <= MAX_PATH_BYTES);
            assert!(printed.starts_with('/'));
            assert!(p.is_root() || !printed.ends_with('/'));
            assert_eq!(PortalPath::parse(&printed).ok().as_ref(), Some(&p), "{s:?}");
            assert_eq!(printed.parse::<PortalPath>().ok().as_ref(), Some(&p));
            assert_eq!(
                PortalPath::from_segments(p.segments()).ok().as_ref(),
                Some(&p)
            );
            assert!(p.starts_with(&PortalPath::root()));
            assert!(p.starts_with(&p));
            if let Some(parent) = p.parent() {
                assert!(p.starts_with(&parent));
                assert!(!parent.starts_with(&p));
                assert_eq!(parent.depth() + 1, p.depth());
                let name = p.name().unwrap_or_default();
                assert_eq!(parent.join(name).ok().as_ref(), Some(&p));
            } else {
                assert!(p.is_root());
            }
        }
        Err(Error::InvalidName { .. }) => {}
        Err(e) => panic!("unexpected error kind for {s:?}: {e}"),
    }
});
