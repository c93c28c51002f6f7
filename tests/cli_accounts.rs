//! Accounts through the built `sdx` binary, as an administrator and a client would use them:
//! `[mail]` / `[accounts]` / `[lockout]` from the config file, invitations mailed by `sdx apply`
//! and `sdx grant`, the accept page over HTTPS (curl with a cookie jar, CSRF), `sdx invite
//! list|resend`, and app passwords created, used over WebDAV and revoked with `sdx
//! app-password`.

mod cli_support;

use cli_support::*;
use std::path::Path;
use std::process::{Command, Stdio};

const CAROL: &str = "carol@client.test";
const CAROL_PW: &str = "violet harbour lantern seven";

/// [`PORTAL`] plus carol: a contact who takes part in nothing yet and has no login.
fn portal_with_carol() -> String {
    format!(
        "{PORTAL}\n[[contacts]]\nkey = \"carol\"\nname = \"Carol Client\"\nemail = \"{CAROL}\"\n"
    )
}

/// The mails in an outbox folder: (file name, raw text with quoted-printable soft breaks and
/// `=XX` escapes undone).
fn outbox(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let raw = std::fs::read_to_string(&f).unwrap();
            (
                f.file_name().unwrap().to_string_lossy().into_owned(),
                unqp(&raw),
            )
        })
        .collect()
}

