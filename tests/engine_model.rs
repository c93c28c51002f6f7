//! Issue 2, model rules: closing, revocation on open handles, disabled logins, message isolation,
//! document history and trash, events, invitations.

mod common;

use common::*;
use sdx_portal::Error;
use sdx_portal::audit::{AuditAction, Outcome};
use sdx_portal::events::PortalEvent;
use sdx_portal::model::*;
use sdx_portal::store::records::InvitationKind;
use sdx_portal::tree::{EntryKind, WriteOptions};
use tokio::sync::broadcast;

async fn full_client_fx() -> Fx {
    let fx = Fx::new().await;
    fx.set_perms(fx.general, CD, fx.client, Permissions::FULL)
        .await;
    fx.set_perms(fx.general, CD, fx.other_side, Permissions::FULL)
        .await;
    fx
}

#[tokio::test]
async fn closing_is_refused_while_access_remains_and_names_the_participants() {
    let fx = full_client_fx().await;
    let (m, mp) = fx.matter("2026-100", "Closing", fx.general).await;
    let c = fx
        .user("Carol Client", "carol@client.test", m, fx.client, true)
        .await;
    let o = fx
        .user("Otto Other", "otto@other.test", m, fx.other_side, true)
        .await;
    // A participant without portal access does not block closing.
    let _n = fx
        .user("Nora NoAccess", "nora@x.test", m, fx.client, false)
        .await;
    let ct = c.tree(&fx.portal);
    assert_eq!(
        names(&ct.list("/").await.unwrap()),
        vec![mp[1..].to_string()]
    );

    let err = fx.portal.close_matter(&fx.firm, m).await.unwrap_err();
    assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    let msg = err.to_string();
    for who in [
        "Carol Client",
        "carol@client.test",
        "Otto Other",
        "otto@other.test",
    ] {
        assert!(msg.contains(who), "the error names {who}: {msg}");
    }
    assert!(!msg.contains("Nora"), "{msg}");
    let info = fx.portal.matters(&fx.staff).await.unwrap();
    assert!(!info.iter().find(|i| i.id == m).unwrap().closed);

    // Still refused with one left, naming only that one.
    assert!(
        fx.portal
            .revoke_access(&fx.firm, m, c.participant)
            .await
            .unwrap()
    );
    let msg = fx
        .portal
        .close_matter(&fx.firm, m)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("Otto Other") && !msg.contains("Carol"),
        "{msg}"
    );

    assert!(
        fx.portal
            .revoke_access(&fx.firm, m, o.participant)
            .await
            .unwrap()
    );
    fx.portal.close_matter(&fx.firm, m).await.unwrap();
    let info = fx.portal.matters(&fx.staff).await.unwrap();
    assert!(info.iter().find(|i| i.id == m).unwrap().closed);

    // A closed matter is gone from the portal user's root; staff still see it; no new grants.
    assert!(ct.list("/").await.unwrap().is_empty());
    assert!(is_not_found(&ct.stat(&mp).await));
    assert!(names(&fx.staff_tree().list("/").await.unwrap()).contains(&mp[1..].to_string()));
    let r = fx.portal.grant_access(&fx.firm, m, c.participant).await;
    assert!(matches!(r, Err(Error::Conflict(_))), "{r:?}");

    // Reopened and granted again: back in the user's root.
    fx.portal.reopen_matter(&fx.firm, m).await.unwrap();
    fx.portal
        .grant_access(&fx.firm, m, c.participant)
        .await
        .unwrap();
    assert_eq!(
        names(&ct.list("/").await.unwrap()),
        vec![mp[1..].to_string()]
    );
}

#[tokio::test]
async fn portal_users_cannot_administer() {
    let fx = full_client_fx().await;
    let (m, _mp) = fx.matter("2026-101", "Admin", fx.general).await;
    let c = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    let r = fx.portal.close_matter(&c.actor, m).await;
    assert!(matches!(r, Err(Error::StaffOnly(_))), "{r:?}");
    let r = fx.portal.grant_access(&c.actor, m, c.participant).await;
    assert!(matches!(r, Err(Error::StaffOnly(_))), "{r:?}");
    let r = fx.portal.audit_query(&c.actor, Default::default()).await;
    assert!(
        matches!(r, Err(Error::StaffOnly(_))),
        "portal users never see activity"
    );
    let r = fx.portal.matters(&c.actor).await;
    assert!(matches!(r, Err(Error::StaffOnly(_))), "{r:?}");
    // Each refusal was audited as denied.
    let mine = fx.audit_of(c.login).await;
    assert_eq!(
        mine.iter()
            .filter(|e| matches!(e.outcome, Outcome::Denied(_)))
            .count(),
        4
    );
}

