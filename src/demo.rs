//! The demo portal: a firm with one matter type, one matter and one client login, created on first
//! use and reused afterwards (every step is find-or-create, so running it twice changes nothing).

use crate::model::*;
use crate::{Portal, Result};

/// Demo staff login.
pub const DEMO_STAFF_EMAIL: &str = "sam@demo.test";
/// Demo client login.
pub const DEMO_CLIENT_EMAIL: &str = "alice@client.test";
/// Password of both demo logins.
pub const DEMO_PASSWORD: &str = "demo portal password";

/// What the demo set up.
#[derive(Clone, Debug)]
pub struct Demo {
    /// The demo matter.
    pub matter: MatterId,
    /// The client's login.
    pub client: LoginId,
    /// The staff login.
    pub staff: LoginId,
}

/// Creates (or finds) the demo firm's set-up.
pub async fn provision(portal: &Portal) -> Result<Demo> {
    let sys = Actor::system();
    let client_t = match portal.find_participant_type(&sys, "Client").await? {
        Some(t) => t,
        None => portal.create_participant_type(&sys, "Client").await?,
    };
    let other_t = match portal.find_participant_type(&sys, "Other Side").await? {
        Some(t) => t,
        None => portal.create_participant_type(&sys, "Other Side").await?,
    };
    let general = match portal.find_matter_type(&sys, "General").await? {
        Some(t) => t,
        None => {
            let t = portal
                .create_matter_type(
                    &sys,
                    "General",
                    &[
                        "Client Documents",
                        "Client Documents/Tax Returns",
                        "Correspondence",
                        "Internal",
                    ],
                )
                .await?;
            let list_read = Permissions::NONE
                .with(Permission::List)
                .with(Permission::Read);
            let up = list_read.with(Permission::Create);
            portal
                .set_portal_permissions(&sys, t, "Client Documents", client_t, up)
                .await?;
            portal
                .set_portal_permissions(&sys, t, "Client Documents", other_t, list_read)
                .await?;
            portal
                .set_portal_permissions(
                    &sys,
                    t,
                    "Client Documents/Tax Returns",
                    client_t,
                    Permissions::FULL,
                )
                .await?;
            portal
                .set_portal_permissions(&sys, t, "Correspondence", client_t, list_read)
                .await?;
            t
        }
    };
    let matter = match portal.find_matter(&sys, "2026-001").await? {
        Some(m) => m,
        None => {
            portal
                .create_matter(&sys, "2026-001", "Smith v Jones", general)
                .await?
        }
    };
    let staff = match portal.find_login(&sys, DEMO_STAFF_EMAIL).await? {
        Some(l) => l.id,
        None => {
            portal
                .create_staff_login(&sys, DEMO_STAFF_EMAIL, "Sam Staff", Some(DEMO_PASSWORD))
                .await?
        }
    };
    let alice = match portal.find_contact(&sys, DEMO_CLIENT_EMAIL).await? {
        Some(c) => c.id,
        None => {
            portal
                .create_contact(&sys, "Alice Client", DEMO_CLIENT_EMAIL)
                .await?
        }
    };
    let client = match portal.find_login(&sys, DEMO_CLIENT_EMAIL).await? {
        Some(l) => l.id,
        None => {
            portal
                .create_portal_login(&sys, alice, Some(DEMO_PASSWORD))
                .await?
        }
    };
    let parts = portal.participants(&sys, matter).await?;
    let part = match parts.iter().find(|p| p.contact == alice) {
        Some(p) => p.id,
        None => {
            portal
                .add_participant(&sys, matter, alice, client_t)
                .await?
        }
    };
    portal.grant_access(&sys, matter, part).await?;
    Ok(Demo {
        matter,
        client,
        staff,
    })
}
