//! Listener throughput with a zero-cost filesystem (GET serves zeros, PUT discards), to show the
//! HTTP/TLS layer is not the bottleneck and memory stays flat. Ignored by default:
//!
//! ```text
//! cargo test -j2 --test webdav_throughput -- --ignored --nocapture
//! SDX_BENCH_BYTES=268435456 cargo test ...   # size, default 1 GiB
//! ```
//!
//! Needs curl (fails without it when CI=true).

use async_trait::async_trait;
use bytes::{Buf, Bytes};
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavMetaData, FsError, FsFuture, FsStream, GuardedFileSystem, OpenOptions,
    ReadDirMeta,
};
use sdx_portal::webdav::{AuthError, Authenticator, DavCtx, WebDavServer};
use std::io::SeekFrom;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

type P = String;

static CALLS: AtomicU64 = AtomicU64::new(0);

struct OneUser;

#[async_trait]
impl Authenticator<P> for OneUser {
    async fn authenticate_basic(&self, u: &str, p: &str, _r: SocketAddr) -> Result<P, AuthError> {
        if u == "u" && p == "p" {
            Ok("staff:1".into())
        } else {
            Err(AuthError::InvalidCredentials)
        }
    }
}

#[derive(Clone, Debug)]
struct Meta {
    len: u64,
    dir: bool,
}

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.len
    }
    fn modified(&self) -> dav_server::fs::FsResult<SystemTime> {
        Ok(SystemTime::UNIX_EPOCH)
    }
    fn is_dir(&self) -> bool {
        self.dir
    }
}

#[derive(Debug)]
struct ZeroFile {
    len: u64,
    pos: u64,
    written: Arc<AtomicU64>,
}

impl DavFile for ZeroFile {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let m = Meta {
            len: self.len,
            dir: false,
        };
        Box::pin(async move { Ok(Box::new(m) as Box<dyn DavMetaData>) })
    }
    fn write_buf(&mut self, buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        self.written
            .fetch_add(buf.remaining() as u64, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        self.written.fetch_add(buf.len() as u64, Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        let n = (self.len - self.pos).min(count as u64) as usize;
        self.pos += n as u64;
        Box::pin(async move { Ok(Bytes::from(vec![0u8; n])) })
    }
    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        let r = match pos {
            SeekFrom::Start(n) => Ok(n),
            _ => Err(FsError::NotImplemented),
        };
        if let Ok(n) = r {
            self.pos = n.min(self.len);
        }
        Box::pin(async move { r })
    }
    fn flush(&mut self) -> FsFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

#[derive(Clone)]
struct ZeroFs {
    len: u64,
    written: Arc<AtomicU64>,
}

impl GuardedFileSystem<DavCtx<P>> for ZeroFs {
    fn open<'a>(
        &'a self,
        _path: &'a DavPath,
        _o: OpenOptions,
        _c: &'a DavCtx<P>,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        let f = ZeroFile {
            len: self.len,
            pos: 0,
            written: self.written.clone(),
        };
        Box::pin(async move { Ok(Box::new(f) as Box<dyn DavFile>) })
    }
    fn read_dir<'a>(
        &'a self,
        _path: &'a DavPath,
        _m: ReadDirMeta,
        _c: &'a DavCtx<P>,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        Box::pin(async { Err(FsError::NotImplemented) })
    }
    fn metadata<'a>(
        &'a self,
        path: &'a DavPath,
        _c: &'a DavCtx<P>,
    ) -> FsFuture<'a, Box<dyn DavMetaData>> {
        let dir = path.as_bytes() == b"/";
        let zero = path.as_bytes() == b"/zero.bin";
        let len = self.len;
        Box::pin(async move {
            if dir || zero {
                Ok(Box::new(Meta { len, dir }) as Box<dyn DavMetaData>)
            } else {
                Err(FsError::NotFound)
            }
        })
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput measurement; run with --ignored --nocapture"]
async fn get_and_put_throughput() {
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v curl"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "curl required");
        eprintln!("SKIPPED: curl not installed");
        return;
    }
    let size: u64 = std::env::var("SDX_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) =
        sdx_portal::tls::generate_self_signed(dir.path(), &["localhost".into()]).unwrap();
    let upload = dir.path().join("upload.bin");
    std::fs::File::create(&upload)
        .unwrap()
        .set_len(size)
        .unwrap();
    let written = Arc::new(AtomicU64::new(0));

    for tls in [false, true] {
        let fs = ZeroFs {
            len: size,
            written: written.clone(),
        };
        let cfg = tls.then(|| sdx_portal::tls::load_server_config(&cert, &key).unwrap());
        let server = WebDavServer::<P>::builder(
            "127.0.0.1:0".parse().unwrap(),
            Box::new(fs),
            Arc::new(OneUser),
        )
        .tls(cfg)
        .bind()
        .await
        .unwrap();
        let port = server.local_addr().port();
        let running = server.spawn();
        let base = if tls {
            format!("https://localhost:{port}/dav")
        } else {
            format!("http://127.0.0.1:{port}/dav")
        };
        let protos: &[&str] = if tls {
            &["--http1.1", "--http2"]
        } else {
            &["--http1.1"]
        };
        for proto in protos {
            for (what, extra) in [
                ("GET", vec!["-o".to_string(), "/dev/null".into()]),
                (
                    "PUT",
                    vec![
                        "-T".to_string(),
                        upload.display().to_string(),
                        "-H".into(),
                        "Expect:".into(),
                        "-o".into(),
                        "/dev/null".into(),
                    ],
                ),
            ] {
                written.store(0, Ordering::SeqCst);
                CALLS.store(0, Ordering::SeqCst);
                let rss_before = rss_kib();
                let peak = Arc::new(AtomicU64::new(rss_before));
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let sampler = {
                    let (peak, stop) = (peak.clone(), stop.clone());
                    std::thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            peak.fetch_max(rss_kib(), Ordering::Relaxed);
                            std::thread::sleep(std::time::Duration::from_millis(20));
                        }
                    })
                };
                let url = if what == "GET" {
                    format!("{base}/zero.bin")
                } else {
                    format!("{base}/up.bin")
                };
                let mut args = vec![
                    "-sS".to_string(),
                    proto.to_string(),
                    "-u".into(),
                    "u:p".into(),
                    "--cacert".into(),
                    cert.display().to_string(),
                    "--resolve".into(),
                    format!("localhost:{port}:127.0.0.1"),
                    "-w".into(),
                    "%{http_code}".into(),
                ];
                args.extend(extra);
                args.push(url);
                let t = Instant::now();
                let out = tokio::process::Command::new("curl")
                    .args(&args)
                    .output()
                    .await
                    .unwrap();
                let secs = t.elapsed().as_secs_f64();
                stop.store(true, Ordering::Relaxed);
                sampler.join().unwrap();
                let code = String::from_utf8_lossy(&out.stdout).into_owned();
                assert!(
                    code == "200" || code == "201" || code == "204",
                    "{what} {proto}: {code} {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                if what == "PUT" {
                    assert_eq!(written.load(Ordering::SeqCst), size);
                }
                let calls = CALLS.load(Ordering::SeqCst);
                eprintln!(
                    "{what} {} {proto}: {:.0} MB/s, {calls} writes, process RSS {} -> peak {} MiB",
                    if tls { "https" } else { "http" },
                    size as f64 / secs / 1e6,
                    rss_before / 1024,
                    peak.load(Ordering::Relaxed) / 1024
                );
            }
        }
        running.shutdown().await.unwrap();
    }
}
