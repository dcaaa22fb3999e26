//! The embedded store: one SQLite file in WAL mode. Writers are serialized by SQLite
//! itself; every write that must be atomic is a single statement, so no transaction
//! ever has to upgrade from a read lock (which SQLite answers with SQLITE_BUSY).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use super::{
    ActivityBatch, Departures, JoinOutcome, NewChatMessage, NewParticipant, NewSession, Store, StoreError,
};
use super::{meeting_point_from, meeting_point_json};
use crate::domain::{
    ChatMessage, ChatRoom, MeetingPoint, MeetingPointBy, Participant, Session, SessionId, ShareSettings,
    TrailPoint, UserId, from_millis,
};

pub struct SqliteStore {
    pool: SqlitePool,
    /// The database file (None in memory), beside which generated secrets are kept.
    file: Option<PathBuf>,
    /// Held by every write transaction: SQLite lets one writer in at a time, and a
    /// transaction that finds the lock taken sleeps in SQLite's busy handler (1, 2, 5, 10
    /// ms...) holding a pooled connection. Queued here instead, writers wait without a
    /// connection and readers keep the pool. Every write takes it.
    writing: Arc<tokio::sync::Mutex<()>>,
    /// Joins waiting for the next group commit (see `join`).
    joins: Mutex<Vec<QueuedJoin>>,
}

/// A join waiting for its transaction; `done` gets the participant and the session's
/// expiry, or None if the session refused it (gone, ended or full).
struct QueuedJoin {
    new: NewParticipant,
    max_participants: u32,
    max_departed: u32,
    done: tokio::sync::oneshot::Sender<Result<Option<Joined>, StoreError>>,
}

/// A participant joined, and when its session ends.
type Joined = (Participant, DateTime<Utc>);

/// Commits `queued` in one transaction and tells each its outcome.
async fn commit_joins(pool: &SqlitePool, queued: Vec<QueuedJoin>) {
    // A join whose caller went away (its client disconnected while it waited) is not made:
    // nobody would get its token, and the seat would be taken.
    let queued: Vec<QueuedJoin> = queued.into_iter().filter(|join| !join.done.is_closed()).collect();
    if queued.is_empty() {
        return;
    }
    match insert_joins(pool, &queued).await {
        Ok(outcomes) => {
            for (join, outcome) in queued.into_iter().zip(outcomes) {
                let _ = join.done.send(Ok(outcome));
            }
        }
        Err(err) => {
            for join in queued {
                let _ = join.done.send(Err(err.clone()));
            }
        }
    }
}

async fn insert_joins(pool: &SqlitePool, queued: &[QueuedJoin]) -> Result<Vec<Option<Joined>>, StoreError> {
    let mut tx = pool.begin().await?;
    let mut inserted = Vec::with_capacity(queued.len());
    for QueuedJoin { new, max_participants, .. } in queued {
        // One statement: SQLite takes the write lock before evaluating the WHERE clause,
        // so the count cannot change between the check and the insert (and it counts the
        // joins before this one in the transaction).
        let rows = sqlx::query(
            "INSERT INTO participants (session_id, user_id, display_name, avatar_color, joined_at, last_seen, is_active)
             SELECT ?1, ?2, ?3, ?4, ?5, ?5, 1
             WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?1 AND is_active = 1 AND expires_at > ?5)
               AND (SELECT COUNT(*) FROM participants WHERE session_id = ?1 AND is_active = 1) < ?6",
        )
        .bind(new.session_id.to_string())
        .bind(new.user_id.to_string())
        .bind(&new.display_name)
        .bind(&new.avatar_color)
        .bind(ms(new.joined_at))
        .bind(i64::from(*max_participants))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        inserted.push(rows == 1);
    }
    // Once per session joined: those who left stay listed, up to `max_departed` of them,
    // newest first (a join/leave loop cannot grow the session without bound); activity.
    let mut expires: std::collections::HashMap<SessionId, i64> = std::collections::HashMap::new();
    for (join, _) in queued.iter().zip(&inserted).filter(|(_, inserted)| **inserted).rev() {
        let session_id = join.new.session_id;
        if expires.contains_key(&session_id) {
            continue;
        }
        sqlx::query(
            "DELETE FROM participants WHERE session_id = ?1 AND is_active = 0 AND user_id NOT IN (
                 SELECT user_id FROM participants WHERE session_id = ?1 AND is_active = 0
                 ORDER BY left_at DESC NULLS LAST, joined_at DESC LIMIT ?2)",
        )
        .bind(session_id.to_string())
        .bind(i64::from(join.max_departed))
        .execute(&mut *tx)
        .await?;
        let expires_at: i64 = sqlx::query_scalar(
            "UPDATE sessions SET last_activity = MAX(last_activity, ?2) WHERE id = ?1 RETURNING expires_at",
        )
        .bind(session_id.to_string())
        .bind(ms(join.new.joined_at))
        .fetch_one(&mut *tx)
        .await?;
        expires.insert(session_id, expires_at);
    }
    tx.commit().await?;
    Ok(queued
        .iter()
        .zip(inserted)
        .map(|(QueuedJoin { new, .. }, inserted)| {
            let expires_at = from_millis(*expires.get(&new.session_id)?);
            inserted.then(|| (new.joined(), expires_at))
        })
        .collect())
}