#[tokio::test]
async fn revocation_reaches_an_open_read_handle() {
    let fx = full_client_fx().await;
    let (m, mp) = fx.matter("2026-110", "Revoke", fx.general).await;
    let c = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    let doc = format!("{mp}/{CD}/big.bin");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    put(&fx.staff_tree(), &doc, &data).await.unwrap();
    let t = c.tree(&fx.portal);
    let mut h = t.open_read(&doc).await.unwrap();
    let first = h.read_at(0, 1000).await.unwrap();
    assert_eq!(&first[..], &data[..1000]);

    fx.portal
        .revoke_access(&fx.firm, m, c.participant)
        .await
        .unwrap();
    let before = fx.audit_of(c.login).await.len();
    let r = h.read_at(1000, 1000).await;
    assert!(matches!(r, Err(Error::PermissionDenied { .. })), "{r:?}");
    let after = fx.audit_of(c.login).await;
    assert_eq!(after.len(), before + 1, "the refused read is audited");
    assert!(matches!(after[0].outcome, Outcome::Denied(_)));
    assert_eq!(after[0].action, AuditAction::Read);
    // And it stays refused.
    assert!(h.read_at(0, 10).await.is_err());
}

#[tokio::test]
async fn permission_change_reaches_an_open_read_handle() {
    let fx = full_client_fx().await;
    let (m, mp) = fx.matter("2026-111", "Change", fx.general).await;
    let c = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    let doc = format!("{mp}/{CD}/a.txt");
    put(&fx.staff_tree(), &doc, b"hello world").await.unwrap();
    let mut h = c.tree(&fx.portal).open_read(&doc).await.unwrap();
    assert_eq!(&h.read_at(0, 5).await.unwrap()[..], b"hello");
    // An unrelated access change (another matter type) keeps the handle working.
    let other = fx
        .portal
        .create_matter_type(&fx.firm, "Other", &["X"])
        .await
        .unwrap();
    fx.set_perms(other, "X", fx.client, Permissions::FULL).await;
    assert_eq!(&h.read_at(5, 6).await.unwrap()[..], b" world");
    // Read taken away from the participant type: the next read fails.
    fx.set_perms(
        fx.general,
        CD,
        fx.client,
        Permissions::FULL.without(Permission::Read),
    )
    .await;
    let r = h.read_at(0, 5).await;
    assert!(
        matches!(
            r,
            Err(Error::PermissionDenied {
                permission: Permission::Read,
                ..
            })
        ),
        "{r:?}"
    );
}

#[tokio::test]
async fn revocation_reaches_an_open_upload() {
    let fx = full_client_fx().await;
    let (m, mp) = fx.matter("2026-112", "Upload", fx.general).await;
    let c = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    let t = c.tree(&fx.portal);
    let doc = format!("{mp}/{CD}/upload.txt");
    let mut up = t.open_write(&doc, WriteOptions::upload()).await.unwrap();
    up.write(b"half of it").await.unwrap();
    fx.portal
        .revoke_access(&fx.firm, m, c.participant)
        .await
        .unwrap();
    up.write(b" and the rest").await.unwrap();
    let before = fx.audit_of(c.login).await.len();
    let r = up.commit().await;
    assert!(r.is_err(), "commit after revocation: {r:?}");
    let after = fx.audit_of(c.login).await;
    assert_eq!(after.len(), before + 1);
    assert!(!allowed(&after[0].outcome));
    // Nothing is visible, not even to staff, and nothing went to the trash.
    let staff = fx.staff_tree();
    assert!(is_not_found(&staff.stat(&doc).await));
    let listed = staff.list(&format!("{mp}/{CD}")).await.unwrap();
    assert!(
        listed.iter().all(|e| e.kind != EntryKind::Document),
        "{listed:?}"
    );
    assert!(fx.portal.trash(&fx.staff, m).await.unwrap().is_empty());
}

