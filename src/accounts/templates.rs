//! The e-mails the portal sends, and the batcher that groups notifications.
//!
//! Every template returns an [`Email`] with a plain-text and an HTML part. Every interpolated
//! value (firm, matter, document names, links) is HTML-escaped in the HTML part and has its
//! control characters replaced in the text part and subject, so a document called
//! `<script>…` or a matter name with a line break can't change the message's structure.
//!
//! Content rule: a mail carries only what the recipient may already see in the portal (the
//! matter's name, names of documents in folders they can list) and never message bodies or
//! document contents: e-mail is not the secure channel, the portal is.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::mailer::{Email, MailError, Mailer};
use super::tokens::Token;

/// Most document names listed in one notification; the rest are counted ("and 150 more").
pub const MAX_LISTED_DOCUMENTS: usize = 50;

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// One line of plain text: control characters (line breaks included) become spaces.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The link base URL used when none is configured (the demo server's default address).
pub const DEFAULT_BASE_URL: &str = "https://localhost:8443";

/// The portal's public base URL (configuration), used to build the links in mails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseUrl(String);

impl Default for BaseUrl {
    /// [`DEFAULT_BASE_URL`].
    fn default() -> Self {
        BaseUrl(DEFAULT_BASE_URL.to_owned())
    }
}

impl BaseUrl {
    /// Checks and normalises a base URL: `https://` or `http://`, a host, an optional path, no
    /// query, fragment, credentials, spaces or control characters. A trailing `/` is dropped.
    pub fn parse(url: &str) -> Result<BaseUrl, MailError> {
        let bad = |why: &str| MailError::Config(format!("base_url {url:?}: {why}"));
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| bad("must start with https:// or http://"))?;
        if url.chars().any(|c| {
            c.is_control() || c.is_whitespace() || matches!(c, '?' | '#' | '"' | '<' | '>' | '\\')
        }) {
            return Err(bad(
                "must not contain spaces, quotes, a query or a fragment",
            ));
        }
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return Err(bad("has no host"));
        }
        if authority.contains('@') {
            return Err(bad("must not contain credentials"));
        }
        Ok(BaseUrl(url.trim_end_matches('/').to_owned()))
    }

    /// The base URL without trailing slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<base>/invite/<token>`: the accept page.
    pub fn invite_link(&self, token: &Token) -> String {
        format!("{}/invite/{}", self.0, token.as_str())
    }

    /// `<base>/dav/`: the WebDAV address people mount.
    pub fn webdav_url(&self) -> String {
        format!("{}/dav/", self.0)
    }

    /// The host part (without port or brackets), e.g. for the SFTP command shown to people.
    pub fn host(&self) -> &str {
        let rest = self.0.split_once("://").map_or(self.0.as_str(), |(_, r)| r);
        let authority = rest.split('/').next().unwrap_or_default();
        if let Some(v6) = authority.strip_prefix('[') {
            return v6.split(']').next().unwrap_or_default();
        }
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    }

    /// True for an `https://` URL.
    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }

    /// `<base>/reset/<token>`: the password-reset page.
    pub fn reset_link(&self, token: &Token) -> String {
        format!("{}/reset/{}", self.0, token.as_str())
    }
}

/// "7 days", "1 day", "12 hours", "30 minutes".
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = if secs >= 86_400 && secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else if secs >= 3600 {
        (secs.div_ceil(3600), "hour")
    } else {
        (secs.div_ceil(60).max(1), "minute")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Wraps a body in a minimal HTML document (inline styles only: mail clients drop `<style>`).
fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body style=\"font-family: sans-serif; line-height: 1.4; color: #222;\">\n{body}</body></html>\n"
    )
}

fn button(link: &str, label: &str) -> String {
    let l = html_escape(link);
    format!(
        "<p><a href=\"{l}\" style=\"display: inline-block; padding: 0.6em 1.2em; background: #1f4e79; \
         color: #fff; text-decoration: none; border-radius: 4px;\">{label}</a></p>\n\
         <p style=\"font-size: 0.9em; color: #555;\">If the button does not work, copy this address \
         into your browser:<br>{l}</p>\n"
    )
}