/// SQLite's page cache per pooled connection of a database file, in KiB.
const PAGE_CACHE_KIB: u32 = 256;

impl SqliteStore {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("bad sqlite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // sqlx renames an in-memory database: tell it from the URL.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        // A file's pages are in the OS page cache anyway; each pooled connection caching
        // them again (SQLite's default, 2 MiB each) was a kilobyte of RSS per idle socket
        // at 19,000 participants. (An in-memory database lives in its cache: left alone.)
        let options =
            if in_memory { options } else { options.pragma("cache_size", format!("-{PAGE_CACHE_KIB}")) };
        let file = (!in_memory).then(|| options.get_filename().to_owned());
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(Self { pool, file, writing: Arc::default(), joins: Mutex::default() })
    }
}

/// The secret kept in `path` (hex), or `fresh` written there first: created 0600 under a
/// temporary name, then hard-linked into place, which fails if another process got there
/// first, so two processes starting at once still end up with one secret.
fn secret_file(path: &Path, fresh: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if !path.exists() {
        let temporary = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
        let written = file.write_all(hex::encode(fresh).as_bytes()).and_then(|()| file.sync_all());
        let linked = written.and_then(|()| std::fs::hard_link(&temporary, path));
        let _ = std::fs::remove_file(&temporary);
        match linked {
            Err(err) if err.kind() != std::io::ErrorKind::AlreadyExists => return Err(err),
            _ => {}
        }
    }
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the JWT secret file is readable by others: chmod 600 it");
    }
    let text = std::fs::read_to_string(path)?;
    hex::decode(text.trim()).ok().filter(|secret| secret.len() >= crate::config::MIN_SECRET_BYTES).ok_or_else(
        || std::io::Error::other(format!("{} does not hold a hex secret of 32+ bytes", path.display())),
    )
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn parse_uuid(row: &SqliteRow, column: &str) -> Result<uuid::Uuid, StoreError> {
    let text: String = row.try_get(column)?;
    uuid::Uuid::parse_str(&text).map_err(|e| StoreError::Other(format!("bad uuid in {column}: {e}")))
}

fn participant_from_row(row: &SqliteRow) -> Result<Participant, StoreError> {
    Ok(Participant {
        session_id: SessionId(parse_uuid(row, "session_id")?),
        user_id: UserId(parse_uuid(row, "user_id")?),
        display_name: row.try_get("display_name")?,
        avatar_color: row.try_get("avatar_color")?,
        joined_at: from_millis(row.try_get("joined_at")?),
        last_seen: from_millis(row.try_get("last_seen")?),
        is_active: row.try_get("is_active")?,
        token_generation: row.try_get("token_generation")?,
        token_rotated_at: row.try_get::<Option<i64>, _>("token_rotated_at")?.map(from_millis),
        share: ShareSettings {
            approximate: row.try_get("share_approximate")?,
            paused: row.try_get("share_paused")?,
        },
        tracker_generation: row.try_get("tracker_generation")?,
        arrived: row.try_get("arrived")?,
    })
}

