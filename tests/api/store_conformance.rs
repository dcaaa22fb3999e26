//! The store conformance suite: what every `Store` must do, checked through the trait
//! against SQLite and PostgreSQL alike. A new backend is added by passing it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use convoy::domain::{ChatRoom, SessionId, ShareSettings, UserId, now};
use convoy::store::{self, JoinOutcome, NewChatMessage, NewParticipant, NewSession, Store};

use super::helpers::*;

/// A store on a fresh database, and what keeps that database alive.
type Fresh = (Arc<dyn Store>, Option<tempfile::TempDir>);

async fn sqlite() -> Fresh {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("conformance.db").display());
    let store = store::connect(&url, 4, Duration::from_secs(5)).await.unwrap();
    store.migrate().await.unwrap();
    (store, Some(dir))
}

async fn postgres() -> Fresh {
    let url = fresh_postgres_schema().await;
    let store = store::connect(&url, 4, Duration::from_secs(5)).await.unwrap();
    store.migrate().await.unwrap();
    (store, None)
}

/// Runs each `async fn check(store: &dyn Store)` on every backend: `sqlite::check` always,
/// `postgres::check` when TEST_POSTGRES_URL was set at build time.
macro_rules! on_every_store {
    ($($check:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $check() {
                    let (store, _dir) = super::sqlite().await;
                    super::$check(store.as_ref()).await;
                }
            )+
        }
        mod postgres {
            $(
                #[cfg_attr(not(convoy_scaled_tests), ignore = "needs PostgreSQL and Redis: set TEST_POSTGRES_URL and TEST_REDIS_URL")]
                #[tokio::test]
                async fn $check() {
                    let (store, _dir) = super::postgres().await;
                    super::$check(store.as_ref()).await;
                }
            )+
        }
    };
}

async fn new_session(store: &dyn Store, lives: chrono::Duration) -> SessionId {
    let id = SessionId::new_random();
    let at = now();
    let new = NewSession {
        id,
        name: Some("Trip".into()),
        creator_id: uuid::Uuid::new_v4(),
        created_at: at,
        expires_at: at + lives,
        meeting_point_by: convoy::domain::MeetingPointBy::Creator,
    };
    store.create_session(&new).await.unwrap();
    id
}

/// Joins `name`, a millisecond after the previous join of this test binary: "oldest first"
/// needs joins at distinct times (stores keep milliseconds).
async fn join(store: &dyn Store, session_id: SessionId, name: &str, max: u32, departed: u32) -> JoinOutcome {
    static TICK: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let tick = TICK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let new = NewParticipant {
        session_id,
        user_id: UserId::new_random(),
        display_name: name.into(),
        avatar_color: "#FF5733".into(),
        joined_at: now() + chrono::Duration::milliseconds(tick),
    };
    store.join(&new, max, departed).await.unwrap()
}

fn joined(outcome: JoinOutcome) -> UserId {
    match outcome {
        JoinOutcome::Joined { participant, .. } => participant.user_id,
        other => panic!("expected a join, got {other:?}"),
    }
}

async fn sessions_and_joins_keep_their_rules(store: &dyn Store) {
    let id = new_session(store, chrono::Duration::hours(1)).await;
    let session = store.session(id).await.unwrap().expect("stored");
    assert_eq!((session.name.as_deref(), session.participant_count, session.ended), (Some("Trip"), 0, false));
    assert!(store.session(SessionId::new_random()).await.unwrap().is_none());

    let ann = joined(join(store, id, "Ann", 2, 10).await);
    joined(join(store, id, "Bob", 2, 10).await);
    assert_eq!(join(store, id, "Cat", 2, 10).await, JoinOutcome::SessionFull);
    assert_eq!(join(store, SessionId::new_random(), "Dan", 2, 10).await, JoinOutcome::NoSuchSession);
    assert_eq!(store.session(id).await.unwrap().unwrap().participant_count, 2);

    // Leaving is once; a place frees up.
    assert!(store.leave(id, ann, now()).await.unwrap());
    assert!(!store.leave(id, ann, now()).await.unwrap());
    joined(join(store, id, "Cat", 2, 10).await);
    let listed = store.participants(id).await.unwrap();
    assert_eq!(listed.iter().map(|p| p.display_name.as_str()).collect::<Vec<_>>(), ["Ann", "Bob", "Cat"]);
    assert!(!listed[0].is_active);

    // Ending is once, and ends everyone.
    assert!(store.end_session(id, now()).await.unwrap());
    assert!(!store.end_session(id, now()).await.unwrap());
    assert!(store.participants(id).await.unwrap().iter().all(|p| !p.is_active));
    assert_eq!(join(store, id, "Eve", 2, 10).await, JoinOutcome::SessionEnded);
}