/// Invitation for someone without a login: verify the address and choose a password.
pub fn invite_new_login(
    to: &str,
    firm: &str,
    matter: &str,
    link: &str,
    valid_for: Duration,
) -> Email {
    let (f, m, v) = (one_line(firm), one_line(matter), human_duration(valid_for));
    let subject = format!("{f} has invited you to its secure document portal");
    let text = format!(
        "Hello,\n\n{f} has given you access to the matter \"{m}\" on its secure document portal.\n\n\
         To accept, open this link and choose a password:\n\n{link}\n\n\
         The link works once and expires in {v}. If it has expired, ask {f} to send a new one.\n\
         If you did not expect this invitation, you can ignore this e-mail.\n"
    );
    let (hf, hm) = (html_escape(firm), html_escape(matter));
    let html = html_page(
        &html_escape(&subject),
        &format!(
            "<p>Hello,</p>\n<p><strong>{hf}</strong> has given you access to the matter \
             <strong>{hm}</strong> on its secure document portal.</p>\n<p>To accept, open the \
             link below and choose a password.</p>\n{}<p>The link works once and expires in {v}. \
             If it has expired, ask {hf} to send a new one. If you did not expect this \
             invitation, you can ignore this e-mail.</p>\n",
            button(link, "Accept the invitation")
        ),
    );
    Email {
        to: to.to_owned(),
        subject,
        text,
        html,
    }
}

/// Invitation for someone who already has a login: a new matter is now shared with them.
pub fn invite_existing_login(
    to: &str,
    firm: &str,
    matter: &str,
    link: &str,
    valid_for: Duration,
) -> Email {
    let (f, m, v) = (one_line(firm), one_line(matter), human_duration(valid_for));
    let subject = format!("{f}: you now have access to \"{m}\"");
    let text = format!(
        "Hello,\n\n{f} has given you access to the matter \"{m}\" on its secure document portal.\n\n\
         Open this link to confirm; the matter then appears in your portal next to your other \
         matters:\n\n{link}\n\nThe link works once and expires in {v}.\n"
    );
    let (hf, hm) = (html_escape(firm), html_escape(matter));
    let html = html_page(
        &html_escape(&subject),
        &format!(
            "<p>Hello,</p>\n<p><strong>{hf}</strong> has given you access to the matter \
             <strong>{hm}</strong> on its secure document portal.</p>\n<p>Open the link below \
             to confirm; the matter then appears in your portal next to your other matters.</p>\n\
             {}<p>The link works once and expires in {v}.</p>\n",
            button(link, "Open the matter")
        ),
    );
    Email {
        to: to.to_owned(),
        subject,
        text,
        html,
    }
}

/// Password-reset link.
pub fn password_reset(to: &str, firm: &str, link: &str, valid_for: Duration) -> Email {
    let (f, v) = (one_line(firm), human_duration(valid_for));
    let subject = format!("{f}: reset your portal password");
    let text = format!(
        "Hello,\n\nSomeone (hopefully you) asked to reset your password for the secure document \
         portal of {f}.\n\nTo choose a new password, open this link:\n\n{link}\n\n\
         The link works once and expires in {v}. If you did not ask for this, ignore this \
         e-mail: your password stays as it is.\n"
    );
    let hf = html_escape(firm);
    let html = html_page(
        &html_escape(&subject),
        &format!(
            "<p>Hello,</p>\n<p>Someone (hopefully you) asked to reset your password for the \
             secure document portal of <strong>{hf}</strong>.</p>\n{}<p>The link works once and \
             expires in {v}. If you did not ask for this, ignore this e-mail: your password \
             stays as it is.</p>\n",
            button(link, "Choose a new password")
        ),
    );
    Email {
        to: to.to_owned(),
        subject,
        text,
        html,
    }
}

