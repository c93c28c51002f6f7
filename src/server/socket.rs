//! The admin socket: `DATA/admin.sock`, a unix stream socket (mode 0600) on which a running
//! server executes admin requests for local CLI commands.
//!
//! Protocol (one request per connection): the client sends one JSON line, an
//! [`AdminRequest`]; the server answers with JSON lines, each a [`Reply`]: output frames, then
//! exactly one `done` or `failed`. Only peers running as the socket's owner are served.

use super::Failure;
use super::admin::{AdminCtx, AdminRequest, Frame, execute};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// Largest request line (a portal file of up to 16 MiB, JSON-escaped).
const MAX_REQUEST: u64 = 40 << 20;
/// Admin connections served at once.
const MAX_CLIENTS: usize = 16;

/// One line of the server's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// Output.
    Frame(Frame),
    /// The command succeeded.
    Done,
    /// The command failed with this one-line message.
    Failed(String),
}

/// A running admin socket.
#[derive(Debug)]
pub struct AdminSocket {
    path: PathBuf,
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl AdminSocket {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, lets running commands end (or aborts them after `grace`) and removes the
    /// socket file.
    pub async fn shutdown(self, grace: std::time::Duration) {
        self.token.cancel();
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listens on `path` and executes requests against `ctx`. A leftover socket file (from a server
/// that crashed) is replaced; anything else at that path is an error.
pub async fn listen(ctx: Arc<AdminCtx>, path: &Path) -> Result<AdminSocket, Failure> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Failure(format!(
                "{} exists and is not a socket: move it away",
                path.display()
            )));
        }
        // We hold the database, so no other server uses this data dir: the socket is stale.
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        Failure(format!(
            "can't create the admin socket {}: {e}{}",
            path.display(),
            if path.as_os_str().len() > 100 {
                " (the path is too long for a unix socket: use a shorter data dir path)"
            } else {
                ""
            }
        ))
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let owner = std::fs::metadata(path)?.uid();
    let token = CancellationToken::new();
    let t = token.clone();
    let task = tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let (stream, _) = tokio::select! {
                _ = t.cancelled() => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin socket accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                tracing::warn!("too many admin connections; refusing one");
                continue;
            };
            match stream.peer_cred() {
                Ok(c) if c.uid() == owner => {}
                other => {
                    tracing::warn!(peer = ?other.map(|c| c.uid()), "admin socket peer refused: not the server's user");
                    continue;
                }
            }
            let ctx = ctx.clone();
            let t = t.clone();
            conns.spawn(async move {
                tokio::select! {
                    _ = serve_one(ctx, stream) => {}
                    _ = t.cancelled() => {}
                }
                drop(permit);
            });
        }
        // Let running commands finish; the caller bounds the wait.
        while conns.join_next().await.is_some() {}
    });
    Ok(AdminSocket {
        path: path.to_path_buf(),
        token,
        task,
    })
}

async fn write_reply(w: &mut (impl AsyncWriteExt + Unpin), r: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await
}

async fn serve_one(ctx: Arc<AdminCtx>, stream: UnixStream) {
    let (r, mut w) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(r.take(MAX_REQUEST));
    let req = match reader.read_until(b'\n', &mut line).await {
        Ok(0) => return,
        Ok(_) if !line.ends_with(b"\n") => {
            Err("the request is too large or incomplete".to_string())
        }
        Ok(_) => serde_json::from_slice::<AdminRequest>(&line)
            .map_err(|e| format!("malformed request (client and server versions differ?): {e}")),
        Err(e) => Err(format!("reading the request failed: {e}")),
    };
    let req = match req {
        Ok(r) => r,
        Err(msg) => {
            let _ = write_reply(&mut w, &Reply::Failed(msg)).await;
            return;
        }
    };
    tracing::info!(request = ?redacted(&req), "admin request");
    let (tx, mut rx) = mpsc::channel::<Frame>(256);
    let run = async move {
        let r = execute(&ctx, req, &tx).await;
        drop(tx);
        r
    };
    let pump = async {
        while let Some(f) = rx.recv().await {
            if write_reply(&mut w, &Reply::Frame(f)).await.is_err() {
                return false;
            }
        }
        true
    };
    let (result, connected) = tokio::join!(run, pump);
    if connected {
        let end = match result {
            Ok(()) => Reply::Done,
            Err(f) => Reply::Failed(f.0),
        };
        let _ = write_reply(&mut w, &end).await;
        let _ = w.shutdown().await;
    }
}

/// The request for the log, without the portal file's text.
fn redacted(r: &AdminRequest) -> AdminRequest {
    match r {
        AdminRequest::Apply { name, dry_run, .. } => AdminRequest::Apply {
            name: name.clone(),
            text: String::new(),
            dry_run: *dry_run,
        },
        other => other.clone(),
    }
}

/// Connects to a server's admin socket. `Ok(None)`: no server listens there (no socket, or a
/// stale one), so the caller may open the data dir itself.
pub async fn connect(path: &Path) -> Result<Option<UnixStream>, Failure> {
    match UnixStream::connect(path).await {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(Failure(format!(
            "can't reach the server's admin socket {}: {e}",
            path.display()
        ))),
    }
}

/// Sends `req` over `stream` and passes every output frame to `on_frame`; returns the command's
/// result.
pub async fn call(
    stream: UnixStream,
    req: &AdminRequest,
    mut on_frame: impl FnMut(Frame),
) -> Result<(), Failure> {
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_vec(req).map_err(|e| Failure(e.to_string()))?;
    line.push(b'\n');
    w.write_all(&line)
        .await
        .map_err(|e| Failure(format!("sending the request to the server failed: {e}")))?;
    let mut lines = BufReader::new(r).lines();
    loop {
        let l = lines
            .next_line()
            .await
            .map_err(|e| Failure(format!("reading the server's answer failed: {e}")))?;
        let Some(l) = l else {
            return Err(Failure(
                "the server closed the admin connection before the command finished (was it stopped?)"
                    .into(),
            ));
        };
        match serde_json::from_str::<Reply>(&l) {
            Ok(Reply::Frame(f)) => on_frame(f),
            Ok(Reply::Done) => return Ok(()),
            Ok(Reply::Failed(m)) => return Err(Failure(m)),
            Err(e) => return Err(Failure(format!("malformed answer from the server: {e}"))),
        }
    }
}
