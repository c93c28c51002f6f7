//! The SFTP (v3) request handler over the principal's tree.
//!
//! A translator only: each request becomes one [`Tree`] operation, which checks the permission and
//! writes the audit entry; errors map to SFTP status codes with a message saying why. Extended
//! requests (`posix-rename@openssh.com`, `statvfs@openssh.com`, `fsync@openssh.com`) go through
//! the same tree calls as plain ones. `limits@openssh.com` (offered by sessions the server starts,
//! [`PortalSftp::with_limits`]) tells OpenSSH's client it may read and write 255 KiB per request,
//! as OpenSSH's own server does, instead of its 32 KiB default.
//!
//! Paths: relative paths are taken from `/`; `realpath` always answers an absolute, canonical path.
//! Uploads commit atomically on `close`; out-of-order writes (OpenSSH and rclone keep many in
//! flight) land in the staged copy at their offsets.
//!
//! POSIX meanings kept where clients rely on them: an open without `SSH_FXF_CREAT` needs an
//! existing document (read+write opens by sshfs edit it in place, from its current content); with
//! `SSH_FXF_APPEND` every write goes to the end; `SETSTAT` with a size (truncate of a closed file)
//! commits a new version of that length; `REMOVE` never takes a folder and `RMDIR` never a
//! document; directory listings carry `ls -l` longnames ([`longname`]). Each session holds at most
//! [`MAX_HANDLES`] handles, checked before anything is opened.

use crate::Error;
use crate::model::Permission;
use crate::path::PortalPath;
use crate::tree::{Entry, ReadHandle, Tree, Upload, WriteOptions};
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, FileMode, Handle, Name, OpenFlags, Packet, Status,
    StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use std::collections::HashMap;

/// Most handles one session may hold open.
pub const MAX_HANDLES: usize = 256;
/// Largest read served in one request.
pub const MAX_READ: u32 = 256 * 1024;
/// Bytes of a document read when it is opened for reading: one 64 KiB chunk of the encrypted
/// store, the whole document for most small files.
const READ_PREFETCH: usize = 64 * 1024;
/// Directory entries sent per READDIR reply.
const DIR_PAGE: usize = 128;

/// Maps a portal error to an SFTP status reply with a message.
pub fn status_of(e: &Error) -> StatusReply {
    let code = match e {
        Error::PermissionDenied { .. }
        | Error::StaffOnly(_)
        | Error::AuthenticationFailed
        | Error::LockedOut { .. } => StatusCode::PermissionDenied,
        Error::NotFound(_) => StatusCode::NoSuchFile,
        // A name the portal can't hold: the request itself is unacceptable.
        Error::InvalidName { .. } => StatusCode::BadMessage,
        _ => StatusCode::Failure,
    };
    code.with_message(e.to_string())
}

fn reply(e: Error) -> StatusReply {
    tracing::debug!(error = %e, "sftp request refused");
    status_of(&e)
}

enum Open {
    Read(Box<ReadHandle>),
    /// An upload; `append`: the client opened with `SSH_FXF_APPEND` (every write goes to the end).
    Write {
        up: Box<Upload>,
        append: bool,
    },
    Dir {
        entries: Vec<Entry>,
        next: usize,
    },
}

/// One SFTP session of one authenticated principal.
pub struct PortalSftp {
    tree: Tree,
    handles: HashMap<String, Open>,
    counter: u64,
    /// The transport's largest client packet, advertised in `limits@openssh.com` (see
    /// [`PortalSftp::with_limits`]); `None`: the extension is not offered.
    max_packet_len: Option<u32>,
}

impl PortalSftp {
    /// A session for the principal behind `tree` (whose actor carries channel `sftp` and the
    /// client's address). `STAT`/`LSTAT` are answered as probes ([`Tree::stat_probe`]): checked
    /// and audited like any stat, their audit entries committed with the session's next commit.
    pub fn new(tree: Tree) -> Self {
        PortalSftp {
            tree: tree.with_deferred_probes(),
            handles: HashMap::new(),
            counter: 0,
            max_packet_len: None,
        }
    }