/// One notification about a matter: new documents (listed up to [`MAX_LISTED_DOCUMENTS`],
/// `more_documents` counted beyond `names`) and/or new messages.
pub fn notify_activity(
    to: &str,
    firm: &str,
    matter: &str,
    names: &[&str],
    more_documents: usize,
    messages: usize,
) -> Email {
    let (f, m) = (one_line(firm), one_line(matter));
    let shown = names.len().min(MAX_LISTED_DOCUMENTS);
    let docs = names.len() + more_documents;
    let hidden = docs - shown;
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let what = match (docs, messages) {
        (0, 0) | (0, _) => plural(messages, "new message", "new messages"),
        (_, 0) => plural(docs, "new document", "new documents"),
        _ => format!(
            "{} and {}",
            plural(docs, "new document", "new documents"),
            plural(messages, "new message", "new messages")
        ),
    };
    let subject = format!("{f}: {what} in \"{m}\"");

    let mut text = format!(
        "Hello,\n\nThere is activity in the matter \"{m}\" on the secure document portal of {f}:\n\n"
    );
    let mut html = format!(
        "<p>Hello,</p>\n<p>There is activity in the matter <strong>{}</strong> on the secure \
         document portal of <strong>{}</strong>:</p>\n",
        html_escape(matter),
        html_escape(firm)
    );
    if docs > 0 {
        let _ = writeln!(text, "{}:", plural(docs, "new document", "new documents"));
        let _ = writeln!(
            html,
            "<p>{}:</p>\n<ul>",
            plural(docs, "new document", "new documents")
        );
        for name in names.iter().take(shown) {
            let _ = writeln!(text, "  - {}", one_line(name));
            let _ = writeln!(html, "<li>{}</li>", html_escape(name));
        }
        if hidden > 0 {
            let _ = writeln!(text, "  … and {hidden} more");
            let _ = writeln!(html, "<li>… and {hidden} more</li>");
        }
        html.push_str("</ul>\n");
        text.push('\n');
    }
    if messages > 0 {
        let _ = writeln!(
            text,
            "{} for you. For confidentiality, messages are shown only in the portal.\n",
            plural(messages, "new message", "new messages")
        );
        let _ = writeln!(
            html,
            "<p>{} for you. For confidentiality, messages are shown only in the portal.</p>",
            plural(messages, "new message", "new messages")
        );
    }
    text.push_str("Open your portal drive or SFTP connection to see them.\n");
    html.push_str("<p>Open your portal drive or SFTP connection to see them.</p>\n");
    Email {
        to: to.to_owned(),
        html: html_page(&html_escape(&subject), &html),
        subject,
        text,
    }
}

/// Notification listing new documents in one matter (one mail for many documents).
pub fn notify_documents(to: &str, firm: &str, matter: &str, names: &[&str]) -> Email {
    notify_activity(to, firm, matter, names, 0, 0)
}

/// Notification that there is a new message in a matter (without its content).
pub fn notify_message(to: &str, firm: &str, matter: &str) -> Email {
    notify_activity(to, firm, matter, &[], 0, 1)
}

/// Something to tell a participant about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotifyEvent {
    /// A document was added to a folder the recipient can list (`name` as they see it).
    DocumentAdded {
        /// The document's name.
        name: String,
    },
    /// A new message for the recipient.
    NewMessage,
}

/// Timing of the [`NotificationBatcher`] (the `[notifications]` config table).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Send once nothing new arrived for this long, in milliseconds (default 60,000).
    pub quiet_ms: u64,
    /// But never hold an event longer than this, in milliseconds (default 600,000).
    pub max_delay_ms: u64,
    /// Most recipient+matter batches held at once; beyond that the oldest is sent early
    /// (default 10,000).
    pub max_pending: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            quiet_ms: 60_000,
            max_delay_ms: 600_000,
            max_pending: 10_000,
        }
    }
}

/// The batcher has stopped (after [`NotificationBatcher::shutdown`] or a panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the notification batcher has stopped")]
pub struct BatcherClosed;

impl From<BatcherClosed> for crate::Error {
    fn from(_: BatcherClosed) -> Self {
        crate::Error::ShuttingDown
    }
}

enum Cmd {
    Event {
        to: String,
        matter: String,
        event: NotifyEvent,
    },
    Flush(oneshot::Sender<()>),
}

struct Pending {
    first: Instant,
    last: Instant,
    names: Vec<String>,
    more_documents: usize,
    messages: usize,
}

/// Groups notifications per recipient and matter: one mail after a quiet window (or at most
/// `max_delay` after the first event), so 200 files landing at once make one mail, not 200.
///
/// Runs as a tokio task; sending failures are logged (`tracing`), not retried.
#[derive(Debug)]
pub struct NotificationBatcher {
    tx: mpsc::Sender<Cmd>,
    task: tokio::task::JoinHandle<()>,
}

impl NotificationBatcher {
    /// Starts the batcher task on the current tokio runtime.
    pub fn spawn(mailer: Arc<dyn Mailer>, firm: impl Into<String>, config: BatchConfig) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(run_batcher(rx, mailer, firm.into(), config));
        NotificationBatcher { tx, task }
    }

    /// Queues an event for `to` about `matter` (waits only if the queue is full).
    pub async fn notify(
        &self,
        to: &str,
        matter: &str,
        event: NotifyEvent,
    ) -> Result<(), BatcherClosed> {
        self.tx
            .send(Cmd::Event {
                to: to.to_owned(),
                matter: matter.to_owned(),
                event,
            })
            .await
            .map_err(|_| BatcherClosed)
    }

    /// Sends everything pending now and waits until those mails are handed to the mailer.
    pub async fn flush(&self) -> Result<(), BatcherClosed> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Cmd::Flush(ack))
            .await
            .map_err(|_| BatcherClosed)?;
        done.await.map_err(|_| BatcherClosed)
    }

    /// Sends everything pending, waits for it, and stops the task.
    pub async fn shutdown(self) {
        drop(self.tx);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "notification batcher task failed");
        }
    }
}