fn unqp(s: &str) -> String {
    let s = s.replace("=\r\n", "").replace("=\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'='
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mails addressed to `to`.
fn mails_to(dir: &Path, to: &str) -> Vec<String> {
    outbox(dir)
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| m.contains(&format!("To: {to}\r\n")))
        .collect()
}

/// The first `https://…/invite/<token>` link in a mail.
fn invite_link(mail: &str) -> String {
    let i = mail.find("https://").expect("a link in the mail");
    let link: String = mail[i..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || ":/.-_".contains(*c))
        .collect();
    assert!(link.contains("/invite/"), "{link} in {mail}");
    let token = link.rsplit('/').next().unwrap();
    assert_eq!(token.len(), 43, "token of {link}");
    link
}

/// curl -k with a cookie jar; returns (status, body).
fn browser(jar: &Path, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-k",
            "--http1.1",
            "--max-time",
            "60",
            "-w",
            "\n%{http_code}",
        ])
        .args(["-b", jar.to_str().unwrap(), "-c", jar.to_str().unwrap()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl is required for this test");
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = s.rsplit_once('\n').unwrap_or(("", &s));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn csrf_of(page: &str) -> String {
    let k = "name=\"csrf\" value=\"";
    let i = page
        .find(k)
        .unwrap_or_else(|| panic!("no csrf field in {page}"));
    let rest = &page[i + k.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

fn form(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        let mut o = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                o.push(b as char);
            } else {
                o.push_str(&format!("%{b:02X}"));
            }
        }
        o
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The HTTP status of a PROPFIND as `user`.
fn status_as(user: &str, pass: &str, url: &str) -> u16 {
    let o = curl(
        user,
        pass,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "PROPFIND",
            "-H",
            "Depth: 1",
            url,
        ],
    );
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn grant_mails_an_invitation_whose_accept_page_makes_a_working_login() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let cfg = dir.path().join("sdx.toml");
    std::fs::write(
        &cfg,
        "[mail]\ntransport = \"outbox\"\ndir = \"mail\"\nfrom = \"Demo & Co <portal@demo.test>\"\n\
         [accounts]\nfirm_name = \"Demo & Co\"\n",
    )
    .unwrap();
    let (d, c) = (data.to_str().unwrap(), cfg.to_str().unwrap());
    let mail = dir.path().join("mail");

    // `apply` with no server running: bob (portal = true, no login) is invited by mail.
    let file = dir.path().join("portal.toml");
    write_private(&file, &portal_with_carol());
    let out = ok(&["apply", "--data", d, "--config", c, file.to_str().unwrap()]);
    assert!(!out.contains("not mailed"), "{out}");
    let bob = mails_to(&mail, "bob@jones.test");
    assert_eq!(bob.len(), 1, "{:?}", outbox(&mail));
    assert!(bob[0].contains("Demo & Co"), "{}", bob[0]);
    // Without a server (and without [accounts] public_url) links name the configured listen
    // address: the default one here.
    let bob_link = invite_link(&bob[0]);
    assert!(
        bob_link.starts_with("https://127.0.0.1:8443/invite/"),
        "{bob_link}"
    );

    let server = Server::start(&data, &["--config", c]);
    assert!(
        server
            .printed
            .iter()
            .any(|l| l.starts_with("Mail: written to") && l.contains(mail.to_str().unwrap())),
        "{:?}",
        server.printed
    );
    // The links name the address actually served.
    let base = server.url.trim_end_matches("/dav/").to_string();
    let bob_link = format!("{base}/invite/{}", bob_link.rsplit('/').next().unwrap());

    // `sdx grant` through the running server: carol gets an invitation mail.
    let out = ok(&[
        "grant",
        "--data",
        d,
        "--matter",
        "2026-001",
        "--contact",
        CAROL,
        "--type",
        "Client",
    ]);
    assert!(
        out.contains("invitation to create a login was mailed"),
        "{out}"
    );
    let carol = mails_to(&mail, CAROL);
    assert_eq!(carol.len(), 1, "{:?}", outbox(&mail));
    let link = invite_link(&carol[0]);
    assert!(
        link.starts_with(&format!("{base}/invite/")),
        "{link} vs {base}"
    );
    // No login works yet.
    assert_eq!(status_as(CAROL, CAROL_PW, &server.url), 401);

    // The accept page: GET the form (sets the CSRF cookie), POST it back with the cookie.
    let jar = dir.path().join("jar");
    let (st, page) = browser(&jar, &[&link]);
    assert_eq!(st, 200, "{page}");
    assert!(page.contains("Demo &amp; Co"), "{page}");
    let csrf = csrf_of(&page);
    // The same form without the cookie is refused.
    let other_jar = dir.path().join("other-jar");
    let (st, _) = browser(
        &other_jar,
        &[
            "--data-raw",
            &form(&[
                ("csrf", &csrf),
                ("password", CAROL_PW),
                ("confirm", CAROL_PW),
            ]),
            &link,
        ],
    );
    assert_eq!(st, 403);
    let (st, page) = browser(
        &jar,
        &[
            "--data-raw",
            &form(&[
                ("csrf", &csrf),
                ("password", CAROL_PW),
                ("confirm", CAROL_PW),
            ]),
            &link,
        ],
    );
    assert_eq!(st, 200, "{page}");
    assert!(page.contains("is ready"), "{page}");
    assert!(
        page.contains(&server.url),
        "the page shows the WebDAV URL: {page}"
    );
    // The link is single-use.
    let (st, _) = browser(&jar, &[&link]);
    assert_eq!(st, 410);

    // The new login lists its matter over WebDAV.
    let body = propfind(CAROL, CAROL_PW, &server.url);
    assert!(
        body.contains("Smith%20v%20Jones") || body.contains("Smith v Jones"),
        "{body}"
    );

    // `sdx invite list`: carol's accepted, bob's pending; resend gives bob a new link and
    // kills the old one.
    let list = ok(&["invite", "list", "--data", d, "--json"]);
    let rows: Vec<serde_json::Value> = list
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let state_of = |email: &str| {
        rows.iter()
            .find(|r| r["email"] == email)
            .map(|r| r["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state_of(CAROL).as_deref(), Some("accepted"), "{list}");
    assert_eq!(
        state_of("bob@jones.test").as_deref(),
        Some("pending"),
        "{list}"
    );
    let out = ok(&[
        "invite",
        "resend",
        "--data",
        d,
        "--contact",
        "bob@jones.test",
    ]);
    assert!(out.contains("re-sent invitation"), "{out}");
    let bob = mails_to(&mail, "bob@jones.test");
    assert_eq!(bob.len(), 2);
    let new_link = invite_link(&bob[1]);
    assert_ne!(new_link, bob_link);
    let (st, _) = browser(&jar, &[&bob_link]);
    assert_eq!(st, 410, "the old link is dead");
    let (st, _) = browser(&jar, &[&new_link]);
    assert_eq!(st, 200);
    // Revoked: the new link stops working too.
    let out = ok(&[
        "invite",
        "revoke",
        "--data",
        d,
        "--contact",
        "bob@jones.test",
    ]);
    assert!(out.contains("revoked invitation"), "{out}");
    let (st, _) = browser(&jar, &[&new_link]);
    assert_eq!(st, 410);
    // An accepted invitation can't be re-sent; the error is one line.
    let o = run(&["invite", "resend", "--data", d, "--contact", CAROL]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("no invitation that is not accepted"), "{e}");
    server.stop();

    // The audit trail holds the invitation's life.
    let audit = ok(&["audit", "export", "--data", d, "--format", "jsonl"]);
    for action in [
        "invitation_accept",
        "resend_invitation",
        "revoke_invitation",
    ] {
        assert!(
            audit.contains(action),
            "{action} missing from the audit export"
        );
    }
}

#[test]
fn app_passwords_work_until_revoked_and_lockout_comes_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let data = init(dir.path());
    let d = data.to_str().unwrap();
    let cfg = dir.path().join("sdx.toml");
    std::fs::write(
        &cfg,
        "[lockout]\nper_login = { free_failures = 0, base_delay_ms = 0, max_delay_ms = 0, block_after = 3, block_secs = 600 }\n",
    )
    .unwrap();
    // No [mail]: bob's invitation is recorded but not mailed, and apply says so.
    let out = apply(&data, &dir.path().join("portal.toml"), PORTAL);
    assert!(
        out.contains("bob@jones.test") && out.contains("not mailed: `sdx invite resend"),
        "{out}"
    );
    assert!(
        !data.join("outbox").exists(),
        "no plaintext outbox in the data dir"
    );

    let server = Server::start(&data, &["--config", cfg.to_str().unwrap()]);
    assert!(
        server
            .printed
            .iter()
            .any(|l| l.starts_with("Mail: not sent")),
        "{:?}",
        server.printed
    );
    let o = run(&[
        "app-password",
        "create",
        "--data",
        d,
        "--user",
        ALICE,
        "--name",
        "office laptop",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let secret = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(
        secret.lines().count(),
        1,
        "only the secret on stdout: {secret}"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("shown only this once"));
    assert_ne!(secret, ALICE_PW);

    let body = propfind(ALICE, &secret, &server.url);
    assert!(
        body.contains("Smith"),
        "the app password lists alice's matter: {body}"
    );

    let list = ok(&[
        "app-password",
        "list",
        "--data",
        d,
        "--user",
        ALICE,
        "--json",
    ]);
    assert!(!list.contains(&secret), "a list never shows the secret");
    let row: serde_json::Value = serde_json::from_str(list.lines().next().unwrap()).unwrap();
    assert_eq!(row["name"], "office laptop");
    let id = row["id"].as_u64().unwrap().to_string();
    let o = run(&["app-password", "revoke", "--data", d, "--user", ALICE, &id]);
    assert!(o.status.success(), "{}", text(&o));
    // Refused from the next request on (the server drops cached logins on any credential
    // change within 50 ms; allow for a slow machine).
    let mut st = 0;
    for _ in 0..40 {
        st = status_as(ALICE, &secret, &server.url);
        if st == 401 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(st, 401, "revoked: refused");
    assert_eq!(
        status_as(ALICE, ALICE_PW, &server.url),
        207,
        "the password still works"
    );
    // Revoking again is an error that says where to look.
    let o = run(&["app-password", "revoke", "--data", d, "--user", ALICE, &id]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no app password"));

    // [lockout] (block a login after 3 failures, default is 5): then even the right password
    // is refused with 429. Sam's login was not used yet (no cached success).
    let sam = "sam@demo.test";
    for _ in 0..3 {
        let st = status_as(sam, "wrong password here!", &server.url);
        assert!(st == 401 || st == 429, "{st}");
    }
    assert_eq!(
        status_as(sam, "sam's staff passphrase", &server.url),
        429,
        "blocked by [lockout] after 3 failures"
    );
    server.stop();
}
