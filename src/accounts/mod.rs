//! Account primitives: password hashing and strength rules, one-time tokens and app passwords,
//! brute-force throttling, mail delivery and the mails themselves.
//!
//! These are self-contained building blocks; the portal engine stores the results (hashes,
//! token hashes, expiries) in its tables and calls them from its login, invitation and
//! notification flows.

pub mod mailer;
pub mod password;
pub mod templates;
pub mod throttle;
pub mod tokens;

pub use mailer::{
    Email, FileOutbox, MailConfig, MailError, Mailer, MemoryMailer, SmtpConfig, SmtpMailer,
    SmtpSecurity, mailer_from_config,
};
pub use password::{
    DUMMY_HASH, PasswordError, WeakPassword, check_strength, hash_password, hash_password_async,
    needs_rehash, verify_async, verify_dummy, verify_password,
};
pub use templates::{BaseUrl, BatchConfig, NotificationBatcher, NotifyEvent};
pub use throttle::{Limits, Throttle, ThrottleConfig};
pub use tokens::{AppPassword, AppPasswordHash, Token, TokenConfig, TokenError, TokenHash};
