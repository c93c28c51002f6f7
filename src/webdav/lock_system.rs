//! dav-server's [`DavLockSystem`] over the portal's [`LockManager`].
//!
//! # Bridging
//! In dav-server 0.11 every `DavLockSystem` method returns a boxed future (`LsFuture`), awaited by
//! the handler (the module comment in dav-server's `ls.rs` saying "synchronous" is out of date).
//! So no `block_in_place` is needed: changes (`lock`, `unlock`, `refresh`, `delete`) await
//! [`LockManager`]'s own `spawn_blocking` write, and reads (`check`, `discover`) are answered from
//! the manager's in-memory view without touching redb. The futures own their data (paths are
//! converted to strings before the future is built) because `LsFuture` only borrows `self`.
//!
//! # Principal
//! A [`PortalLockSystem`] is bound to the authenticated principal of one request
//! ([`PortalLockSystem::for_principal`]); `unlock` and `refresh` then only accept that principal's
//! own locks. dav-server's `unlock` carries no principal, and lock tokens are public (lock
//! discovery shows them), so without the binding anyone could remove anyone's lock.
//!
//! # `If:` headers
//! dav-server evaluates a state token in an `If:` header by calling `check` with
//! `ignore_principal = true` and the single token; this implementation answers that call with
//! "does this token name a live lock covering the path" (RFC 4918 §10.4), so a stale token after
//! UNLOCK makes the condition false (412) instead of being ignored.
//!
//! # Errors
//! The trait can only say "conflict" (LOCK: 423) for every failure; the real reason (limit hit,
//! storage error, invalid path) is logged at `warn`.

use crate::locks::{LockDepth, LockError, LockInfo, LockManager, LockRequest, LockScope};
use dav_server::davpath::DavPath;
use dav_server::ls::{DavLock, DavLockSystem, LsFuture};
use std::time::Duration;
use xmltree::Element;

/// The DAV lock system of the portal: a thin, cloneable adapter over [`LockManager`].
#[derive(Clone, Debug)]
pub struct PortalLockSystem {
    mgr: LockManager,
    principal: Option<String>,
}

impl PortalLockSystem {
    /// An adapter not bound to a principal: `unlock`/`refresh` accept any principal's token.
    /// Prefer [`PortalLockSystem::for_principal`] for requests.
    pub fn new(mgr: LockManager) -> Self {
        PortalLockSystem {
            mgr,
            principal: None,
        }
    }

    /// An adapter for one request of `principal` (the same string passed to dav-server as the
    /// request's principal).
    pub fn for_principal(mgr: LockManager, principal: impl Into<String>) -> Self {
        PortalLockSystem {
            mgr,
            principal: Some(principal.into()),
        }
    }

    /// The lock manager behind the adapter.
    pub fn manager(&self) -> &LockManager {
        &self.mgr
    }

    fn who<'a>(&'a self, principal: Option<&'a str>) -> &'a str {
        principal.or(self.principal.as_deref()).unwrap_or("")
    }
}

/// The tree path of a DAV path (prefix stripped, percent-decoded). Non-UTF-8 bytes are replaced,
/// which keeps ancestor matching intact for checks (no lock can be rooted at such a path).
fn tree_path_lossy(path: &DavPath) -> String {
    String::from_utf8_lossy(path.as_bytes()).into_owned()
}

fn tree_path_strict(path: &DavPath) -> Option<String> {
    std::str::from_utf8(path.as_bytes())
        .ok()
        .map(str::to_string)
}

/// Percent-encodes a tree path for a URL (everything but unreserved characters and `/`).
fn encode_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A DavPath for a stored lock root, under the same prefix as `like`.
fn dav_path(root: &str, like: &DavPath) -> DavPath {
    let prefix = like.prefix();
    let full = format!("{prefix}{}", encode_path(root));
    match DavPath::new(&full) {
        Ok(mut p) => {
            if p.set_prefix(prefix).is_ok() {
                p
            } else {
                like.clone()
            }
        }
        Err(_) => like.clone(),
    }
}

