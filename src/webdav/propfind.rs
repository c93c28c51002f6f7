//! A direct answer to the common `PROPFIND`: `Depth: 0` or `1`, asking (`<D:prop>`) only for
//! live properties of the `DAV:` namespace that come with a node's metadata (`resourcetype`,
//! `getcontentlength`, `getlastmodified`, `getetag`, `creationdate`, `getcontenttype`) — what
//! file managers, `davfs2`, `rclone` and scripts send to list a folder.
//!
//! dav-server answers such a listing through a generic XML writer (an event emitter per element,
//! a `get_props` call and a flushed body chunk per child): for 10,000 children that cost about
//! as much as reading them from the store. Here the multistatus is written straight into one
//! buffer. Everything still goes through the filesystem ([`GuardedFileSystem::metadata`] and
//! [`GuardedFileSystem::read_dir`]), so the permission checks, the hidden entries and the single
//! audit entry of the listing are exactly those of dav-server's path; the request is marked
//! ([`DavCtx::set_live_props_only`]) so the filesystem skips reading dead properties nobody asked
//! for. Any other PROPFIND (`allprop`, `propname`, dead or non-`DAV:` properties, quota, locks)
//! goes to dav-server unchanged. The output matches dav-server's for the same request (same
//! hrefs, same property order, properties without a value left out).

use super::server::{DAV_PREFIX, DavCtx};
use bytes::Bytes;
use dav_server::body::Body;
use dav_server::davpath::DavPath;
use dav_server::fs::{DavMetaData, FsError, GuardedFileSystem, ReadDirMeta};
use futures_util::StreamExt;
use http::{HeaderValue, Response, StatusCode, header};
use std::time::SystemTime;

/// The `DAV:` namespace.
const DAV_NS: &str = "DAV:";

/// A live property the fast path answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Live {
    /// `resourcetype`.
    ResourceType,
    /// `getcontentlength` (documents only).
    ContentLength,
    /// `getlastmodified`.
    LastModified,
    /// `getetag`.
    ETag,
    /// `creationdate`.
    CreationDate,
    /// `getcontenttype`.
    ContentType,
}

impl Live {
    fn of(name: &str) -> Option<Live> {
        Some(match name {
            "resourcetype" => Live::ResourceType,
            "getcontentlength" => Live::ContentLength,
            "getlastmodified" => Live::LastModified,
            "getetag" => Live::ETag,
            "creationdate" => Live::CreationDate,
            "getcontenttype" => Live::ContentType,
            _ => return None,
        })
    }
}

/// The live properties a PROPFIND body asks for, if the fast path can answer it: a `DAV:`
/// `propfind` whose `prop` names only [`Live`] properties of `DAV:`. `None` (dav-server answers)
/// for anything else, including an empty body (`allprop`) and unparsable XML.
pub(crate) fn live_props(body: &[u8]) -> Option<Vec<Live>> {
    if body.is_empty() {
        return None;
    }
    let root = xmltree::Element::parse(body).ok()?;
    if root.name != "propfind" || root.namespace.as_deref() != Some(DAV_NS) {
        return None;
    }
    // As dav-server: `include` aside, the first of propname/prop/allprop decides.
    let kind = root.children.iter().find_map(|n| {
        n.as_element()
            .filter(|e| matches!(e.name.as_str(), "propname" | "prop" | "allprop"))
    })?;
    if kind.name != "prop" || kind.namespace.as_deref() != Some(DAV_NS) {
        return None;
    }
    if root
        .children
        .iter()
        .filter_map(|n| n.as_element())
        .any(|e| e.name == "include" || e.name == "includes")
    {
        return None;
    }
    let mut out = Vec::new();
    for n in &kind.children {
        match n {
            xmltree::XMLNode::Element(e) => {
                if e.namespace.as_deref() != Some(DAV_NS) {
                    return None;
                }
                out.push(Live::of(&e.name)?);
            }
            xmltree::XMLNode::Text(t) if !t.trim().is_empty() => return None,
            _ => {}
        }
    }
    (!out.is_empty()).then_some(out)
}

