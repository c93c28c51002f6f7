//! Account primitives: password hashing and strength rules, one-time tokens and app passwords,
//! brute-force throttling, mail delivery and the mails themselves.
//!
//! The building blocks are self-contained; the portal engine stores their results (hashes,
//! token hashes, expiries) in its tables and calls them from its login, invitation and
//! notification flows ([`crate::portal::invitations`], `Portal::authenticate_*`,
//! `Portal::create_app_password`…). Two pieces run beside a server:
//! - [`web::invite_pages`]: the accept / reset pages, mounted on the WebDAV listener's fallback
//!   (`/invite/<token>`, `/reset`, `/reset/<token>`);
//! - [`crate::Portal::start_notifications`] ([`notify`]): mails about new documents and
//!   messages, batched per recipient and matter.

pub mod mailer;
pub mod notify;
pub mod password;
pub mod templates;
pub mod throttle;
pub mod tokens;
pub mod web;

pub use mailer::{
    Email, FileOutbox, MailConfig, MailError, Mailer, MemoryMailer, NoMailer, SmtpConfig,
    SmtpMailer, SmtpSecurity, mailer_from_config,
};
pub use notify::Notifier;
pub use password::{
    DUMMY_HASH, PasswordError, WeakPassword, check_strength, hash_password, hash_password_async,
    needs_rehash, verify_async, verify_dummy, verify_password,
};
pub use templates::{BaseUrl, BatchConfig, NotificationBatcher, NotifyEvent};
pub use throttle::{Attempt, Limits, Refusal, RefusalKind, Throttle, ThrottleConfig};
pub use tokens::{AppPassword, AppPasswordHash, Token, TokenConfig, TokenError, TokenHash};
pub use web::invite_pages;
