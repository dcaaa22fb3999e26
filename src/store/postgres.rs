//! The scale-out store: PostgreSQL, shared by every instance. Joins lock their session's
//! row so the capacity check holds across instances; the sweeper's UPDATE ... RETURNING
//! hands each expired session to exactly one instance.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{
    ActivityBatch, Departures, JoinOutcome, NewChatMessage, NewParticipant, NewSession, Store, StoreError,
};
use super::{meeting_point_from, meeting_point_json};
use crate::domain::{
    ChatMessage, ChatRoom, MeetingPoint, MeetingPointBy, Participant, Session, SessionId, ShareSettings,
    TrailPoint, UserId,
};

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn connect(
        url: &str,
        max_connections: u32,
        statement_timeout: Duration,
    ) -> Result<Self, StoreError> {
        // A query stuck on a lock or a huge scan must not hold a pooled connection forever.
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("bad postgres URL: {e}")))?
            .options([("statement_timeout", format!("{}ms", statement_timeout.as_millis()))]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            // A dead database must answer REST calls with 503 quickly, not hang them.
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }
}

fn participant_from_row(row: &PgRow) -> Result<Participant, StoreError> {
    Ok(Participant {
        session_id: SessionId(row.try_get("session_id")?),
        user_id: UserId(row.try_get("user_id")?),
        display_name: row.try_get("display_name")?,
        avatar_color: row.try_get("avatar_color")?,
        joined_at: row.try_get("joined_at")?,
        last_seen: row.try_get("last_seen")?,
        is_active: row.try_get("is_active")?,
        token_generation: row.try_get("token_generation")?,
        token_rotated_at: row.try_get("token_rotated_at")?,
        share: ShareSettings {
            approximate: row.try_get("share_approximate")?,
            paused: row.try_get("share_paused")?,
        },
        tracker_generation: row.try_get("tracker_generation")?,
        arrived: row.try_get("arrived")?,
    })
}

fn message_from_row(row: &PgRow) -> Result<ChatMessage, StoreError> {
    let session: Option<Uuid> = row.try_get("session_id")?;
    let room = match session {
        Some(id) => ChatRoom::Session(SessionId(id)),
        None => {
            let room: String = row.try_get("room_id")?;
            ChatRoom::Local(room.parse().map_err(|e| StoreError::Other(format!("bad room_id: {e}")))?)
        }
    };
    Ok(ChatMessage {
        id: row.try_get("id")?,
        room,
        user_id: UserId(row.try_get("user_id")?),
        display_name: row.try_get("display_name")?,
        avatar_color: row.try_get("avatar_color")?,
        content: row.try_get("content")?,
        created_at: row.try_get("created_at")?,
    })
}

/// (session_id, room_id) column values for a room.
fn room_columns(room: ChatRoom) -> (Option<Uuid>, Option<String>) {
    match room {
        ChatRoom::Session(id) => (Some(id.0), None),
        ChatRoom::Local(id) => (None, Some(id.to_string())),
    }
}

const MESSAGE_COLUMNS: &str =
    "id, session_id, room_id, user_id, display_name, avatar_color, content, created_at";

const PARTICIPANT_COLUMNS: &str = "session_id, user_id, display_name, avatar_color, joined_at, last_seen, is_active, token_generation, token_rotated_at, share_approximate, share_paused, tracker_generation, arrived";