/// What dav-server answers for a filesystem error.
fn status_of(e: FsError) -> StatusCode {
    match e {
        FsError::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        FsError::GeneralFailure => StatusCode::INTERNAL_SERVER_ERROR,
        FsError::Exists => StatusCode::METHOD_NOT_ALLOWED,
        FsError::NotFound => StatusCode::NOT_FOUND,
        FsError::Forbidden => StatusCode::FORBIDDEN,
        FsError::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
        FsError::LoopDetected => StatusCode::LOOP_DETECTED,
        FsError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Answers the PROPFIND of `uri_path` (the request's raw, percent-encoded path under
/// [`DAV_PREFIX`]) for `props`; `children`: `Depth: 1`. `None` if the path can't be parsed the
/// way dav-server would (nothing has been asked of the filesystem then; dav-server answers).
pub(crate) async fn answer<P: Clone + Send + Sync + 'static>(
    fs: &dyn GuardedFileSystem<DavCtx<P>>,
    uri_path: &str,
    children: bool,
    props: &[Live],
    ctx: &DavCtx<P>,
    user_agent: &str,
) -> Option<Response<Body>> {
    let mut path = DavPath::new(uri_path).ok()?;
    path.set_prefix(DAV_PREFIX).ok()?;
    ctx.set_live_props_only();
    let meta = match fs.metadata(&path, ctx).await {
        Ok(m) => m,
        Err(e) => {
            let status = status_of(e);
            let mut r = Response::builder()
                .status(status)
                .header(header::CONTENT_LENGTH, "0");
            if status == StatusCode::NOT_FOUND && user_agent.contains("Microsoft") {
                // As dav-server: keep Windows from caching the 404 case-insensitively.
                r = r
                    .header("Cache-Control", "no-store, no-cache, must-revalidate")
                    .header("Progma", "no-cache")
                    .header("Expires", "0")
                    .header("Vary", "*");
            }
            return r.body(Body::empty()).ok();
        }
    };
    let mut href = path.with_prefix().as_url_string();
    let mut content_location = None;
    if meta.is_dir() && !href.ends_with('/') {
        href.push('/');
        content_location = Some(href.clone());
    }
    let own_name = href
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .map(percent_decode)
        .unwrap_or_default();

    let mut out = String::with_capacity(4096);
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?><D:multistatus xmlns:D=\"DAV:\">");
    write_response(&mut out, &href, &own_name, &*meta, props);
    if children && meta.is_dir() {
        // As dav-server: a listing that fails leaves just the node itself.
        match fs.read_dir(&path, ReadDirMeta::DataSymlink, ctx).await {
            Ok(mut entries) => {
                let base = if href.ends_with('/') {
                    href.clone()
                } else {
                    format!("{href}/")
                };
                let mut child = String::with_capacity(base.len() + 64);
                while let Some(entry) = entries.next().await {
                    let Ok(entry) = entry else { continue };
                    let Ok(m) = entry.metadata().await else {
                        continue;
                    };
                    if m.is_symlink() {
                        continue;
                    }
                    let name = entry.name();
                    child.clear();
                    child.push_str(&base);
                    percent_encode_into(&mut child, &name);
                    if m.is_dir() {
                        child.push('/');
                    }
                    write_response(
                        &mut out,
                        &child,
                        &String::from_utf8_lossy(&name),
                        &*m,
                        props,
                    );
                }
            }
            Err(e) => tracing::debug!(error = ?e, "PROPFIND: the folder could not be listed"),
        }
    }
    out.push_str("</D:multistatus>");

    let len = out.len();
    let mut resp = Response::new(Body::from(Bytes::from(out)));
    *resp.status_mut() = StatusCode::MULTI_STATUS;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(loc) = content_location
        && let Ok(v) = HeaderValue::from_str(&loc)
    {
        h.insert(header::CONTENT_LOCATION, v);
    }
    Some(resp)
}

/// One `<D:response>`: the href (already percent-encoded) and the properties that have a value.
fn write_response(out: &mut String, href: &str, name: &str, m: &dyn DavMetaData, props: &[Live]) {
    out.push_str("<D:response><D:href>");
    out.push_str(href);
    out.push_str("</D:href>");
    let start = out.len();
    out.push_str("<D:propstat><D:prop>");
    let mut any = false;
    for p in props {
        any |= write_prop(out, *p, name, m);
    }
    if any {
        out.push_str("</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>");
    } else {
        out.truncate(start);
    }
    out.push_str("</D:response>");
}

/// Writes one property if it has a value for this node; whether it did.
fn write_prop(out: &mut String, p: Live, name: &str, m: &dyn DavMetaData) -> bool {
    match p {
        Live::ResourceType => {
            out.push_str(if m.is_dir() {
                "<D:resourcetype><D:collection></D:collection></D:resourcetype>"
            } else {
                "<D:resourcetype></D:resourcetype>"
            });
        }
        Live::ContentLength => {
            if m.is_dir() {
                return false;
            }
            out.push_str("<D:getcontentlength>");
            out.push_str(itoa(m.len()).as_str());
            out.push_str("</D:getcontentlength>");
        }
        Live::LastModified => {
            let Ok(t) = m.modified() else { return false };
            out.push_str("<D:getlastmodified>");
            http_date(out, t);
            out.push_str("</D:getlastmodified>");
        }
        Live::ETag => {
            let Some(e) = m.etag() else { return false };
            out.push_str("<D:getetag>");
            escape_into(out, &e);
            out.push_str("</D:getetag>");
        }
        Live::CreationDate => {
            let t = match m.created() {
                Ok(t) => t,
                // As dav-server (and Apache): the inode change time, or the modification time
                // if that is older.
                Err(_) => match m.status_changed() {
                    Ok(c) => match m.modified() {
                        Ok(mt) if mt < c => mt,
                        _ => c,
                    },
                    Err(_) => return false,
                },
            };
            out.push_str("<D:creationdate>");
            rfc3339(out, t);
            out.push_str("</D:creationdate>");
        }
        Live::ContentType => {
            out.push_str("<D:getcontenttype>");
            if m.is_dir() {
                out.push_str("httpd/unix-directory");
            } else {
                escape_into(out, mime_of(name));
            }
            out.push_str("</D:getcontenttype>");
        }
    }
    true
}

fn itoa(n: u64) -> String {
    n.to_string()
}

/// The MIME type dav-server reports for a file name (by its extension).
fn mime_of(name: &str) -> &'static str {
    match name.rsplit_once('.') {
        Some((_, ext)) => mime_guess::from_ext(ext)
            .first_raw()
            .unwrap_or("application/octet-stream"),
        None => "application/octet-stream",
    }
}

