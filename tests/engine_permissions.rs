//! Issue 2, access rules: the participant-type × permission matrix, sub-folder visibility,
//! per-matter-type configuration, template pushes.

mod common;

use common::*;
use sdx_portal::Error;
use sdx_portal::audit::Outcome;
use sdx_portal::model::*;
use sdx_portal::tree::{EntryKind, Tree, WriteOptions};

const SEED: &[&str] = &[
    "a.txt", "upd.txt", "del.txt", "ren.txt", "src.txt", "tgt.txt", "mod.txt",
];

fn has(p: Permissions, x: Permission) -> bool {
    p.contains(x)
}

/// Checks the outcome recorded for an attempt against what the permissions allow.
fn check_outcome(label: &str, perms: Permissions, allowed_expected: bool, o: &Outcome) {
    if allowed_expected {
        assert!(
            allowed(o),
            "{label} with {perms}: expected an allowed entry, got {o:?}"
        );
    } else if perms.is_empty() {
        // No permission at all: the folder is invisible, the attempt fails as "not found".
        assert!(!allowed(o), "{label} with {perms}: recorded as allowed");
    } else {
        assert!(
            matches!(o, Outcome::Denied(_)),
            "{label} with {perms}: expected a denied entry, got {o:?}"
        );
    }
}