async fn departed_participants_are_pruned_to_the_latest(store: &dyn Store) {
    let id = new_session(store, chrono::Duration::hours(1)).await;
    let mut leavers = Vec::new();
    for i in 0..5 {
        let user = joined(join(store, id, &format!("P{i}"), 50, 2).await);
        store.leave(id, user, now() + chrono::Duration::milliseconds(i)).await.unwrap();
        leavers.push(user);
    }
    joined(join(store, id, "Last", 50, 2).await);
    let departed: Vec<UserId> = store
        .participants(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| !p.is_active)
        .map(|p| p.user_id)
        .collect();
    assert_eq!(departed.len(), 2);
    assert!(departed.contains(&leavers[3]) && departed.contains(&leavers[4]), "the latest two stay");
}

async fn departures_since_report_ends_and_leaves(store: &dyn Store) {
    let before: DateTime<Utc> = now() - chrono::Duration::seconds(1);
    let left_one = new_session(store, chrono::Duration::hours(1)).await;
    let user = joined(join(store, left_one, "Ann", 50, 10).await);
    store.leave(left_one, user, now()).await.unwrap();
    let ended = new_session(store, chrono::Duration::hours(1)).await;
    store.end_session(ended, now()).await.unwrap();

    let departures = store.departures_since(before).await.unwrap();
    assert!(departures.left.contains(&(left_one, user)));
    assert!(departures.ended.contains(&ended));
    let later = store.departures_since(now() + chrono::Duration::seconds(5)).await.unwrap();
    assert!(later.left.is_empty() && later.ended.is_empty());
}

async fn token_generations_move_once_per_refresh(store: &dyn Store) {
    let id = new_session(store, chrono::Duration::hours(1)).await;
    let user = joined(join(store, id, "Ann", 50, 10).await);
    assert_eq!(store.participant(id, user).await.unwrap().unwrap().token_generation, 0);
    assert_eq!(store.rotate_tokens(id, user, 0, now()).await.unwrap(), Some(1));
    assert_eq!(store.rotate_tokens(id, user, 0, now()).await.unwrap(), None, "an old generation loses");
    let participant = store.participant(id, user).await.unwrap().unwrap();
    assert_eq!(participant.token_generation, 1);
    assert!(participant.token_rotated_at.is_some());
    store.leave(id, user, now()).await.unwrap();
    assert_eq!(store.rotate_tokens(id, user, 1, now()).await.unwrap(), None, "not once they left");
}

async fn share_settings_are_kept_per_participant(store: &dyn Store) {
    let id = new_session(store, chrono::Duration::hours(1)).await;
    let (ann, bob) =
        (joined(join(store, id, "Ann", 50, 10).await), joined(join(store, id, "Bob", 50, 10).await));
    assert_eq!(store.participant(id, ann).await.unwrap().unwrap().share, ShareSettings::default());
    let approximate = ShareSettings { approximate: true, paused: false };
    store.set_share_settings(id, ann, Some(true), None).await.unwrap();
    let paused = ShareSettings { approximate: false, paused: true };
    store.set_share_settings(id, bob, Some(true), Some(true)).await.unwrap();
    store.set_share_settings(id, bob, Some(false), None).await.unwrap();
    // A field left out keeps its value.
    store.set_share_settings(id, ann, None, Some(false)).await.unwrap();
    let shares: Vec<_> = store.participants(id).await.unwrap().iter().map(|p| (p.user_id, p.share)).collect();
    assert_eq!(shares, [(ann, approximate), (bob, paused)]);
}

async fn tracker_generations_move_per_replacement(store: &dyn Store) {
    let id = new_session(store, chrono::Duration::hours(1)).await;
    let user = joined(join(store, id, "Ann", 50, 10).await);
    assert_eq!(store.participant(id, user).await.unwrap().unwrap().tracker_generation, 0);
    assert_eq!(store.replace_tracker(id, user).await.unwrap(), Some(1));
    assert_eq!(store.replace_tracker(id, user).await.unwrap(), Some(2));
    assert_eq!(store.participant(id, user).await.unwrap().unwrap().tracker_generation, 2);
    store.leave(id, user, now()).await.unwrap();
    assert_eq!(store.replace_tracker(id, user).await.unwrap(), None, "not once they left");
}