    /// Offers OpenSSH's `limits@openssh.com` extension for a transport that accepts client
    /// packets of up to `max_packet_len` bytes: read and write lengths of `max_packet_len - 1024`
    /// (capped at [`MAX_READ`]) and [`MAX_HANDLES`] open handles, as OpenSSH's sftp-server
    /// advertises for its own 256 KiB limit. OpenSSH's client (8.6 and later) then transfers in
    /// requests of that size instead of 32 KiB: eight times fewer round trips per file.
    pub fn with_limits(mut self, max_packet_len: u32) -> Self {
        self.max_packet_len = Some(max_packet_len);
        self
    }

    /// The `limits@openssh.com` reply body, if offered.
    fn limits(&self) -> Option<[u64; 4]> {
        limits_for(self.max_packet_len?)
    }

    /// Refuses a new handle when the session holds [`MAX_HANDLES`] already. Called *before* the
    /// tree opens anything, so a refused open stages nothing and audits nothing.
    fn check_room(&self) -> std::result::Result<(), StatusReply> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(StatusCode::Failure.with_message(format!(
                "too many open handles (at most {MAX_HANDLES} per session): close some first"
            )));
        }
        Ok(())
    }

    fn add(&mut self, o: Open) -> std::result::Result<String, StatusReply> {
        self.check_room()?;
        self.counter += 1;
        let h = format!("h{}", self.counter);
        self.handles.insert(h.clone(), o);
        Ok(h)
    }

    fn get(&mut self, h: &str) -> std::result::Result<&mut Open, StatusReply> {
        self.handles
            .get_mut(h)
            .ok_or_else(|| StatusCode::Failure.with_message("no such handle"))
    }
}

impl Drop for PortalSftp {
    fn drop(&mut self) {
        // The session is over: commit its last probes' audit entries now rather than after the
        // flush delay.
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            let tree = self.tree.clone();
            h.spawn(async move {
                if let Err(e) = tree.flush_probes().await {
                    tracing::warn!(error = %e, "probe audit entries not committed");
                }
            });
        }
    }
}

fn abs(p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/{p}")
    }
}

/// Attributes for an entry: mode bits say what the principal may do there.
pub fn attrs_of(e: &Entry) -> FileAttributes {
    let mut a = FileAttributes::empty();
    a.size = Some(e.len);
    a.uid = Some(0);
    a.gid = Some(0);
    let p = e.perms;
    let mode = if e.is_dir() {
        let r = if p.contains(Permission::List) || e.kind != crate::tree::EntryKind::Folder {
            0o500
        } else {
            0o100
        };
        let w = if p.contains(Permission::Create) {
            0o200
        } else {
            0
        };
        FileMode::DIR.bits() | r | w
    } else {
        let r = if p.contains(Permission::Read) {
            0o400
        } else {
            0
        };
        let w = if p.contains(Permission::Update) {
            0o200
        } else {
            0
        };
        FileMode::REG.bits() | r | w
    };
    a.permissions = Some(mode);
    let secs = u32::try_from(e.modified / 1000).unwrap_or(u32::MAX);
    a.mtime = Some(secs);
    a.atime = Some(secs);
    a
}

/// Seconds since the Unix epoch, now.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `(year, month 1..=12, day 1..=31)` of a day counted from 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}

