//! The account pages, served on the WebDAV listener's fallback (same HTTPS listener, paths
//! outside `/dav/`):
//!
//! | path | GET | POST |
//! |---|---|---|
//! | `/invite/<token>` | set-password form (new login) or confirm button (existing login) | accept; then how to connect |
//! | `/reset` | "forgot my password" form | mails a reset link (same answer for any address) |
//! | `/reset/<token>` | new-password form | sets it; then how to connect |
//! | `/` | a short page: where to connect, link to `/reset` | — |
//!
//! Plain HTML forms, no JavaScript. Every form carries a CSRF token bound to the link and to a
//! random per-browser value held in a `SameSite=Strict`, `HttpOnly` cookie (`Secure` and
//! `__Host-` prefixed when the base URL is `https`): a POST without the matching cookie, or
//! with a foreign `Origin` or `Sec-Fetch-Site: cross-site`, is refused (403) and the form shown
//! again. Pages are `no-store`, `Referrer-Policy: no-referrer` (links carry secrets), framed by
//! nobody, and a CSP allows nothing but inline styles and same-origin form posts. Request
//! bodies are capped at 16 KiB and 30 s.
//!
//! Link states map to statuses: unknown 404; expired, used, withdrawn or superseded 410;
//! disabled login 403; each refusal is audited by the portal (channel `web`).
//!
//! Wire it into a server with [`invite_pages`]:
//!
//! ```no_run
//! # async fn f(portal: sdx_portal::Portal) -> sdx_portal::Result<()> {
//! let server = sdx_portal::webdav::mount::builder(&portal, "127.0.0.1:8443".parse().unwrap())
//!     .await?
//!     .fallback(sdx_portal::accounts::web::invite_pages(portal.clone()))
//!     .bind()
//!     .await?
//!     .spawn();
//! # let _ = server; Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dav_server::body::Body;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use super::templates::{html_escape, human_duration};
use crate::Portal;
use crate::portal::invitations::{LinkAction, LinkError};
use crate::webdav::server::{Fallback, FallbackBody};

/// Largest form body accepted.
pub const MAX_FORM_BYTES: usize = 16 * 1024;
/// Time a client has to send a form body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The account pages for `portal`, as a fallback service for the WebDAV server
/// ([`crate::webdav::WebDavServerBuilder::fallback`]).
pub fn invite_pages(portal: Portal) -> Fallback {
    let pages = Arc::new(Pages::new(portal));
    Arc::new(move |req: Request<FallbackBody>, remote: SocketAddr| {
        let pages = pages.clone();
        Box::pin(async move { pages.handle(req, remote).await })
    })
}

struct Pages {
    portal: Portal,
    csrf_key: ring::hmac::Key,
    secure: bool,
}

enum Route<'a> {
    Home,
    Invite(&'a str),
    ResetRequest,
    Reset(&'a str),
    NotFound,
}

fn route(path: &str) -> Route<'_> {
    let p = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    if p == "/" {
        return Route::Home;
    }
    if p == "/reset" {
        return Route::ResetRequest;
    }
    match p.strip_prefix("/invite/") {
        Some(t) if !t.contains('/') => return Route::Invite(t),
        _ => {}
    }
    match p.strip_prefix("/reset/") {
        Some(t) if !t.contains('/') => Route::Reset(t),
        _ => Route::NotFound,
    }
}

/// Which operating system the browser runs on (to open its instructions first).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Os {
    Windows,
    Mac,
    Linux,
    Other,
}

fn os_of(headers: &HeaderMap) -> Os {
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if ua.contains("Windows") {
        Os::Windows
    } else if ua.contains("Macintosh") || ua.contains("Mac OS X") {
        Os::Mac
    } else if ua.contains("Linux") || ua.contains("X11") {
        Os::Linux
    } else {
        Os::Other
    }
}

