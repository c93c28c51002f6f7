//! Messages: per matter, one conversation between the firm and each portal participant.
//!
//! A portal user reaches only the conversations of their own participations; staff reach all.

use super::Portal;
use crate::audit::{self, AuditAction, NewEntry, Outcome};
use crate::crypto::Scope;
use crate::events::PortalEvent;
use crate::model::*;
use crate::policy;
use crate::store::records::*;
use crate::store::tables::{self, MESSAGES, PARTICIPANTS};
use crate::store::{Db, Tx};
use crate::{Error, Result};
use serde::Serialize;

/// Longest message body, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A message as read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Id.
    pub id: MessageId,
    /// Matter.
    pub matter: MatterId,
    /// The conversation (participant).
    pub participant: ParticipantId,
    /// Author.
    pub author: Principal,
    /// Body.
    pub body: String,
    /// Posted at.
    pub at: Millis,
}

/// Decides which conversation the principal addresses; the policy point for messages.
fn conversation<T: Tx + ?Sized>(
    db: &Db<'_, T>,
    p: Principal,
    matter: MatterId,
    participant: Option<ParticipantId>,
) -> Result<ParticipantId> {
    let acc = policy::matter_access(db, p, matter)?;
    if acc.staff {
        let pid = participant.ok_or_else(|| {
            Error::Invalid("staff must name the participant whose conversation this is".into())
        })?;
        db.need::<ParticipantRec>(
            PARTICIPANTS,
            Scope::Matter(matter),
            &tables::ids(&[matter.0, pid.0]),
            "participant",
        )?;
        return Ok(pid);
    }
    match participant {
        None => acc
            .participants
            .first()
            .copied()
            .ok_or_else(|| Error::NotFound(format!("matter {matter}"))),
        Some(pid) if acc.participants.contains(&pid) => Ok(pid),
        // Someone else's conversation: indistinguishable from nothing.
        Some(_) => Err(Error::NotFound("conversation".into())),
    }
}

impl Portal {
    /// Posts a message. A portal user posts in their own conversation (`participant` may be None);
    /// staff name the participant.
    pub async fn post_message(
        &self,
        actor: &Actor,
        matter: MatterId,
        participant: Option<ParticipantId>,
        body: &str,
    ) -> Result<MessageId> {
        if body.len() > MAX_MESSAGE_BYTES {
            return Err(Error::TooLarge(format!(
                "a message is limited to {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        if body.trim().is_empty() {
            return Err(Error::Invalid("a message must not be empty".into()));
        }
        let actor = actor.clone();
        let body = body.to_string();
        self.inner
            .store
            .write(move |ctx| {
                let r = conversation(&ctx.db(), actor.principal, matter, participant);
                let res = match r {
                    Ok(pid) => {
                        let id = MessageId(ctx.new_id());
                        ctx.put(
                            MESSAGES,
                            Scope::Matter(matter),
                            &tables::ids(&[matter.0, pid.0, id.0]),
                            &MessageRec {
                                author: actor.principal,
                                body: body.clone(),
                                at: now_millis(),
                            },
                        )?;
                        ctx.emit(PortalEvent::MessagePosted {
                            matter,
                            participant: pid,
                            message: id,
                            by: actor.principal,
                        });
                        Ok(id)
                    }
                    Err(e @ Error::Storage(_)) => return Err(e),
                    Err(e) => Err(e),
                };
                audit::append(
                    ctx,
                    NewEntry {
                        actor: actor.clone(),
                        matter: Some(matter),
                        document: None,
                        object: format!("conversation {}", participant.map(|p| p.0).unwrap_or(0)),
                        action: AuditAction::PostMessage,
                        outcome: Outcome::of(&res),
                    },
                )?;
                Ok(res)
            })
            .await?
    }

    /// Reads a conversation, oldest first. Portal users read only their own.
    pub async fn messages(
        &self,
        actor: &Actor,
        matter: MatterId,
        participant: Option<ParticipantId>,
    ) -> Result<Vec<Message>> {
        let p = actor.principal;
        let res = self
            .inner
            .store
            .read(move |db| {
                let pid = conversation(db, p, matter, participant)?;
                let all: Vec<(Vec<u8>, MessageRec)> = db.scan(
                    MESSAGES,
                    Scope::Matter(matter),
                    &tables::ids(&[matter.0, pid.0]),
                    usize::MAX,
                )?;
                Ok(all
                    .into_iter()
                    .filter_map(|(k, r)| {
                        tables::id_at(&k, 16).map(|id| Message {
                            id: MessageId(id),
                            matter,
                            participant: pid,
                            author: r.author,
                            body: r.body,
                            at: r.at,
                        })
                    })
                    .collect())
            })
            .await;
        self.audit(NewEntry {
            actor: actor.clone(),
            matter: Some(matter),
            document: None,
            object: format!("conversation {}", participant.map(|p| p.0).unwrap_or(0)),
            action: AuditAction::ReadMessages,
            outcome: Outcome::of(&res),
        })
        .await?;
        res
    }
}