/// The `ls -l` line OpenSSH's `sftp-server` sends as a directory entry's longname, e.g.
/// `-rw-------    1 portal   portal     300000 Nov 23 22:24 a.bin` (dates in UTC; the year instead of
/// the time for dates more than six months from `now`). Clients show it verbatim (`sftp ls -l`), and
/// FileZilla decides from its first character whether an entry is a folder (`d`) or a file (`-`).
pub fn longname(e: &Entry, now: u64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let attrs = attrs_of(e);
    let mode = attrs.permissions.unwrap_or(0);
    let mut m = String::with_capacity(10);
    m.push(if e.is_dir() { 'd' } else { '-' });
    for shift in [6u32, 3, 0] {
        let b = (mode >> shift) & 7;
        m.push(if b & 4 != 0 { 'r' } else { '-' });
        m.push(if b & 2 != 0 { 'w' } else { '-' });
        m.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    let secs = e.modified / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let (year, month, day) = civil_from_days(days);
    let month = MONTHS
        .get(month.saturating_sub(1) as usize)
        .copied()
        .unwrap_or("Jan");
    const HALF_YEAR: u64 = 365 * 24 * 3600 / 2;
    let recent = secs <= now.saturating_add(3600) && now.saturating_sub(secs) < HALF_YEAR;
    let when = if recent {
        let in_day = secs % 86_400;
        format!(
            "{month} {day:>2} {:02}:{:02}",
            in_day / 3600,
            (in_day % 3600) / 60
        )
    } else {
        format!("{month} {day:>2}  {year}")
    };
    let links = if e.is_dir() { 2 } else { 1 };
    format!(
        "{m} {links:>4} {:<8} {:<8} {:>8} {when} {}",
        "portal", "portal", e.len, e.name
    )
}

/// `limits@openssh.com` for a transport accepting client packets of `max_packet_len` bytes: max
/// packet, read and write lengths, open handles. `None` for a limit too small to be useful.
fn limits_for(max_packet_len: u32) -> Option<[u64; 4]> {
    // Room for the request's own fields (handle, offset, length) and the reply's header, as
    // OpenSSH's sftp-server leaves.
    let io = max_packet_len.checked_sub(1024)?.min(MAX_READ);
    (io >= 4096).then_some([
        u64::from(max_packet_len),
        u64::from(io),
        u64::from(io),
        MAX_HANDLES as u64,
    ])
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    }
}

/// Reads one SSH string from `data` at `*pos`.
fn ssh_string(data: &[u8], pos: &mut usize) -> Option<String> {
    let len_bytes: [u8; 4] = data.get(*pos..pos.checked_add(4)?)?.try_into().ok()?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let start = pos.checked_add(4)?;
    let s = data.get(start..start.checked_add(len)?)?;
    *pos = start + len;
    String::from_utf8(s.to_vec()).ok()
}