fn message_from_row(row: &SqliteRow) -> Result<ChatMessage, StoreError> {
    let session: Option<String> = row.try_get("session_id")?;
    let room = match session {
        Some(_) => ChatRoom::Session(SessionId(parse_uuid(row, "session_id")?)),
        None => {
            let room: String = row.try_get("room_id")?;
            ChatRoom::Local(room.parse().map_err(|e| StoreError::Other(format!("bad room_id: {e}")))?)
        }
    };
    Ok(ChatMessage {
        id: row.try_get("id")?,
        room,
        user_id: UserId(parse_uuid(row, "user_id")?),
        display_name: row.try_get("display_name")?,
        avatar_color: row.try_get("avatar_color")?,
        content: row.try_get("content")?,
        created_at: from_millis(row.try_get("created_at")?),
    })
}

/// (session_id, room_id) column values for a room.
fn room_columns(room: ChatRoom) -> (Option<String>, Option<String>) {
    match room {
        ChatRoom::Session(id) => (Some(id.to_string()), None),
        ChatRoom::Local(id) => (None, Some(id.to_string())),
    }
}

const MESSAGE_COLUMNS: &str =
    "id, session_id, room_id, user_id, display_name, avatar_color, content, created_at";

const PARTICIPANT_COLUMNS: &str = "session_id, user_id, display_name, avatar_color, joined_at, last_seen, is_active, token_generation, token_rotated_at, share_approximate, share_paused, tracker_generation, arrived";

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Other(format!("migration failed: {e}")))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_session(&self, new: &NewSession) -> Result<(), StoreError> {
        let _writing = self.writing.lock().await;
        sqlx::query(
            "INSERT INTO sessions (id, name, creator_id, created_at, expires_at, last_activity, is_active, meeting_point_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?4, 1, ?6)",
        )
        .bind(new.id.to_string())
        .bind(&new.name)
        .bind(new.creator_id.to_string())
        .bind(ms(new.created_at))
        .bind(ms(new.expires_at))
        .bind(new.meeting_point_by.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn session(&self, id: SessionId) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(
            "SELECT s.name, s.created_at, s.expires_at, s.last_activity, s.is_active, s.meeting_point_by, s.meeting_point,
                    (SELECT COUNT(*) FROM participants p WHERE p.session_id = s.id AND p.is_active = 1) AS participant_count
             FROM sessions s WHERE s.id = ?1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(Session {
                id,
                name: row.try_get("name")?,
                created_at: from_millis(row.try_get("created_at")?),
                expires_at: from_millis(row.try_get("expires_at")?),
                last_activity: from_millis(row.try_get("last_activity")?),
                ended: !row.try_get::<bool, _>("is_active")?,
                participant_count: row.try_get("participant_count")?,
                meeting_point_by: MeetingPointBy::from_stored(row.try_get("meeting_point_by")?),
                meeting_point: meeting_point_from(row.try_get("meeting_point")?)?,
            })
        })
        .transpose()
    }

    async fn session_creator(&self, id: SessionId) -> Result<Option<uuid::Uuid>, StoreError> {
        let row = sqlx::query("SELECT creator_id FROM sessions WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| parse_uuid(&row, "creator_id")).transpose()
    }

    async fn join(
        &self,
        new: &NewParticipant,
        max_participants: u32,
        max_departed: u32,
    ) -> Result<JoinOutcome, StoreError> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        let queued = QueuedJoin { new: new.clone(), max_participants, max_departed, done };
        self.joins.lock().unwrap_or_else(|e| e.into_inner()).push(queued);
        // Group commit: whoever holds the write lock next commits every join queued by then
        // in one transaction, in a task of its own (a client going away mid-way must not
        // take the others' joins with it). Burst: 2,000 joins in 1 s no longer queue
        // behind 2,000 transactions.
        let writing = self.writing.clone().lock_owned().await;
        let queued = std::mem::take(&mut *self.joins.lock().unwrap_or_else(|e| e.into_inner()));
        if !queued.is_empty() {
            let pool = self.pool.clone();
            let _ = tokio::spawn(async move {
                commit_joins(&pool, queued).await;
                drop(writing);
            })
            .await;
        } else {
            drop(writing); // another caller committed this join
        }
        match outcome.await.map_err(|_| StoreError::Other("the join's transaction was lost".into()))?? {
            Some((participant, expires_at)) => Ok(JoinOutcome::Joined { participant, expires_at }),
            None => Ok(match self.session(new.session_id).await? {
                None => JoinOutcome::NoSuchSession,
                Some(s) if !s.is_live(new.joined_at) => JoinOutcome::SessionEnded,
                Some(_) => JoinOutcome::SessionFull,
            }),
        }
    }

    async fn participants(&self, session_id: SessionId) -> Result<Vec<Participant>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {PARTICIPANT_COLUMNS} FROM participants WHERE session_id = ?1 ORDER BY joined_at, user_id"
        ))
        .bind(session_id.to_string())
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
            "SELECT {PARTICIPANT_COLUMNS} FROM participants WHERE session_id = ?1 AND user_id = ?2"
        ))
        .bind(session_id.to_string())
        .bind(user_id.to_string())
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
        let _writing = self.writing.lock().await;
        let changed = sqlx::query(
            "UPDATE participants SET is_active = 0, last_seen = MAX(last_seen, ?3), left_at = ?3
             WHERE session_id = ?1 AND user_id = ?2 AND is_active = 1",
        )
        .bind(session_id.to_string())
        .bind(user_id.to_string())
        .bind(ms(at))
        .execute(&self.pool)
        .await?
        .rows_affected();
        // Leaving takes the trail along (and keeps the session's rows bounded by who is in it).
        sqlx::query("DELETE FROM trail_points WHERE session_id = ?1 AND user_id = ?2")
            .bind(session_id.to_string())
            .bind(user_id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(changed == 1)
    }

    async fn end_session(&self, id: SessionId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let _writing = self.writing.lock().await;
        let mut tx = self.pool.begin().await?;
        let ended =
            sqlx::query("UPDATE sessions SET is_active = 0, ended_at = ?2 WHERE id = ?1 AND is_active = 1")
                .bind(id.to_string())
                .bind(ms(at))
                .execute(&mut *tx)
                .await?
                .rows_affected();
        sqlx::query("UPDATE participants SET is_active = 0 WHERE session_id = ?1 AND is_active = 1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        // Trails go with the session's end (nothing reads them after it).
        sqlx::query("DELETE FROM trail_points WHERE session_id = ?1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ended == 1)
    }

    async fn record_activity(&self, batch: &ActivityBatch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let _writing = self.writing.lock().await;
        let mut tx = self.pool.begin().await?;
        for (session_id, at) in &batch.sessions {
            sqlx::query("UPDATE sessions SET last_activity = MAX(last_activity, ?2) WHERE id = ?1")
                .bind(session_id.to_string())
                .bind(ms(*at))
                .execute(&mut *tx)
                .await?;
        }
        for (session_id, user_id, at) in &batch.participants {
            sqlx::query("UPDATE participants SET last_seen = MAX(last_seen, ?3) WHERE session_id = ?1 AND user_id = ?2")
                .bind(session_id.to_string())
                .bind(user_id.to_string())
                .bind(ms(*at))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn idle_sessions(&self, idle_since: DateTime<Utc>) -> Result<Vec<SessionId>, StoreError> {
        let rows = sqlx::query("SELECT id FROM sessions WHERE is_active = 1 AND last_activity <= ?1")
            .bind(ms(idle_since))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| parse_uuid(row, "id").map(SessionId)).collect()
    }

    async fn expire_sessions(
        &self,
        now: DateTime<Utc>,
        idle_since: DateTime<Utc>,
    ) -> Result<Vec<SessionId>, StoreError> {
        // One transaction whose first statement writes, so it takes the write lock at once:
        // the ended sessions and their participants change together or not at all.
        let _writing = self.writing.lock().await;
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "UPDATE sessions SET is_active = 0, ended_at = ?1
             WHERE is_active = 1 AND (expires_at <= ?1 OR last_activity <= ?2)
             RETURNING id",
        )
        .bind(ms(now))
        .bind(ms(idle_since))
        .fetch_all(&mut *tx)
        .await?;
        let ids =
            rows.iter().map(|row| parse_uuid(row, "id").map(SessionId)).collect::<Result<Vec<_>, _>>()?;
        if !ids.is_empty() {
            sqlx::query(
                "UPDATE participants SET is_active = 0
                 WHERE is_active = 1
                   AND session_id IN (SELECT id FROM sessions WHERE is_active = 0 AND ended_at = ?1)",
            )
            .bind(ms(now))
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM trail_points
                 WHERE session_id IN (SELECT id FROM sessions WHERE is_active = 0 AND ended_at = ?1)",
            )
            .bind(ms(now))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(ids)
    }

    async fn add_message(&self, new: &NewChatMessage, keep: u32) -> Result<ChatMessage, StoreError> {
        let (session_id, room_id) = room_columns(new.room);
        let _writing = self.writing.lock().await;
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO chat_messages
                 (session_id, room_id, user_id, display_name, avatar_color, content, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
        )
        .bind(session_id)
        .bind(room_id)
        .bind(new.user_id.to_string())
        .bind(&new.display_name)
        .bind(&new.avatar_color)
        .bind(&new.content)
        .bind(ms(new.created_at))
        .fetch_one(&mut *tx)
        .await?;
        // The room keeps its newest `keep` messages: a walk of `keep` entries down the
        // room's index finds the cut.
        let (column, value) = match new.room {
            ChatRoom::Session(id) => ("session_id", id.to_string()),
            ChatRoom::Local(id) => ("room_id", id.to_string()),
        };
        sqlx::query(&format!(
            "DELETE FROM chat_messages WHERE {column} = ?1 AND id <= (
                 SELECT id FROM chat_messages WHERE {column} = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)"
        ))
        .bind(value)
        .bind(i64::from(keep))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(new.stored(id))
    }

    async fn messages(
        &self,
        room: ChatRoom,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        let (column, value) = match room {
            ChatRoom::Session(id) => ("session_id", id.to_string()),
            ChatRoom::Local(id) => ("room_id", id.to_string()),
        };
        let rows = sqlx::query(&format!(
            "SELECT * FROM (SELECT {MESSAGE_COLUMNS} FROM chat_messages
                            WHERE {column} = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3)
             ORDER BY id"
        ))
        .bind(value)
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    async fn delete_messages_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let _writing = self.writing.lock().await;
        let result = sqlx::query("DELETE FROM chat_messages WHERE created_at < ?1")
            .bind(ms(before))
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn delete_sessions_ended_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let _writing = self.writing.lock().await;
        let result = sqlx::query("DELETE FROM sessions WHERE is_active = 0 AND ended_at < ?1")
            .bind(ms(before))
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    async fn departures_since(&self, since: DateTime<Utc>) -> Result<Departures, StoreError> {
        let ended = sqlx::query("SELECT id FROM sessions WHERE is_active = 0 AND ended_at > ?1")
            .bind(ms(since))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| parse_uuid(row, "id").map(SessionId))
            .collect::<Result<_, _>>()?;
        let left = sqlx::query("SELECT session_id, user_id FROM participants WHERE left_at > ?1")
            .bind(ms(since))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| Ok((SessionId(parse_uuid(row, "session_id")?), UserId(parse_uuid(row, "user_id")?))))
            .collect::<Result<_, StoreError>>()?;
        Ok(Departures { ended, left })
    }

    async fn rotate_tokens(
        &self,
        session_id: SessionId,
        user_id: UserId,
        current: i64,
        at: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        let _writing = self.writing.lock().await;
        Ok(sqlx::query_scalar(
            "UPDATE participants SET token_generation = token_generation + 1, token_rotated_at = ?4
             WHERE session_id = ?1 AND user_id = ?2 AND is_active = 1 AND token_generation = ?3
             RETURNING token_generation",
        )
        .bind(session_id.to_string())
        .bind(user_id.to_string())
        .bind(current)
        .bind(ms(at))
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn set_meeting_point(
        &self,
        id: SessionId,
        point: Option<&MeetingPoint>,
    ) -> Result<bool, StoreError> {
        let json = point.map(meeting_point_json).transpose()?;
        let _writing = self.writing.lock().await;
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE sessions SET meeting_point = ?2, meeting_point_set_at = ?3 WHERE id = ?1 AND is_active = 1",
        )
        .bind(id.to_string())
        .bind(json)
        .bind(point.map(|p| ms(p.set_at)))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("UPDATE participants SET arrived = 0 WHERE session_id = ?1 AND arrived = 1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(changed == 1)
    }

    async fn meeting_points(
        &self,
        ids: &[SessionId],
    ) -> Result<Vec<(SessionId, Arc<MeetingPoint>)>, StoreError> {
        let mut points = Vec::new();
        // Well below SQLite's limit of bound variables.
        for chunk in ids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT id, meeting_point FROM sessions WHERE id IN ({marks}) AND is_active = 1 AND meeting_point IS NOT NULL"
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.to_string());
            }
            for row in query.fetch_all(&self.pool).await? {
                let id = SessionId(parse_uuid(&row, "id")?);
                if let Some(point) = meeting_point_from(row.try_get("meeting_point")?)? {
                    points.push((id, point));
                }
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
        let _writing = self.writing.lock().await;
        let changed = sqlx::query(
            "UPDATE participants SET arrived = ?3
             WHERE session_id = ?1 AND user_id = ?2 AND is_active = 1 AND arrived <> ?3
               AND EXISTS (SELECT 1 FROM sessions s WHERE s.id = ?1 AND s.meeting_point_set_at = ?4)",
        )
        .bind(session_id.to_string())
        .bind(user_id.to_string())
        .bind(arrived)
        .bind(ms(point_set_at))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    async fn add_trail_points(&self, points: &[(SessionId, UserId, TrailPoint)]) -> Result<(), StoreError> {
        if points.is_empty() {
            return Ok(());
        }
        let _writing = self.writing.lock().await;
        let mut tx = self.pool.begin().await?;
        for (session_id, user_id, point) in points {
            sqlx::query(
                "INSERT INTO trail_points (session_id, user_id, lat, lng, at)
                 SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM sessions WHERE id = ?1 AND is_active = 1)",
            )
            .bind(session_id.to_string())
            .bind(user_id.to_string())
            .bind(point.lat)
            .bind(point.lng)
            .bind(ms(point.at))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn trail_len(&self, session_id: SessionId, user_id: UserId) -> Result<u32, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM trail_points WHERE session_id = ?1 AND user_id = ?2")
                .bind(session_id.to_string())
                .bind(user_id.to_string())
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
        let _writing = self.writing.lock().await;
        let gone = sqlx::query(
            "DELETE FROM trail_points WHERE id IN (
                 SELECT id FROM (
                     SELECT id, ROW_NUMBER() OVER (ORDER BY at, id) AS n FROM trail_points
                     WHERE session_id = ?1 AND user_id = ?2 AND at < ?3
                 ) WHERE n % 2 = 0
             )",
        )
        .bind(session_id.to_string())
        .bind(user_id.to_string())
        .bind(ms(before))
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
            "SELECT user_id, lat, lng, at FROM trail_points WHERE session_id = ?1 AND at >= ?2
             ORDER BY user_id, at, id",
        )
        .bind(session_id.to_string())
        .bind(since.map_or(i64::MIN, ms))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let point = TrailPoint {
                    lat: row.try_get("lat")?,
                    lng: row.try_get("lng")?,
                    at: from_millis(row.try_get("at")?),
                };
                Ok((UserId(parse_uuid(row, "user_id")?), point))
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
        let _writing = self.writing.lock().await;
        sqlx::query(
            "UPDATE participants SET share_approximate = COALESCE(?3, share_approximate),
                                     share_paused = COALESCE(?4, share_paused)
             WHERE session_id = ?1 AND user_id = ?2",
        )
        .bind(session_id.to_string())
        .bind(user_id.to_string())
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
        let _writing = self.writing.lock().await;
        Ok(sqlx::query_scalar(
            "UPDATE participants SET tracker_generation = tracker_generation + 1
             WHERE session_id = ?1 AND user_id = ?2 AND is_active = 1
             RETURNING tracker_generation",
        )
        .bind(session_id.to_string())
        .bind(user_id.to_string())
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn signing_secret(&self, fresh: &[u8]) -> Result<Vec<u8>, StoreError> {
        let Some(db) = &self.file else {
            tracing::warn!("in-memory database: tokens are signed with a secret that ends with this process");
            return Ok(fresh.to_vec());
        };
        let mut name = db.file_name().unwrap_or_default().to_owned();
        name.push(".jwt-secret");
        let path = db.with_file_name(name);
        let fresh = fresh.to_vec();
        tokio::task::spawn_blocking(move || secret_file(&path, &fresh))
            .await
            .map_err(|e| StoreError::Other(e.to_string()))?
            .map_err(|e| StoreError::Other(format!("keeping the JWT secret: {e}")))
    }

    async fn live_counts(&self) -> Result<(i64, i64), StoreError> {
        Ok(sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM sessions WHERE is_active = 1),
                    (SELECT COUNT(*) FROM participants p JOIN sessions s ON s.id = p.session_id
                     WHERE p.is_active = 1 AND s.is_active = 1)",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
