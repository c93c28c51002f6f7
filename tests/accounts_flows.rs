//! Accounts end to end: invitations, the accept and reset pages, app passwords, lockout and
//! notifications, driven through the real servers on loopback with curl (WebDAV and pages) and
//! paramiko (SFTP).
//!
//! Needs curl; the SFTP checks need python3 with paramiko (skipped with a message when missing,
//! a failure under `CI=true`).

mod accounts_support;

use accounts_support::*;
use sdx_portal::accounts::notify::Notifier;
use sdx_portal::accounts::templates::BatchConfig;
use sdx_portal::accounts::throttle::{Limits, ThrottleConfig};
use sdx_portal::audit::Outcome;
use sdx_portal::model::*;
use sdx_portal::portal::invitations::LinkError;
use sdx_portal::store::records::{InvitationKind, InvitationStatus};
use sdx_portal::tree::WriteOptions;
use sdx_portal::{Error, Portal};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

fn allowed(o: &Outcome) -> bool {
    matches!(o, Outcome::Allowed)
}

async fn put(portal: &Portal, actor: &Actor, path: &str, data: &[u8]) {
    let t = portal.tree(actor.clone());
    let mut up = t
        .open_write(path, WriteOptions::upload())
        .await
        .expect("open_write");
    up.write(data).await.expect("write");
    up.commit().await.expect("commit");
}