async fn arrivals_belong_to_the_meeting_point_they_were_decided_for(store: &dyn Store) {
    use convoy::domain::{MeetingPoint, MeetingPointInput};
    let id = new_session(store, chrono::Duration::hours(1)).await;
    let other = new_session(store, chrono::Duration::hours(1)).await;
    let user = joined(join(store, id, "Ann", 50, 10).await);
    let input = MeetingPointInput { lat: 48.0, lng: 2.0, name: Some("Gate".into()), radius_m: None };
    let first = MeetingPoint::parse(&input, None, now()).unwrap();
    assert!(store.set_meeting_point(id, Some(&first)).await.unwrap());
    let points = store.meeting_points(&[id, other]).await.unwrap();
    assert_eq!(points.len(), 1);
    assert_eq!((points[0].0, &*points[0].1), (id, &first), "read back equal, to the millisecond");

    assert!(store.set_arrived(id, user, true, first.set_at).await.unwrap());
    assert!(!store.set_arrived(id, user, true, first.set_at).await.unwrap(), "once");
    assert!(store.participant(id, user).await.unwrap().unwrap().arrived);
    // A new point resets everyone, and an arrival decided for the old one is not stored.
    let second = MeetingPoint::parse(&input, None, now() + chrono::Duration::seconds(1)).unwrap();
    assert!(store.set_meeting_point(id, Some(&second)).await.unwrap());
    assert!(!store.participant(id, user).await.unwrap().unwrap().arrived);
    assert!(!store.set_arrived(id, user, true, first.set_at).await.unwrap(), "the old point's");
    assert!(store.set_arrived(id, user, true, second.set_at).await.unwrap());
    assert!(store.set_meeting_point(id, None).await.unwrap());
    assert!(store.meeting_points(&[id]).await.unwrap().is_empty());
    // Many sessions at once.
    let many: Vec<SessionId> = std::iter::repeat_with(SessionId::new_random).take(1200).chain([id]).collect();
    assert!(store.meeting_points(&many).await.unwrap().is_empty());
}

async fn a_full_trail_loses_every_other_old_point(store: &dyn Store) {
    use convoy::domain::TrailPoint;
    let id = new_session(store, chrono::Duration::hours(3)).await;
    let user = joined(join(store, id, "Ann", 50, 10).await);
    let start = now() - chrono::Duration::hours(2);
    // Ten points two hours ago, four in the last hour.
    let points: Vec<_> = (0..10)
        .map(|i| start + chrono::Duration::minutes(i))
        .chain((0..4).map(|i| now() - chrono::Duration::minutes(30 - i)))
        .map(|at| (id, user, TrailPoint { lat: 48.0, lng: 2.0, at }))
        .collect();
    store.add_trail_points(&points).await.unwrap();
    assert_eq!(store.trail_len(id, user).await.unwrap(), 14);
    let gone = store.thin_trail(id, user, now() - chrono::Duration::hours(1)).await.unwrap();
    assert_eq!(gone, 5, "every other of the ten old ones");
    let kept: Vec<_> = store.trails(id, None).await.unwrap().into_iter().map(|(_, p)| p.at).collect();
    assert_eq!(kept.len(), 9);
    assert_eq!(kept[0], points[0].2.at, "the first point stays");
    assert_eq!(
        &kept[5..],
        &points[10..].iter().map(|p| p.2.at).collect::<Vec<_>>()[..],
        "the last hour whole"
    );
    // An ended session takes no more points, and keeps none.
    store.end_session(id, now()).await.unwrap();
    store.add_trail_points(&points[..1]).await.unwrap();
    assert_eq!(store.trail_len(id, user).await.unwrap(), 0);
}

async fn rooms_keep_their_newest_messages(store: &dyn Store) {
    let id = new_session(store, chrono::Duration::hours(1)).await;
    let user = joined(join(store, id, "Ann", 50, 10).await);
    let local = ChatRoom::Local("u2edk8".parse().unwrap());
    for room in [ChatRoom::Session(id), local] {
        let mut ids = Vec::new();
        for i in 0..8 {
            let new = NewChatMessage {
                room,
                user_id: user,
                display_name: "Ann".into(),
                avatar_color: "#FF5733".into(),
                content: format!("m{i}"),
                created_at: now(),
            };
            ids.push(store.add_message(&new, 5).await.unwrap().id);
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow");
        let kept = store.messages(room, None, 100).await.unwrap();
        let contents: Vec<&str> = kept.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["m3", "m4", "m5", "m6", "m7"], "{room:?}");
        let page = store.messages(room, Some(ids[6]), 2).await.unwrap();
        assert_eq!(page.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), ["m4", "m5"]);
    }
}

async fn the_signing_secret_is_kept_once(store: &dyn Store) {
    let first = store.signing_secret(&[7u8; 32]).await.unwrap();
    assert_eq!(first, vec![7u8; 32]);
    assert_eq!(store.signing_secret(&[9u8; 32]).await.unwrap(), first, "the first one stays");
}

on_every_store!(
    sessions_and_joins_keep_their_rules,
    departed_participants_are_pruned_to_the_latest,
    departures_since_report_ends_and_leaves,
    token_generations_move_once_per_refresh,
    share_settings_are_kept_per_participant,
    tracker_generations_move_per_replacement,
    arrivals_belong_to_the_meeting_point_they_were_decided_for,
    a_full_trail_loses_every_other_old_point,
    rooms_keep_their_newest_messages,
    the_signing_secret_is_kept_once,
);