#[tokio::test]
async fn revocation_reaches_an_already_created_tree() {
    let fx = full_client_fx().await;
    let (m, mp) = fx.matter("2026-113", "Tree", fx.general).await;
    let (m2, m2p) = fx.matter("2026-114", "Kept", fx.general).await;
    let c = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    fx.join(&c, m2, fx.client).await;
    put(&fx.staff_tree(), &format!("{mp}/{CD}/a.txt"), b"a")
        .await
        .unwrap();
    let t = c.tree(&fx.portal);
    assert_eq!(names(&t.list("/").await.unwrap()).len(), 2);
    fx.portal
        .revoke_access(&fx.firm, m, c.participant)
        .await
        .unwrap();
    assert_eq!(
        names(&t.list("/").await.unwrap()),
        vec![m2p[1..].to_string()]
    );
    assert!(is_not_found(&t.stat(&mp).await));
    assert!(is_not_found(&t.list(&format!("{mp}/{CD}")).await));
    assert!(is_not_found(
        &t.open_read(&format!("{mp}/{CD}/a.txt")).await
    ));
    assert!(is_not_found(
        &put(&t, &format!("{mp}/{CD}/b.txt"), b"b").await
    ));
}

#[tokio::test]
async fn disabling_a_login_stops_its_tree_on_the_next_call() {
    let fx = full_client_fx().await;
    let (m, mp) = fx.matter("2026-120", "Disable", fx.general).await;
    let c = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    let doc = format!("{mp}/{CD}/a.txt");
    put(&fx.staff_tree(), &doc, b"abc").await.unwrap();
    let t = c.tree(&fx.portal);
    let mut h = t.open_read(&doc).await.unwrap();
    assert_eq!(t.list("/").await.unwrap().len(), 1);

    fx.portal
        .set_login_disabled(&fx.firm, c.login, true)
        .await
        .unwrap();
    for r in [
        t.list("/").await.map(|_| ()),
        t.stat(&doc).await.map(|_| ()),
        t.open_read(&doc).await.map(|_| ()),
        put(&t, &format!("{mp}/{CD}/b.txt"), b"b").await.map(|_| ()),
        h.read_at(0, 3).await.map(|_| ()),
        fx.portal.messages(&c.actor, m, None).await.map(|_| ()),
    ] {
        assert!(matches!(r, Err(Error::AuthenticationFailed)), "{r:?}");
    }
    // Nor can it sign in again.
    fx.portal
        .set_password(&fx.firm, c.login, "a good long passphrase")
        .await
        .unwrap();
    let r = fx
        .portal
        .authenticate_password("carol@client.test", "a good long passphrase")
        .await;
    assert!(matches!(r, Err(Error::AuthenticationFailed)), "{r:?}");
    // Re-enabled: works again.
    fx.portal
        .set_login_disabled(&fx.firm, c.login, false)
        .await
        .unwrap();
    let r = fx
        .portal
        .authenticate_password("carol@client.test", "a good long passphrase")
        .await;
    assert_eq!(r.unwrap(), c.actor.principal);
    assert_eq!(t.list("/").await.unwrap().len(), 1);
}

