//! Replays, with Python paramiko, of what WinSCP and FileZilla send, request by request, against
//! the SFTP front end over the real portal:
//!
//! - WinSCP uploads to `NAME.filepart`, renames it over the target (posix-rename, or REMOVE then
//!   RENAME), then SETSTATs the mtime, which must be kept; it resumes an interrupted upload by
//!   reopening the `.filepart` and writing on from its size.
//! - FileZilla decides file or folder from the `ls -l` longname of each listing entry: `d` for
//!   folders, `-` for files, and the size, date and name must be where its parser looks.

mod sftp_common;

use serde_json::{Value, json};
use sftp_common::*;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);
const FULL: &str = "Client Documents/Tax Returns";
const DROP_BOX: &str = "Client Documents";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn winscp_filepart_rename_setstat_and_resume() {
    if !have_paramiko().await {
        return;
    }
    let srv = PortalServer::start().await;
    let v = portal_probe(
        srv.port(),
        "winscp",
        &["--root", MATTER, "--folder", FULL, "--dropbox", DROP_BOX],
        LIMIT,
    )
    .await;
    let x = &v["expected"];
    let mtime = x["mtime"].as_u64().unwrap();

    // Replace through .filepart + posix-rename; the mtime from SETSTAT is kept.
    assert_eq!(v["over_posix"], "ok", "{v}");
    assert_eq!(
        v["over_posix_state"],
        json!({"size": x["new_size"], "sha256": x["new_sha256"], "mtime": mtime}),
        "{v}"
    );
    assert_eq!(v["over_posix_filepart_left"], "nosuch", "{v}");
    // REMOVE + RENAME variant.
    assert_eq!(v["remove_rename"], "ok", "{v}");
    assert_eq!(v["remove_rename_state"]["sha256"], x["b_sha256"], "{v}");
    assert_eq!(v["remove_rename_state"]["mtime"], mtime + 60, "{v}");
    // Resume: the cancelled first attempt left the first half as the .filepart; the second
    // attempt continued from there and the result is byte-identical.
    assert_eq!(v["resume_first"], "ok", "{v}");
    assert_eq!(v["resume_second"], json!({"resumed_at": x["half"]}), "{v}");
    assert_eq!(
        v["resume_state"],
        json!({"size": x["big_size"], "sha256": x["big_sha256"], "mtime": mtime + 120}),
        "{v}"
    );
    assert_eq!(v["resume_write_only"], "ok", "{v}");
    assert_eq!(v["resume_write_only_state"]["sha256"], x["c_sha256"], "{v}");

    // In a drop box (Create, no Delete) the final RENAME of the .filepart is a Delete at the
    // source, which the policy refuses: the refusal is clean (the target is not created, the
    // .filepart stays for the user to see). If the policy ever lets the author rename their own
    // fresh upload, the result must be the uploaded bytes.
    if v["dropbox"] == "ok" {
        assert_eq!(v["dropbox_state"]["sha256"], x["new_sha256"], "{v}");
    } else {
        assert_eq!(v["dropbox"], "denied", "{v}");
        assert_eq!(v["dropbox_state"], "nosuch", "{v}");
        assert_eq!(v["dropbox_filepart"]["size"], x["new_size"], "{v}");
    }

    // The portal's view agrees (modified time in ms).
    let tree = srv.client_tree();
    let e = tree
        .stat(&format!("{MATTER}/{FULL}/report.pdf"))
        .await
        .unwrap();
    assert_eq!(e.modified, mtime * 1000);
    assert_eq!(Some(e.len), x["new_size"].as_u64());
    srv.stop().await;
}

/// The fields of an `ls -l` line as FileZilla's Unix listing parser reads them: permissions,
/// link count, owner, group, size, month, day, time or year, and the rest is the name.
fn parse_ls_line(line: &str) -> Option<(char, u64, String)> {
    let mut rest = line;
    let mut fields = Vec::new();
    for _ in 0..8 {
        let t = rest.trim_start();
        let end = t.find(' ')?;
        fields.push(&t[..end]);
        rest = &t[end..];
    }
    let name = rest.strip_prefix(' ')?;
    let perms = fields[0];
    if perms.len() != 10 || fields[1].parse::<u32>().is_err() {
        return None;
    }
    let kind = perms.chars().next()?;
    let size = fields[4].parse().ok()?;
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    if !months.contains(&fields[5]) || fields[6].parse::<u8>().is_err() {
        return None;
    }
    let t = fields[7];
    if !(t.parse::<u32>().is_ok() || (t.len() == 5 && t.as_bytes()[2] == b':')) {
        return None;
    }
    Some((kind, size, name.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filezilla_reads_file_or_folder_from_longnames() {
    if !have_paramiko().await {
        return;
    }
    let srv = PortalServer::start().await;
    // Documents with awkward names next to folders.
    let tree = srv.client_tree();
    for (name, len) in [
        ("a.pdf", 1234usize),
        ("two  spaces & more.txt", 7),
        ("Jan 1 2020", 3),
    ] {
        let mut up = tree
            .open_write(
                &format!("{MATTER}/{FULL}/{name}"),
                sdx_portal::tree::WriteOptions::upload(),
            )
            .await
            .unwrap();
        up.write(&pattern(len, 3)).await.unwrap();
        up.commit().await.unwrap();
    }
    let paths = format!("/|{MATTER}|{MATTER}/Client Documents|{MATTER}/{FULL}");
    let v = portal_probe(
        srv.port(),
        "filezilla",
        &["--root", MATTER, "--folder", FULL, "--paths", &paths],
        LIMIT,
    )
    .await;
    let mut seen_dirs = 0;
    let mut seen_files = 0;
    for (path, entries) in v["listing"].as_object().unwrap() {
        let entries = entries.as_array().unwrap();
        assert!(!entries.is_empty(), "{path}: empty listing");
        for e in entries {
            let longname = e["longname"].as_str().unwrap();
            let (kind, size, name) = parse_ls_line(longname)
                .unwrap_or_else(|| panic!("{path}: not an ls -l line: {longname:?}"));
            assert_eq!(Value::from(name), e["name"], "{longname:?}");
            let is_dir = e["is_dir"].as_bool().unwrap();
            assert_eq!(kind, if is_dir { 'd' } else { '-' }, "{longname:?}");
            assert_eq!(Value::from(size), e["size"], "{longname:?}");
            if is_dir {
                seen_dirs += 1;
            } else {
                seen_files += 1;
            }
        }
    }
    assert!(seen_dirs >= 4 && seen_files >= 3, "{v}");
    assert_eq!(v["upload"], "ok", "{v}");
    assert_eq!(v["state"]["mtime"], 1_500_000_000, "{v}");
    srv.stop().await;
}
