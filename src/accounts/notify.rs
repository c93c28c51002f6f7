//! Notification mails fed by portal events.
//!
//! [`crate::Portal::start_notifications`] subscribes to the portal's events and feeds a
//! [`NotificationBatcher`]:
//! - `DocumentAdded`: every portal participant of the matter who can **List** the folder the
//!   document landed in (as the access policy says, at the time the event is handled) and is
//!   not its author;
//! - `MessagePosted`: the participant whose conversation it is, unless they wrote it.
//!
//! Only enabled, verified logins are notified (a contact without a login gets invitations,
//! not notifications), and only about open matters. The batcher sends one mail per recipient
//! and matter per window (see [`BatchConfig`]), so 200 files landing at once make one mail.

use std::sync::{Arc, Weak};

use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::templates::{BatchConfig, NotificationBatcher, NotifyEvent};
use crate::Portal;
use crate::crypto::Scope;
use crate::events::PortalEvent;
use crate::model::*;
use crate::policy;
use crate::store::records::*;
use crate::store::tables::{self, CONTACTS, DOCUMENTS, LOGINS, MATTERS, PARTICIPANTS};
use crate::store::{Db, Tx};

enum Cmd {
    Flush(oneshot::Sender<()>),
}

/// The running notification feeder (see the module docs). Dropping it stops the feeder; call
/// [`Notifier::shutdown`] to send what is pending first.
#[derive(Debug)]
pub struct Notifier {
    cmd: mpsc::Sender<Cmd>,
    task: tokio::task::JoinHandle<()>,
}

impl Notifier {
    /// Handles every event published so far, then sends every pending notification now and
    /// waits until the mails are handed to the mailer.
    pub async fn flush(&self) -> crate::Result<()> {
        let (ack, done) = oneshot::channel();
        self.cmd
            .send(Cmd::Flush(ack))
            .await
            .map_err(|_| crate::Error::ShuttingDown)?;
        done.await.map_err(|_| crate::Error::ShuttingDown)
    }

    /// Sends what is pending and stops.
    pub async fn shutdown(self) {
        drop(self.cmd);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "notification feeder failed");
        }
    }
}

/// One mail-worthy event for one recipient: (address, matter name, event).
type Target = (String, String, NotifyEvent);

impl Portal {
    /// Starts mailing notifications about new documents and messages (see
    /// [`crate::accounts::notify`]) through the portal's mailer, batched per `config`. Call
    /// once per portal, from inside a tokio runtime.
    pub fn start_notifications(&self, config: BatchConfig) -> Notifier {
        let rx = self.subscribe();
        let batcher =
            NotificationBatcher::spawn(self.mailer().clone(), self.firm_name().to_owned(), config);
        let (cmd, cmds) = mpsc::channel(8);
        let weak = Arc::downgrade(&self.inner);
        let task = tokio::spawn(feed(weak, rx, cmds, batcher));
        Notifier { cmd, task }
    }
}

async fn feed(
    portal: Weak<crate::portal::Inner>,
    mut rx: broadcast::Receiver<PortalEvent>,
    mut cmds: mpsc::Receiver<Cmd>,
    batcher: NotificationBatcher,
) {
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => handle(&portal, &batcher, ev).await,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "notifications fell behind; some events were skipped");
                }
                Err(RecvError::Closed) => break,
            },
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Flush(ack)) => {
                    loop {
                        match rx.try_recv() {
                            Ok(ev) => handle(&portal, &batcher, ev).await,
                            Err(TryRecvError::Lagged(_)) => continue,
                            Err(_) => break,
                        }
                    }
                    if batcher.flush().await.is_err() {
                        break;
                    }
                    let _ = ack.send(());
                }
                None => break,
            },
        }
    }
    batcher.shutdown().await;
}