impl russh_sftp::server::Handler for PortalSftp {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported.into()
    }

    async fn init(
        &mut self,
        _version: u32,
        _ext: HashMap<String, String>,
    ) -> std::result::Result<Version, Self::Error> {
        let mut v = Version::new();
        v.extensions
            .insert("posix-rename@openssh.com".into(), "1".into());
        v.extensions
            .insert("statvfs@openssh.com".into(), "2".into());
        v.extensions.insert("fsync@openssh.com".into(), "1".into());
        if self.limits().is_some() {
            v.extensions.insert("limits@openssh.com".into(), "1".into());
        }
        Ok(v)
    }

    async fn realpath(&mut self, id: u32, path: String) -> std::result::Result<Name, Self::Error> {
        let p = PortalPath::parse(&abs(&path)).map_err(reply)?;
        Ok(Name {
            id,
            files: vec![File::dummy(p.to_string())],
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> std::result::Result<Attrs, Self::Error> {
        let e = self.tree.stat_probe(&abs(&path)).await.map_err(reply)?;
        Ok(Attrs {
            id,
            attrs: attrs_of(&e),
        })
    }

    async fn lstat(&mut self, id: u32, path: String) -> std::result::Result<Attrs, Self::Error> {
        self.stat(id, path).await
    }

    async fn fstat(&mut self, id: u32, handle: String) -> std::result::Result<Attrs, Self::Error> {
        let attrs = match self.get(&handle)? {
            Open::Read(h) => attrs_of(h.entry()),
            Open::Write { up: u, .. } => {
                let mut a = FileAttributes::empty();
                a.size = Some(u.len());
                a.permissions = Some(FileMode::REG.bits() | 0o600);
                a
            }
            Open::Dir { .. } => {
                let mut a = FileAttributes::empty();
                a.permissions = Some(FileMode::DIR.bits() | 0o500);
                a
            }
        };
        Ok(Attrs { id, attrs })
    }

    async fn opendir(&mut self, id: u32, path: String) -> std::result::Result<Handle, Self::Error> {
        self.check_room()?;
        let entries = self.tree.list(&abs(&path)).await.map_err(reply)?;
        let handle = self.add(Open::Dir { entries, next: 0 })?;
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> std::result::Result<Name, Self::Error> {
        match self.get(&handle)? {
            Open::Dir { entries, next } => {
                if *next >= entries.len() {
                    return Err(StatusCode::Eof.into());
                }
                let end = (*next + DIR_PAGE).min(entries.len());
                let now = now_secs();
                let files = entries
                    .get(*next..end)
                    .unwrap_or_default()
                    .iter()
                    .map(|e| File {
                        filename: e.name.clone(),
                        longname: longname(e, now),
                        attrs: attrs_of(e),
                    })
                    .collect();
                *next = end;
                Ok(Name { id, files })
            }
            _ => Err(StatusCode::Failure.with_message("not a directory handle")),
        }
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> std::result::Result<Handle, Self::Error> {
        self.check_room()?;
        let path = abs(&filename);
        let writing = pflags.intersects(
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::APPEND,
        );
        let o = if writing {
            let opts = WriteOptions {
                truncate: pflags.contains(OpenFlags::TRUNCATE),
                create_new: pflags.contains(OpenFlags::EXCLUDE),
            };
            let mut up = self.tree.open_write(&path, opts).await.map_err(reply)?;
            if !pflags.contains(OpenFlags::CREATE) && !up.is_update() {
                // Without SSH_FXF_CREAT the file must exist (sshfs, WinSCP's resume).
                let _ = up.abort().await;
                return Err(StatusCode::NoSuchFile
                    .with_message(format!("{path}: no such document (open without create)")));
            }
            up.set_create_new(opts.create_new);
            Open::Write {
                up: Box::new(up),
                append: pflags.contains(OpenFlags::APPEND),
            }
        } else {
            // Answered once the check is done; the audit entry's commit and the blob's first
            // bytes (kept in the handle: a small document's READs and its EOF need no further
            // blob access) go on meanwhile, and the first READ waits for both.
            let h = self
                .tree
                .open_read_pipelined(&path, READ_PREFETCH)
                .await
                .map_err(reply)?;
            Open::Read(Box::new(h))
        };
        let handle = self.add(o)?;
        Ok(Handle { id, handle })
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> std::result::Result<Data, Self::Error> {
        let n = len.min(MAX_READ) as usize;
        let data = match self.get(&handle)? {
            Open::Read(h) => h.read_at(offset, n).await.map_err(reply)?,
            Open::Write { up: u, .. } => u.read_at(offset, n).await.map_err(reply)?,
            Open::Dir { .. } => {
                return Err(StatusCode::Failure.with_message("a directory can't be read"));
            }
        };
        if data.is_empty() {
            return Err(StatusCode::Eof.into());
        }
        Ok(Data {
            id,
            data: data.to_vec(),
        })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> std::result::Result<Status, Self::Error> {
        match self.get(&handle)? {
            Open::Write { up: u, append } => {
                // SSH_FXF_APPEND: the offset is ignored, data goes to the end (as OpenSSH does).
                let r = if *append || offset == u.len() {
                    u.write(&data).await
                } else {
                    u.write_at(offset, &data).await
                };
                r.map_err(reply)?;
                Ok(ok(id))
            }
            _ => {
                Err(StatusCode::PermissionDenied
                    .with_message("the file was not opened for writing"))
            }
        }
    }

    async fn close(&mut self, id: u32, handle: String) -> std::result::Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(Open::Write { up: u, .. }) => u.commit().await.map(|_| ok(id)).map_err(reply),
            Some(_) => Ok(ok(id)),
            None => Err(StatusCode::Failure.with_message("no such handle")),
        }
    }

    async fn remove(
        &mut self,
        id: u32,
        filename: String,
    ) -> std::result::Result<Status, Self::Error> {
        // REMOVE is for files: the tree's delete of a folder (staff) takes everything in it.
        let path = abs(&filename);
        if let Ok(e) = self.tree.stat_probe(&path).await
            && e.is_dir()
        {
            return Err(StatusCode::Failure.with_message(format!("{path} is a folder: use rmdir")));
        }
        self.tree.delete(&path).await.map(|_| ok(id)).map_err(reply)
    }

    async fn rmdir(&mut self, id: u32, path: String) -> std::result::Result<Status, Self::Error> {
        // RMDIR is for folders only: never let it trash a document.
        let path = abs(&path);
        let e = self.tree.stat_probe(&path).await.map_err(reply)?;
        if !e.is_dir() {
            return Err(StatusCode::Failure.with_message(format!("{path} is not a folder")));
        }
        self.tree.delete(&path).await.map(|_| ok(id)).map_err(reply)
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> std::result::Result<Status, Self::Error> {
        self.tree
            .mkdir(&abs(&path))
            .await
            .map(|_| ok(id))
            .map_err(reply)
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> std::result::Result<Status, Self::Error> {
        // SFTP v3 rename never replaces an existing target.
        self.tree
            .rename(&abs(&oldpath), &abs(&newpath), false)
            .await
            .map(|_| ok(id))
            .map_err(reply)
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> std::result::Result<Status, Self::Error> {
        let path = abs(&path);
        if let Some(len) = attrs.size {
            // truncate(2) of a file that isn't open (sshfs, `truncate -s`): a new version of that
            // length, committed at once. Needs Update, like any change of content.
            let opts = WriteOptions {
                truncate: len == 0,
                create_new: false,
            };
            let mut up = self.tree.open_write(&path, opts).await.map_err(reply)?;
            if !up.is_update() {
                let _ = up.abort().await;
                return Err(
                    StatusCode::NoSuchFile.with_message(format!("{path}: no such document"))
                );
            }
            if len != 0 {
                up.set_len(len).await.map_err(reply)?;
            }
            if let Some(m) = attrs.mtime {
                up.set_modified(u64::from(m) * 1000);
            }
            up.commit().await.map_err(reply)?;
            return Ok(ok(id));
        }
        if let Some(m) = attrs.mtime {
            let r = self.tree.set_modified(&path, u64::from(m) * 1000).await;
            // Keeping a date is a courtesy: a refusal to set it must not fail the client's upload.
            if let Err(e) = r
                && !e.is_denied()
            {
                return Err(reply(e));
            }
        }
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> std::result::Result<Status, Self::Error> {
        match self.get(&handle)? {
            Open::Write { up: u, .. } => {
                if let Some(len) = attrs.size {
                    u.set_len(len).await.map_err(reply)?;
                }
                if let Some(m) = attrs.mtime {
                    u.set_modified(u64::from(m) * 1000);
                }
            }
            // ftruncate(2) of a file opened for reading only.
            _ if attrs.size.is_some() => {
                return Err(StatusCode::PermissionDenied
                    .with_message("the file was not opened for writing"));
            }
            // Times on a read or directory handle: harmless, ignored.
            _ => {}
        }
        Ok(ok(id))
    }

    async fn readlink(
        &mut self,
        _id: u32,
        _path: String,
    ) -> std::result::Result<Name, Self::Error> {
        Err(StatusCode::OpUnsupported.with_message("the portal has no symbolic links"))
    }

    async fn symlink(
        &mut self,
        _id: u32,
        _l: String,
        _t: String,
    ) -> std::result::Result<Status, Self::Error> {
        Err(StatusCode::PermissionDenied.with_message("the portal has no symbolic links"))
    }

    async fn extended(
        &mut self,
        id: u32,
        request: String,
        data: Vec<u8>,
    ) -> std::result::Result<Packet, Self::Error> {
        match request.as_str() {
            "posix-rename@openssh.com" => {
                let mut pos = 0;
                let (Some(a), Some(b)) = (ssh_string(&data, &mut pos), ssh_string(&data, &mut pos))
                else {
                    return Err(
                        StatusCode::BadMessage.with_message("malformed posix-rename request")
                    );
                };
                self.tree
                    .rename(&abs(&a), &abs(&b), true)
                    .await
                    .map_err(reply)?;
                Ok(Packet::Status(ok(id)))
            }
            // Acknowledged, but nothing is committed: an upload becomes durable and visible
            // atomically when its handle is closed (a version per close, not per fsync). sshfs
            // sends this on the application's fsync(); OpenSSH's `put -f` before its close.
            "fsync@openssh.com" => Ok(Packet::Status(ok(id))),
            "statvfs@openssh.com" => {
                // A large, mostly free volume: clients only use it to decide whether to upload.
                let mut b = Vec::with_capacity(4 + 8 * 11);
                b.extend_from_slice(&id.to_be_bytes());
                for v in [
                    4096u64,
                    4096,
                    1 << 30,
                    1 << 29,
                    1 << 29,
                    1 << 24,
                    1 << 23,
                    1 << 23,
                    0,
                    0,
                    255,
                ] {
                    b.extend_from_slice(&v.to_be_bytes());
                }
                Ok(Packet::ExtendedReply(russh_sftp::protocol::ExtendedReply {
                    id,
                    data: b[4..].to_vec(),
                }))
            }
            "limits@openssh.com" => match self.limits() {
                Some(l) => Ok(Packet::ExtendedReply(russh_sftp::protocol::ExtendedReply {
                    id,
                    data: l.iter().flat_map(|v| v.to_be_bytes()).collect(),
                })),
                None => Err(StatusCode::OpUnsupported.into()),
            },
            _ => Err(StatusCode::OpUnsupported.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Permissions;
    use crate::tree::EntryKind;

    fn entry(
        name: &str,
        kind: EntryKind,
        len: u64,
        modified_secs: u64,
        perms: Permissions,
    ) -> Entry {
        Entry {
            name: name.into(),
            kind,
            len,
            modified: modified_secs * 1000,
            created: 0,
            etag: String::new(),
            perms,
            sha256: None,
            matter: None,
            document: None,
        }
    }

    #[test]
    fn limits_match_what_the_transport_accepts() {
        // The default transport (256 KiB packets): what OpenSSH's sftp-server advertises.
        assert_eq!(
            limits_for(256 * 1024),
            Some([262_144, 261_120, 261_120, MAX_HANDLES as u64])
        );
        // A smaller transport limit shrinks the lengths with it (never above what it accepts).
        assert_eq!(limits_for(64 * 1024).map(|l| l[1]), Some(64 * 1024 - 1024));
        // A larger one is capped at the largest read served.
        assert_eq!(limits_for(1 << 20).map(|l| l[2]), Some(u64::from(MAX_READ)));
        assert_eq!(limits_for(2048), None);
        assert_eq!(limits_for(0), None);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        // 2000-02-29 (leap day of a century leap year)
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        // 2026-11-23
        assert_eq!(civil_from_days(20_780), (2026, 11, 23));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    #[test]
    fn longnames_look_like_ls_minus_l() {
        let rw = Permissions::NONE
            .with(Permission::Read)
            .with(Permission::Update);
        // 2026-11-23 22:24:05 UTC
        let t = 20_780 * 86_400 + 22 * 3600 + 24 * 60 + 5;
        let f = entry("a file.bin", EntryKind::Document, 300_000, t, rw);
        assert_eq!(
            longname(&f, t + 60),
            "-rw-------    1 portal   portal     300000 Nov 23 22:24 a file.bin"
        );
        // more than six months old: the year instead of the time
        assert_eq!(
            longname(&f, t + 200 * 86_400),
            "-rw-------    1 portal   portal     300000 Nov 23  2026 a file.bin"
        );
        let list = Permissions::NONE.with(Permission::List);
        let d = entry("Tax Returns", EntryKind::Folder, 0, 86_400 * 4, list);
        let l = longname(&d, t);
        assert!(l.starts_with("dr-x------    2 portal   portal "), "{l}");
        assert!(l.ends_with(" Jan  5  1970 Tax Returns"), "{l}");
        // a folder without List is still a folder (d), but not readable
        let d = entry("Internal", EntryKind::Folder, 0, t, Permissions::NONE);
        assert!(longname(&d, t).starts_with("d--x------ "));
    }
}
