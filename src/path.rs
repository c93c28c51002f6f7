//! Paths inside a principal's tree.
//!
//! A [`PortalPath`] is a list of canonical names (see [`crate::names::canonical`]) below the root
//! of one principal's tree. It can only be built through [`PortalPath::parse`],
//! [`PortalPath::from_segments`] and [`PortalPath::join`], which all validate, so holding one
//! means: every segment is a legal canonical name, there are at most [`MAX_DEPTH`] of them, and
//! the printed form (`/a/b`) is at most [`MAX_PATH_BYTES`] long and parses back to the same path.

use crate::names;
use crate::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// The deepest path: at most this many segments below the root.
pub const MAX_DEPTH: usize = 32;

/// The longest path, in bytes: of the input to [`PortalPath::parse`], and of a path's printed
/// (canonical) form.
pub const MAX_PATH_BYTES: usize = 4096;

/// A path in a principal's tree: canonical segments below the root, compared case-sensitively
/// by `==` (use [`PortalPath::fold_key`] or [`PortalPath::starts_with`] for the
/// case-insensitive view the tree uses for lookups).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PortalPath {
    segs: Vec<String>,
}

impl PortalPath {
    /// The root of the tree, `/`.
    pub fn root() -> Self {
        PortalPath { segs: Vec::new() }
    }

    /// Parses a path as a front end received it (already percent-decoded; it is never decoded
    /// again, so `%2e%2e` is a plain name).
    ///
    /// Rules: input over [`MAX_PATH_BYTES`] bytes is refused before any other work. The input is
    /// split on `/` only (a `\` is never a separator: it makes the path invalid, like NUL or any
    /// character [`names::canonical`] refuses). Empty segments and `.` are skipped; `..` removes
    /// the previous segment and is clamped at the root (`/../../x` is `/x`), as a chrooted
    /// OpenSSH `sftp-server` or Apache do, so no input escapes the tree. Every other segment must
    /// be a legal name and is stored in its canonical form. More than [`MAX_DEPTH`] segments, or a
    /// canonical form longer than [`MAX_PATH_BYTES`], is refused. Relative input is taken from the
    /// root. All refusals are [`Error::InvalidName`].
    pub fn parse(s: &str) -> Result<Self> {
        if s.len() > MAX_PATH_BYTES {
            return Err(too_long(s));
        }
        let mut segs: Vec<String> = Vec::new();
        for seg in s.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    segs.pop();
                }
                name => {
                    if segs.len() == MAX_DEPTH {
                        return Err(too_deep(s));
                    }
                    segs.push(names::canonical(name)?);
                }
            }
        }
        Self::checked(segs, s)
    }

    /// Builds a path from names, each of which must be a single legal name (no `/`, not `.` or
    /// `..`); they are stored in canonical form. Depth and length limits as for
    /// [`PortalPath::parse`].
    pub fn from_segments<I, S>(it: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut segs: Vec<String> = Vec::new();
        for seg in it {
            let seg = seg.as_ref();
            if segs.len() == MAX_DEPTH {
                return Err(too_deep(seg));
            }
            segs.push(names::canonical(seg)?);
        }
        let shown = segs.join("/");
        Self::checked(segs, &shown)
    }

    /// The canonical segments, root first; empty for the root.
    pub fn segments(&self) -> &[String] {
        &self.segs
    }

    /// Whether this is the root, `/`.
    pub fn is_root(&self) -> bool {
        self.segs.is_empty()
    }

    /// The number of segments (0 for the root).
    pub fn depth(&self) -> usize {
        self.segs.len()
    }

    /// The path one level up; `None` for the root.
    pub fn parent(&self) -> Option<PortalPath> {
        self.segs.split_last().map(|(_, rest)| PortalPath {
            segs: rest.to_vec(),
        })
    }

    /// The last segment; `None` for the root.
    pub fn name(&self) -> Option<&str> {
        self.segs.last().map(String::as_str)
    }

    /// The child `name` of this path. `name` must be one legal name (see
    /// [`names::canonical`]): `a/b`, `.` and `..` are refused, as is going past [`MAX_DEPTH`] or
    /// [`MAX_PATH_BYTES`].
    pub fn join(&self, name: &str) -> Result<PortalPath> {
        if self.segs.len() >= MAX_DEPTH {
            return Err(too_deep(name));
        }
        let mut segs = self.segs.clone();
        segs.push(names::canonical(name)?);
        Self::checked(segs, name)
    }

    /// Whether `other` is this path or one of its ancestors, comparing segment by segment with
    /// [`names::fold_key`] (case-insensitively). The root is an ancestor of every path; `/ab` does
    /// not start with `/a`.
    pub fn starts_with(&self, other: &PortalPath) -> bool {
        other.segs.len() <= self.segs.len()
            && self
                .segs
                .iter()
                .zip(&other.segs)
                .all(|(a, b)| a == b || names::fold_key(a) == names::fold_key(b))
    }

    /// The case-insensitive key of the whole path: the printed form with every segment folded by
    /// [`names::fold_key`]. Two paths name the same entry exactly when their keys are equal.
    pub fn fold_key(&self) -> String {
        if self.segs.is_empty() {
            return "/".to_string();
        }
        let mut key = String::with_capacity(self.printed_len());
        for s in &self.segs {
            key.push('/');
            key.push_str(&names::fold_key(s));
        }
        key
    }

    /// The byte length of the printed form.
    fn printed_len(&self) -> usize {
        printed_len(&self.segs)
    }

    /// Wraps `segs` after checking the printed length; `input` is what the error repeats.
    fn checked(segs: Vec<String>, input: &str) -> Result<Self> {
        if printed_len(&segs) > MAX_PATH_BYTES {
            return Err(too_long(input));
        }
        Ok(PortalPath { segs })
    }
}