async fn handle(
    portal: &Weak<crate::portal::Inner>,
    batcher: &NotificationBatcher,
    ev: PortalEvent,
) {
    let Some(inner) = portal.upgrade() else {
        return;
    };
    let store = inner.store.clone();
    drop(inner);
    let targets = match ev {
        PortalEvent::DocumentAdded {
            matter,
            folder,
            document,
            by,
        } => {
            store
                .read(move |db| document_targets(db, matter, folder, document, by))
                .await
        }
        PortalEvent::MessagePosted {
            matter,
            participant,
            by,
            ..
        } => {
            store
                .read(move |db| message_targets(db, matter, participant, by))
                .await
        }
        _ => return,
    };
    match targets {
        Ok(ts) => {
            for (to, matter, event) in ts {
                if batcher.notify(&to, &matter, event).await.is_err() {
                    return;
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not work out who to notify"),
    }
}

/// An open matter's record, if it exists and is open.
fn open_matter<T: Tx + ?Sized>(db: &Db<'_, T>, m: MatterId) -> crate::Result<Option<MatterRec>> {
    Ok(db
        .get::<MatterRec>(MATTERS, Scope::Global, &tables::ids(&[m.0]))?
        .filter(|r| !r.closed))
}

/// The login of a contact that may be notified: enabled and verified.
fn notifiable<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    contact: ContactId,
) -> crate::Result<Option<(LoginId, String)>> {
    let Some(c) = db.get::<ContactRec>(CONTACTS, Scope::Global, &tables::ids(&[contact.0]))? else {
        return Ok(None);
    };
    let Some(l) = c.login else {
        return Ok(None);
    };
    let r: Option<LoginRec> = db.get(LOGINS, Scope::Global, &tables::ids(&[l.0]))?;
    Ok(
        r.filter(|r| !r.disabled && r.verified && r.kind == LoginKind::Portal)
            .map(|r| (l, r.email)),
    )
}

fn document_targets<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    matter: MatterId,
    folder: FolderId,
    document: DocumentId,
    by: Principal,
) -> crate::Result<Vec<Target>> {
    let Some(m) = open_matter(db, matter)? else {
        return Ok(Vec::new());
    };
    let doc: Option<DocumentRec> = db.get(
        DOCUMENTS,
        Scope::Matter(matter),
        &tables::ids(&[matter.0, document.0]),
    )?;
    let Some(doc) = doc.filter(|d| d.trashed.is_none()) else {
        return Ok(Vec::new());
    };
    let parts: Vec<(Vec<u8>, ParticipantRec)> = db.scan(
        PARTICIPANTS,
        Scope::Matter(matter),
        &tables::ids(&[matter.0]),
        usize::MAX,
    )?;
    let mut contacts: Vec<ContactId> = parts
        .into_iter()
        .filter(|(_, p)| p.portal)
        .map(|(_, p)| p.contact)
        .collect();
    contacts.sort_unstable_by_key(|c| c.0);
    contacts.dedup();
    let mut out = Vec::new();
    for c in contacts {
        let Some((login, email)) = notifiable(db, c)? else {
            continue;
        };
        if by.login() == Some(login) {
            continue;
        }
        let p = Principal::Portal(login);
        let Ok(acc) = policy::matter_access(db, p, matter) else {
            continue;
        };
        let Ok(node) = crate::tree::resolve::folder_by_id(db, &acc, folder) else {
            continue;
        };
        if node.perms().contains(Permission::List) {
            out.push((
                email,
                m.display.clone(),
                NotifyEvent::DocumentAdded {
                    name: doc.name.clone(),
                },
            ));
        }
    }
    Ok(out)
}

fn message_targets<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    matter: MatterId,
    participant: ParticipantId,
    by: Principal,
) -> crate::Result<Vec<Target>> {
    let Some(m) = open_matter(db, matter)? else {
        return Ok(Vec::new());
    };
    let p: Option<ParticipantRec> = db.get(
        PARTICIPANTS,
        Scope::Matter(matter),
        &tables::ids(&[matter.0, participant.0]),
    )?;
    let Some(p) = p.filter(|p| p.portal) else {
        return Ok(Vec::new());
    };
    match notifiable(db, p.contact)? {
        Some((login, email)) if by.login() != Some(login) => {
            Ok(vec![(email, m.display, NotifyEvent::NewMessage)])
        }
        _ => Ok(Vec::new()),
    }
}
