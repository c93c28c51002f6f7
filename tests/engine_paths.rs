//! Issue 2, path rule: no path string, however built, lets a portal user reach anything outside
//! their tree. Property-tested with proptest over paths made of traversal segments, encodings,
//! separators, other matters' names, Unicode look-alikes and random text.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sdx_portal::model::*;
use sdx_portal::tree::{Entry, EntryKind, WriteOptions};
use std::collections::HashSet;

const M1: &str = "2026-001 Smith v Jones";
const M2: &str = "2026-002 Secret Case";

struct Env {
    fx: Fx,
    /// Cases whose stat succeeded (the property is only interesting when some do).
    hits: std::sync::atomic::AtomicU64,
    /// Of those, documents.
    doc_hits: std::sync::atomic::AtomicU64,
    user: User,
    m1: MatterId,
    m2: MatterId,
    /// Documents the user must never reach (other matter, non-portal folder).
    forbidden_docs: HashSet<DocumentId>,
    /// Names no folder or matter the user sees may have.
    forbidden_names: Vec<&'static str>,
}

async fn setup() -> Env {
    let fx = Fx::new().await;
    fx.set_perms(fx.general, CD, fx.client, Permissions::FULL)
        .await;
    let (m1, p1) = fx.matter("2026-001", "Smith v Jones", fx.general).await;
    let (m2, p2) = fx.matter("2026-002", "Secret Case", fx.general).await;
    assert_eq!(
        (p1.as_str(), p2.as_str()),
        (&*format!("/{M1}"), &*format!("/{M2}"))
    );
    let user = fx
        .user("Carol", "carol@client.test", m1, fx.client, true)
        .await;
    // Someone else has access to the second matter (so it is a live portal matter).
    fx.user("Otto", "otto@other.test", m2, fx.client, true)
        .await;
    let staff = fx.staff_tree();
    let mut forbidden_docs = HashSet::new();
    for (p, name) in [
        (format!("{p2}/{CD}/m2-doc.txt"), "m2-doc.txt"),
        (format!("{p2}/Internal/secret.txt"), "secret.txt"),
        (format!("{p1}/Internal/secret.txt"), "secret.txt"),
        (
            format!("{p1}/{CD}/Tax Returns/hidden-tax.txt"),
            "hidden-tax.txt",
        ),
        (
            format!("{p2}/{CD}/Tax Returns/hidden-tax.txt"),
            "hidden-tax.txt",
        ),
    ] {
        let e = put(&staff, &p, name.as_bytes()).await.expect("seed");
        forbidden_docs.insert(e.document.expect("doc"));
    }
    put(&staff, &format!("{p1}/{CD}/mine.txt"), b"mine")
        .await
        .expect("seed");
    Env {
        fx,
        hits: Default::default(),
        doc_hits: Default::default(),
        user,
        m1,
        m2,
        forbidden_docs,
        forbidden_names: vec!["Internal", "Tax Returns", M2],
    }
}

impl Env {
    fn check_entry(&self, what: &str, path: &str, e: &Entry) -> Result<(), TestCaseError> {
        let ctx = format!("{what} {:?} gave {e:?}", path);
        if e.kind == EntryKind::Root {
            prop_assert!(e.matter.is_none(), "{}", ctx);
        } else {
            prop_assert_eq!(e.matter, Some(self.m1), "{}", ctx);
        }
        prop_assert_ne!(e.matter, Some(self.m2), "{}", ctx);
        if let Some(d) = e.document {
            prop_assert!(!self.forbidden_docs.contains(&d), "{}", ctx);
        }
        // The user may well create documents with any of these names in their own folder; what
        // must never show is a folder or matter by these names.
        if e.kind != EntryKind::Document {
            for n in &self.forbidden_names {
                prop_assert!(!e.name.eq_ignore_ascii_case(n), "{}", ctx);
            }
        }
        Ok(())
    }