/// Byte length of `/a/b` for segments `[a, b]` (1 for the root).
fn printed_len(segs: &[String]) -> usize {
    segs.iter().map(|s| s.len() + 1).sum::<usize>().max(1)
}

fn too_long(input: &str) -> Error {
    Error::InvalidName {
        name: names::shown(input),
        reason: "a path can't be longer than 4096 bytes",
    }
}

fn too_deep(input: &str) -> Error {
    Error::InvalidName {
        name: names::shown(input),
        reason: "a path can't be more than 32 folders deep",
    }
}

impl fmt::Display for PortalPath {
    /// `/` for the root, else `/a/b` (no trailing slash).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.segs.is_empty() {
            return f.write_str("/");
        }
        for s in &self.segs {
            f.write_str("/")?;
            f.write_str(s)?;
        }
        Ok(())
    }
}

impl FromStr for PortalPath {
    type Err = Error;

    /// Same as [`PortalPath::parse`].
    fn from_str(s: &str) -> Result<Self> {
        PortalPath::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> PortalPath {
        PortalPath::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn segs(s: &str) -> Vec<String> {
        p(s).segments().to_vec()
    }

    fn refused(s: &str) -> &'static str {
        match PortalPath::parse(s) {
            Err(Error::InvalidName { reason, .. }) => reason,
            other => panic!("{s:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn root_forms() {
        for s in [
            "",
            "/",
            "//",
            ".",
            "/./",
            "..",
            "/..",
            "/../..",
            "a/..",
            "/a/b/../..",
        ] {
            assert!(p(s).is_root(), "{s:?}");
            assert_eq!(p(s).to_string(), "/");
        }
        assert_eq!(PortalPath::root(), p("/"));
        assert_eq!(PortalPath::root().depth(), 0);
        assert_eq!(PortalPath::root().parent(), None);
        assert_eq!(PortalPath::root().name(), None);
    }

    #[test]
    fn splitting_skipping_and_clamping() {
        assert_eq!(segs("/a/b"), ["a", "b"]);
        assert_eq!(segs("a/b/"), ["a", "b"]);
        assert_eq!(segs("//a///b//"), ["a", "b"]);
        assert_eq!(segs("/a/./b/."), ["a", "b"]);
        assert_eq!(segs("/a/b/../c"), ["a", "c"]);
        assert_eq!(segs("/../../etc/passwd"), ["etc", "passwd"]);
        assert_eq!(segs("/a/../../../b"), ["b"]);
        assert_eq!(segs("../x"), ["x"]);
        assert_eq!(p("/a/b/..").to_string(), "/a");
    }

    #[test]
    fn encoded_traversal_is_a_plain_name() {
        assert_eq!(segs("/%2e%2e/x"), ["%2e%2e", "x"]);
        assert_eq!(segs("/%2e/%2f"), ["%2e", "%2f"]);
        assert_eq!(segs("/a/%2e%2e%2f%2e%2e"), ["a", "%2e%2e%2f%2e%2e"]);
        assert_eq!(segs("/\u{2215}etc"), ["\u{2215}etc"]);
        assert_eq!(segs("/a\u{FF0F}b"), ["a\u{FF0F}b"]);
    }

    #[test]
    fn backslash_nul_and_illegal_chars_invalidate_the_whole_path() {
        for s in [
            "/a\\b",
            "\\..\\..\\x",
            "/..\\..",
            "/a/\\",
            "/a\0b",
            "/a/b\0/..",
            "/x/a:b",
            "/x/con.txt",
            "/x/trailing./y",
            "/x/y ",
            "/a/\u{202E}",
            "/a/.../b",
            "/\u{2025}/etc",
            "/\u{FF0E}\u{FF0E}/etc",
        ] {
            refused(s);
        }
        // The illegal segment is refused even if a later `..` would remove it.
        refused("/bad|name/..");
    }

    #[test]
    fn segments_are_canonical() {
        let a = p("/Re\u{301}sume\u{301}/Cafe\u{301}.pdf");
        let b = p("/R\u{e9}sum\u{e9}/Caf\u{e9}.pdf");
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "/R\u{e9}sum\u{e9}/Caf\u{e9}.pdf");
        assert_eq!(a.name(), Some("Caf\u{e9}.pdf"));
        // Case is kept (equality is exact; starts_with and fold_key are not).
        assert_ne!(p("/A"), p("/a"));
        assert_eq!(p("/A/B").fold_key(), p("/a/b").fold_key());
        assert_eq!(p("/A/B").fold_key(), "/a/b");
        assert_eq!(PortalPath::root().fold_key(), "/");
    }

    #[test]
    fn depth_limit() {
        let deep = "/d".repeat(MAX_DEPTH);
        assert_eq!(p(&deep).depth(), MAX_DEPTH);
        assert!(refused(&format!("{deep}/e")).contains("deep"));
        // Intermediate depth counts too.
        refused(&format!("{deep}/e/.."));
        assert!(p(&deep).join("e").is_err());
        assert_eq!(p(&deep).parent().map(|x| x.depth()), Some(MAX_DEPTH - 1));
        let names: Vec<String> = (0..=MAX_DEPTH).map(|i| format!("n{i}")).collect();
        assert!(PortalPath::from_segments(&names).is_err());
        assert_eq!(
            PortalPath::from_segments(&names[..MAX_DEPTH])
                .map(|x| x.depth())
                .ok(),
            Some(MAX_DEPTH)
        );
    }

    #[test]
    fn length_limit_on_input_and_on_canonical_form() {
        // Input: just at the limit parses; one byte more doesn't, whatever it holds.
        let seg = "a".repeat(127);
        let at_limit = format!("/{seg}").repeat(32);
        assert_eq!(at_limit.len(), MAX_PATH_BYTES);
        assert_eq!(p(&at_limit).to_string(), at_limit);
        assert!(refused(&format!("{at_limit}/")).contains("4096"));
        assert!(refused(&"/".repeat(MAX_PATH_BYTES + 1)).contains("4096"));
        // Huge input fails fast.
        let huge = "/..".repeat(10_000_000);
        let t = std::time::Instant::now();
        refused(&huge);
        assert!(
            t.elapsed() < std::time::Duration::from_millis(50),
            "{:?}",
            t.elapsed()
        );
        // from_segments checks the printed length too.
        let long = "b".repeat(255);
        let segs: Vec<&str> = std::iter::repeat_n(long.as_str(), 17).collect();
        assert!(PortalPath::from_segments(&segs).is_err());
        let sixteen = PortalPath::from_segments(&segs[..16]).unwrap();
        assert_eq!(sixteen.to_string().len(), MAX_PATH_BYTES);
        assert!(sixteen.join("c").is_err());
        let fifteen = PortalPath::from_segments(&segs[..15]).unwrap();
        assert!(fifteen.join(&long).is_ok());
        assert!(fifteen.join(&long).unwrap().join("c").is_err());
    }

    #[test]
    fn canonical_form_can_grow_past_the_limit_and_is_refused() {
        // U+0958 (3 bytes) has a composition exclusion: NFC turns it into two characters, 6 bytes.
        let seg: String = "\u{958}".repeat(40);
        assert_eq!(
            crate::names::canonical(&seg).map(|c| c.len()).ok(),
            Some(240)
        );
        let input = format!("/{seg}").repeat(32);
        assert!(input.len() <= MAX_PATH_BYTES);
        assert!(refused(&input).contains("4096"));
    }

    #[test]
    fn from_segments_join_parent_name() {
        let a = PortalPath::from_segments(["2026-001 Smith", "Client Documents"]).unwrap();
        assert_eq!(a.to_string(), "/2026-001 Smith/Client Documents");
        assert_eq!(a.depth(), 2);
        let b = a.join("Tax Return.pdf").unwrap();
        assert_eq!(b.parent(), Some(a.clone()));
        assert_eq!(b.name(), Some("Tax Return.pdf"));
        assert_eq!(p(&b.to_string()), b);
        for bad in ["a/b", ".", "..", "", "x\\y", "CON"] {
            assert!(a.join(bad).is_err(), "{bad:?}");
            assert!(PortalPath::from_segments(["ok", bad]).is_err(), "{bad:?}");
        }
        assert_eq!(
            PortalPath::from_segments(Vec::<String>::new()).ok(),
            Some(PortalPath::root())
        );
        assert_eq!(
            "/x/y".parse::<PortalPath>().ok(),
            PortalPath::from_segments(["x", "y"]).ok()
        );
    }

    #[test]
    fn starts_with_is_segment_wise_and_case_insensitive() {
        let doc = p("/Matter/Client Documents/a.pdf");
        assert!(doc.starts_with(&PortalPath::root()));
        assert!(doc.starts_with(&p("/matter")));
        assert!(doc.starts_with(&p("/MATTER/client documents")));
        assert!(doc.starts_with(&doc));
        assert!(p("/R\u{c9}SUM\u{c9}").starts_with(&p("/Re\u{301}sume\u{301}")));
        assert!(!doc.starts_with(&p("/Matt")));
        assert!(!doc.starts_with(&p("/Matter/Client")));
        assert!(!p("/Matter").starts_with(&doc));
        assert!(!PortalPath::root().starts_with(&p("/Matter")));
        assert!(!p("/ab").starts_with(&p("/a")));
    }

    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("..".to_string()),
            Just(".".to_string()),
            Just(String::new()),
            Just("%2e".to_string()),
            Just("%2e%2e".to_string()),
            Just("\\".to_string()),
            Just("\0".to_string()),
            Just("/".to_string()),
            Just("//".to_string()),
            Just("\u{2024}".to_string()),
            Just("\u{FF0E}".to_string()),
            Just("\u{2215}".to_string()),
            Just("\u{FF0F}".to_string()),
            Just("\u{301}".to_string()),
            Just(" ".to_string()),
            Just("CON".to_string()),
            Just("Matter".to_string()),
            Just("a".to_string()),
            Just("\u{958}".repeat(20)),
            Just("x".repeat(255)),
            any::<char>().prop_map(String::from),
            "\\PC{0,6}",
        ]
    }