/// Runs every tree operation as `user` in `folder` (documents prefixed with `tag`), checks each is
/// allowed exactly when `perms` says so, has its effect only then, and is audited once.
async fn run_ops(fx: &Fx, user: &User, folder: &str, tag: &str, perms: Permissions) {
    let t = user.tree(&fx.portal);
    let staff = fx.staff_tree();
    let l = user.login;
    let doc = |n: &str| format!("{folder}/{tag}-{n}");
    let list_ = has(perms, Permission::List);
    let read_ = has(perms, Permission::Read);
    let create_ = has(perms, Permission::Create);
    let update_ = has(perms, Permission::Update);
    let delete_ = has(perms, Permission::Delete);
    let hidden = perms.is_empty();

    // stat of a document: List.
    let (r, e) = fx.audited(l, "stat", t.stat(&doc("a.txt"))).await;
    check_outcome("stat", perms, list_, &e.outcome);
    if list_ {
        let ent = r.expect("stat allowed");
        assert_eq!(ent.kind, EntryKind::Document);
        assert_eq!(ent.len, format!("{tag}-a.txt").len() as u64);
        assert_eq!(ent.perms, perms);
    } else {
        assert!(
            is_not_found(&r),
            "stat without List must be NotFound: {}",
            kind(&r)
        );
    }

    // list of the folder: List (without it: no documents).
    let (r, e) = fx.audited(l, "list", t.list(folder)).await;
    check_outcome("list", perms, list_, &e.outcome);
    if hidden {
        assert!(
            is_not_found(&r),
            "list of an invisible folder: {}",
            kind(&r)
        );
    } else {
        let entries = r.expect("list answers");
        let docs: Vec<String> = entries
            .iter()
            .filter(|e| e.kind == EntryKind::Document)
            .map(|e| e.name.clone())
            .collect();
        if list_ {
            for s in SEED {
                assert!(
                    docs.contains(&format!("{tag}-{s}")),
                    "{s} listed with {perms}"
                );
            }
        } else {
            assert!(docs.is_empty(), "no List: folder looks empty, got {docs:?}");
        }
    }

    // open_read: Read.
    let (r, e) = fx.audited(l, "open_read", t.open_read(&doc("a.txt"))).await;
    check_outcome("open_read", perms, read_, &e.outcome);
    match r {
        Ok(mut h) => {
            assert!(read_, "read allowed without Read ({perms})");
            let b = h.read_at(0, 1024).await.expect("read");
            assert_eq!(&b[..], format!("{tag}-a.txt").as_bytes());
        }
        Err(err) => {
            assert!(!read_, "read refused with {perms}: {err:?}");
            if !hidden {
                assert!(is_denied_for::<()>(&Err(err), Permission::Read));
            }
        }
    }

    // open_write of a new name + commit: Create.
    let (r, e) = fx
        .audited(l, "create", async {
            let mut up = t
                .open_write(&doc("new.txt"), WriteOptions::upload())
                .await?;
            assert!(!up.is_update());
            up.write(b"new content").await?;
            up.commit().await
        })
        .await;
    check_outcome("create", perms, create_, &e.outcome);
    assert_eq!(r.is_ok(), create_, "create with {perms}: {}", kind(&r));
    if !create_ && !hidden {
        assert!(is_denied_for(&r, Permission::Create), "{}", kind(&r));
    }
    let after = read_all(&staff, &doc("new.txt")).await;
    assert_eq!(
        after.is_ok(),
        create_,
        "new document exists only if created"
    );

    // open_write of an existing name + commit: Update.
    let (r, e) = fx
        .audited(l, "update", async {
            let mut up = t
                .open_write(&doc("upd.txt"), WriteOptions::upload())
                .await?;
            assert!(up.is_update());
            up.write(b"second version").await?;
            up.commit().await
        })
        .await;
    check_outcome("update", perms, update_, &e.outcome);
    assert_eq!(r.is_ok(), update_, "update with {perms}: {}", kind(&r));
    if !update_ && !hidden {
        assert!(is_denied_for(&r, Permission::Update), "{}", kind(&r));
    }
    let content = read_all(&staff, &doc("upd.txt"))
        .await
        .expect("staff reads");
    if update_ {
        assert_eq!(content, b"second version");
    } else {
        assert_eq!(content, format!("{tag}-upd.txt").as_bytes());
    }

    // delete: Delete (to the trash).
    let (r, e) = fx.audited(l, "delete", t.delete(&doc("del.txt"))).await;
    check_outcome("delete", perms, delete_, &e.outcome);
    assert_eq!(r.is_ok(), delete_, "delete with {perms}: {}", kind(&r));
    if !delete_ && !hidden {
        assert!(is_denied_for(&r, Permission::Delete), "{}", kind(&r));
    }
    assert_eq!(
        staff.stat(&doc("del.txt")).await.is_ok(),
        !delete_,
        "deleted document gone only if deleted"
    );

    // rename within the folder: Delete at the source + Create at the target.
    let ok = delete_ && create_;
    let (r, e) = fx
        .audited(
            l,
            "rename",
            t.rename(&doc("ren.txt"), &doc("ren2.txt"), false),
        )
        .await;
    check_outcome("rename", perms, ok, &e.outcome);
    assert_eq!(r.is_ok(), ok, "rename with {perms}: {}", kind(&r));
    if !ok && !hidden {
        let missing = if delete_ {
            Permission::Create
        } else {
            Permission::Delete
        };
        assert!(is_denied_for(&r, missing), "{}", kind(&r));
    }
    assert_eq!(staff.stat(&doc("ren.txt")).await.is_ok(), !ok);
    assert_eq!(staff.stat(&doc("ren2.txt")).await.is_ok(), ok);

    // rename onto an existing document: Delete + Create + Update.
    let ok = delete_ && create_ && update_;
    let (r, e) = fx
        .audited(
            l,
            "rename over",
            t.rename(&doc("src.txt"), &doc("tgt.txt"), true),
        )
        .await;
    check_outcome("rename over", perms, ok, &e.outcome);
    assert_eq!(r.is_ok(), ok, "rename over with {perms}: {}", kind(&r));
    let tgt = read_all(&staff, &doc("tgt.txt"))
        .await
        .expect("target stays");
    let src_content = format!("{tag}-src.txt");
    let tgt_content = format!("{tag}-tgt.txt");
    let expected_tgt = if ok { &src_content } else { &tgt_content };
    assert_eq!(tgt, expected_tgt.as_bytes());
    assert_eq!(staff.stat(&doc("src.txt")).await.is_ok(), !ok);

    // copy: Read at the source + Create at the target.
    let ok = read_ && create_;
    let (r, e) = fx
        .audited(l, "copy", t.copy(&doc("a.txt"), &doc("copy.txt"), false))
        .await;
    check_outcome("copy", perms, ok, &e.outcome);
    assert_eq!(r.is_ok(), ok, "copy with {perms}: {}", kind(&r));
    assert_eq!(staff.stat(&doc("copy.txt")).await.is_ok(), ok);

    // set_modified of a staff-written document: Update.
    let when: Millis = 1_000_000_000_000;
    let (r, e) = fx
        .audited(l, "set_modified", t.set_modified(&doc("mod.txt"), when))
        .await;
    check_outcome("set_modified", perms, update_, &e.outcome);
    assert_eq!(
        r.is_ok(),
        update_,
        "set_modified with {perms}: {}",
        kind(&r)
    );
    let m = staff
        .stat(&doc("mod.txt"))
        .await
        .expect("staff stat")
        .modified;
    assert_eq!(
        m == when,
        update_,
        "modification time changed only if allowed"
    );

    // set_modified of the user's own upload: Create is enough.
    if create_ {
        let (r, e) = fx
            .audited(l, "set_modified own", t.set_modified(&doc("new.txt"), when))
            .await;
        check_outcome("set_modified own", perms, true, &e.outcome);
        r.expect("own upload's time");
        let m = staff.stat(&doc("new.txt")).await.expect("stat").modified;
        assert_eq!(m, when);
    }

    // mkdir: staff only, whatever the permissions.
    let (r, e) = fx.audited(l, "mkdir", t.mkdir(&doc("sub"))).await;
    check_outcome("mkdir", perms, false, &e.outcome);
    if hidden {
        assert!(r.is_err());
    } else {
        assert!(matches!(r, Err(Error::StaffOnly(_))), "{}", kind(&r));
    }
    assert!(staff.stat(&doc("sub")).await.is_err(), "no folder was made");
}