#[async_trait]
impl Store for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Other(format!("migration failed: {e}")))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_session(&self, new: &NewSession) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (id, name, creator_id, created_at, expires_at, last_activity, is_active, meeting_point_by)
             VALUES ($1, $2, $3, $4, $5, $4, TRUE, $6)",
        )
        .bind(new.id.0)
        .bind(&new.name)
        .bind(new.creator_id)
        .bind(new.created_at)
        .bind(new.expires_at)
        .bind(new.meeting_point_by.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(
            "SELECT s.name, s.created_at, s.expires_at, s.last_activity, s.is_active, s.meeting_point_by, s.meeting_point,
                    (SELECT COUNT(*) FROM participants p WHERE p.session_id = s.id AND p.is_active) AS participant_count
             FROM sessions s WHERE s.id = $1",
        )
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(Session {
                id,
                name: row.try_get("name")?,
                created_at: row.try_get("created_at")?,
                expires_at: row.try_get("expires_at")?,
                last_activity: row.try_get("last_activity")?,
                ended: !row.try_get::<bool, _>("is_active")?,
                participant_count: row.try_get("participant_count")?,
                meeting_point_by: MeetingPointBy::from_stored(row.try_get("meeting_point_by")?),
                meeting_point: meeting_point_from(row.try_get("meeting_point")?)?,
            })
        })
        .transpose()
    }

    async fn session_creator(&self, id: SessionId) -> Result<Option<Uuid>, StoreError> {
        Ok(sqlx::query_scalar("SELECT creator_id FROM sessions WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn join(
        &self,
        new: &NewParticipant,
        max_participants: u32,
        max_departed: u32,
    ) -> Result<JoinOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The row lock serializes joins into one session, on every instance.
        let session: Option<(bool, DateTime<Utc>)> =
            sqlx::query_as("SELECT is_active, expires_at FROM sessions WHERE id = $1 FOR UPDATE")
                .bind(new.session_id.0)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((is_active, expires_at)) = session else { return Ok(JoinOutcome::NoSuchSession) };
        if !is_active || expires_at <= new.joined_at {
            return Ok(JoinOutcome::SessionEnded);
        }
        let active: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM participants WHERE session_id = $1 AND is_active")
                .bind(new.session_id.0)
                .fetch_one(&mut *tx)
                .await?;
        if active >= i64::from(max_participants) {
            return Ok(JoinOutcome::SessionFull);
        }
        sqlx::query(
            "INSERT INTO participants (session_id, user_id, display_name, avatar_color, joined_at, last_seen, is_active)
             VALUES ($1, $2, $3, $4, $5, $5, TRUE)",
        )
        .bind(new.session_id.0)
        .bind(new.user_id.0)
        .bind(&new.display_name)
        .bind(&new.avatar_color)
        .bind(new.joined_at)
        .execute(&mut *tx)
        .await?;
        // Those who left stay listed, up to `max_departed` of them, newest first: a
        // join/leave loop cannot grow the session without bound.
        sqlx::query(
            "DELETE FROM participants WHERE session_id = $1 AND NOT is_active AND user_id NOT IN (
                 SELECT user_id FROM participants WHERE session_id = $1 AND NOT is_active
                 ORDER BY left_at DESC NULLS LAST, joined_at DESC LIMIT $2)",
        )
        .bind(new.session_id.0)
        .bind(i64::from(max_departed))
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE sessions SET last_activity = GREATEST(last_activity, $2) WHERE id = $1")
            .bind(new.session_id.0)
            .bind(new.joined_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(JoinOutcome::Joined { participant: new.joined(), expires_at })
    }

    async fn participants(&self, session_id: SessionId) -> Result<Vec<Participant>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {PARTICIPANT_COLUMNS} FROM participants WHERE session_id = $1 ORDER BY joined_at, user_id"
        ))
        .bind(session_id.0)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(participant_from_row).collect()
    }

    async fn participant(
        &self,
        session_id: SessionId,
        user_id: UserId,
    ) -> Result<Option<Participant>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {PARTICIPANT_COLUMNS} FROM participants WHERE session_id = $1 AND user_id = $2"
        ))
        .bind(session_id.0)
        .bind(user_id.0)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(participant_from_row).transpose()
    }

    async fn leave(
        &self,
        session_id: SessionId,
        user_id: UserId,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE participants SET is_active = FALSE, last_seen = GREATEST(last_seen, $3), left_at = $3
             WHERE session_id = $1 AND user_id = $2 AND is_active",
        )
        .bind(session_id.0)
        .bind(user_id.0)
        .bind(at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        // Leaving takes the trail along (and keeps the session's rows bounded by who is in it).
        sqlx::query("DELETE FROM trail_points WHERE session_id = $1 AND user_id = $2")
            .bind(session_id.0)
            .bind(user_id.0)
            .execute(&self.pool)
            .await?;
        Ok(changed == 1)
    }

    async fn end_session(&self, id: SessionId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let ended: Option<Uuid> = sqlx::query_scalar(
            "WITH ended AS (
                 UPDATE sessions SET is_active = FALSE, ended_at = $2 WHERE id = $1 AND is_active RETURNING id
             ), gone AS (
                 UPDATE participants SET is_active = FALSE WHERE session_id IN (SELECT id FROM ended) AND is_active
             ), trails AS (
                 DELETE FROM trail_points WHERE session_id IN (SELECT id FROM ended)
             )
             SELECT id FROM ended",
        )
        .bind(id.0)
        .bind(at)
        .fetch_optional(&self.pool)
        .await?;
        Ok(ended.is_some())
    }

    async fn record_activity(&self, batch: &ActivityBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (session_ids, session_times): (Vec<Uuid>, Vec<DateTime<Utc>>) =
            batch.sessions.iter().map(|(s, at)| (s.0, *at)).unzip();
        let mut p_sessions = Vec::with_capacity(batch.participants.len());
        let mut p_users = Vec::with_capacity(batch.participants.len());
        let mut p_times = Vec::with_capacity(batch.participants.len());
        for (session_id, user_id, at) in &batch.participants {
            p_sessions.push(session_id.0);
            p_users.push(user_id.0);
            p_times.push(*at);
        }
        // Two instances flushing at once may still deadlock (PostgreSQL picks the join
        // order); the loser's flush fails and `Activity` keeps the batch for the next one.
        sqlx::query(
            "UPDATE sessions s SET last_activity = GREATEST(s.last_activity, v.at)
             FROM (SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[]) AS t(id, at) ORDER BY id) v
             WHERE s.id = v.id",
        )
        .bind(&session_ids)
        .bind(&session_times)
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "UPDATE participants p SET last_seen = GREATEST(p.last_seen, v.at)
             FROM (SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::timestamptz[]) AS t(session_id, user_id, at)
                   ORDER BY session_id, user_id) v
             WHERE p.session_id = v.session_id AND p.user_id = v.user_id",
        )
        .bind(&p_sessions)
        .bind(&p_users)
        .bind(&p_times)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn idle_sessions(&self, idle_since: DateTime<Utc>) -> Result<Vec<SessionId>, StoreError> {
        let ids: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM sessions WHERE is_active AND last_activity <= $1")
                .bind(idle_since)
                .fetch_all(&self.pool)
                .await?;
        Ok(ids.into_iter().map(SessionId).collect())
    }

    async fn expire_sessions(
        &self,
        now: DateTime<Utc>,
        idle_since: DateTime<Utc>,
    ) -> Result<Vec<SessionId>, StoreError> {
        // Concurrent sweeps: the second UPDATE waits on the row lock, re-checks is_active
        // and skips the row, so each session is returned to exactly one caller.
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "WITH ended AS (
                 UPDATE sessions SET is_active = FALSE, ended_at = $1
                 WHERE is_active AND (expires_at <= $1 OR last_activity <= $2)
                 RETURNING id
             ), gone AS (
                 UPDATE participants SET is_active = FALSE WHERE session_id IN (SELECT id FROM ended) AND is_active
             ), trails AS (
                 DELETE FROM trail_points WHERE session_id IN (SELECT id FROM ended)
             )
             SELECT id FROM ended",
        )
        .bind(now)
        .bind(idle_since)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids.into_iter().map(SessionId).collect())
    }

    async fn add_message(&self, new: &NewChatMessage, keep: u32) -> Result<ChatMessage, StoreError> {
        let (session_id, room_id) = room_columns(new.room);
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO chat_messages
                 (session_id, room_id, user_id, display_name, avatar_color, content, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(session_id)
        .bind(room_id)
        .bind(new.user_id.0)
        .bind(&new.display_name)
        .bind(&new.avatar_color)
        .bind(&new.content)
        .bind(new.created_at)
        .fetch_one(&mut *tx)
        .await?;
        // The room keeps its newest `keep` messages: a walk of `keep` entries down the
        // room's index finds the cut.
        let prune = match new.room {
            ChatRoom::Session(id) => sqlx::query(
                "DELETE FROM chat_messages WHERE session_id = $1 AND id <= (
                     SELECT id FROM chat_messages WHERE session_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
            )
            .bind(id.0),
            ChatRoom::Local(id) => sqlx::query(
                "DELETE FROM chat_messages WHERE room_id = $1 AND id <= (
                     SELECT id FROM chat_messages WHERE room_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
            )
            .bind(id.to_string()),
        };
        prune.bind(i64::from(keep)).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(new.stored(id))
    }

    async fn messages(
        &self,
        room: ChatRoom,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        let query = |column: &str| {
            format!(
                "SELECT * FROM (SELECT {MESSAGE_COLUMNS} FROM chat_messages
                                WHERE {column} = $1 AND id < $2 ORDER BY id DESC LIMIT $3) newest
                 ORDER BY id"
            )
        };
        let before = before.unwrap_or(i64::MAX);
        let rows = match room_columns(room) {
            (Some(session), _) => {
                sqlx::query(&query("session_id"))
                    .bind(session)
                    .bind(before)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
            (None, room) => {
                sqlx::query(&query("room_id"))
                    .bind(room)
                    .bind(before)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(message_from_row).collect()
    }

    async fn delete_messages_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM chat_messages WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn delete_sessions_ended_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM sessions WHERE NOT is_active AND ended_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn departures_since(&self, since: DateTime<Utc>) -> Result<Departures, StoreError> {
        let ended: Vec<Uuid> =
            sqlx::query_scalar("SELECT id FROM sessions WHERE NOT is_active AND ended_at > $1")
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
        let left: Vec<(Uuid, Uuid)> =
            sqlx::query_as("SELECT session_id, user_id FROM participants WHERE left_at > $1")
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
        Ok(Departures {
            ended: ended.into_iter().map(SessionId).collect(),
            left: left.into_iter().map(|(s, u)| (SessionId(s), UserId(u))).collect(),
        })
    }

    async fn rotate_tokens(
        &self,
        session_id: SessionId,
        user_id: UserId,
        current: i64,
        at: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "UPDATE participants SET token_generation = token_generation + 1, token_rotated_at = $4
             WHERE session_id = $1 AND user_id = $2 AND is_active AND token_generation = $3
             RETURNING token_generation",
        )
        .bind(session_id.0)
        .bind(user_id.0)
        .bind(current)
        .bind(at)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn set_meeting_point(
        &self,
        id: SessionId,
        point: Option<&MeetingPoint>,
    ) -> Result<bool, StoreError> {
        let json = point.map(meeting_point_json).transpose()?;
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE sessions SET meeting_point = $2, meeting_point_set_at = $3 WHERE id = $1 AND is_active",
        )
        .bind(id.0)
        .bind(json)
        .bind(point.map(|p| p.set_at))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("UPDATE participants SET arrived = FALSE WHERE session_id = $1 AND arrived")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(changed == 1)
    }

    async fn meeting_points(
        &self,
        ids: &[SessionId],
    ) -> Result<Vec<(SessionId, Arc<MeetingPoint>)>, StoreError> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let rows = sqlx::query(
            "SELECT id, meeting_point FROM sessions WHERE id = ANY($1) AND is_active AND meeting_point IS NOT NULL",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        let mut points = Vec::new();
        for row in rows {
            if let Some(point) = meeting_point_from(row.try_get("meeting_point")?)? {
                points.push((SessionId(row.try_get("id")?), point));
            }
        }
        Ok(points)
    }

    async fn set_arrived(
        &self,
        session_id: SessionId,
        user_id: UserId,
        arrived: bool,
        point_set_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE participants SET arrived = $3
             WHERE session_id = $1 AND user_id = $2 AND is_active AND arrived <> $3
               AND EXISTS (SELECT 1 FROM sessions s WHERE s.id = $1 AND s.meeting_point_set_at = $4)",
        )
        .bind(session_id.0)
        .bind(user_id.0)
        .bind(arrived)
        .bind(point_set_at)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    async fn add_trail_points(&self, points: &[(SessionId, UserId, TrailPoint)]) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let (mut sessions, mut users, mut lats, mut lngs, mut ats) = (vec![], vec![], vec![], vec![], vec![]);
        for (session_id, user_id, point) in points {
            sessions.push(session_id.0);
            users.push(user_id.0);
            lats.push(point.lat);
            lngs.push(point.lng);
            ats.push(point.at);
        }
        sqlx::query(
            "INSERT INTO trail_points (session_id, user_id, lat, lng, at)
             SELECT p.* FROM UNNEST($1::uuid[], $2::uuid[], $3::float8[], $4::float8[], $5::timestamptz[])
                 AS p(session_id, user_id, lat, lng, at)
             WHERE EXISTS (SELECT 1 FROM sessions s WHERE s.id = p.session_id AND s.is_active)",
        )
        .bind(&sessions)
        .bind(&users)
        .bind(&lats)
        .bind(&lngs)
        .bind(&ats)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn trail_len(&self, session_id: SessionId, user_id: UserId) -> Result<u32, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM trail_points WHERE session_id = $1 AND user_id = $2")
                .bind(session_id.0)
                .bind(user_id.0)
                .fetch_one(&self.pool)
                .await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn thin_trail(
        &self,
        session_id: SessionId,
        user_id: UserId,
        before: DateTime<Utc>,
    ) -> Result<u32, StoreError> {
        let gone = sqlx::query(
            "DELETE FROM trail_points WHERE id IN (
                 SELECT id FROM (
                     SELECT id, ROW_NUMBER() OVER (ORDER BY at, id) AS n FROM trail_points
                     WHERE session_id = $1 AND user_id = $2 AND at < $3
                 ) numbered WHERE n % 2 = 0
             )",
        )
        .bind(session_id.0)
        .bind(user_id.0)
        .bind(before)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(u32::try_from(gone).unwrap_or(u32::MAX))
    }

    async fn trails(
        &self,
        session_id: SessionId,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<(UserId, TrailPoint)>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, lat, lng, at FROM trail_points WHERE session_id = $1 AND ($2::timestamptz IS NULL OR at >= $2)
             ORDER BY user_id, at, id",
        )
        .bind(session_id.0)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let point =
                    TrailPoint { lat: row.try_get("lat")?, lng: row.try_get("lng")?, at: row.try_get("at")? };
                Ok((UserId(row.try_get("user_id")?), point))
            })
            .collect()
    }

    async fn set_share_settings(
        &self,
        session_id: SessionId,
        user_id: UserId,
        approximate: Option<bool>,
        paused: Option<bool>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE participants SET share_approximate = COALESCE($3, share_approximate),
                                     share_paused = COALESCE($4, share_paused)
             WHERE session_id = $1 AND user_id = $2",
        )
        .bind(session_id.0)
        .bind(user_id.0)
        .bind(approximate)
        .bind(paused)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn replace_tracker(
        &self,
        session_id: SessionId,
        user_id: UserId,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "UPDATE participants SET tracker_generation = tracker_generation + 1
             WHERE session_id = $1 AND user_id = $2 AND is_active
             RETURNING tracker_generation",
        )
        .bind(session_id.0)
        .bind(user_id.0)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn signing_secret(&self, fresh: &[u8]) -> Result<Vec<u8>, StoreError> {
        // Whichever instance inserts first wins; the others read its secret.
        sqlx::query(
            "INSERT INTO installation_secrets (name, value) VALUES ('jwt', $1) ON CONFLICT (name) DO NOTHING",
        )
        .bind(fresh)
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query_scalar("SELECT value FROM installation_secrets WHERE name = 'jwt'")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn live_counts(&self) -> Result<(i64, i64), StoreError> {
        Ok(sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM sessions WHERE is_active),
                    (SELECT COUNT(*) FROM participants p JOIN sessions s ON s.id = p.session_id
                     WHERE p.is_active AND s.is_active)",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