#[tokio::test]
async fn messages_are_isolated_per_participant_staff_see_all() {
    let fx = full_client_fx().await;
    let (m, _) = fx.matter("2026-130", "Messages", fx.general).await;
    let c = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    let o = fx
        .user("Otto", "otto@other.test", m, fx.other_side, true)
        .await;
    let p = &fx.portal;

    p.post_message(&c.actor, m, None, "from carol")
        .await
        .unwrap();
    p.post_message(&o.actor, m, None, "from otto")
        .await
        .unwrap();
    p.post_message(&fx.staff, m, Some(c.participant), "to carol")
        .await
        .unwrap();
    p.post_message(&fx.staff, m, Some(o.participant), "to otto")
        .await
        .unwrap();
    p.post_message(&c.actor, m, Some(c.participant), "carol again")
        .await
        .unwrap();

    let bodies = |v: Vec<sdx_portal::portal::Message>| -> Vec<String> {
        v.into_iter().map(|m| m.body).collect()
    };
    let carol = bodies(p.messages(&c.actor, m, None).await.unwrap());
    assert_eq!(carol, ["from carol", "to carol", "carol again"]);
    let otto = bodies(p.messages(&o.actor, m, None).await.unwrap());
    assert_eq!(otto, ["from otto", "to otto"]);
    assert_eq!(
        bodies(p.messages(&fx.staff, m, Some(c.participant)).await.unwrap()),
        carol
    );
    assert_eq!(
        bodies(p.messages(&fx.staff, m, Some(o.participant)).await.unwrap()),
        otto
    );
    let all = p.messages(&fx.staff, m, Some(c.participant)).await.unwrap();
    assert!(all.iter().all(|x| x.participant == c.participant));
    // Staff must say which conversation.
    assert!(matches!(
        p.messages(&fx.staff, m, None).await,
        Err(Error::Invalid(_))
    ));

    // Naming someone else's conversation: NotFound, reading or posting, and nothing is added.
    let r = p.messages(&c.actor, m, Some(o.participant)).await;
    assert!(is_not_found(&r), "{r:?}");
    let r = p
        .post_message(&c.actor, m, Some(o.participant), "sneaky")
        .await;
    assert!(is_not_found(&r), "{r:?}");
    let otto_after = bodies(p.messages(&o.actor, m, None).await.unwrap());
    assert_eq!(otto_after, otto);
    // A participant without portal access, or a matter the user is not on: NotFound.
    let (m2, _) = fx.matter("2026-131", "Elsewhere", fx.general).await;
    assert!(is_not_found(&p.messages(&c.actor, m2, None).await));
    fx.portal
        .revoke_access(&fx.firm, m, o.participant)
        .await
        .unwrap();
    assert!(is_not_found(&p.messages(&o.actor, m, None).await));
    assert!(is_not_found(
        &p.post_message(&o.actor, m, None, "hello?").await
    ));
}

#[tokio::test]
async fn documents_keep_their_history_versions_and_trash() {
    let fx = full_client_fx().await;
    let (m, mp) = fx.matter("2026-140", "History", fx.general).await;
    let c = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    let t = c.tree(&fx.portal);
    let staff = fx.staff_tree();
    let doc = format!("{mp}/{CD}/contract.txt");

    let e1 = put(&t, &doc, b"version one").await.unwrap();
    let d = e1.document.unwrap();
    let e2 = put(&t, &doc, b"version two, longer").await.unwrap();
    assert_eq!(e2.document, Some(d), "an update keeps the document");
    assert_ne!(e1.etag, e2.etag);

    let v = fx.portal.versions(&fx.staff, m, d).await.unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(
        v.iter().map(|x| (x.number, x.current)).collect::<Vec<_>>(),
        [(1, false), (2, true)]
    );
    assert_eq!(v[0].len, 11);
    assert_eq!(v[0].author, c.actor.principal);

    fx.portal.restore_version(&fx.staff, m, d, 1).await.unwrap();
    assert_eq!(read_all(&t, &doc).await.unwrap(), b"version one");
    let v = fx.portal.versions(&fx.staff, m, d).await.unwrap();
    assert_eq!(v.len(), 3, "restoring adds a version, it destroys none");
    assert!(v[2].current && v[2].sha256 == v[0].sha256);
    assert!(fx.portal.restore_version(&fx.staff, m, d, 9).await.is_err());

    // Portal users can't see or manage history.
    assert!(matches!(
        fx.portal.versions(&c.actor, m, d).await,
        Err(Error::StaffOnly(_))
    ));
    let r = fx.portal.restore_version(&c.actor, m, d, 2).await;
    assert!(matches!(r, Err(Error::StaffOnly(_))));

    // Delete by a portal user: to the trash.
    t.delete(&doc).await.unwrap();
    assert!(is_not_found(&t.stat(&doc).await));
    assert!(is_not_found(&staff.stat(&doc).await));
    let trash = fx.portal.trash(&fx.staff, m).await.unwrap();
    assert_eq!(trash.len(), 1);
    assert_eq!(trash[0].document, d);
    assert_eq!(trash[0].name, "contract.txt");
    assert_eq!(trash[0].folder_path, vec![CD.to_string()]);
    assert_eq!(trash[0].by, c.actor.principal);
    // The name is free again while the old one sits in the trash.
    put(&t, &doc, b"a different one").await.unwrap();
    let r = fx.portal.restore_from_trash(&fx.staff, m, d).await;
    assert!(matches!(r, Err(Error::AlreadyExists(_))), "{r:?}");
    t.rename(&doc, &format!("{mp}/{CD}/newer.txt"), false)
        .await
        .unwrap();

    // Staff restore it, with its history.
    fx.portal.restore_from_trash(&fx.staff, m, d).await.unwrap();
    assert_eq!(read_all(&t, &doc).await.unwrap(), b"version one");
    assert_eq!(fx.portal.versions(&fx.staff, m, d).await.unwrap().len(), 3);
    assert!(fx.portal.trash(&fx.staff, m).await.unwrap().is_empty());

    // Only trashed documents can be purged; a client can't purge at all.
    let r = fx.portal.purge_document(&fx.staff, m, d).await;
    assert!(matches!(r, Err(Error::Conflict(_))), "{r:?}");
    t.delete(&doc).await.unwrap();
    let r = fx.portal.purge_document(&c.actor, m, d).await;
    assert!(matches!(r, Err(Error::StaffOnly(_))), "{r:?}");
    assert_eq!(fx.portal.trash(&fx.staff, m).await.unwrap().len(), 1);
    assert_eq!(fx.portal.versions(&fx.staff, m, d).await.unwrap().len(), 3);
    let r = fx.portal.trash(&c.actor, m).await;
    assert!(matches!(r, Err(Error::StaffOnly(_))));

    fx.portal.purge_document(&fx.staff, m, d).await.unwrap();
    assert!(fx.portal.trash(&fx.staff, m).await.unwrap().is_empty());
    assert!(is_not_found(&fx.portal.versions(&fx.staff, m, d).await));
    // The other document is untouched.
    assert_eq!(
        read_all(&t, &format!("{mp}/{CD}/newer.txt")).await.unwrap(),
        b"a different one"
    );
}