async fn run_batcher(
    mut rx: mpsc::Receiver<Cmd>,
    mailer: Arc<dyn Mailer>,
    firm: String,
    config: BatchConfig,
) {
    let quiet = Duration::from_millis(config.quiet_ms);
    let max_delay = Duration::from_millis(config.max_delay_ms.max(config.quiet_ms));
    let max_pending = config.max_pending.max(1);
    let mut pending: HashMap<(String, String), Pending> = HashMap::new();
    let mut sends: JoinSet<()> = JoinSet::new();
    let due = |p: &Pending| (p.last + quiet).min(p.first + max_delay);

    loop {
        while sends.try_join_next().is_some() {}
        let next = pending.values().map(due).min();
        tokio::select! {
            cmd = rx.recv() => match cmd {
                None => break,
                Some(Cmd::Event { to, matter, event }) => {
                    let now = Instant::now();
                    let key = (to, matter);
                    if !pending.contains_key(&key) && pending.len() >= max_pending
                        && let Some(oldest) = pending
                            .iter()
                            .min_by_key(|(_, p)| p.first)
                            .map(|(k, _)| k.clone())
                        && let Some(p) = pending.remove(&oldest)
                    {
                        send(&mut sends, &mailer, &firm, oldest, p);
                    }
                    let p = pending.entry(key).or_insert_with(|| Pending {
                        first: now,
                        last: now,
                        names: Vec::new(),
                        more_documents: 0,
                        messages: 0,
                    });
                    p.last = now;
                    match event {
                        NotifyEvent::DocumentAdded { name } => {
                            if p.names.len() < MAX_LISTED_DOCUMENTS {
                                p.names.push(name);
                            } else {
                                p.more_documents = p.more_documents.saturating_add(1);
                            }
                        }
                        NotifyEvent::NewMessage => p.messages = p.messages.saturating_add(1),
                    }
                }
                Some(Cmd::Flush(ack)) => {
                    for (k, p) in pending.drain() {
                        send(&mut sends, &mailer, &firm, k, p);
                    }
                    while sends.join_next().await.is_some() {}
                    let _ = ack.send(());
                }
            },
            _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                let ready: Vec<(String, String)> = pending
                    .iter()
                    .filter(|(_, p)| due(p) <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in ready {
                    if let Some(p) = pending.remove(&k) {
                        send(&mut sends, &mailer, &firm, k, p);
                    }
                }
            }
        }
    }
    for (k, p) in pending.drain() {
        send(&mut sends, &mailer, &firm, k, p);
    }
    while sends.join_next().await.is_some() {}
}

