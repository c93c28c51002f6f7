//! Portal events for host applications (notifications, sync, dashboards).
//!
//! Events are published after the change that caused them is durably committed. Subscribe with
//! [`crate::Portal::subscribe`]; a slow subscriber that falls more than [`EVENT_BUFFER`] events behind
//! sees a `Lagged` error from the receiver and continues with newer events.

use crate::model::*;
use serde::Serialize;

/// How many events a subscriber may fall behind before it skips.
pub const EVENT_BUFFER: usize = 4096;

/// Something that happened in the portal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum PortalEvent {
    /// A new document appeared.
    DocumentAdded {
        /// Matter.
        matter: MatterId,
        /// Folder.
        folder: FolderId,
        /// Document.
        document: DocumentId,
        /// Who added it.
        by: Principal,
    },
    /// A document got a new version.
    DocumentUpdated {
        /// Matter.
        matter: MatterId,
        /// Folder.
        folder: FolderId,
        /// Document.
        document: DocumentId,
        /// Who updated it.
        by: Principal,
    },
    /// A document was moved to the trash (or purged).
    DocumentDeleted {
        /// Matter.
        matter: MatterId,
        /// Document.
        document: DocumentId,
        /// Who deleted it.
        by: Principal,
    },
    /// A message was posted in a participant's conversation.
    MessagePosted {
        /// Matter.
        matter: MatterId,
        /// The conversation (participant).
        participant: ParticipantId,
        /// The message.
        message: MessageId,
        /// Author.
        by: Principal,
    },
    /// Portal access was granted.
    AccessGranted {
        /// Matter.
        matter: MatterId,
        /// Participant.
        participant: ParticipantId,
    },
    /// Portal access was revoked.
    AccessRevoked {
        /// Matter.
        matter: MatterId,
        /// Participant.
        participant: ParticipantId,
    },
    /// An invitation was created (delivery is the mailer's job).
    InvitationCreated {
        /// Invitation.
        invitation: InvitationId,
        /// Contact invited.
        contact: ContactId,
        /// Matter, if any.
        matter: Option<MatterId>,
    },
}