#[tokio::test]
async fn nothing_a_client_does_destroys_data() {
    let fx = full_client_fx().await;
    let (m, mp) = fx.matter("2026-141", "Safe", fx.general).await;
    let c = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    let t = c.tree(&fx.portal);
    let a = format!("{mp}/{CD}/a.txt");
    let b = format!("{mp}/{CD}/b.txt");
    let ea = put(&t, &a, b"A1").await.unwrap();
    put(&t, &a, b"A2").await.unwrap();
    let eb = put(&t, &b, b"B1").await.unwrap();
    // Overwrite b by renaming a onto it: b keeps its old version, a (two versions) goes to trash.
    t.rename(&a, &b, true).await.unwrap();
    assert_eq!(read_all(&t, &b).await.unwrap(), b"A2");
    let vb = fx
        .portal
        .versions(&fx.staff, m, eb.document.unwrap())
        .await
        .unwrap();
    assert_eq!(vb.len(), 2);
    let trash = fx.portal.trash(&fx.staff, m).await.unwrap();
    assert_eq!(
        trash.iter().map(|x| x.document).collect::<Vec<_>>(),
        vec![ea.document.unwrap()]
    );
    assert_eq!(
        fx.portal
            .versions(&fx.staff, m, ea.document.unwrap())
            .await
            .unwrap()
            .len(),
        2
    );
    // Deleting a folder is staff-only.
    let r = t.delete(&format!("{mp}/{CD}")).await;
    assert!(matches!(r, Err(Error::StaffOnly(_))), "{r:?}");
}

fn drain(rx: &mut broadcast::Receiver<PortalEvent>) -> Vec<PortalEvent> {
    let mut v = Vec::new();
    while let Ok(e) = rx.try_recv() {
        v.push(e);
    }
    v
}