fn send(
    sends: &mut JoinSet<()>,
    mailer: &Arc<dyn Mailer>,
    firm: &str,
    (to, matter): (String, String),
    p: Pending,
) {
    let names: Vec<&str> = p.names.iter().map(String::as_str).collect();
    let email = notify_activity(&to, firm, &matter, &names, p.more_documents, p.messages);
    let mailer = Arc::clone(mailer);
    sends.spawn(async move {
        if let Err(e) = mailer.send(email).await {
            tracing::warn!(error = %e, "notification mail could not be sent");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::mailer::MemoryMailer;

    const HOSTILE: &str = "<script>alert(\"x\")</script> & 'Co'\r\nBcc: evil@example.com";

    fn assert_no_raw_markup(e: &Email) {
        assert!(!e.html.contains("<script>"), "{}", e.html);
        assert!(
            e.html
                .contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;Co&#39;")
        );
        assert!(!e.subject.contains(['\r', '\n']));
        assert!(!e.text.contains("\r\nBcc"));
    }

    #[test]
    fn escape() {
        assert_eq!(html_escape("a<b>&\"c'\n"), "a&lt;b&gt;&amp;&quot;c&#39; ");
    }

    #[test]
    fn base_url() {
        let b = BaseUrl::parse("https://portal.dewey.example:8443/sdx/").unwrap();
        assert_eq!(b.as_str(), "https://portal.dewey.example:8443/sdx");
        let (t, _) = Token::generate().unwrap();
        let link = b.invite_link(&t);
        assert_eq!(
            link,
            format!(
                "https://portal.dewey.example:8443/sdx/invite/{}",
                t.as_str()
            )
        );
        assert!(
            b.reset_link(&t)
                .ends_with(&format!("/reset/{}", t.as_str()))
        );
        assert_eq!(b.host(), "portal.dewey.example");
        assert_eq!(b.webdav_url(), "https://portal.dewey.example:8443/sdx/dav/");
        assert!(b.is_https());
        let v6 = BaseUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!(v6.host(), "::1");
        assert!(!v6.is_https());
        assert_eq!(BaseUrl::default().as_str(), DEFAULT_BASE_URL);
        assert_eq!(
            BaseUrl::parse(DEFAULT_BASE_URL).unwrap(),
            BaseUrl::default()
        );
        for bad in [
            "portal.example",
            "javascript:alert(1)",
            "https://",
            "https:///path",
            "https://a b.example",
            "https://x.example/?q=1",
            "https://x.example/#f",
            "https://user:pw@x.example",
            "https://x.example/\"onmouseover=",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(Duration::from_secs(7 * 86_400)), "7 days");
        assert_eq!(human_duration(Duration::from_secs(86_400)), "1 day");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1 hour");
        assert_eq!(human_duration(Duration::from_secs(36 * 3600)), "36 hours");
        assert_eq!(human_duration(Duration::from_secs(90)), "2 minutes");
        assert_eq!(human_duration(Duration::ZERO), "1 minute");
    }

    #[test]
    fn invitations_carry_firm_matter_and_link() {
        let link = "https://portal.example/invite/AbC-123_xyz";
        let week = Duration::from_secs(7 * 86_400);
        let e = invite_new_login(
            "alice@example.com",
            "Dewey & Partners",
            "Estate of J. Doe",
            link,
            week,
        );
        assert_eq!(e.to, "alice@example.com");
        assert!(e.subject.contains("Dewey & Partners"));
        assert!(e.text.contains(link) && e.html.contains(link));
        assert!(e.text.contains("\"Estate of J. Doe\""));
        assert!(e.text.contains("choose a password"));
        assert!(e.text.contains("7 days"));
        assert!(e.html.contains("Dewey &amp; Partners"));
        assert!(e.html.contains(&format!("href=\"{link}\"")));

        let e = invite_existing_login(
            "bob@example.com",
            "Dewey & Partners",
            "Smith v Jones",
            link,
            week,
        );
        assert!(
            e.subject
                .contains("you now have access to \"Smith v Jones\"")
        );
        assert!(e.text.contains(link));
        assert!(!e.text.contains("choose a password"));

        let e = password_reset(
            "bob@example.com",
            "Dewey",
            "https://p.example/reset/x",
            Duration::from_secs(3600),
        );
        assert!(e.text.contains("https://p.example/reset/x") && e.text.contains("1 hour"));
    }

    #[test]
    fn hostile_values_are_neutralised() {
        let link = "https://p.example/invite/x\"><script>";
        for e in [
            invite_new_login(
                "a@example.com",
                HOSTILE,
                HOSTILE,
                link,
                Duration::from_secs(60),
            ),
            invite_existing_login(
                "a@example.com",
                HOSTILE,
                HOSTILE,
                link,
                Duration::from_secs(60),
            ),
            password_reset("a@example.com", HOSTILE, link, Duration::from_secs(60)),
            notify_documents("a@example.com", HOSTILE, HOSTILE, &[HOSTILE]),
            notify_message("a@example.com", HOSTILE, HOSTILE),
        ] {
            assert_no_raw_markup(&e);
            assert!(!e.html.contains("x\"><script>"));
        }
    }

    #[test]
    fn document_list_is_capped() {
        let names: Vec<String> = (0..200).map(|i| format!("scan-{i:03}.pdf")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let e = notify_documents("a@example.com", "Dewey", "M-1", &refs);
        assert!(e.subject.contains("200 new documents"), "{}", e.subject);
        assert!(e.text.contains("scan-049.pdf"));
        assert!(!e.text.contains("scan-050.pdf"));
        assert!(e.text.contains("and 150 more"));
        assert!(e.html.contains("and 150 more"));
        let e = notify_message("a@example.com", "Dewey", "M-1");
        assert!(e.subject.contains("1 new message"));
        assert!(e.text.contains("shown only in the portal"));
        let e = notify_activity("a@example.com", "Dewey", "M-1", &["a.pdf"], 0, 2);
        assert!(
            e.subject.contains("1 new document and 2 new messages"),
            "{}",
            e.subject
        );
    }

    fn cfg(quiet: u64, max: u64) -> BatchConfig {
        BatchConfig {
            quiet_ms: quiet,
            max_delay_ms: max,
            max_pending: 100,
        }
    }

    fn doc(name: &str) -> NotifyEvent {
        NotifyEvent::DocumentAdded { name: name.into() }
    }

    #[tokio::test(start_paused = true)]
    async fn batcher_groups_per_recipient_and_matter() {
        let mailer = Arc::new(MemoryMailer::new());
        let b = NotificationBatcher::spawn(mailer.clone(), "Dewey", cfg(60_000, 600_000));
        for i in 0..200 {
            b.notify("alice@example.com", "M-1", doc(&format!("f{i}.pdf")))
                .await
                .unwrap();
        }
        b.notify("alice@example.com", "M-1", NotifyEvent::NewMessage)
            .await
            .unwrap();
        b.notify("alice@example.com", "M-2", doc("other.pdf"))
            .await
            .unwrap();
        b.notify("bob@example.com", "M-1", doc("f0.pdf"))
            .await
            .unwrap();
        // Nothing before the quiet window ends.
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert!(mailer.sent().is_empty());
        tokio::time::sleep(Duration::from_secs(2)).await;
        b.flush().await.unwrap(); // nothing left; waits for in-flight sends
        let sent = mailer.sent();
        assert_eq!(sent.len(), 3, "{sent:#?}");
        let find = |to: &str, matter: &str| {
            let hits: Vec<&Email> = sent
                .iter()
                .filter(|e| e.to == to && e.subject.ends_with(&format!("in \"{matter}\"")))
                .collect();
            assert_eq!(hits.len(), 1, "{to} {matter}: {sent:#?}");
            hits[0].clone()
        };
        let a1 = find("alice@example.com", "M-1");
        assert_eq!(
            a1.subject,
            "Dewey: 200 new documents and 1 new message in \"M-1\""
        );
        assert!(a1.text.contains("and 150 more"));
        assert!(find("alice@example.com", "M-2").text.contains("other.pdf"));
        assert_eq!(
            find("bob@example.com", "M-1").subject,
            "Dewey: 1 new document in \"M-1\""
        );
        b.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_window_restarts_but_max_delay_caps_it() {
        let mailer = Arc::new(MemoryMailer::new());
        let b = NotificationBatcher::spawn(mailer.clone(), "Dewey", cfg(1_000, 5_000));
        // One event every 500 ms for 12 s: the quiet window never elapses.
        let start = Instant::now();
        let mut first_mail_at = None;
        for i in 0..24 {
            b.notify("a@example.com", "M", doc(&format!("{i}")))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            if first_mail_at.is_none() && !mailer.sent().is_empty() {
                first_mail_at = Some(start.elapsed());
            }
        }
        let first = first_mail_at.expect("max_delay should have forced a mail");
        assert!(
            first >= Duration::from_secs(5) && first <= Duration::from_millis(5_600),
            "{first:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        let sent = mailer.sent();
        // 24 events over 12 s with a 5 s cap: 3 mails, none lost.
        assert_eq!(sent.len(), 3, "{sent:#?}");
        let total: usize = sent
            .iter()
            .map(|e| e.text.lines().filter(|l| l.starts_with("  - ")).count())
            .sum();
        assert_eq!(total, 24);
        b.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_flushes_and_pending_is_bounded() {
        let mailer = Arc::new(MemoryMailer::new());
        let b = NotificationBatcher::spawn(
            mailer.clone(),
            "Dewey",
            BatchConfig {
                quiet_ms: 60_000,
                max_delay_ms: 600_000,
                max_pending: 10,
            },
        );
        for i in 0..25 {
            b.notify(&format!("u{i}@example.com"), "M", NotifyEvent::NewMessage)
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        // 15 were sent early to keep at most 10 pending...
        assert_eq!(mailer.sent().len(), 15);
        // ...and the flush sends the other 10.
        b.flush().await.unwrap();
        assert_eq!(mailer.sent().len(), 25);
        b.notify("late@example.com", "M", NotifyEvent::NewMessage)
            .await
            .unwrap();
        b.shutdown().await;
        assert_eq!(mailer.sent().len(), 26);
    }
}