/// Accepts a "create your login" invitation through the page: GET, then POST the form.
fn accept_with_password(base: &str, token: &str, pw: &str) -> Http {
    let url = format!("{base}/invite/{token}");
    let b = Browser::new();
    let page = b.get(&url);
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = csrf_field(&page.body);
    b.post(&url, &[("csrf", &csrf), ("password", pw), ("confirm", pw)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_contact_invite_accept_then_webdav_and_sftp() {
    let env = Env::start(Opts::default()).await; // file outbox in DATA/outbox
    let (m, mname) = env.matter("2026-301", "Smith v Jones").await;
    let (c, p) = env
        .contact_on("Alice Client", "alice@client.test", m, env.client)
        .await;
    let g = env.portal.grant_access(&env.staff, m, p).await.unwrap();
    assert!(g.granted && g.mailed, "{g:?}");
    assert_eq!(g.invitation_kind, Some(InvitationKind::NewLogin));

    // One "create your login" mail in the outbox, with the firm, the matter and the link.
    let mails = env.mails_to("alice@client.test");
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let mail = &mails[0];
    assert_eq!(
        mail.subject,
        "Dewey & Partners has invited you to its secure document portal"
    );
    assert!(
        mail.text.contains("2026-301 Smith v Jones"),
        "{}",
        mail.text
    );
    let token = token_in(&mail.text, "/invite/");
    let url = format!("{}/invite/{token}", env.base);
    assert!(mail.text.contains(&url));
    assert!(mail.html.contains(&format!("href=\"{url}\"")));
    // Only the token's hash is stored: the database file never holds its text.
    let db = std::fs::read(env.dir.path().join("portal.redb")).unwrap();
    assert!(
        !db.windows(token.len()).any(|w| w == token.as_bytes()),
        "the token is stored in the clear"
    );
    // Not a login yet.
    assert!(matches!(
        env.portal
            .authenticate_password("alice@client.test", GOOD_PW)
            .await,
        Err(Error::AuthenticationFailed)
    ));

    let base = env.base.clone();
    let (sftp_port, dav) = (env.sftp_port, env.dav());
    let (u, t) = (url.clone(), token.clone());
    block_in_place(move || {
        let b = Browser::new();
        let page = b.get(&u);
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("Create your login"));
        assert!(page.body.contains("alice@client.test"));
        assert!(!page.body.contains("<script"), "no JavaScript");
        let h = page.headers.to_ascii_lowercase();
        assert!(h.contains("set-cookie: sdx_csrf="), "{h}");
        assert!(
            h.contains("samesite=strict") && h.contains("httponly"),
            "{h}"
        );
        assert!(h.contains("referrer-policy: no-referrer"), "{h}");
        assert!(h.contains("cache-control: no-store"), "{h}");
        let csrf = csrf_field(&page.body);

        // CSRF: the right field without the browser's cookie, or a forged field, is refused.
        let r = Browser::new().post(
            &u,
            &[("csrf", &csrf), ("password", GOOD_PW), ("confirm", GOOD_PW)],
        );
        assert_eq!(r.status, 403, "{}", r.body);
        let r = b.post(
            &u,
            &[
                ("csrf", "forged"),
                ("password", GOOD_PW),
                ("confirm", GOOD_PW),
            ],
        );
        assert_eq!(r.status, 403, "{}", r.body);
        // A cross-site POST with the cookie (as a browser would send without SameSite) too.
        let jar_cookie = page
            .headers
            .lines()
            .find_map(|l| {
                l.strip_prefix("set-cookie: ")
                    .or_else(|| l.strip_prefix("Set-Cookie: "))
            })
            .and_then(|c| c.split(';').next())
            .unwrap()
            .to_owned();
        let r = curl(&[
            "-H",
            &format!("Cookie: {jar_cookie}"),
            "-H",
            "Origin: https://evil.example",
            "--data-raw",
            &format!(
                "csrf={}&password={}&confirm={}",
                enc(&csrf),
                enc(GOOD_PW),
                enc(GOOD_PW)
            ),
            &u,
        ]);
        assert_eq!(r.status, 403, "{}", r.body);

        // NIST rules: re-rendered with the reason, no composition rules.
        let r = b.post(
            &u,
            &[("csrf", &csrf), ("password", "short"), ("confirm", "short")],
        );
        assert_eq!(r.status, 400);
        assert!(r.body.contains("use at least 12"), "{}", r.body);
        assert!(
            r.body.contains("name=\"password\""),
            "the form is shown again"
        );
        let r = b.post(
            &u,
            &[
                ("csrf", &csrf),
                ("password", "qwerty123456"),
                ("confirm", "qwerty123456"),
            ],
        );
        assert_eq!(r.status, 400);
        assert!(r.body.contains("too common"), "{}", r.body);
        let r = b.post(
            &u,
            &[
                ("csrf", &csrf),
                ("password", "alice client 2026"),
                ("confirm", "alice client 2026"),
            ],
        );
        assert_eq!(r.status, 400);
        assert!(r.body.contains("must not contain your name"), "{}", r.body);
        let r = b.post(
            &u,
            &[
                ("csrf", &csrf),
                ("password", GOOD_PW),
                ("confirm", "something else entirely"),
            ],
        );
        assert_eq!(r.status, 400);
        assert!(r.body.contains("differ"), "{}", r.body);

        // Accepted: the page says how to connect.
        let r = b.post(
            &u,
            &[("csrf", &csrf), ("password", GOOD_PW), ("confirm", GOOD_PW)],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("is ready"), "{}", r.body);
        assert!(r.body.contains(&format!("{base}/dav/")), "{}", r.body);
        assert!(
            r.body.contains(&format!(
                "sftp -P {sftp_port} &#39;alice@client.test&#39;@127.0.0.1"
            )),
            "{}",
            r.body
        );
        assert!(r.body.contains("Map network drive") && r.body.contains("Connect to Server"));

        // The new login lists its matter over WebDAV.
        let (st, names) = dav_list(&dav, "alice@client.test", GOOD_PW);
        assert_eq!(st, 207);
        assert_eq!(names, vec![mname.clone()]);

        // The link is used up.
        let again = b.get(&u);
        assert_eq!(again.status, 410, "{}", again.body);
        assert!(again.body.contains("already accepted"));
        let _ = t;
    });
    // ... and over SFTP.
    if paramiko_available() {
        let names = sftp_list(env.sftp_port, "alice@client.test", GOOD_PW, "/")
            .await
            .expect("sftp login");
        assert_eq!(names, vec!["2026-301 Smith v Jones".to_string()]);
    }
    // The contact's login is verified; everything is in the audit trail.
    let info = env
        .portal
        .find_login(&env.staff, "alice@client.test")
        .await
        .unwrap()
        .expect("login created");
    assert!(info.verified && info.has_password && info.contact == Some(c));
    let acc = env.audit_of("account:invitation_accept").await;
    assert_eq!(acc.len(), 1, "{acc:#?}");
    assert!(allowed(&acc[0].outcome));
    assert_eq!(acc[0].actor, Principal::Portal(info.id));
    assert_eq!(acc[0].channel, Channel::Web);
    assert_eq!(acc[0].matter, Some(m));
    assert!(
        acc[0]
            .remote
            .as_deref()
            .is_some_and(|r| r.starts_with("127.0.0.1:")),
        "{:?}",
        acc[0].remote
    );
    let sent = env.audit_of("admin:send_invitation").await;
    assert_eq!(sent.len(), 1);
    assert!(allowed(&sent[0].outcome));
    let refused = env.audit_of("account:invitation_refused").await;
    assert!(
        refused
            .iter()
            .any(|e| matches!(&e.outcome, Outcome::Failed(r) if r.contains("already been used"))),
        "{refused:#?}"
    );
    let inv = env.portal.invitations(&env.staff, Some(c)).await.unwrap();
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0].status, InvitationStatus::Accepted);
    assert_eq!(inv[0].sent, 1);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_login_invited_to_a_second_matter_sees_both() {
    let env = Env::start(Opts {
        memory_mailer: true,
        ..Default::default()
    })
    .await;
    let (m1, n1) = env.matter("2026-311", "First").await;
    let (m2, n2) = env.matter("2026-312", "Second").await;
    let (_, p1) = env
        .contact_on("Bob Client", "bob@client.test", m1, env.client)
        .await;
    env.portal.grant_access(&env.staff, m1, p1).await.unwrap();
    let t1 = token_in(&env.mails_to("bob@client.test")[0].text, "/invite/");
    let base = env.base.clone();
    let r = block_in_place(|| accept_with_password(&base, &t1, GOOD_PW));
    assert_eq!(r.status, 200, "{}", r.body);

    // Second matter: the mail says "you now have access", the page only confirms.
    let (_, p2) = env
        .contact_on("Bob Client", "bob@client.test", m2, env.other_side)
        .await;
    let g = env.portal.grant_access(&env.staff, m2, p2).await.unwrap();
    assert_eq!(g.invitation_kind, Some(InvitationKind::NewMatter));
    let mails = env.mails_to("bob@client.test");
    assert_eq!(mails.len(), 2);
    assert_eq!(
        mails[1].subject,
        "Dewey & Partners: you now have access to \"2026-312 Second\""
    );
    let t2 = token_in(&mails[1].text, "/invite/");
    let url = format!("{}/invite/{t2}", env.base);
    let dav = env.dav();
    let (a, b) = (n1.clone(), n2.clone());
    block_in_place(move || {
        let br = Browser::new();
        let page = br.get(&url);
        assert_eq!(page.status, 200);
        assert!(
            page.body.contains("New matter shared with you"),
            "{}",
            page.body
        );
        assert!(
            !page.body.contains("name=\"password\""),
            "no password asked"
        );
        let r = br.post(&url, &[("csrf", &csrf_field(&page.body))]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("2026-312 Second"), "{}", r.body);
        let (st, names) = dav_list(&dav, "bob@client.test", GOOD_PW);
        assert_eq!(st, 207);
        assert_eq!(names, vec![a, b]);
        assert_eq!(br.get(&url).status, 410);
    });
    if paramiko_available() {
        let names = sftp_list(env.sftp_port, "bob@client.test", GOOD_PW, "/")
            .await
            .expect("sftp");
        assert_eq!(names, vec![n1, n2]);
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_superseded_revoked_reused_and_unknown_links_are_refused() {
    let ttl = Duration::from_secs(3);
    let env = Env::start(Opts {
        memory_mailer: true,
        tweak: Box::new(move |b| b.invite_ttl(ttl)),
        ..Default::default()
    })
    .await;
    let (m, _) = env.matter("2026-321", "Links").await;
    let (c, p) = env
        .contact_on("Carol", "carol@client.test", m, env.client)
        .await;
    let g = env.portal.grant_access(&env.staff, m, p).await.unwrap();
    let inv = g.invitation.unwrap();
    let t1 = token_in(&env.mails_to("carol@client.test")[0].text, "/invite/");
    let get = |t: &str| {
        let u = format!("{}/invite/{t}", env.base);
        block_in_place(|| curl(&[&u]))
    };
    assert_eq!(get(&t1).status, 200);

    // Expired.
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let r = get(&t1);
    assert_eq!(r.status, 410, "{}", r.body);
    assert!(r.body.contains("expired") && r.body.contains("send you a new one"));
    let listed = env.portal.invitations(&env.staff, Some(c)).await.unwrap();
    assert!(listed[0].expired && listed[0].status == InvitationStatus::Pending);

    // Re-sent: a new link works, the old one is superseded.
    let info = env.portal.resend_invitation(&env.staff, inv).await.unwrap();
    assert_eq!(info.sent, 2);
    assert!(!info.expired);
    let mails = env.mails_to("carol@client.test");
    assert_eq!(mails.len(), 2);
    let t2 = token_in(&mails[1].text, "/invite/");
    assert_ne!(t1, t2);
    assert_eq!(get(&t2).status, 200);
    let r = get(&t1);
    assert_eq!(r.status, 410);
    assert!(r.body.contains("newer invitation"), "{}", r.body);

    // Revoked.
    assert!(env.portal.revoke_invitation(&env.staff, inv).await.unwrap());
    assert!(!env.portal.revoke_invitation(&env.staff, inv).await.unwrap());
    let r = get(&t2);
    assert_eq!(r.status, 410);
    assert!(r.body.contains("withdrawn"), "{}", r.body);
    let api = env.portal.accept_invitation(&t2, Some(GOOD_PW), None).await;
    assert!(matches!(api, Err(LinkError::Revoked)), "{api:?}");

    // Re-sent after revoking: revived with a third link; used once, then refused.
    env.portal.resend_invitation(&env.staff, inv).await.unwrap();
    let t3 = token_in(&env.mails_to("carol@client.test")[2].text, "/invite/");
    let base = env.base.clone();
    let r = block_in_place(|| accept_with_password(&base, &t3, GOOD_PW));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = get(&t3);
    assert_eq!(r.status, 410);
    let api = env.portal.accept_invitation(&t3, Some(GOOD_PW), None).await;
    assert!(matches!(api, Err(LinkError::Used)), "{api:?}");
    let again = env.portal.resend_invitation(&env.staff, inv).await;
    assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");

    // Unknown (well-formed) and malformed tokens: 404.
    assert_eq!(get(&"A".repeat(43)).status, 404);
    assert_eq!(get("not-a-token").status, 404);
    assert_eq!(get(&format!("{t3}x")).status, 404);

    // Each refusal is audited with its reason.
    let refused = env.audit_of("account:invitation_refused").await;
    for why in [
        "expired",
        "newer invitation",
        "withdrawn",
        "already been used",
        "not valid",
    ] {
        assert!(
            refused
                .iter()
                .any(|e| matches!(&e.outcome, Outcome::Failed(r) if r.contains(why))),
            "{why}: {refused:#?}"
        );
    }
    // Staff actions are audited too; a portal user can't resend or revoke.
    assert_eq!(env.audit_of("admin:resend_invitation").await.len(), 3);
    assert_eq!(env.audit_of("admin:revoke_invitation").await.len(), 2);
    let who = env
        .portal
        .authenticate_password("carol@client.test", GOOD_PW)
        .await
        .unwrap();
    let r = env.portal.revoke_invitation(&Actor::api(who), inv).await;
    assert!(matches!(r, Err(Error::StaffOnly(_))), "{r:?}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_single_use_under_a_race_and_complete_a_passwordless_login() {
    let mailer = std::sync::Arc::new(sdx_portal::accounts::MemoryMailer::new());
    let portal = sdx_portal::PortalBuilder::memory()
        .mailer(mailer.clone())
        .open()
        .await
        .unwrap();
    let firm = Actor::system();
    let client = portal
        .create_participant_type(&firm, "Client")
        .await
        .unwrap();
    let mt = portal
        .create_matter_type(&firm, "General", &["Docs"])
        .await
        .unwrap();
    portal
        .set_portal_permissions(&firm, mt, "Docs", client, Permissions::FULL)
        .await
        .unwrap();
    let m = portal.create_matter(&firm, "1", "One", mt).await.unwrap();
    // Staff set a login up without a password: the invitation gives it one.
    let c = portal
        .create_contact(&firm, "Dora", "dora@x.test")
        .await
        .unwrap();
    let login = portal.create_portal_login(&firm, c, None).await.unwrap();
    let p = portal.add_participant(&firm, m, c, client).await.unwrap();
    portal.grant_access(&firm, m, p).await.unwrap();
    let t = token_in(&mailer.sent()[0].text, "/invite/");
    let view = portal.open_invitation(&t, None).await.unwrap();
    assert_eq!(
        view.action,
        sdx_portal::portal::invitations::LinkAction::SetPassword
    );
    // Weak: refused, nothing used up.
    let r = portal
        .accept_invitation(&t, Some("password1234"), None)
        .await;
    assert!(matches!(r, Err(LinkError::Weak(_))), "{r:?}");
    // Two browsers race: exactly one wins.
    let (a, b) = tokio::join!(
        portal.accept_invitation(&t, Some(GOOD_PW), None),
        portal.accept_invitation(&t, Some("another fine passphrase"), None)
    );
    let oks = [a.is_ok(), b.is_ok()].iter().filter(|x| **x).count();
    assert_eq!(oks, 1, "{a:?} {b:?}");
    let loser = if a.is_ok() { &b } else { &a };
    assert!(matches!(loser, Err(LinkError::Used)), "{loser:?}");
    let won = a.as_ref().or(b.as_ref()).unwrap();
    assert_eq!(won.login, login);
    assert!(!won.created_login && won.password_set);
    let pw = if a.is_ok() {
        GOOD_PW
    } else {
        "another fine passphrase"
    };
    assert_eq!(
        portal
            .authenticate_password("dora@x.test", pw)
            .await
            .unwrap(),
        Principal::Portal(login)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_reset_flow() {
    let env = Env::start(Opts::default()).await;
    let (m, mname) = env.matter("2026-331", "Reset").await;
    let (c, p) = env
        .contact_on("Erin", "erin@client.test", m, env.client)
        .await;
    env.portal
        .create_portal_login(&env.firm, c, Some("the old passphrase 1"))
        .await
        .unwrap();
    env.portal.grant_access(&env.staff, m, p).await.unwrap();
    let base = env.base.clone();
    // Same answer for a known and an unknown address.
    let (known, unknown) = block_in_place(|| {
        let ask = |email: &str| {
            let b = Browser::new();
            let form = b.get(&format!("{base}/reset"));
            assert_eq!(form.status, 200);
            b.post(
                &format!("{base}/reset"),
                &[("csrf", &csrf_field(&form.body)), ("email", email)],
            )
        };
        (ask("erin@client.test"), ask("nobody@client.test"))
    });
    assert_eq!(known.status, 200);
    assert_eq!((known.status, &known.body), (unknown.status, &unknown.body));
    // The mail goes out in the background.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mail = loop {
        let found = env
            .mails_to("erin@client.test")
            .into_iter()
            .find(|m| m.subject.contains("reset"));
        let unknown_done = env
            .audit_of("account:password_reset_request")
            .await
            .iter()
            .any(|e| matches!(&e.outcome, Outcome::Failed(r) if r.contains("no enabled login")));
        if let (Some(m), true) = (found, unknown_done) {
            break m;
        }
        assert!(Instant::now() < deadline, "no reset mail");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(mail.subject, "Dewey & Partners: reset your portal password");
    assert!(mail.text.contains("1 hour"));
    assert!(env.mails_to("nobody@client.test").is_empty());
    let token = token_in(&mail.text, "/reset/");

    // A second request within the cooldown sends nothing more.
    env.portal
        .request_password_reset("erin@client.test", None)
        .await
        .unwrap();
    let resets = |env: &Env| {
        env.mails_to("erin@client.test")
            .iter()
            .filter(|m| m.subject.contains("reset"))
            .count()
    };
    assert_eq!(resets(&env), 1);

    let url = format!("{}/reset/{token}", env.base);
    let dav = env.dav();
    let u = url.clone();
    block_in_place(move || {
        let b = Browser::new();
        let page = b.get(&u);
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains("erin@client.test"));
        let csrf = csrf_field(&page.body);
        let r = b.post(
            &u,
            &[
                ("csrf", &csrf),
                ("password", "abcabcabcabc"),
                ("confirm", "abcabcabcabc"),
            ],
        );
        assert_eq!(r.status, 400);
        assert!(r.body.contains("choose another one"), "{}", r.body);
        let r = b.post(
            &u,
            &[
                ("csrf", &csrf),
                ("password", "a brand new passphrase"),
                ("confirm", "a brand new passphrase"),
            ],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.contains("Password changed"));
        // Old password gone, new one works.
        let (st, _) = dav_list(&dav, "erin@client.test", "the old passphrase 1");
        assert_eq!(st, 401);
        let (st, names) = dav_list(&dav, "erin@client.test", "a brand new passphrase");
        assert_eq!(st, 207);
        assert_eq!(names, vec![mname]);
        // Used up.
        let r = b.get(&u);
        assert_eq!(r.status, 410);
        assert!(r.body.contains("already used"));
        assert_eq!(curl(&[&u.replace(&token, &"B".repeat(43))]).status, 404);
    });
    let audit = env.audit_of("account:password_reset_request").await;
    assert!(audit.iter().any(|e| allowed(&e.outcome)));
    assert!(
        audit
            .iter()
            .any(|e| matches!(&e.outcome, Outcome::Failed(r) if r.contains("no enabled login"))),
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|e| matches!(&e.outcome, Outcome::Failed(r) if r.contains("less than a minute")))
    );
    let done = env.audit_of("account:password_reset").await;
    assert_eq!(done.len(), 1);
    assert!(allowed(&done[0].outcome));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_password_works_then_stops_when_revoked_and_password_change() {
    // The WebDAV login cache is off here: that the front end drops cached logins when the
    // access epoch moves is the WebDAV front end's test; this one checks the portal's answer.
    let env = Env::start(Opts {
        memory_mailer: true,
        auth_cache_ttl: Duration::ZERO,
        ..Default::default()
    })
    .await;
    let (m, mname) = env.matter("2026-341", "Devices").await;
    let (c, p) = env
        .contact_on("Finn", "finn@client.test", m, env.client)
        .await;
    let login = env
        .portal
        .create_portal_login(&env.firm, c, Some(GOOD_PW))
        .await
        .unwrap();
    env.portal.grant_access(&env.staff, m, p).await.unwrap();
    let me = Actor::api(Principal::Portal(login));

    let epoch = env.portal.access_epoch();
    let laptop = env
        .portal
        .create_app_password(&me, login, "Laptop")
        .await
        .unwrap();
    assert!(
        env.portal.access_epoch() > epoch,
        "credential changes bump the epoch"
    );
    let phone = env
        .portal
        .create_app_password(&me, login, "Phone")
        .await
        .unwrap();
    let dup = env.portal.create_app_password(&me, login, "laptop").await;
    assert!(matches!(dup, Err(Error::AlreadyExists(_))), "{dup:?}");
    let secret = laptop.secret.as_str().to_owned();
    assert_eq!(secret.len(), 24);
    let listed = env.portal.app_passwords(&me, login).await.unwrap();
    assert_eq!(
        listed.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        ["Laptop", "Phone"]
    );
    // Someone else can't see or revoke them.
    let (oc, _) = env
        .contact_on("Gail", "gail@client.test", m, env.client)
        .await;
    let other = env
        .portal
        .create_portal_login(&env.firm, oc, Some(GOOD_PW))
        .await
        .unwrap();
    let them = Actor::api(Principal::Portal(other));
    assert!(matches!(
        env.portal.app_passwords(&them, login).await,
        Err(Error::StaffOnly(_))
    ));
    assert!(matches!(
        env.portal
            .revoke_app_password(&them, login, laptop.info.id)
            .await,
        Err(Error::StaffOnly(_))
    ));

    let dav = env.dav();
    let (s2, n2) = (secret.clone(), mname.clone());
    block_in_place(move || {
        let (st, names) = dav_list(&dav, "finn@client.test", &s2);
        assert_eq!(st, 207);
        assert_eq!(names, vec![n2.clone()]);
        // Typed in upper case without dashes still works.
        let (st, _) = dav_list(
            &dav,
            "finn@client.test",
            &s2.to_uppercase().replace('-', ""),
        );
        assert_eq!(st, 207);
        // But only for its own login.
        let (st, _) = dav_list(&dav, "gail@client.test", &s2);
        assert_eq!(st, 401);
    });
    let sftp = paramiko_available();
    if sftp {
        let names = sftp_list(env.sftp_port, "finn@client.test", &secret, "/")
            .await
            .expect("sftp with an app password");
        assert_eq!(names, vec![mname.clone()]);
    }
    let ok = env.audit_of("login").await;
    assert!(
        ok.iter()
            .any(|e| allowed(&e.outcome) && e.object.contains("(app password \"Laptop\")"))
    );

    // Revoked: the next request is refused, the other device keeps working.
    assert!(
        env.portal
            .revoke_app_password(&me, login, laptop.info.id)
            .await
            .unwrap()
    );
    assert!(
        !env.portal
            .revoke_app_password(&me, login, laptop.info.id)
            .await
            .unwrap()
    );
    let (dav, s2, s3) = (env.dav(), secret.clone(), phone.secret.as_str().to_owned());
    block_in_place(move || {
        let (st, _) = dav_list(&dav, "finn@client.test", &s2);
        assert_eq!(st, 401);
        let (st, _) = dav_list(&dav, "finn@client.test", &s3);
        assert_eq!(st, 207);
    });
    if sftp {
        let r = sftp_list(env.sftp_port, "finn@client.test", &secret, "/").await;
        assert_eq!(r, Err("auth".to_string()));
    }
    assert_eq!(
        env.audit_of("account:app_password_revoke").await.len(),
        2 + 1
    );

    // Password change (API): the current password must be right, the new one strong; an app
    // password can't stand in for the current password.
    let r = env
        .portal
        .change_password(&me, phone.secret.as_str(), "a new strong phrase")
        .await;
    assert!(matches!(r, Err(Error::AuthenticationFailed)), "{r:?}");
    let r = env
        .portal
        .change_password(&me, GOOD_PW, "finn client 2026!")
        .await;
    assert!(matches!(r, Err(Error::Invalid(_))), "{r:?}");
    env.portal
        .change_password(&me, GOOD_PW, "a new strong phrase")
        .await
        .unwrap();
    assert!(
        env.portal
            .authenticate_password("finn@client.test", GOOD_PW)
            .await
            .is_err()
    );
    assert_eq!(
        env.portal
            .authenticate_password("finn@client.test", "a new strong phrase")
            .await
            .unwrap(),
        Principal::Portal(login)
    );
    env.stop().await;
}

fn short_lockout() -> ThrottleConfig {
    ThrottleConfig {
        per_login: Limits {
            free_failures: 0,
            base_delay_ms: 50,
            max_delay_ms: 200,
            block_after: 3,
            block_secs: 5,
        },
        per_address: Limits {
            free_failures: 50,
            base_delay_ms: 50,
            max_delay_ms: 200,
            block_after: 200,
            block_secs: 2,
        },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_triggers_and_expires() {
    let env = Env::start(Opts {
        memory_mailer: true,
        auth_cache_ttl: Duration::ZERO,
        tweak: Box::new(|b| b.throttle(short_lockout())),
    })
    .await;
    let (m, _) = env.matter("2026-351", "Lockout").await;
    let (c, p) = env
        .contact_on("Hana", "hana@client.test", m, env.client)
        .await;
    env.portal
        .create_portal_login(&env.firm, c, Some(GOOD_PW))
        .await
        .unwrap();
    env.portal.grant_access(&env.staff, m, p).await.unwrap();
    let dav = env.dav();

    // Three wrong passwords (each waits out the growing delay): 401, then blocked.
    let d = dav.clone();
    let codes = block_in_place(move || {
        let mut codes = Vec::new();
        for _ in 0..3 {
            codes.push(dav_list(&d, "hana@client.test", "wrong password!").0);
        }
        // Blocked: even the right password gets 429 with Retry-After, without a check.
        let up = format!("hana@client.test:{GOOD_PW}");
        let r = curl(&["-u", &up, "-X", "PROPFIND", "-H", "Depth: 0", &d]);
        codes.push(r.status);
        assert!(
            r.headers.to_ascii_lowercase().contains("retry-after: "),
            "{}",
            r.headers
        );
        // An unknown login is treated exactly alike: no way to tell which logins exist.
        for _ in 0..3 {
            codes.push(dav_list(&d, "nobody@client.test", "wrong password!").0);
        }
        codes.push(dav_list(&d, "nobody@client.test", GOOD_PW).0);
        codes
    });
    let blocked_by = Instant::now();
    assert_eq!(codes, [401, 401, 401, 429, 401, 401, 401, 429]);
    if paramiko_available() {
        let r = sftp_list(env.sftp_port, "hana@client.test", GOOD_PW, "/").await;
        assert_eq!(r, Err("auth".to_string()), "blocked over SFTP too");
    }
    let r = env
        .portal
        .authenticate_password("hana@client.test", GOOD_PW)
        .await;
    assert!(matches!(r, Err(Error::LockedOut { .. })), "{r:?}");

    // Audited: the block, and the refusals (once per window).
    let lock = env.audit_of("account:lockout").await;
    assert!(
        lock.iter()
            .any(|e| e.object.contains("login hana@client.test blocked for 5 s")),
        "{lock:#?}"
    );
    assert!(
        lock.iter()
            .any(|e| e.object.contains("login nobody@client.test"))
    );
    let logins = env.audit_of("login").await;
    assert!(logins.iter().any(|e| e.object == "login hana@client.test"
        && matches!(&e.outcome, Outcome::Failed(r) if r.contains("too many"))));

    // The block expires.
    tokio::time::sleep_until((blocked_by + Duration::from_millis(5_300)).into()).await;
    let d = dav.clone();
    let st = block_in_place(move || dav_list(&d, "hana@client.test", GOOD_PW).0);
    assert_eq!(st, 207);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_login_and_wrong_password_cost_the_same() {
    // Other tests hash passwords in parallel in this process (one hashing slot per core), so
    // single timings include queueing: compare the fastest of several interleaved attempts,
    // which is the cost of the work itself.
    let portal = Portal::in_memory().await.unwrap();
    let firm = Actor::system();
    const N: usize = 6;
    let mut wrong = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..N {
        let c = portal
            .create_contact(&firm, "T", &format!("t{i}@x.test"))
            .await
            .unwrap();
        portal
            .create_portal_login(&firm, c, Some(GOOD_PW))
            .await
            .unwrap();
    }
    // Warm-up.
    let _ = portal.authenticate_password("warm@x.test", "x").await;
    for i in 0..N {
        // Fresh names each time: no throttle delay in the way.
        let t = Instant::now();
        let r = portal
            .authenticate_password(&format!("t{i}@x.test"), "wrong pw")
            .await;
        wrong.push(t.elapsed());
        assert!(matches!(r, Err(Error::AuthenticationFailed)));
        let t = Instant::now();
        let r = portal
            .authenticate_password(&format!("ghost{i}@x.test"), "wrong pw")
            .await;
        unknown.push(t.elapsed());
        assert!(matches!(r, Err(Error::AuthenticationFailed)));
    }
    let (w, u) = (wrong.iter().min().unwrap(), unknown.iter().min().unwrap());
    let ratio = u.as_secs_f64() / w.as_secs_f64();
    assert!(
        (0.5..2.0).contains(&ratio),
        "fastest unknown {u:?} vs fastest wrong {w:?} (all: {unknown:?} / {wrong:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_login_ends_its_live_webdav_session() {
    // Default login cache on: the cached login must not keep a disabled user in.
    let env = Env::start(Opts {
        memory_mailer: true,
        ..Default::default()
    })
    .await;
    let (m, _) = env.matter("2026-361", "Disable").await;
    let (c, p) = env
        .contact_on("Ian", "ian@client.test", m, env.client)
        .await;
    let login = env
        .portal
        .create_portal_login(&env.firm, c, Some(GOOD_PW))
        .await
        .unwrap();
    env.portal.grant_access(&env.staff, m, p).await.unwrap();
    let dav = env.dav();
    let d = dav.clone();
    assert_eq!(
        block_in_place(move || dav_list(&d, "ian@client.test", GOOD_PW).0),
        207
    );
    let epoch = env.portal.access_epoch();
    env.portal
        .set_login_disabled(&env.staff, login, true)
        .await
        .unwrap();
    assert!(env.portal.access_epoch() > epoch);
    let d = dav.clone();
    let (st, names) = block_in_place(move || dav_list(&d, "ian@client.test", GOOD_PW));
    assert!(
        !(200..300).contains(&st) || names.is_empty(),
        "{st} {names:?}"
    );
    assert_ne!(st, 207, "a disabled login still lists its tree");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_batched_per_participant_and_follow_list_permission() {
    let mailer = std::sync::Arc::new(sdx_portal::accounts::MemoryMailer::new());
    let portal = sdx_portal::PortalBuilder::memory()
        .mailer(mailer.clone())
        .firm_name(FIRM)
        .open()
        .await
        .unwrap();
    let firm = Actor::system();
    let client = portal
        .create_participant_type(&firm, "Client")
        .await
        .unwrap();
    let other = portal
        .create_participant_type(&firm, "Other Side")
        .await
        .unwrap();
    let mt = portal
        .create_matter_type(&firm, "General", &["Client Documents", "Correspondence"])
        .await
        .unwrap();
    portal
        .set_portal_permissions(&firm, mt, "Client Documents", client, Permissions::FULL)
        .await
        .unwrap();
    // The other side may only Read (not List) client documents, and List correspondence.
    portal
        .set_portal_permissions(
            &firm,
            mt,
            "Client Documents",
            other,
            Permissions::NONE.with(Permission::Read),
        )
        .await
        .unwrap();
    portal
        .set_portal_permissions(
            &firm,
            mt,
            "Correspondence",
            other,
            Permissions::NONE.with(Permission::List),
        )
        .await
        .unwrap();
    let m = portal
        .create_matter(&firm, "2026-371", "Notify", mt)
        .await
        .unwrap();
    let mut users = Vec::new();
    for (name, email, t) in [
        ("Jo", "jo@client.test", client),
        ("Kit", "kit@other.test", other),
    ] {
        let c = portal.create_contact(&firm, name, email).await.unwrap();
        let l = portal
            .create_portal_login(&firm, c, Some(GOOD_PW))
            .await
            .unwrap();
        let p = portal.add_participant(&firm, m, c, t).await.unwrap();
        portal.grant_access(&firm, m, p).await.unwrap();
        users.push((l, p));
    }
    let invitations = mailer.sent().len();
    let notifier: Notifier = portal.start_notifications(BatchConfig {
        quiet_ms: 300,
        max_delay_ms: 5_000,
        max_pending: 100,
    });
    let staff = Actor::system();
    let root = "/2026-371 Notify";
    for i in 0..5 {
        put(
            &portal,
            &staff,
            &format!("{root}/Client Documents/scan-{i}.pdf"),
            b"x",
        )
        .await;
    }
    put(
        &portal,
        &staff,
        &format!("{root}/Correspondence/letter.pdf"),
        b"x",
    )
    .await;
    // The client uploads one too: nobody is told about their own upload.
    let jo = Actor::api(Principal::Portal(users[0].0));
    put(
        &portal,
        &jo,
        &format!("{root}/Client Documents/mine.pdf"),
        b"x",
    )
    .await;
    // Staff write to Jo's conversation; Jo writes too (no mail to Jo for that).
    portal
        .post_message(&staff, m, Some(users[0].1), "Please sign")
        .await
        .unwrap();
    portal.post_message(&jo, m, None, "Done").await.unwrap();
    notifier.flush().await.unwrap();
    let sent: Vec<_> = mailer.sent().into_iter().skip(invitations).collect();
    let to_jo: Vec<_> = sent.iter().filter(|e| e.to == "jo@client.test").collect();
    let to_kit: Vec<_> = sent.iter().filter(|e| e.to == "kit@other.test").collect();
    assert_eq!(
        to_jo.len(),
        1,
        "one mail per participant per batch: {sent:#?}"
    );
    assert_eq!(
        to_jo[0].subject,
        "Dewey & Partners: 5 new documents and 1 new message in \"2026-371 Notify\""
    );
    for n in ["scan-0.pdf", "scan-4.pdf"] {
        assert!(to_jo[0].text.contains(n), "{}", to_jo[0].text);
    }
    assert!(
        !to_jo[0].text.contains("letter.pdf"),
        "no List on Correspondence"
    );
    assert!(!to_jo[0].text.contains("mine.pdf"));
    assert!(
        !to_jo[0].text.contains("Please sign"),
        "message bodies never go by mail"
    );
    assert_eq!(to_kit.len(), 1, "{sent:#?}");
    assert!(to_kit[0].text.contains("letter.pdf"));
    assert!(
        !to_kit[0].text.contains("scan-"),
        "no List on Client Documents"
    );
    assert!(!to_kit[0].text.contains("mine.pdf"));
    notifier.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_portal_writes_no_mail_into_its_data_dir_unless_told_to() {
    use sdx_portal::crypto::KeyFile;
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("master.key");
    KeyFile::create(&key).unwrap();
    let setup = |p: &Portal| {
        let p = p.clone();
        async move {
            let firm = Actor::system();
            let t = p.create_participant_type(&firm, "Client").await.unwrap();
            let mt = p.create_matter_type(&firm, "G", &["Docs"]).await.unwrap();
            let m = p
                .create_matter(&firm, "1", "Secret Matter", mt)
                .await
                .unwrap();
            let c = p.create_contact(&firm, "Ann", "ann@x.test").await.unwrap();
            let part = p.add_participant(&firm, m, c, t).await.unwrap();
            p.grant_access(&firm, m, part).await.unwrap()
        }
    };
    // No mailer configured: the grant works, the mail is refused (and audited), nothing lands
    // in the data folder.
    let dir = tmp.path().join("enc");
    let p = sdx_portal::PortalBuilder::new(&dir)
        .key_provider(std::sync::Arc::new(KeyFile::new(&key)))
        .open()
        .await
        .unwrap();
    let g = setup(&p).await;
    assert!(g.granted && !g.mailed, "{g:?}");
    assert!(!dir.join("outbox").exists());
    let staff = Actor::system();
    let sent = p
        .audit_query(&staff, Default::default())
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.action.to_string() == "admin:send_invitation")
        .expect("delivery audited");
    assert!(
        matches!(&sent.outcome, Outcome::Failed(r) if r.contains("no mailer is configured")),
        "{sent:?}"
    );
    // Re-sending says why.
    let r = p.resend_invitation(&staff, g.invitation.unwrap()).await;
    assert!(
        matches!(&r, Err(Error::Invalid(m)) if m.contains("configure SMTP")),
        "{r:?}"
    );
    drop(p);
    // An outbox chosen explicitly is used as given.
    let dir2 = tmp.path().join("enc2");
    let outbox = tmp.path().join("outbox-elsewhere");
    let p = sdx_portal::PortalBuilder::new(&dir2)
        .key_provider(std::sync::Arc::new(KeyFile::new(&key)))
        .mailer(std::sync::Arc::new(sdx_portal::accounts::FileOutbox::new(
            &outbox,
        )))
        .open()
        .await
        .unwrap();
    assert!(setup(&p).await.mailed);
    assert_eq!(read_outbox(&outbox).len(), 1);
}
