//! `sdx audit export` (JSON lines and CSV, with filters) and `sdx audit verify`, run against a
//! server that saw real WebDAV traffic; then a tampered trail makes verify fail.
mod cli_support;
use cli_support::*;
use serde_json::Value;

/// A strict RFC 4180 parser (quoted fields may hold commas, quotes and newlines).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                assert!(
                    field.is_empty(),
                    "a quote inside an unquoted field: {field}"
                );
                quoted = true;
            }
            ',' => row.push(std::mem::take(&mut field)),
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            c => field.push(c),
        }
    }
    assert!(!quoted, "unterminated quoted field");
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

fn export(d: &str, extra: &[&str]) -> String {
    let mut args = vec!["audit", "export", "--data", d];
    args.extend(extra);
    ok(&args)
}

#[test]
fn export_as_jsonl_and_csv_with_filters_then_verify_and_detect_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let d = data.to_str().unwrap();
    apply(&data, &dir.path().join("portal.toml"), PORTAL);
    let server = Server::start(&data, &[]);
    let name = "report, final (v2).txt";
    let doc = format!("{M1}/Client Documents/{name}");
    let url = server.url_of(&doc).replace('"', "%22").replace(',', "%2C");
    let src = dir.path().join("src.txt");
    std::fs::write(&src, "hello\n").unwrap();
    let put = curl(
        ALICE,
        ALICE_PW,
        &["-T", src.to_str().unwrap(), "-w", "%{http_code}", &url],
    );
    assert_eq!(String::from_utf8_lossy(&put.stdout), "201");
    let bad = curl(
        ALICE,
        "wrong password!",
        &["-o", "/dev/null", "-w", "%{http_code}", &server.url],
    );
    assert_eq!(String::from_utf8_lossy(&bad.stdout), "401");

    // JSON lines, through the running server.
    let jsonl = export(d, &["--format", "jsonl"]);
    let rows: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(rows.len() > 20, "{jsonl}");
    let seqs: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "oldest first: {seqs:?}"
    );
    let created = rows
        .iter()
        .find(|r| r["action"] == "create")
        .unwrap_or_else(|| panic!("no create entry: {jsonl}"));
    assert_eq!(created["channel"], "webdav");
    assert_eq!(created["matter"], "2026-001");
    assert_eq!(created["outcome"], "allowed");
    assert!(
        created["object"].as_str().unwrap().ends_with(name),
        "{created}"
    );
    assert!(created["time"].as_str().unwrap().ends_with('Z'));
    let alice_actor = created["actor"].as_str().unwrap().to_string();
    assert!(alice_actor.starts_with("portal:"), "{alice_actor}");
    let refused = rows
        .iter()
        .find(|r| r["action"] == "login" && r["outcome"] != "allowed")
        .unwrap_or_else(|| panic!("no failed login: {jsonl}"));
    assert_eq!(refused["object"], "login alice@client.test");
    assert_eq!(refused["channel"], "webdav");
    assert!(
        refused["remote"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );

    // CSV: the same entries (plus those the exports themselves added), fields intact.
    let csv = export(d, &["--format", "csv"]);
    let table = parse_csv(&csv);
    let header = &table[0];
    assert_eq!(header[0], "seq");
    assert_eq!(header.len(), 12);
    assert!(table.iter().all(|r| r.len() == 12), "ragged rows");
    assert!(table.len() > rows.len());
    for (json, csv) in rows.iter().zip(&table[1..]) {
        assert_eq!(csv[0], json["seq"].as_u64().unwrap().to_string());
        assert_eq!(csv[8], json["object"].as_str().unwrap());
        assert_eq!(csv[9], json["action"].as_str().unwrap());
    }

    // Filters.
    let by_matter = export(d, &["--format", "jsonl", "--matter", "2026-001"]);
    assert!(!by_matter.is_empty());
    for l in by_matter.lines() {
        let r: Value = serde_json::from_str(l).unwrap();
        assert_eq!(r["matter"], "2026-001", "{l}");
    }
    let by_user = export(d, &["--format", "jsonl", "--user", ALICE]);
    let n = by_user.lines().count();
    assert!(n >= 2, "alice logged in and uploaded: {by_user}");
    for l in by_user.lines() {
        let r: Value = serde_json::from_str(l).unwrap();
        assert_eq!(r["actor"], alice_actor.as_str(), "{l}");
    }
    let future = export(d, &["--format", "csv", "--since", "2999-01-01"]);
    assert_eq!(future.lines().count(), 1, "header only: {future}");
    let recent = export(d, &["--format", "jsonl", "--since", "1h"]);
    assert!(recent.lines().count() >= rows.len());
    let o = run(&[
        "audit",
        "export",
        "--data",
        d,
        "--format",
        "csv",
        "--since",
        "last week",
    ]);
    assert!(!o.status.success() && text(&o).contains("is not a time"));

    let v = ok(&["audit", "verify", "--data", d]);
    assert!(v.contains("audit trail intact"), "{v}");
    server.stop();

    // Delete entry 3 behind the portal's back: verify (both spellings) fails and says where.
    {
        let db = redb::Database::create(data.join("portal.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(sdx_portal::store::tables::AUDIT).unwrap();
            let key = sdx_portal::store::tables::ids(&[3]);
            assert!(t.remove(key.as_slice()).unwrap().is_some());
        }
        txn.commit().unwrap();
    }
    for args in [
        vec!["audit", "verify", "--data", d],
        vec!["audit-verify", "--data", d],
    ] {
        let o = run(&args);
        assert!(!o.status.success(), "{args:?} passed on a broken trail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("audit trail broken after 2 good entries: entry 3 is missing"),
            "{err}"
        );
    }
}