    fn path_text() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::collection::vec(piece(), 0..60).prop_map(|v| v.concat()),
            2 => prop::collection::vec(piece(), 0..60).prop_map(|v| v.join("/")),
            1 => any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn parse_invariants(s in path_text()) {
            if let Ok(path) = PortalPath::parse(&s) {
                let named = s.split('/').filter(|x| !matches!(*x, "" | "." | "..")).count();
                prop_assert!(path.depth() <= named);
                prop_assert!(path.depth() <= MAX_DEPTH);
                for seg in path.segments() {
                    prop_assert!(!seg.contains('/'));
                    prop_assert_eq!(crate::names::canonical(seg).ok(), Some(seg.clone()));
                }
                let printed = path.to_string();
                prop_assert!(printed.len() <= MAX_PATH_BYTES);
                prop_assert!(printed.starts_with('/'));
                prop_assert!(path.is_root() || !printed.ends_with('/'));
                prop_assert_eq!(PortalPath::parse(&printed).ok(), Some(path.clone()));
                prop_assert_eq!(PortalPath::from_segments(path.segments()).ok(), Some(path.clone()));
                if let Some(parent) = path.parent() {
                    prop_assert!(path.starts_with(&parent));
                    prop_assert_eq!(parent.depth() + 1, path.depth());
                }
            }
        }
    }
}
