//! Meeting up: a session's meeting point, set, moved or cleared through REST or a socket,
//! kept with the session and announced to everyone in it, on every instance.

use super::AppState;
use crate::domain::{MeetingPoint, MeetingPointBy, MeetingPointInput, Session, UserId};
use crate::error::ApiError;
use crate::message::HubMessage;
use crate::protocol::native::ServerMessage;

/// Who asks to change a meeting point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setter {
    /// The creator token's holder (its `sub`).
    Creator(UserId),
    /// A participant of the session.
    Participant(UserId),
}

impl Setter {
    fn id(self) -> UserId {
        match self {
            Self::Creator(id) | Self::Participant(id) => id,
        }
    }
}

/// Whether `setter` may change `session`'s meeting point.
fn allowed(session: &Session, setter: Setter) -> Result<(), ApiError> {
    match (setter, session.meeting_point_by) {
        (Setter::Creator(_), _) | (Setter::Participant(_), MeetingPointBy::Anyone) => Ok(()),
        (Setter::Participant(_), MeetingPointBy::Creator) => Err(ApiError::forbidden(
            "only the session's creator may set the meeting point here (the session was created with meeting_point_by: creator)",
        )),
    }
}

impl AppState {
    /// Sets or moves `session`'s meeting point and tells everyone (`meeting_point_set`).
    pub async fn set_meeting_point(
        &self,
        session: &Session,
        setter: Setter,
        input: &MeetingPointInput,
    ) -> Result<MeetingPoint, ApiError> {
        allowed(session, setter)?;
        let point = MeetingPoint::parse(input, setter.id(), self.clock.now())?;
        if !self.store.set_meeting_point(session.id, Some(&point)).await? {
            return Err(ApiError::session_ended());
        }
        let frame = ServerMessage::MeetingPointSet(&point).to_frame();
        self.publish(session.id, HubMessage::Event { frame });
        Ok(point)
    }

    /// Clears `session`'s meeting point and tells everyone (`meeting_point_cleared`).
    pub async fn clear_meeting_point(&self, session: &Session, setter: Setter) -> Result<(), ApiError> {
        allowed(session, setter)?;
        if !self.store.set_meeting_point(session.id, None).await? {
            return Err(ApiError::session_ended());
        }
        let frame =
            ServerMessage::MeetingPointCleared { cleared_by: setter.id(), at: self.clock.now() }.to_frame();
        self.publish(session.id, HubMessage::Event { frame });
        Ok(())
    }
}
