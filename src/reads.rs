//! Reads of a session's rows that many sockets ask for at once (a group arriving together,
//! a burst of reconnects after a restart) share one store query: the socket's admission
//! and its snapshot read the session, its participants and its chat history through here.
//!
//! The first caller's read waits COALESCE_WINDOW for others asking the same, then runs
//! once for all of them. It starts after every one of them asked, so each sees what was
//! written before it asked (its own join included): sharing never serves a stale row.
//! On SQLite every query is a round trip to a database thread and back; in a burst those
//! thread switches, not the queries, were the cost (BENCHMARKS.md, target 5).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared, WeakShared};

use crate::domain::{ChatMessage, ChatRoom, Participant, Session, SessionId};
use crate::store::{Store, StoreError};

/// How long a read waits for others asking the same before it runs.
const COALESCE_WINDOW: Duration = Duration::from_millis(2);

type Read<V> = Shared<BoxFuture<'static, Result<Arc<V>, StoreError>>>;

/// Reads not yet started, by key: weak, so a read whose callers all went away (their
/// requests cancelled) goes with them instead of staying here.
type Pending<K, V> = Arc<Mutex<HashMap<K, WeakShared<BoxFuture<'static, Result<Arc<V>, StoreError>>>>>>;

/// Past this many keys waiting, the ones whose callers all went away are dropped.
const PRUNE_ABOVE: usize = 64;

/// One kind of read, by key.
struct Coalescer<K, V> {
    pending: Pending<K, V>,
}

impl<K, V> Default for Coalescer<K, V> {
    fn default() -> Self {
        Self { pending: Arc::default() }
    }
}

impl<K, V> Coalescer<K, V>
where
    K: Copy + Eq + Hash + Send + 'static,
    V: Send + Sync + 'static,
{
    /// The value of `read` for `key`, shared with every caller asking for `key` before the
    /// read starts.
    async fn get(
        &self,
        key: K,
        read: BoxFuture<'static, Result<V, StoreError>>,
    ) -> Result<Arc<V>, StoreError> {
        let shared = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            match pending.get(&key).and_then(WeakShared::upgrade) {
                Some(shared) => shared,
                None => {
                    if pending.len() > PRUNE_ABOVE {
                        pending.retain(|_, read| read.upgrade().is_some());
                    }
                    let shared = self.start(key, read);
                    if let Some(weak) = shared.downgrade() {
                        pending.insert(key, weak);
                    }
                    shared
                }
            }
        };
        shared.await
    }

    /// A read of `key` that waits COALESCE_WINDOW, then leaves the map and runs.
    fn start(&self, key: K, read: BoxFuture<'static, Result<V, StoreError>>) -> Read<V> {
        let pending = self.pending.clone();
        async move {
            tokio::time::sleep(COALESCE_WINDOW).await;
            // From here on a caller starts a read of its own.
            pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
            read.await.map(Arc::new)
        }
        .boxed()
        .shared()
    }
}

/// The store reads sockets share (see the module's notes).
pub struct SharedReads {
    store: Arc<dyn Store>,
    sessions: Coalescer<SessionId, Option<Session>>,
    participants: Coalescer<SessionId, Vec<Participant>>,
    histories: Coalescer<SessionId, Vec<ChatMessage>>,
}

impl SharedReads {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            sessions: Default::default(),
            participants: Default::default(),
            histories: Default::default(),
        }
    }

    pub async fn session(&self, id: SessionId) -> Result<Arc<Option<Session>>, StoreError> {
        let store = self.store.clone();
        self.sessions.get(id, async move { store.session(id).await }.boxed()).await
    }

    /// The session's participants, those who left included.
    pub async fn participants(&self, id: SessionId) -> Result<Arc<Vec<Participant>>, StoreError> {
        let store = self.store.clone();
        self.participants.get(id, async move { store.participants(id).await }.boxed()).await
    }

    /// The session chat's last `limit` messages (callers use one limit: the snapshot's).
    pub async fn history(&self, id: SessionId, limit: u32) -> Result<Arc<Vec<ChatMessage>>, StoreError> {
        let store = self.store.clone();
        let read = async move { store.messages(ChatRoom::Session(id), None, limit).await };
        self.histories.get(id, read.boxed()).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn counted(reads: &Arc<AtomicUsize>, value: u32) -> BoxFuture<'static, Result<u32, StoreError>> {
        let reads = reads.clone();
        async move {
            reads.fetch_add(1, Ordering::SeqCst);
            Ok(value)
        }
        .boxed()
    }

    #[tokio::test(start_paused = true)]
    async fn callers_within_the_window_share_one_read() {
        let coalescer = Coalescer::<u8, u32>::default();
        let reads = Arc::new(AtomicUsize::new(0));
        let (a, b, c) =
            tokio::join!(coalescer.get(1, counted(&reads, 7)), coalescer.get(1, counted(&reads, 8)), async {
                coalescer.get(2, counted(&reads, 9)).await
            });
        assert_eq!(
            (*a.unwrap(), *b.unwrap(), *c.unwrap()),
            (7, 7, 9),
            "the first caller's read serves key 1"
        );
        assert_eq!(reads.load(Ordering::SeqCst), 2, "one read per key");
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_after_the_read_started_gets_a_read_of_its_own() {
        let coalescer = Arc::new(Coalescer::<u8, u32>::default());
        let reads = Arc::new(AtomicUsize::new(0));
        // The first read starts (its window over) but does not finish before the second
        // caller asks: the second must not get the first's result, which may predate what
        // it wrote.
        let (release, hold) = tokio::sync::oneshot::channel::<()>();
        let slow = {
            let reads = reads.clone();
            async move {
                reads.fetch_add(1, Ordering::SeqCst);
                let _ = hold.await;
                Ok(1)
            }
            .boxed()
        };
        let first = tokio::spawn({
            let coalescer = coalescer.clone();
            async move { coalescer.get(5, slow).await }
        });
        while reads.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let second = coalescer.get(5, counted(&reads, 2));
        let _ = release.send(());
        assert_eq!(*second.await.unwrap(), 2);
        assert_eq!(*first.await.unwrap().unwrap(), 1);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_everyone_abandoned_is_not_kept() {
        let coalescer = Coalescer::<u8, u32>::default();
        let reads = Arc::new(AtomicUsize::new(0));
        // The caller goes away within the window (its request was cancelled).
        let abandoned =
            tokio::time::timeout(Duration::from_micros(10), coalescer.get(1, counted(&reads, 1))).await;
        assert!(abandoned.is_err());
        assert_eq!(
            *coalescer.get(1, counted(&reads, 2)).await.unwrap(),
            2,
            "a new read, not the abandoned one"
        );
        assert_eq!(reads.load(Ordering::SeqCst), 1, "the abandoned read never ran");
        assert!(coalescer.pending.lock().unwrap().is_empty(), "nothing is left waiting");
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_reaches_every_caller_and_is_not_kept() {
        let coalescer = Coalescer::<u8, u32>::default();
        let failing = || async { Err(StoreError::Unavailable("down".into())) }.boxed();
        let (a, b) = tokio::join!(coalescer.get(1, failing()), coalescer.get(1, failing()));
        assert!(matches!(a, Err(StoreError::Unavailable(_))) && matches!(b, Err(StoreError::Unavailable(_))));
        let reads = Arc::new(AtomicUsize::new(0));
        assert_eq!(*coalescer.get(1, counted(&reads, 3)).await.unwrap(), 3, "the next read runs afresh");
    }
}