/// Reads a body of at most [`MAX_FORM_BYTES`]. `Err(true)`: too large; `Err(false)`: the body
/// failed (client gone).
async fn read_capped(mut body: FallbackBody) -> Result<Vec<u8>, bool> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| false)?;
        if let Ok(data) = frame.into_data() {
            if buf.len().saturating_add(data.len()) > MAX_FORM_BYTES {
                return Err(true);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

/// Decodes `application/x-www-form-urlencoded`. `None` if a value isn't UTF-8.
fn parse_form(body: &[u8]) -> Option<HashMap<String, String>> {
    fn decode(s: &[u8]) -> Option<String> {
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while let Some(&b) = s.get(i) {
            match b {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = s
                        .get(i + 1..i + 3)
                        .and_then(|h| std::str::from_utf8(h).ok());
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(v) => {
                            out.push(v);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).ok()
    }
    let mut map = HashMap::new();
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (pair.get(..i)?, pair.get(i + 1..)?),
            None => (pair, &b""[..]),
        };
        map.insert(decode(k)?, decode(v)?);
    }
    Some(map)
}

fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A response page with the security headers every page carries.
fn respond(status: StatusCode, html: String, cookie: Option<String>) -> Response<Body> {
    let len = html.len();
    let mut r = Response::new(Body::from(html));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("Referrer-Policy", HeaderValue::from_static("no-referrer"));
    h.insert("X-Frame-Options", HeaderValue::from_static("DENY"));
    h.insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "Content-Security-Policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::SET_COOKIE, c);
    }
    r
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em;line-height:1.5;color:#222}\
h1{font-size:1.4em;color:#1f4e79}label{display:block;margin-top:1em;font-weight:600}\
input[type=password],input[type=email]{width:100%;padding:.5em;font-size:1em;box-sizing:border-box}\
button{margin-top:1.2em;padding:.6em 1.4em;font-size:1em;background:#1f4e79;color:#fff;border:0;border-radius:4px}\
.err{background:#fde8e8;border-left:4px solid #c0392b;padding:.6em 1em}.ok{background:#e8f6ec;border-left:4px solid #2e7d32;padding:.6em 1em}\
code,pre{background:#f4f4f4;padding:.1em .3em;word-break:break-all}pre{padding:.6em;white-space:pre-wrap}\
details{margin:.6em 0}summary{font-weight:600;cursor:pointer}small{color:#555}";

fn html(firm: &str, title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} – {f}</title><style>{STYLE}</style></head>\n<body>\n\
         <p><small>{f} · secure document portal</small></p>\n<h1>{t}</h1>\n{body}</body></html>\n",
        t = html_escape(title),
        f = html_escape(firm),
    )
}

/// Single-quotes a string for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Pages {
    fn new(portal: Portal) -> Pages {
        let rng = SystemRandom::new();
        let csrf_key =
            ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
                // Only if the OS random source fails; forms still work, keyed by the boot time.
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &t.to_le_bytes())
            });
        let secure = portal.base_url().is_https();
        Pages {
            portal,
            csrf_key,
            secure,
        }
    }

    fn firm(&self) -> &str {
        self.portal.firm_name()
    }

    fn cookie_name(&self) -> &'static str {
        if self.secure {
            "__Host-sdx_csrf"
        } else {
            "sdx_csrf"
        }
    }

    /// The browser's CSRF nonce (from its cookie) or a fresh one, and the `Set-Cookie` to send
    /// when it is fresh.
    fn nonce(&self, headers: &HeaderMap) -> (String, Option<String>) {
        if let Some(v) = cookie_value(headers, self.cookie_name())
            && v.len() == 22
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return (v.to_owned(), None);
        }
        let mut raw = [0u8; 16];
        if SystemRandom::new().fill(&mut raw).is_err() {
            tracing::error!("the system random source failed; CSRF nonce is weak");
        }
        let n = URL_SAFE_NO_PAD.encode(raw);
        let cookie = format!(
            "{}={n}; Path=/; HttpOnly; SameSite=Strict{}",
            self.cookie_name(),
            if self.secure { "; Secure" } else { "" }
        );
        (n, Some(cookie))
    }

    fn csrf_token(&self, purpose: &str, link: &str, nonce: &str) -> String {
        let mut ctx = ring::hmac::Context::with_key(&self.csrf_key);
        for part in [purpose, link, nonce] {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part.as_bytes());
        }
        URL_SAFE_NO_PAD.encode(ctx.sign().as_ref())
    }

    /// True if a POST is same-origin and carries the CSRF token matching its cookie.
    fn csrf_ok(
        &self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
        purpose: &str,
        link: &str,
    ) -> bool {
        let hv = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        if hv("sec-fetch-site").is_some_and(|s| s.eq_ignore_ascii_case("cross-site")) {
            return false;
        }
        if let Some(origin) = hv("origin").filter(|o| *o != "null") {
            let host = hv("host").unwrap_or_default();
            let o_host = origin.split_once("://").map_or("", |(_, h)| h);
            if !o_host.eq_ignore_ascii_case(host) {
                return false;
            }
        }
        let Some(nonce) = cookie_value(headers, self.cookie_name()) else {
            return false;
        };
        let Some(given) = form.get("csrf") else {
            return false;
        };
        let want = self.csrf_token(purpose, link, nonce);
        want.as_bytes().ct_eq(given.as_bytes()).into()
    }

    async fn handle(&self, req: Request<FallbackBody>, remote: SocketAddr) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let is_get = req.method() == Method::GET || req.method() == Method::HEAD;
        let is_post = req.method() == Method::POST;
        match route(&path) {
            Route::NotFound => self.not_found(),
            _ if !is_get && !is_post => {
                let mut r = respond(
                    StatusCode::METHOD_NOT_ALLOWED,
                    html(
                        self.firm(),
                        "Not allowed",
                        "<p>This page accepts only GET and POST.</p>\n",
                    ),
                    None,
                );
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
                r
            }
            Route::Home => self.home(is_post),
            Route::Invite(t) if is_get => self.invite_get(t, req.headers(), remote).await,
            Route::Invite(t) => {
                let t = t.to_owned();
                self.invite_post(&t, req, remote).await
            }
            Route::ResetRequest if is_get => {
                self.reset_request_form(req.headers(), None, StatusCode::OK)
            }
            Route::ResetRequest => self.reset_request_post(req, remote).await,
            Route::Reset(t) if is_get => self.reset_get(t, req.headers(), remote).await,
            Route::Reset(t) => {
                let t = t.to_owned();
                self.reset_post(&t, req, remote).await
            }
        }
    }

    fn not_found(&self) -> Response<Body> {
        respond(
            StatusCode::NOT_FOUND,
            html(
                self.firm(),
                "Page not found",
                "<p>There is nothing at this address.</p>\n",
            ),
            None,
        )
    }

    fn home(&self, is_post: bool) -> Response<Body> {
        if is_post {
            return self.not_found();
        }
        let dav = self.portal.base_url().webdav_url();
        let body = format!(
            "<p>Connect your computer to the portal with WebDAV at <code>{}</code> or with SFTP; \
             your invitation e-mail had the details.</p>\n<p><a href=\"/reset\">Forgot your \
             password?</a></p>\n",
            html_escape(&dav)
        );
        respond(
            StatusCode::OK,
            html(self.firm(), "Secure document portal", &body),
            None,
        )
    }

    /// Reads a form body (bounded size and time). `Err` is the response to send.
    async fn read_form(
        &self,
        req: Request<FallbackBody>,
    ) -> Result<(HeaderMap, HashMap<String, String>), Response<Body>> {
        let (parts, body) = req.into_parts();
        let bad = |status: StatusCode, msg: &str| {
            respond(
                status,
                html(
                    self.firm(),
                    "The form could not be read",
                    &format!("<p class=\"err\">{}</p>\n", html_escape(msg)),
                ),
                None,
            )
        };
        let ct = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !ct
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
        {
            return Err(bad(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Please submit the form from the page.",
            ));
        }
        let bytes = match tokio::time::timeout(BODY_TIMEOUT, read_capped(body)).await {
            Ok(Ok(b)) => b,
            Ok(Err(true)) => {
                return Err(bad(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large."));
            }
            Ok(Err(false)) => {
                return Err(bad(
                    StatusCode::BAD_REQUEST,
                    "The form did not arrive completely.",
                ));
            }
            Err(_) => {
                return Err(bad(
                    StatusCode::REQUEST_TIMEOUT,
                    "The form took too long to arrive.",
                ));
            }
        };
        match parse_form(&bytes) {
            Some(f) => Ok((parts.headers, f)),
            None => Err(bad(StatusCode::BAD_REQUEST, "The form is not valid UTF-8.")),
        }
    }

    fn link_error(&self, e: &LinkError, reset: bool) -> Response<Body> {
        let firm = html_escape(self.firm());
        let (title, what) = match e {
            LinkError::Unknown => (
                "Link not valid",
                "This link is not valid. Check that you opened the whole address from the e-mail \
                 (some mail programs split long links)."
                    .to_owned(),
            ),
            LinkError::Expired if reset => (
                "Link expired",
                "This password-reset link has expired. <a href=\"/reset\">Ask for a new one</a>."
                    .to_owned(),
            ),
            LinkError::Expired => (
                "Invitation expired",
                format!("This invitation has expired. Please ask {firm} to send you a new one."),
            ),
            LinkError::Used if reset => (
                "Link already used",
                "This password-reset link was already used. If you did not use it, <a \
                 href=\"/reset\">ask for a new one</a>."
                    .to_owned(),
            ),
            LinkError::Used => (
                "Invitation already used",
                "This invitation was already accepted. Sign in with your e-mail address and the \
                 password you chose; if you forgot it, <a href=\"/reset\">reset it</a>."
                    .to_owned(),
            ),
            LinkError::Revoked if reset => (
                "Link replaced",
                "A newer password-reset link was sent or the password was changed: use the most \
                 recent e-mail, or <a href=\"/reset\">ask for a new link</a>."
                    .to_owned(),
            ),
            LinkError::Revoked => (
                "Invitation withdrawn",
                format!(
                    "This invitation has been withdrawn. Please contact {firm} if you think this is a mistake."
                ),
            ),
            LinkError::Superseded => (
                "Newer invitation sent",
                "A newer invitation has been sent to you: please use the link in the most recent \
                 e-mail."
                    .to_owned(),
            ),
            LinkError::LoginDisabled => (
                "Login disabled",
                format!("Your login is disabled. Please contact {firm}."),
            ),
            LinkError::Weak(w) => ("Password not accepted", html_escape(&w.to_string())),
            LinkError::Portal(err) => {
                tracing::warn!(error = %err, "account page failed");
                (
                    "Something went wrong",
                    match err {
                        crate::Error::AlreadyExists(_) | crate::Error::Conflict(_) => {
                            html_escape(&err.to_string())
                        }
                        _ => "The portal could not complete this request. Please try again later."
                            .to_owned(),
                    },
                )
            }
        };
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        respond(
            status,
            html(
                self.firm(),
                title,
                &format!("<p class=\"err\">{what}</p>\n"),
            ),
            None,
        )
    }

    fn password_fields(error: Option<&str>) -> String {
        let mut s = String::new();
        if let Some(e) = error {
            let _ = writeln!(s, "<p class=\"err\" role=\"alert\">{}</p>", html_escape(e));
        }
        s.push_str(
            "<label for=\"password\">New password</label>\n\
             <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"new-password\" \
             minlength=\"12\" maxlength=\"256\" required autofocus>\n\
             <label for=\"confirm\">Repeat the password</label>\n\
             <input type=\"password\" id=\"confirm\" name=\"confirm\" autocomplete=\"new-password\" \
             minlength=\"12\" maxlength=\"256\" required>\n\
             <p><small>At least 12 characters. A few unrelated words make a good password; common \
             passwords, your name or your e-mail address are refused. No special characters \
             needed.</small></p>\n",
        );
        s
    }

    async fn invite_get(
        &self,
        token: &str,
        headers: &HeaderMap,
        remote: SocketAddr,
    ) -> Response<Body> {
        match self.portal.open_invitation(token, Some(remote)).await {
            Ok(view) => self.invite_form(token, headers, &view, None, StatusCode::OK),
            Err(e) => self.link_error(&e, false),
        }
    }

    fn invite_form(
        &self,
        token: &str,
        headers: &HeaderMap,
        view: &crate::portal::invitations::InvitationView,
        error: Option<&str>,
        status: StatusCode,
    ) -> Response<Body> {
        let (nonce, cookie) = self.nonce(headers);
        let csrf = self.csrf_token("invite", token, &nonce);
        let firm = html_escape(self.firm());
        let matter = view
            .matter
            .as_deref()
            .map(|m| format!(" to the matter <strong>{}</strong>", html_escape(m)))
            .unwrap_or_default();
        let action = format!("/invite/{}", html_escape(token));
        let (title, body) = match view.action {
            LinkAction::SetPassword => (
                "Create your login",
                format!(
                    "<p>{firm} has given you access{matter} on its secure document portal. Your \
                     login name is <strong>{email}</strong>; choose a password to finish.</p>\n\
                     <form method=\"post\" action=\"{action}\">\n\
                     <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n{fields}\
                     <button type=\"submit\">Create my login</button>\n</form>\n",
                    email = html_escape(&view.email),
                    fields = Self::password_fields(error),
                ),
            ),
            LinkAction::Confirm => (
                "New matter shared with you",
                format!(
                    "<p>{firm} has given you access{matter}. Confirm to finish; it then appears in \
                     your portal next to your other matters, with your usual login \
                     <strong>{email}</strong>.</p>\n{err}\
                     <form method=\"post\" action=\"{action}\">\n\
                     <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n\
                     <button type=\"submit\">Confirm</button>\n</form>\n",
                    email = html_escape(&view.email),
                    err = error
                        .map(|e| format!("<p class=\"err\">{}</p>\n", html_escape(e)))
                        .unwrap_or_default(),
                ),
            ),
        };
        respond(status, html(self.firm(), title, &body), cookie)
    }

    async fn invite_post(
        &self,
        token: &str,
        req: Request<FallbackBody>,
        remote: SocketAddr,
    ) -> Response<Body> {
        let (headers, form) = match self.read_form(req).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        let view = match self.portal.open_invitation(token, Some(remote)).await {
            Ok(v) => v,
            Err(e) => return self.link_error(&e, false),
        };
        if !self.csrf_ok(&headers, &form, "invite", token) {
            return self.invite_form(
                token,
                &headers,
                &view,
                Some(
                    "Your form expired or your browser blocked its cookie. Please submit it again.",
                ),
                StatusCode::FORBIDDEN,
            );
        }
        let pw = form.get("password").map(String::as_str);
        if view.action == LinkAction::SetPassword && pw != form.get("confirm").map(String::as_str) {
            return self.invite_form(
                token,
                &headers,
                &view,
                Some("The two passwords differ. Please type the same password twice."),
                StatusCode::BAD_REQUEST,
            );
        }
        match self.portal.accept_invitation(token, pw, Some(remote)).await {
            Ok(acc) => {
                let intro = if acc.password_set {
                    format!(
                        "<p class=\"ok\">Your login <strong>{}</strong> is ready.</p>\n",
                        html_escape(&acc.email)
                    )
                } else {
                    format!(
                        "<p class=\"ok\">Done: {} is now in your portal.</p>\n",
                        acc.matter
                            .as_deref()
                            .map(|m| format!("<strong>{}</strong>", html_escape(m)))
                            .unwrap_or_else(|| "the matter".into())
                    )
                };
                self.connect_page("You are all set", &intro, &acc.email, os_of(&headers))
            }
            Err(LinkError::Weak(w)) => self.invite_form(
                token,
                &headers,
                &view,
                Some(&w.to_string()),
                StatusCode::BAD_REQUEST,
            ),
            Err(e) => self.link_error(&e, false),
        }
    }

    /// The page after success: how to connect, this OS's instructions first.
    fn connect_page(&self, title: &str, intro: &str, email: &str, os: Os) -> Response<Body> {
        let base = self.portal.base_url();
        let dav = base.webdav_url();
        let host = base.host().to_owned();
        let (sftp_host, sftp_port) = match self.portal.sftp_address() {
            Some(a) => match a.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() && !h.is_empty() => {
                    (h.trim_matches(['[', ']']).to_owned(), p.to_owned())
                }
                _ => (a.to_owned(), "22".to_owned()),
            },
            None => (host.clone(), "22".to_owned()),
        };
        let davs = dav
            .replacen("https://", "davs://", 1)
            .replacen("http://", "dav://", 1);
        let e = html_escape(email);
        let d = html_escape(&dav);
        let sftp_cmd = html_escape(&format!(
            "sftp -P {sftp_port} {}@{}",
            shell_quote(email),
            sftp_host
        ));
        let open = |o: Os| {
            if o == os || os == Os::Other {
                " open"
            } else {
                ""
            }
        };
        let mut sections = vec![
            (
                Os::Mac,
                format!(
                    "<details{o}><summary>macOS (Finder)</summary>\n<ol><li>In Finder choose \
                     <em>Go → Connect to Server…</em> (⌘K).</li><li>Server address: <code>{d}</code>, \
                     then <em>Connect</em>.</li><li>Choose <em>Registered User</em>; name \
                     <code>{e}</code> and your password.</li></ol>\n</details>\n",
                    o = open(Os::Mac)
                ),
            ),
            (
                Os::Windows,
                format!(
                    "<details{o}><summary>Windows (File Explorer)</summary>\n<ol><li>Open <em>This \
                     PC</em>, then <em>Map network drive</em>.</li><li>Folder: <code>{d}</code>; \
                     tick <em>Connect using different credentials</em>.</li><li>User name \
                     <code>{e}</code> and your password.</li></ol>\n<p>Or with <strong>WinSCP</strong>: \
                     protocol SFTP, host <code>{h}</code>, port <code>{p}</code>, user name \
                     <code>{e}</code>.</p>\n</details>\n",
                    o = open(Os::Windows),
                    h = html_escape(&sftp_host),
                    p = html_escape(&sftp_port),
                ),
            ),
            (
                Os::Linux,
                format!(
                    "<details{o}><summary>Linux</summary>\n<p><strong>Files (GNOME)</strong>: \
                     <em>Other Locations → Connect to Server</em>: <code>{davs}</code>.</p>\n\
                     <p><strong>davfs2</strong>:</p><pre>sudo mount -t davfs {d} /mnt/portal</pre>\n</details>\n",
                    o = open(Os::Linux),
                    davs = html_escape(&davs),
                ),
            ),
        ];
        // The visitor's own system first.
        sections.sort_by_key(|(o, _)| *o != os);
        let mut body = String::from(intro);
        let _ = write!(
            body,
            "<p>Your documents are in a network drive. Connect with:</p>\n\
             <ul><li>WebDAV: <code>{d}</code></li><li>SFTP: <code>{sftp}</code></li>\
             <li>login name: <code>{e}</code> and your password</li></ul>\n",
            sftp = sftp_cmd,
        );
        for (_, s) in sections {
            body.push_str(&s);
        }
        let _ = write!(
            body,
            "<details{o}><summary>Command line (SFTP, any system)</summary>\n<pre>{sftp_cmd}</pre>\n</details>\n",
            o = if os == Os::Other { " open" } else { "" }
        );
        respond(StatusCode::OK, html(self.firm(), title, &body), None)
    }

    fn reset_request_form(
        &self,
        headers: &HeaderMap,
        error: Option<&str>,
        status: StatusCode,
    ) -> Response<Body> {
        let (nonce, cookie) = self.nonce(headers);
        let csrf = self.csrf_token("reset-request", "", &nonce);
        let body = format!(
            "<p>Enter the e-mail address of your login. If it belongs to a login, we send it a \
             link to choose a new password.</p>\n{err}\
             <form method=\"post\" action=\"/reset\">\n<input type=\"hidden\" name=\"csrf\" \
             value=\"{csrf}\">\n<label for=\"email\">E-mail address</label>\n<input type=\"email\" \
             id=\"email\" name=\"email\" autocomplete=\"username\" maxlength=\"254\" required \
             autofocus>\n<button type=\"submit\">Send me a link</button>\n</form>\n",
            err = error
                .map(|e| format!("<p class=\"err\">{}</p>\n", html_escape(e)))
                .unwrap_or_default(),
        );
        respond(
            status,
            html(self.firm(), "Reset your password", &body),
            cookie,
        )
    }

    async fn reset_request_post(
        &self,
        req: Request<FallbackBody>,
        remote: SocketAddr,
    ) -> Response<Body> {
        let (headers, form) = match self.read_form(req).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        if !self.csrf_ok(&headers, &form, "reset-request", "") {
            return self.reset_request_form(
                &headers,
                Some(
                    "Your form expired or your browser blocked its cookie. Please submit it again.",
                ),
                StatusCode::FORBIDDEN,
            );
        }
        let email = form.get("email").map(|e| e.trim()).unwrap_or_default();
        if email.is_empty() || email.len() > 254 {
            return self.reset_request_form(
                &headers,
                Some("Please enter your e-mail address."),
                StatusCode::BAD_REQUEST,
            );
        }
        // In the background: the answer must not take longer when the address exists.
        let portal = self.portal.clone();
        let email = email.to_owned();
        tokio::spawn(async move {
            if let Err(e) = portal.request_password_reset(&email, Some(remote)).await {
                tracing::warn!(error = %e, "password reset request failed");
            }
        });
        let body = format!(
            "<p class=\"ok\">If a login has this address, a link to choose a new password is on \
             its way. It works once, for {}.</p>\n<p><small>Nothing arrives? Check the spam \
             folder, or ask the firm.</small></p>\n",
            human_duration(self.portal.reset_ttl())
        );
        respond(
            StatusCode::OK,
            html(self.firm(), "Check your e-mail", &body),
            None,
        )
    }

    fn reset_form(
        &self,
        token: &str,
        headers: &HeaderMap,
        email: &str,
        error: Option<&str>,
        status: StatusCode,
    ) -> Response<Body> {
        let (nonce, cookie) = self.nonce(headers);
        let csrf = self.csrf_token("reset", token, &nonce);
        let body = format!(
            "<p>Choose a new password for <strong>{e}</strong>.</p>\n\
             <form method=\"post\" action=\"/reset/{t}\">\n<input type=\"hidden\" name=\"csrf\" \
             value=\"{csrf}\">\n{fields}<button type=\"submit\">Set my password</button>\n</form>\n",
            e = html_escape(email),
            t = html_escape(token),
            fields = Self::password_fields(error),
        );
        respond(
            status,
            html(self.firm(), "Choose a new password", &body),
            cookie,
        )
    }

    async fn reset_get(
        &self,
        token: &str,
        headers: &HeaderMap,
        remote: SocketAddr,
    ) -> Response<Body> {
        match self.portal.open_reset(token, Some(remote)).await {
            Ok(v) => self.reset_form(token, headers, &v.email, None, StatusCode::OK),
            Err(e) => self.link_error(&e, true),
        }
    }

    async fn reset_post(
        &self,
        token: &str,
        req: Request<FallbackBody>,
        remote: SocketAddr,
    ) -> Response<Body> {
        let (headers, form) = match self.read_form(req).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        let view = match self.portal.open_reset(token, Some(remote)).await {
            Ok(v) => v,
            Err(e) => return self.link_error(&e, true),
        };
        if !self.csrf_ok(&headers, &form, "reset", token) {
            return self.reset_form(
                token,
                &headers,
                &view.email,
                Some(
                    "Your form expired or your browser blocked its cookie. Please submit it again.",
                ),
                StatusCode::FORBIDDEN,
            );
        }
        let pw = form.get("password").map(String::as_str).unwrap_or_default();
        if Some(pw) != form.get("confirm").map(String::as_str) {
            return self.reset_form(
                token,
                &headers,
                &view.email,
                Some("The two passwords differ. Please type the same password twice."),
                StatusCode::BAD_REQUEST,
            );
        }
        match self.portal.reset_password(token, pw, Some(remote)).await {
            Ok(_) => self.connect_page(
                "Password changed",
                "<p class=\"ok\">Your new password is set. Devices that saved the old one will \
                 ask for the new one.</p>\n",
                &view.email,
                os_of(&headers),
            ),
            Err(LinkError::Weak(w)) => self.reset_form(
                token,
                &headers,
                &view.email,
                Some(&w.to_string()),
                StatusCode::BAD_REQUEST,
            ),
            Err(e) => self.link_error(&e, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(route("/"), Route::Home));
        assert!(matches!(route("/reset"), Route::ResetRequest));
        assert!(matches!(route("/reset/"), Route::ResetRequest));
        assert!(matches!(route("/invite/abc"), Route::Invite("abc")));
        assert!(matches!(route("/invite/abc/"), Route::Invite("abc")));
        assert!(matches!(route("/reset/xyz"), Route::Reset("xyz")));
        assert!(matches!(route("/invite/a/b"), Route::NotFound));
        assert!(matches!(route("/invite"), Route::NotFound));
        assert!(matches!(route("/favicon.ico"), Route::NotFound));
    }

    #[test]
    fn form_decoding() {
        let f = parse_form(b"a=1&password=p%C3%A4ss+word%21&empty=&flag&bad=%zz").unwrap();
        assert_eq!(f["a"], "1");
        assert_eq!(f["password"], "päss word!");
        assert_eq!(f["empty"], "");
        assert_eq!(f["flag"], "");
        assert_eq!(f["bad"], "%zz");
        assert!(parse_form(b"x=%ff").is_none(), "invalid UTF-8 refused");
        assert!(parse_form(b"").unwrap().is_empty());
    }

    #[test]
    fn cookies_and_quoting() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; sdx_csrf=abc"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie_value(&h, "sdx_csrf"), Some("abc"));
        assert_eq!(cookie_value(&h, "b"), Some("2"));
        assert_eq!(cookie_value(&h, "c"), None);
        assert_eq!(shell_quote("o'brien@x.test"), r"'o'\''brien@x.test'");
    }

    #[test]
    fn os_detection() {
        let ua = |s: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::USER_AGENT, HeaderValue::from_static(s));
            os_of(&h)
        };
        assert_eq!(ua("Mozilla/5.0 (Windows NT 10.0; Win64; x64)"), Os::Windows);
        assert_eq!(ua("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0)"), Os::Mac);
        assert_eq!(ua("Mozilla/5.0 (X11; Linux x86_64)"), Os::Linux);
        assert_eq!(ua("curl/8.0"), Os::Other);
    }
}
