//! Fuzz the declarative configuration: the portal file (`provision::PortalFile::parse`, then
//! `provision::apply` against an in-memory portal) and the server configuration
//! (`config::ServerConfig::parse`).
//!
//! Input: byte 0 picks the parser (even: portal file, odd: server config), the rest is the text
//! (invalid UTF-8 is skipped: both are read as UTF-8 text before parsing).
//!
//! Checks: no panic; errors are typed and name a line that exists; a file that parses is applied
//! as a dry run, then for real (files without passwords, which cost an Argon2 hash each), and
//! applying it a second time changes nothing (the module's idempotence promise).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sdx_portal::config::ServerConfig;
use sdx_portal::model::Actor;
use sdx_portal::provision::{self, PortalFile};
use sdx_portal::{Portal, demo};
use std::sync::OnceLock;
use std::time::Duration;

struct State {
    rt: tokio::runtime::Runtime,
    portal: Portal,
}

fn state() -> &'static State {
    static S: OnceLock<State> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let portal = rt.block_on(async {
            let p = Portal::in_memory().await.expect("in-memory portal");
            demo::provision(&p).await.expect("demo data");
            p
        });
        State { rt, portal }
    })
}

fn check_line(text: &str, line: Option<usize>, what: &str) {
    if let Some(l) = line {
        let lines = text.lines().count().max(1);
        assert!(
            l >= 1 && l <= lines + 1,
            "{what}: error on line {l} of a {lines}-line text"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if mode % 2 == 1 {
        if let Err(e) = ServerConfig::parse(text) {
            assert!(!e.message.is_empty(), "empty config error");
            check_line(text, e.line, "config");
        }
        return;
    }
    let file = match PortalFile::parse(text) {
        Ok(f) => f,
        Err(e) => {
            assert!(!e.message.is_empty(), "empty portal file error");
            check_line(text, e.line, "portal file");
            return;
        }
    };
    let st = state();
    let sys = Actor::system();
    st.rt.block_on(async {
        let run = async {
            let dry = provision::apply(&st.portal, &sys, &file, true).await;
            if let Err(e) = &dry {
                check_line(text, e.error.line(), "dry run");
            }
            if file.has_clear_passwords() || text.contains("password_hash") {
                return;
            }
            match provision::apply(&st.portal, &sys, &file, false).await {
                Ok(_) => {
                    let again = provision::apply(&st.portal, &sys, &file, false)
                        .await
                        .unwrap_or_else(|e| panic!("a second apply failed: {e}"));
                    assert!(
                        again.changes.is_empty(),
                        "applying twice changed {:?}",
                        again.changes
                    );
                }
                Err(e) => check_line(text, e.error.line(), "apply"),
            }
        };
        tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("apply took over 20 s");
    });
});
