//! `sdx apply` as a user runs it: declarative and idempotent, on a data dir no server holds and
//! through a running server's admin socket.
mod cli_support;
use cli_support::*;

fn sorted_changes(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with(['+', '~', '-']))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn apply_twice_is_a_noop_and_a_changed_file_applies_only_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let d = data.to_str().unwrap();
    let file = dir.path().join("portal.toml");

    // The complete example from the repository.
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/portal.toml"))
            .unwrap();
    let first = apply(&data, &file, &example);
    assert!(
        first.contains("+ matter 2026-001 \"Smith v Jones\" (General)"),
        "{first}"
    );
    assert!(
        first.contains("+ staff login pat@demo.test (Pat Partner)"),
        "{first}"
    );
    assert!(
        first.contains("+ portal access for erin@expert.test (Expert) in 2026-001 (invitation to create a login)"),
        "{first}"
    );
    let n = sorted_changes(&first).len();
    assert!(first.contains(&format!("{n} change(s) applied")), "{first}");

    let second = apply(&data, &file, &example);
    assert!(sorted_changes(&second).is_empty(), "{second}");
    assert!(
        second.contains("no changes: the portal already matches"),
        "{second}"
    );

    // Edit: a permission, a title, a password, a participant's access, a new contact and grant,
    // a closed matter.
    let edited = example
        .replace(
            "\"Other Side\" = [\"list\", \"read\"]\n",
            "\"Other Side\" = [\"list\"]\n",
        )
        .replace(
            "title = \"Smith estate\"",
            "title = \"Smith estate (2026)\"",
        )
        .replace(
            "sam's staff passphrase, not for production",
            "sam's new staff passphrase",
        )
        .replace(
            "{ contact = \"erin\", type = \"Expert\", portal = true }",
            "{ contact = \"erin\", type = \"Expert\", portal = false }",
        )
        + r#"
[[contacts]]
key = "carol"
name = "Carol Counsel"
email = "carol@counsel.test"

[[matters]]
number = "2026-003"
title = "Old file"
matter_type = "General"
closed = true
participants = [ { contact = "carol", type = "Other Side" } ]
"#;
    // The dry run reports the same as the real run and changes nothing.
    write_private(&file, &edited);
    let dry = ok(&["apply", "--data", d, file.to_str().unwrap(), "--dry-run"]);
    assert!(dry.contains("(dry run: nothing changed)"), "{dry}");
    let real = apply(&data, &file, &edited);
    assert_eq!(sorted_changes(&dry), sorted_changes(&real));
    assert_eq!(
        sorted_changes(&real),
        [
            "+ contact Carol Counsel <carol@counsel.test>",
            "+ matter 2026-003 \"Old file\" (General)",
            "+ participant carol@counsel.test (Other Side) in 2026-003",
            "- portal access for erin@expert.test (Expert) in 2026-001",
            "~ login sam@demo.test: password set",
            "~ matter 2026-002: title \"Smith estate (2026)\" (was \"Smith estate\")",
            "~ matter 2026-003: closed",
            "~ matter type \"General\": \"Client Documents\" for Other Side: list (was list, read)",
        ]
    );
    let third = apply(&data, &file, &edited);
    assert!(sorted_changes(&third).is_empty(), "{third}");

    // The listings show the result.
    let matters = ok(&["matter", "list", "--data", d, "--json"]);
    let rows: Vec<serde_json::Value> = matters
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{matters}");
    let m2 = rows.iter().find(|r| r["number"] == "2026-002").unwrap();
    assert_eq!(m2["title"], "Smith estate (2026)");
    let m3 = rows.iter().find(|r| r["number"] == "2026-003").unwrap();
    assert_eq!(m3["closed"], true);
    let m1 = rows.iter().find(|r| r["number"] == "2026-001").unwrap();
    assert_eq!(m1["portal_access"], 1, "only alice keeps access: {matters}");
    let users = ok(&["user", "list", "--data", d]);
    assert!(users.contains("sam@demo.test"), "{users}");
    assert!(users.contains("alice@client.test"), "{users}");
    assert!(
        !users.contains("erin@expert.test"),
        "erin has no login yet: {users}"
    );
}

#[test]
fn a_bad_portal_file_names_its_line_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let d = data.to_str().unwrap();
    let file = dir.path().join("portal.toml");
    let bad = PORTAL.replace(
        "{ contact = \"bob\", type = \"Other Side\", portal = true },",
        "{ contact = \"bob\", type = \"Opponent\", portal = true },",
    );
    write_private(&file, &bad);
    let o = run(&["apply", "--data", d, file.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let line = bad.lines().position(|l| l.contains("Opponent")).unwrap() + 1;
    assert!(
        err.contains(&format!(
            "portal.toml line {line}: participant type \"Opponent\""
        )),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let matters = ok(&["matter", "list", "--data", d, "--json"]);
    assert!(matters.trim().is_empty(), "{matters}");
}

#[test]
fn apply_reaches_a_running_server_and_revocation_is_immediate() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let d = data.to_str().unwrap();
    let file = dir.path().join("portal.toml");
    let server = Server::start(&data, &[]);
    // The data dir is held by the server: this goes through DATA/admin.sock.
    let status = ok(&["status", "--data", d]);
    assert!(status.contains("serving"), "{status}");
    let out = apply(&data, &file, PORTAL);
    assert!(out.contains("change(s) applied"), "{out}");
    let body = propfind(ALICE, ALICE_PW, &server.url);
    assert!(body.contains("2026-001"), "{body}");

    // Alice leaves the file: her access ends at once, on the running server.
    let without = PORTAL.replace(
        "{ contact = \"alice\", type = \"Client\", portal = true },",
        "",
    );
    let out = apply(&data, &file, &without);
    assert_eq!(
        sorted_changes(&out),
        ["- portal access for alice@client.test (Client) in 2026-001: not in the file"]
    );
    let body = propfind(ALICE, ALICE_PW, &server.url);
    assert!(!body.contains("2026-001"), "{body}");
    // Admin commands on the running server.
    let out = ok(&[
        "grant",
        "--data",
        d,
        "--matter",
        "2026-001",
        "--contact",
        ALICE,
    ]);
    assert!(out.contains("granted alice@client.test (Client)"), "{out}");
    assert!(propfind(ALICE, ALICE_PW, &server.url).contains("2026-001"));
    let o = run(&["matter", "close", "--data", d, "2026-001"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("revoke their access first"),
        "{}",
        text(&o)
    );
    server.stop();
    // Without the server, the same command opens the data dir itself.
    let status = run(&["status", "--data", d]);
    assert!(!status.status.success());
    assert!(text(&status).contains("no server is running"));
    let out = ok(&[
        "revoke",
        "--data",
        d,
        "--matter",
        "2026-001",
        "--contact",
        ALICE,
    ]);
    assert!(
        out.contains("revoked the portal access of alice@client.test"),
        "{out}"
    );
}