    async fn check(&self, path: String) -> Result<(), TestCaseError> {
        let t = self.user.tree(&self.fx.portal);
        let st = t.stat(&path).await;
        if std::env::var("SDX_PATH_DEBUG").is_ok() {
            eprintln!(
                "{:?} -> {}",
                path,
                match &st {
                    Ok(e) => format!("{:?}", e.kind),
                    Err(e) => e.kind().to_string(),
                }
            );
        }
        if let Ok(e) = st {
            self.check_entry("stat", &path, &e)?;
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if e.kind == EntryKind::Document {
                self.doc_hits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if let Ok(list) = t.list(&path).await {
            for e in &list {
                self.check_entry("list", &path, e)?;
            }
        }
        if let Ok(mut h) = t.open_read(&path).await {
            self.check_entry("open_read", &path, h.entry())?;
            let b = h
                .read_at(0, 64)
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let seeded = ["m2-doc.txt", "secret.txt", "hidden-tax.txt"];
            prop_assert!(
                !seeded.iter().any(|n| b.as_ref() == n.as_bytes()),
                "open_read {:?} read a forbidden document",
                path
            );
        }
        let w = t
            .open_write(
                &path,
                WriteOptions {
                    truncate: true,
                    create_new: true,
                },
            )
            .await;
        if let Ok(mut up) = w {
            up.write(b"probe")
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            if let Ok(e) = up.commit().await {
                self.check_entry("open_write", &path, &e)?;
            }
        }
        Ok(())
    }

    /// After the run: the other matter and the hidden folders hold exactly what was seeded.
    async fn check_untouched(&self) {
        let staff = self.fx.staff_tree();
        let docs_in = |p: String| {
            let staff = staff.clone();
            async move {
                staff
                    .list(&p)
                    .await
                    .expect("staff list")
                    .into_iter()
                    .filter(|e| e.kind == EntryKind::Document)
                    .map(|e| e.name)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(docs_in(format!("/{M2}/{CD}")).await, vec!["m2-doc.txt"]);
        assert_eq!(docs_in(format!("/{M2}/Internal")).await, vec!["secret.txt"]);
        assert_eq!(docs_in(format!("/{M1}/Internal")).await, vec!["secret.txt"]);
        assert_eq!(
            docs_in(format!("/{M1}/{CD}/Tax Returns")).await,
            vec!["hidden-tax.txt"]
        );
        let m2_trash = self.fx.portal.trash(&self.fx.staff, self.m2).await.unwrap();
        assert!(m2_trash.is_empty());
        let m2_user_activity = self
            .fx
            .audit_of(self.user.login)
            .await
            .into_iter()
            .filter(|e| e.matter == Some(self.m2))
            .count();
        assert_eq!(
            m2_user_activity, 0,
            "nothing the user did resolved into the other matter"
        );
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn segment() -> impl Strategy<Value = String> {
    // Names that exist somewhere, in several spellings.
    let names = strings(&[
        M1,
        M2,
        "2026-002 SECRET CASE",
        "2026-002 secret case",
        "2026-002 Secret Case ",
        "2026-002\u{a0}Secret Case",
        "2026-002 Secret Cas\u{e9}",
        "Client Documents",
        "client documents",
        "CLIENT DOCUMENTS",
        "Internal",
        "internal",
        "Tax Returns",
        "tax returns",
        "secret.txt",
        "m2-doc.txt",
        "hidden-tax.txt",
        "mine.txt",
        "Mine.TXT",
        "new.txt",
    ]);
    // Traversal in every spelling we could think of.
    let traversal = strings(&[
        "..",
        ".",
        "",
        "...",
        "%2e%2e",
        "%2E%2E",
        "%2e",
        "%2f",
        "%2F",
        "%5c",
        "%00",
        "..%2f",
        ".. ",
        " ..",
        "..\u{200b}",
        "\u{2024}\u{2024}",
        "\u{ff0e}\u{ff0e}",
        "\u{fe52}\u{fe52}",
        "~",
    ]);
    // Separators and look-alikes inside a segment, and other junk.
    let weird = strings(&[
        "\\", "..\\..", "..\\", "\0", "/", "//", "\u{2215}", "\u{ff0f}", "\u{29f8}", "\u{2044}",
        "*", "?", "C:", "\u{202e}", "CON", "a\u{301}",
    ]);
    prop_oneof![
        12 => prop::sample::select(names),
        8 => prop::sample::select(traversal),
        1 => prop::sample::select(weird),
        1 => "[a-z.%]{240,270}",
        1 => prop_oneof!["\\PC{0,12}", any::<String>().prop_map(|s| s.chars().take(40).collect())],
    ]
}

/// Paths that start somewhere real, wander with traversal segments and aim at a target: the shape
/// an escape attempt takes.
fn aimed_path() -> impl Strategy<Value = String> {
    let start = prop::sample::select(vec![
        String::new(),
        format!("/{M1}"),
        format!("/{M1}/{CD}"),
        format!("/{M1}/{CD}/mine.txt"),
    ]);
    let wander = prop::sample::select(strings(&[
        "..",
        ".",
        "",
        "%2e%2e",
        "...",
        ". .",
        "..\u{200b}",
        "\u{ff0e}\u{ff0e}",
        "\u{2024}\u{2024}",
        CD,
    ]));
    let target = prop::sample::select(vec![
        String::new(),
        M2.to_string(),
        format!("{M2}/{CD}"),
        format!("{M2}/{CD}/m2-doc.txt"),
        format!("{M2}/Internal/secret.txt"),
        format!("{}/{CD}/M2-DOC.TXT", M2.to_lowercase()),
        format!("{M1}/Internal"),
        format!("{M1}/Internal/secret.txt"),
        format!("{M1}/{CD}/Tax Returns/hidden-tax.txt"),
        format!("{CD}/Tax Returns"),
        "Internal/secret.txt".to_string(),
        "Tax Returns/hidden-tax.txt".to_string(),
        "mine.txt".to_string(),
        "fresh.txt".to_string(),
    ]);
    let sep = prop::sample::select(vec!["/", "/", "/", "//", "/./"]);
    (
        start,
        prop::collection::vec((sep.clone(), wander), 0..5),
        sep,
        target,
    )
        .prop_map(|(start, parts, sep, target)| {
            let mut s = start;
            for (sp, w) in parts {
                s.push_str(sp);
                s.push_str(&w);
            }
            s.push_str(sep);
            s.push_str(&target);
            s
        })
}

fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![random_path(), aimed_path()]
}

fn random_path() -> impl Strategy<Value = String> {
    let sep = prop_oneof![
        16 => Just("/"),
        2 => Just("//"),
        1 => Just("\\"),
        1 => Just("/./"),
        1 => Just("/../"),
    ];
    // Half the paths start somewhere real, so they get deep enough to matter.
    let prefix = prop::sample::select(vec![
        String::new(),
        String::new(),
        String::new(),
        format!("/{M1}"),
        format!("/{M1}/{CD}"),
        format!("/{M1}/{CD}/Tax Returns"),
        format!("/{M1}/Internal"),
        format!("/{M2}"),
        format!("/{M2}/{CD}"),
    ]);
    (
        prefix,
        prop::collection::vec((sep, segment()), 0..6),
        prop::sample::select(vec!["/", "", "//", "\\", "./", "../"]),
        any::<bool>(),
    )
        .prop_map(|(prefix, parts, lead, trailing)| {
            let mut s = if prefix.is_empty() {
                lead.to_string()
            } else {
                prefix
            };
            for (sep, seg) in parts {
                s.push_str(sep);
                s.push_str(&seg);
            }
            if trailing {
                s.push('/');
            }
            s
        })
}

#[test]
fn no_path_string_resolves_outside_the_principals_tree() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let env = rt.block_on(setup());
    let cases: u32 = std::env::var("SDX_PATH_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&any_path(), |p| rt.block_on(env.check(p)));
    if let Err(e) = result {
        panic!("{e}");
    }
    let hits = env.hits.load(std::sync::atomic::Ordering::Relaxed);
    let doc_hits = env.doc_hits.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{cases} paths: {hits} resolved for the user, {doc_hits} of them documents");
    rt.block_on(env.check_untouched());
}

#[test]
fn known_traversal_attempts_stay_inside() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let env = rt.block_on(setup());
    let t = env.user.tree(&env.fx.portal);
    let attempts = [
        format!("/{M1}/{CD}/../../{M2}/{CD}/m2-doc.txt"),
        format!("/{M1}/../{M2}"),
        format!("/../../{M2}/{CD}"),
        format!("{M2}/{CD}/m2-doc.txt"),
        format!("/{M1}/{CD}/..\\..\\{M2}\\{CD}\\m2-doc.txt"),
        format!("/{M1}/{CD}/%2e%2e/%2e%2e/{M2}"),
        format!("/{M1}/Internal/secret.txt"),
        format!("/{M1}/{CD}/../Internal/secret.txt"),
        format!("/{M1}/{CD}/Tax Returns/hidden-tax.txt"),
        format!("/{M1}/{CD}/./Tax Returns/./hidden-tax.txt"),
        format!("//{M2}//{CD}//m2-doc.txt"),
        format!("/{}/{CD}/m2-doc.txt", M2.to_uppercase()),
    ];
    rt.block_on(async {
        for a in &attempts {
            for (what, r) in [
                ("stat", t.stat(a).await.map(|e| vec![e])),
                ("list", t.list(a).await),
                (
                    "read",
                    t.open_read(a).await.map(|h| vec![h.entry().clone()]),
                ),
            ] {
                if let Ok(entries) = r {
                    for e in &entries {
                        env.check_entry(what, a, e).expect("stays inside");
                    }
                }
            }
        }
        // `..` at the top stays at the top: it lists the user's own matter only.
        let top = t
            .list(&format!("/../../..{}", "/..".repeat(40)))
            .await
            .unwrap();
        assert_eq!(names(&top), vec![M1.to_string()]);
        // Documents in the user's own folder are reachable through `..` spellings that stay inside.
        let e = t
            .stat(&format!("/{M1}/{CD}/../{CD}/./mine.txt"))
            .await
            .unwrap();
        assert_eq!(e.matter, Some(env.m1));
        env.check_untouched().await;
    });
}