/// Serialises the owner element (with the `D` prefix bound to `DAV:` so it parses back).
fn owner_bytes(owner: &Element) -> Option<Vec<u8>> {
    let mut o = owner.clone();
    let mut ns = o
        .namespaces
        .take()
        .unwrap_or_else(xmltree::Namespace::empty);
    ns.force_put("D", "DAV:");
    o.namespaces = Some(ns);
    let mut buf = Vec::new();
    let cfg = xmltree::EmitterConfig::new()
        .write_document_declaration(false)
        .perform_indent(false);
    match o.write_with_config(&mut buf, cfg) {
        Ok(()) => Some(buf),
        Err(e) => {
            tracing::warn!(error = %e, "lock owner XML could not be serialised; dropped");
            None
        }
    }
}

fn owner_element(bytes: &[u8]) -> Option<Box<Element>> {
    Element::parse(bytes).ok().map(Box::new)
}

fn to_dav(info: &LockInfo, like: &DavPath) -> DavLock {
    DavLock {
        token: info.token.clone(),
        path: Box::new(dav_path(&info.path, like)),
        principal: Some(info.principal.clone()),
        owner: info.owner.as_deref().and_then(owner_element),
        timeout_at: Some(info.expires_at),
        timeout: Some(info.timeout),
        shared: info.scope == LockScope::Shared,
        deep: info.depth == LockDepth::Infinity,
    }
}

/// A stand-in "conflicting lock" for failures that are not conflicts (the trait has no other way).
fn pseudo_conflict(path: &DavPath, principal: Option<&str>) -> DavLock {
    DavLock {
        token: String::new(),
        path: Box::new(path.clone()),
        principal: principal.map(str::to_string),
        owner: None,
        timeout_at: None,
        timeout: None,
        shared: false,
        deep: false,
    }
}

impl DavLockSystem for PortalLockSystem {
    fn lock(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> LsFuture<'_, Result<DavLock, DavLock>> {
        let like = path.clone();
        let who = self.who(principal).to_string();
        let tree = tree_path_strict(path);
        let owner = owner.and_then(owner_bytes);
        Box::pin(async move {
            let Some(tree) = tree else {
                tracing::warn!("LOCK refused: path is not UTF-8");
                return Err(pseudo_conflict(&like, Some(&who)));
            };
            let req = LockRequest {
                path: tree,
                principal: who.clone(),
                owner,
                scope: if shared {
                    LockScope::Shared
                } else {
                    LockScope::Exclusive
                },
                depth: if deep {
                    LockDepth::Infinity
                } else {
                    LockDepth::Zero
                },
                timeout,
            };
            match self.mgr.lock(req).await {
                Ok(info) => {
                    let mut l = to_dav(&info, &like);
                    // The lock root is the request URL exactly as the client sent it.
                    l.path = Box::new(like);
                    Ok(l)
                }
                Err(LockError::Locked(c)) => Err(to_dav(&c, &like)),
                Err(e) => {
                    tracing::warn!(error = %e, "LOCK refused");
                    Err(pseudo_conflict(&like, Some(&who)))
                }
            }
        })
    }

    fn unlock(&'_ self, path: &DavPath, token: &str) -> LsFuture<'_, Result<(), ()>> {
        let tree = tree_path_lossy(path);
        let token = token.to_string();
        Box::pin(async move {
            self.mgr
                .unlock(&tree, &token, self.principal.as_deref())
                .await
                .map_err(|e| tracing::debug!(error = %e, "UNLOCK refused"))
        })
    }

    fn refresh(
        &'_ self,
        path: &DavPath,
        token: &str,
        timeout: Option<Duration>,
    ) -> LsFuture<'_, Result<DavLock, ()>> {
        let like = path.clone();
        let tree = tree_path_lossy(path);
        let token = token.to_string();
        Box::pin(async move {
            match self
                .mgr
                .refresh(&tree, &token, self.principal.as_deref(), timeout)
                .await
            {
                Ok(info) => Ok(to_dav(&info, &like)),
                Err(e) => {
                    tracing::debug!(error = %e, "lock refresh refused");
                    Err(())
                }
            }
        })
    }