/// What dav-server percent-encodes in an href segment: everything but ASCII letters, digits and
/// `-_.~` (and `/`, which can't occur in a name).
const HREF_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

fn percent_encode_into(out: &mut String, seg: &[u8]) {
    out.extend(percent_encoding::percent_encode(seg, HREF_ESCAPED));
}

/// Decodes `%XX` escapes (invalid ones are kept as they are).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 IMF-fixdate), as dav-server writes it.
fn http_date(out: &mut String, t: SystemTime) {
    out.push_str(&httpdate::fmt_http_date(t));
}

/// `1996-12-19T16:39:57Z` (RFC 3339, whole seconds), as dav-server writes it.
fn rfc3339(out: &mut String, t: SystemTime) {
    let t = chrono::DateTime::<chrono::Utc>::from(t);
    out.push_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn dates_are_formatted_like_dav_server() {
        for (secs, http, iso) in [
            (0, "Thu, 01 Jan 1970 00:00:00 GMT", "1970-01-01T00:00:00Z"),
            (
                784_111_777,
                "Sun, 06 Nov 1994 08:49:37 GMT",
                "1994-11-06T08:49:37Z",
            ),
            (
                951_782_400,
                "Tue, 29 Feb 2000 00:00:00 GMT",
                "2000-02-29T00:00:00Z",
            ),
            (
                1_795_484_166,
                "Tue, 24 Nov 2026 01:36:06 GMT",
                "2026-11-24T01:36:06Z",
            ),
            (
                4_133_980_799,
                "Fri, 31 Dec 2100 23:59:59 GMT",
                "2100-12-31T23:59:59Z",
            ),
        ] {
            let mut a = String::new();
            http_date(&mut a, at(secs));
            assert_eq!(a, http, "{secs}");
            let mut b = String::new();
            rfc3339(&mut b, at(secs));
            assert_eq!(b, iso, "{secs}");
        }
    }

    #[test]
    fn only_plain_live_property_requests_take_the_fast_path() {
        let body = |inner: &str| {
            format!(r#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:">{inner}</D:propfind>"#)
        };
        let want = live_props(
            body("<D:prop><D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/></D:prop>")
                .as_bytes(),
        );
        assert_eq!(
            want,
            Some(vec![
                Live::ResourceType,
                Live::ContentLength,
                Live::LastModified,
                Live::ETag
            ])
        );
        // Default namespace instead of a prefix.
        assert_eq!(
            live_props(
                br#"<propfind xmlns="DAV:"><prop><getcontenttype/><creationdate/></prop></propfind>"#
            ),
            Some(vec![Live::ContentType, Live::CreationDate])
        );
        for other in [
            body("<D:allprop/>"),
            body("<D:propname/>"),
            body("<D:prop/>"),
            body("<D:prop><D:displayname/></D:prop>"),
            body("<D:prop><D:quota-available-bytes/></D:prop>"),
            body("<D:prop><D:lockdiscovery/><D:getetag/></D:prop>"),
            body(
                r#"<D:prop><D:getetag/><oc:checksums xmlns:oc="http://owncloud.org/ns"/></D:prop>"#,
            ),
            body(r#"<D:prop><getetag xmlns="urn:other"/></D:prop>"#),
            r#"<x:propfind xmlns:x="urn:x"><x:prop><x:getetag/></x:prop></x:propfind>"#.into(),
            "not xml".into(),
            String::new(),
        ] {
            assert_eq!(live_props(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn names_are_encoded_like_dav_server() {
        let mut s = String::new();
        percent_encode_into(&mut s, "a b&c<ü>~_-.txt".as_bytes());
        assert_eq!(s, "a%20b%26c%3C%C3%BC%3E~_-.txt");
        assert_eq!(percent_decode("a%20b%C3%BC%zz"), "a bü%zz");
        assert_eq!(mime_of("x.pdf"), "application/pdf");
        assert_eq!(mime_of("noext"), "application/octet-stream");
        let mut e = String::new();
        escape_into(&mut e, r#"a<b>&"'"#);
        assert_eq!(e, "a&lt;b&gt;&amp;&quot;&apos;");
    }
}