async fn seed(staff: &Tree, folder: &str, tag: &str) {
    for s in SEED {
        let name = format!("{tag}-{s}");
        put(staff, &format!("{folder}/{name}"), name.as_bytes())
            .await
            .expect("seed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_type_permission_matrix_all_32_combinations() {
    for bits in 0u8..32 {
        let perms = Permissions::from_bits(bits);
        // The complement goes to the other participant type on the same folder: each type gets
        // exactly its own configuration.
        let other = Permissions::from_bits(!bits);
        let fx = Fx::new().await;
        fx.set_perms(fx.general, CD, fx.client, perms).await;
        fx.set_perms(fx.general, CD, fx.other_side, other).await;
        let (m, mp) = fx.matter("2026-001", "Smith v Jones", fx.general).await;
        let c = fx
            .user("Carol Client", "carol@client.test", m, fx.client, true)
            .await;
        let o = fx
            .user("Otto Other", "otto@other.test", m, fx.other_side, true)
            .await;
        let folder = format!("{mp}/{CD}");
        let staff = fx.staff_tree();
        seed(&staff, &folder, "c").await;
        seed(&staff, &folder, "o").await;
        run_ops(&fx, &c, &folder, "c", perms).await;
        run_ops(&fx, &o, &folder, "o", other).await;
    }
}

#[tokio::test]
async fn permission_full_sets_and_none_clears_all_five() {
    let all = Permissions::parse(&["full"]).unwrap();
    assert_eq!(all, Permissions::FULL);
    for p in Permission::ALL {
        assert!(all.contains(p));
        assert!(!Permissions::NONE.contains(p));
    }
    let fx = Fx::new().await;
    fx.set_perms(fx.general, CD, fx.client, Permissions::FULL)
        .await;
    let info = fx.portal.matter_type(&fx.staff, fx.general).await.unwrap();
    assert_eq!(
        info.portal,
        vec![(CD.to_string(), fx.client, Permissions::FULL)]
    );
    // NONE removes the folder from that type's portal.
    fx.set_perms(fx.general, CD, fx.client, Permissions::NONE)
        .await;
    let info = fx.portal.matter_type(&fx.staff, fx.general).await.unwrap();
    assert!(info.portal.is_empty(), "{:?}", info.portal);
}

#[tokio::test]
async fn subfolders_of_a_portal_folder_are_invisible_unless_configured() {
    let fx = Fx::new().await;
    let list = Permissions::NONE
        .with(Permission::List)
        .with(Permission::Read);
    fx.set_perms(fx.general, CD, fx.client, list).await;
    let (m, mp) = fx.matter("2026-002", "Tax", fx.general).await;
    let u = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    let staff = fx.staff_tree();
    let tax = format!("{mp}/{CD}/Tax Returns");
    put(&staff, &format!("{tax}/2025.pdf"), b"return")
        .await
        .unwrap();
    put(&staff, &format!("{mp}/Internal/memo.txt"), b"secret")
        .await
        .unwrap();
    let t = u.tree(&fx.portal);

    // Only the configured folder shows; its sub-folder and "Internal" do not.
    assert_eq!(names(&t.list(&mp).await.unwrap()), vec![CD.to_string()]);
    assert!(names(&t.list(&format!("{mp}/{CD}")).await.unwrap()).is_empty());
    assert!(is_not_found(&t.stat(&tax).await));
    assert!(is_not_found(&t.list(&tax).await));
    assert!(is_not_found(&t.stat(&format!("{tax}/2025.pdf")).await));
    assert!(is_not_found(&t.open_read(&format!("{tax}/2025.pdf")).await));
    assert!(is_not_found(&t.stat(&format!("{mp}/Internal")).await));
    // Staff see everything.
    assert_eq!(
        names(&staff.list(&mp).await.unwrap()),
        vec![CD.to_string(), "Internal".to_string()]
    );

    // Configuring the sub-folder makes it visible, nested inside its parent.
    fx.set_perms(fx.general, &format!("{CD}/Tax Returns"), fx.client, list)
        .await;
    assert_eq!(names(&t.list(&mp).await.unwrap()), vec![CD.to_string()]);
    let inside = t.list(&format!("{mp}/{CD}")).await.unwrap();
    assert_eq!(names(&inside), vec!["Tax Returns".to_string()]);
    assert_eq!(inside[0].kind, EntryKind::Folder);
    assert_eq!(inside[0].perms, list);
    assert_eq!(
        names(&t.list(&tax).await.unwrap()),
        vec!["2025.pdf".to_string()]
    );
    assert_eq!(
        read_all(&t, &format!("{tax}/2025.pdf")).await.unwrap(),
        b"return"
    );
}

#[tokio::test]
async fn parent_that_is_not_a_portal_folder_shows_as_an_empty_container() {
    let fx = Fx::new().await;
    let mt = fx
        .portal
        .create_matter_type(
            &fx.firm,
            "Litigation",
            &["Pleadings/Filed", "Pleadings/Drafts"],
        )
        .await
        .unwrap();
    fx.set_perms(mt, "Pleadings/Filed", fx.client, Permissions::FULL)
        .await;
    let (m, mp) = fx.matter("2026-003", "Lit", mt).await;
    let u = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    let staff = fx.staff_tree();
    put(&staff, &format!("{mp}/Pleadings/in-parent.txt"), b"x")
        .await
        .unwrap();
    put(&staff, &format!("{mp}/Pleadings/Filed/filed.txt"), b"y")
        .await
        .unwrap();
    let t = u.tree(&fx.portal);

    assert_eq!(
        names(&t.list(&mp).await.unwrap()),
        vec!["Pleadings".to_string()]
    );
    let parent = t.stat(&format!("{mp}/Pleadings")).await.unwrap();
    assert!(parent.is_dir());
    assert_eq!(
        parent.perms,
        Permissions::NONE,
        "a container has no permissions"
    );
    // It shows only the portal folder below it: no documents, not the unconfigured sibling.
    assert_eq!(
        names(&t.list(&format!("{mp}/Pleadings")).await.unwrap()),
        vec!["Filed".to_string()]
    );
    assert!(is_not_found(
        &t.stat(&format!("{mp}/Pleadings/in-parent.txt")).await
    ));
    assert!(is_not_found(
        &t.stat(&format!("{mp}/Pleadings/Drafts")).await
    ));
    // Nothing can be put into it.
    let r = put(&t, &format!("{mp}/Pleadings/upload.txt"), b"z").await;
    assert!(is_denied_for(&r, Permission::Create), "{}", kind(&r));
    // The portal folder below works as configured.
    assert_eq!(
        names(&t.list(&format!("{mp}/Pleadings/Filed")).await.unwrap()),
        vec!["filed.txt".to_string()]
    );
}

#[tokio::test]
async fn portal_configuration_is_per_matter_type() {
    let fx = Fx::new().await;
    let estate = fx
        .portal
        .create_matter_type(&fx.firm, "Estate Planning", &["Client Documents", "Wills"])
        .await
        .unwrap();
    let read = Permissions::NONE
        .with(Permission::List)
        .with(Permission::Read);
    fx.set_perms(estate, CD, fx.client, read).await;
    let estate_before = fx.portal.matter_type(&fx.staff, estate).await.unwrap();

    let (mg, mgp) = fx.matter("2026-010", "General matter", fx.general).await;
    let (me, mep) = fx.matter("2026-011", "Estate matter", estate).await;
    let u = fx
        .user("Carol", "carol@client.test", mg, fx.client, true)
        .await;
    fx.join(&u, me, fx.client).await;
    let t = u.tree(&fx.portal);

    // Changing General, several times, never changes Estate Planning.
    for p in [
        Permissions::FULL,
        Permissions::NONE.with(Permission::Create),
        Permissions::NONE,
    ] {
        fx.set_perms(fx.general, CD, fx.client, p).await;
        fx.set_perms(fx.general, "Internal", fx.client, p).await;
        let estate_now = fx.portal.matter_type(&fx.staff, estate).await.unwrap();
        assert_eq!(
            estate_now, estate_before,
            "Estate Planning changed with General = {p}"
        );
        let e = t.stat(&format!("{mep}/{CD}")).await.unwrap();
        assert_eq!(e.perms, read, "estate matter's folder with General = {p}");
        let g = t.stat(&format!("{mgp}/{CD}")).await;
        if p.is_empty() {
            assert!(is_not_found(&g));
        } else {
            assert_eq!(g.unwrap().perms, p);
        }
        let general_now = fx.portal.matter_type(&fx.staff, fx.general).await.unwrap();
        assert!(general_now.portal.iter().all(|(_, _, x)| *x == p));
    }
    // Same folder name in both types; same-named types can't be confused either.
    assert!(
        fx.portal
            .create_matter_type(&fx.firm, "estate planning", &["X"])
            .await
            .is_err()
    );
}

#[tokio::test]
async fn template_changes_are_pushed_to_existing_matters() {
    let fx = Fx::new().await;
    let (m1, m1p) = fx.matter("2026-020", "First", fx.general).await;
    let (_m2, m2p) = fx.matter("2026-021", "Second", fx.general).await;
    let other_type = fx
        .portal
        .create_matter_type(&fx.firm, "Other", &["Client Documents"])
        .await
        .unwrap();
    let (_m3, m3p) = fx.matter("2026-022", "Third", other_type).await;
    let staff = fx.staff_tree();
    put(&staff, &format!("{m1p}/Internal/keep.txt"), b"kept")
        .await
        .unwrap();
    fx.set_perms(fx.general, "Internal", fx.client, Permissions::FULL)
        .await;
    let u = fx
        .user("Carol", "carol@client.test", m1, fx.client, true)
        .await;
    let t = u.tree(&fx.portal);
    assert!(t.stat(&format!("{m1p}/Internal")).await.is_ok());

    fx.portal
        .set_matter_type_folders(
            &fx.firm,
            fx.general,
            &[
                "Client Documents",
                "Client Documents/Invoices",
                "Correspondence",
            ],
        )
        .await
        .unwrap();

    for mp in [&m1p, &m2p] {
        let top = names(&staff.list(mp).await.unwrap());
        // New folders arrive; the dropped "Internal" stays with its documents.
        assert_eq!(
            top,
            vec![CD.to_string(), "Correspondence".into(), "Internal".into()]
        );
        let cd = names(&staff.list(&format!("{mp}/{CD}")).await.unwrap());
        assert!(cd.contains(&"Invoices".to_string()), "{cd:?}");
        assert!(cd.contains(&"Tax Returns".to_string()), "{cd:?}");
    }
    assert_eq!(
        read_all(&staff, &format!("{m1p}/Internal/keep.txt"))
            .await
            .unwrap(),
        b"kept"
    );
    // Dropped from the template: no longer a portal folder.
    assert!(is_not_found(&t.stat(&format!("{m1p}/Internal")).await));
    let info = fx.portal.matter_type(&fx.staff, fx.general).await.unwrap();
    assert!(info.portal.iter().all(|(f, _, _)| f != "Internal"));
    // Another type's matters are untouched.
    assert_eq!(
        names(&staff.list(&m3p).await.unwrap()),
        vec![CD.to_string()]
    );
    // The pushed folder can be configured and then shows in the existing matter.
    fx.set_perms(fx.general, "Correspondence", fx.client, Permissions::FULL)
        .await;
    assert!(names(&t.list(&m1p).await.unwrap()).contains(&"Correspondence".to_string()));
    put(&t, &format!("{m1p}/Correspondence/letter.txt"), b"hi")
        .await
        .unwrap();
}

#[tokio::test]
async fn portal_users_never_create_folders_staff_do() {
    let fx = Fx::new().await;
    fx.set_perms(fx.general, CD, fx.client, Permissions::FULL)
        .await;
    let (m, mp) = fx.matter("2026-030", "Folders", fx.general).await;
    let u = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    let t = u.tree(&fx.portal);
    let r = t.mkdir(&format!("{mp}/{CD}/Mine")).await;
    assert!(matches!(r, Err(Error::StaffOnly(_))), "{}", kind(&r));
    let r = fx
        .staff_tree()
        .mkdir(&format!("{mp}/{CD}/Staff made"))
        .await;
    assert_eq!(r.unwrap().kind, EntryKind::Folder);
    // Staff-made sub-folders are not portal folders: invisible to the user.
    assert!(is_not_found(
        &t.stat(&format!("{mp}/{CD}/Staff made")).await
    ));
}

#[tokio::test]
async fn rename_across_folders_is_delete_at_source_plus_create_at_target() {
    let fx = Fx::new().await;
    let drop_box = Permissions::NONE
        .with(Permission::List)
        .with(Permission::Create);
    let mt = fx
        .portal
        .create_matter_type(&fx.firm, "Moves", &["Shared", "Drop Box"])
        .await
        .unwrap();
    fx.set_perms(mt, "Shared", fx.client, Permissions::FULL)
        .await;
    fx.set_perms(mt, "Drop Box", fx.client, drop_box).await;
    let (m, mp) = fx.matter("2026-040", "Moves", mt).await;
    let u = fx
        .user("Carol", "carol@client.test", m, fx.client, true)
        .await;
    let t = u.tree(&fx.portal);
    put(&t, &format!("{mp}/Shared/a.txt"), b"a").await.unwrap();
    put(&t, &format!("{mp}/Drop Box/b.txt"), b"b")
        .await
        .unwrap();

    // Shared (Delete) -> Drop Box (Create): allowed, one audit entry.
    let (r, e) = fx
        .audited(
            u.login,
            "move into drop box",
            t.rename(
                &format!("{mp}/Shared/a.txt"),
                &format!("{mp}/Drop Box/a.txt"),
                false,
            ),
        )
        .await;
    r.unwrap();
    assert_eq!(e.outcome, Outcome::Allowed);
    assert!(is_not_found(&t.stat(&format!("{mp}/Shared/a.txt")).await));
    // No Read in the drop box: the user can't read it back, staff can.
    let r = read_all(&t, &format!("{mp}/Drop Box/a.txt")).await;
    assert!(is_denied_for(&r, Permission::Read), "{}", kind(&r));
    assert_eq!(
        read_all(&fx.staff_tree(), &format!("{mp}/Drop Box/a.txt"))
            .await
            .unwrap(),
        b"a"
    );

    // Drop Box (no Delete) -> Shared: refused at the source, nothing moves.
    let (r, e) = fx
        .audited(
            u.login,
            "move out of drop box",
            t.rename(
                &format!("{mp}/Drop Box/b.txt"),
                &format!("{mp}/Shared/b.txt"),
                false,
            ),
        )
        .await;
    assert!(is_denied_for(&r, Permission::Delete), "{}", kind(&r));
    assert!(matches!(e.outcome, Outcome::Denied(_)));
    assert!(
        fx.staff_tree()
            .stat(&format!("{mp}/Drop Box/b.txt"))
            .await
            .is_ok()
    );
    assert!(is_not_found(
        &fx.staff_tree().stat(&format!("{mp}/Shared/b.txt")).await
    ));

    // Onto an existing document in the drop box: needs Update there too, which it lacks.
    put(&t, &format!("{mp}/Shared/c.txt"), b"c").await.unwrap();
    let r = t
        .rename(
            &format!("{mp}/Shared/c.txt"),
            &format!("{mp}/Drop Box/b.txt"),
            true,
        )
        .await;
    assert!(is_denied_for(&r, Permission::Update), "{}", kind(&r));
    assert_eq!(
        read_all(&fx.staff_tree(), &format!("{mp}/Drop Box/b.txt"))
            .await
            .unwrap(),
        b"b"
    );
    // Documents never change matter.
    let (m2, m2p) = fx.matter("2026-041", "Elsewhere", mt).await;
    fx.join(&u, m2, fx.client).await;
    let r = t
        .rename(
            &format!("{mp}/Shared/c.txt"),
            &format!("{m2p}/Shared/c.txt"),
            false,
        )
        .await;
    assert!(r.is_err(), "{}", kind(&r));
    assert!(t.stat(&format!("{mp}/Shared/c.txt")).await.is_ok());
}