    fn check(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        ignore_principal: bool,
        deep: bool,
        submitted_tokens: &[String],
    ) -> LsFuture<'_, Result<(), DavLock>> {
        let tree = tree_path_lossy(path);
        let res = if ignore_principal {
            // If-header evaluation: every token must name a live lock covering the path.
            if !submitted_tokens.is_empty()
                && submitted_tokens
                    .iter()
                    .all(|t| self.mgr.token_covers(&tree, t))
            {
                Ok(())
            } else {
                Err(pseudo_conflict(path, principal))
            }
        } else {
            match self
                .mgr
                .check(&tree, self.who(principal), submitted_tokens, deep)
            {
                Ok(()) => Ok(()),
                Err(LockError::Locked(c)) => Err(to_dav(&c, path)),
                Err(e) => {
                    tracing::debug!(error = %e, "lock check refused");
                    Err(pseudo_conflict(path, principal))
                }
            }
        };
        Box::pin(std::future::ready(res))
    }

    fn discover(&'_ self, path: &DavPath) -> LsFuture<'_, Vec<DavLock>> {
        let tree = tree_path_lossy(path);
        let locks = self
            .mgr
            .discover(&tree)
            .iter()
            .map(|i| to_dav(i, path))
            .collect();
        Box::pin(std::future::ready(locks))
    }

    fn delete(&'_ self, path: &DavPath) -> LsFuture<'_, Result<(), ()>> {
        let tree = tree_path_lossy(path);
        Box::pin(async move {
            self.mgr
                .delete_tree(&tree)
                .await
                .map(|_| ())
                .map_err(|e| tracing::warn!(error = %e, "removing locks after DELETE/MOVE failed"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PlainSealer;
    use std::sync::Arc;

    fn p(s: &str) -> DavPath {
        let mut d = DavPath::new(s).unwrap();
        d.set_prefix("/dav").unwrap();
        d
    }

    #[tokio::test]
    async fn lock_discover_roundtrip_with_owner() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(redb::Database::create(dir.path().join("d.redb")).unwrap());
        let mgr = LockManager::open(db, Arc::new(PlainSealer)).await.unwrap();
        let ls = PortalLockSystem::for_principal(mgr.clone(), "portal:1");
        let owner = Element::parse(
            &b"<D:owner xmlns:D=\"DAV:\"><D:href>mailto:jane@example.com</D:href></D:owner>"[..],
        )
        .unwrap();
        let path = p("/dav/Matter%20A/doc%C3%A9.docx");
        let l = ls
            .lock(&path, Some("portal:1"), Some(&owner), None, false, false)
            .await
            .unwrap();
        let found = ls.discover(&p("/dav/matter%20a/DOC%C3%A9.docx")).await;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].token, l.token);
        assert_eq!(
            found[0].path.with_prefix().as_url_string(),
            "/dav/Matter%20A/doc%C3%A9.docx"
        );
        let o = found[0].owner.as_ref().unwrap();
        assert_eq!(o.name, "owner");
        let href = o.get_child("href").unwrap();
        assert_eq!(href.get_text().unwrap(), "mailto:jane@example.com");

        // Another principal's adapter can neither write nor unlock.
        let other = PortalLockSystem::for_principal(mgr.clone(), "staff:2");
        assert!(
            other
                .check(
                    &path,
                    Some("staff:2"),
                    false,
                    false,
                    std::slice::from_ref(&l.token)
                )
                .await
                .is_err()
        );
        assert!(other.unlock(&path, &l.token).await.is_err());
        // If-header evaluation: the token is valid for this path, a made-up one is not.
        assert!(
            other
                .check(&path, None, true, false, std::slice::from_ref(&l.token))
                .await
                .is_ok()
        );
        assert!(
            other
                .check(&path, None, true, false, &["urn:uuid:x".into()])
                .await
                .is_err()
        );
        // The owner unlocks; then the stale token no longer satisfies an If header.
        ls.unlock(&path, &l.token).await.unwrap();
        assert!(
            ls.check(&path, None, true, false, std::slice::from_ref(&l.token))
                .await
                .is_err()
        );
    }

    #[test]
    fn encoding_roundtrips() {
        let like = p("/dav/x");
        let d = dav_path("/a b/ü?#%/", &like);
        assert_eq!(d.as_bytes(), "/a b/ü?#%/".as_bytes());
        assert_eq!(d.prefix(), "/dav");
    }
}