#[tokio::test]
async fn subscribers_see_document_message_access_and_invitation_events() {
    let fx = full_client_fx().await;
    let (m, mp) = fx.matter("2026-150", "Events", fx.general).await;
    let mut rx = fx.portal.subscribe();
    let c = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    let pid = c.participant;
    // The grant: access granted and an invitation, published by the time the call returns.
    let ev = drain(&mut rx);
    assert!(
        ev.contains(&PortalEvent::AccessGranted {
            matter: m,
            participant: pid
        }),
        "{ev:?}"
    );
    assert!(
        ev.iter().any(|e| matches!(e, PortalEvent::InvitationCreated { contact, matter: Some(mm), .. } if *contact == c.contact && *mm == m)),
        "{ev:?}"
    );

    let t = c.tree(&fx.portal);
    let by = c.actor.principal;
    let doc = format!("{mp}/{CD}/e.txt");
    let e = put(&t, &doc, b"1").await.unwrap();
    let d = e.document.unwrap();
    let ev = drain(&mut rx);
    assert!(
        matches!(ev.as_slice(), [PortalEvent::DocumentAdded { matter, document, by: b, .. }] if *matter == m && *document == d && *b == by),
        "{ev:?}"
    );
    put(&t, &doc, b"2").await.unwrap();
    let ev = drain(&mut rx);
    assert!(
        matches!(ev.as_slice(), [PortalEvent::DocumentUpdated { document, .. }] if *document == d),
        "{ev:?}"
    );
    t.delete(&doc).await.unwrap();
    let ev = drain(&mut rx);
    assert_eq!(
        ev,
        vec![PortalEvent::DocumentDeleted {
            matter: m,
            document: d,
            by
        }]
    );
    let msg = fx
        .portal
        .post_message(&c.actor, m, None, "hi")
        .await
        .unwrap();
    let ev = drain(&mut rx);
    assert_eq!(
        ev,
        vec![PortalEvent::MessagePosted {
            matter: m,
            participant: pid,
            message: msg,
            by
        }]
    );
    // Reads and refusals publish nothing.
    t.list(&format!("{mp}/{CD}")).await.unwrap();
    assert!(t.delete(&format!("{mp}/{CD}/missing.txt")).await.is_err());
    assert!(drain(&mut rx).is_empty());
    fx.portal.revoke_access(&fx.firm, m, pid).await.unwrap();
    let ev = drain(&mut rx);
    assert_eq!(
        ev,
        vec![PortalEvent::AccessRevoked {
            matter: m,
            participant: pid
        }]
    );
}

#[tokio::test]
async fn grant_records_new_login_or_new_matter_invitation() {
    let fx = full_client_fx().await;
    let (m, _) = fx.matter("2026-160", "Invite", fx.general).await;
    let (m2, _) = fx.matter("2026-161", "Invite two", fx.general).await;
    let mut rx = fx.portal.subscribe();
    // No login yet: an invitation to create one.
    let nl = fx
        .portal
        .create_contact(&fx.firm, "Newton", "newton@x.test")
        .await
        .unwrap();
    let p = fx
        .portal
        .add_participant(&fx.firm, m, nl, fx.client)
        .await
        .unwrap();
    let g = fx.portal.grant_access(&fx.firm, m, p).await.unwrap();
    assert!(g.granted);
    assert_eq!(g.invitation_kind, Some(InvitationKind::NewLogin));
    let inv = g.invitation.expect("an invitation");
    let ev = drain(&mut rx);
    assert!(
        ev.contains(&PortalEvent::InvitationCreated {
            invitation: inv,
            contact: nl,
            matter: Some(m)
        }),
        "{ev:?}"
    );
    // Granting again records nothing new.
    let g = fx.portal.grant_access(&fx.firm, m, p).await.unwrap();
    assert!(!g.granted && g.invitation.is_none());
    assert!(drain(&mut rx).is_empty());

    // With a login: an invitation to the new matter.
    let c = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    drain(&mut rx);
    let p2 = fx
        .portal
        .add_participant(&fx.firm, m2, c.contact, fx.client)
        .await
        .unwrap();
    let g = fx.portal.grant_access(&fx.firm, m2, p2).await.unwrap();
    assert_eq!(g.invitation_kind, Some(InvitationKind::NewMatter));
    let inv2 = g.invitation.unwrap();
    assert_ne!(inv2, inv);
    let ev = drain(&mut rx);
    assert!(
        ev.contains(&PortalEvent::InvitationCreated {
            invitation: inv2,
            contact: c.contact,
            matter: Some(m2)
        }),
        "{ev:?}"
    );
}

#[tokio::test]
async fn one_contact_on_many_matters_sees_each_granted_one() {
    let fx = full_client_fx().await;
    let (m1, m1p) = fx.matter("2026-170", "One", fx.general).await;
    let (m2, m2p) = fx.matter("2026-171", "Two", fx.general).await;
    let (_m3, _) = fx.matter("2026-172", "Three", fx.general).await;
    let c = fx
        .user("Carol", "carol@client.test", m1, fx.client, true)
        .await;
    fx.join(&c, m2, fx.other_side).await;
    let t = c.tree(&fx.portal);
    let root = t.list("/").await.unwrap();
    assert_eq!(
        names(&root),
        vec![m1p[1..].to_string(), m2p[1..].to_string()]
    );
    assert!(root.iter().all(|e| e.kind == EntryKind::Matter));
    assert!(
        root.iter()
            .all(|e| e.matter == Some(m1) || e.matter == Some(m2))
    );
}
