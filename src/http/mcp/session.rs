//! Legacy (2025-era) sessions: what `initialize` negotiated, the log level, and the event
//! streams a client can resume.
//!
//! Sessions live in this node's memory: they are conversation state, not job state (jobs stay in
//! the database, invariant 1). Behind a load balancer, legacy clients need sticky routing; the
//! 2026-07-28 revision needs no session at all. A session belongs to the tenant that opened it: a
//! session id presented by another tenant is unknown (404), like an expired one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::protocol::{LogLevel, Revision};

/// Bytes of events kept per stream for resumption; older events are dropped beyond it.
const STREAM_BUFFER_BYTES: usize = 4 << 20;
/// How long a finished stream stays resumable.
const FINISHED_STREAM_KEPT: Duration = Duration::from_secs(300);

/// Largest `capabilities` (as JSON) a client may declare in `initialize`; the session keeps
/// them for its life.
pub const MAX_CAPABILITIES_BYTES: usize = 16 * 1024;
/// Largest `clientInfo` (as JSON) `initialize` accepts. Only its `name`, `title` and `version`
/// are kept, each cut to [`CLIENT_INFO_FIELD_BYTES`].
pub const MAX_CLIENT_INFO_BYTES: usize = 16 * 1024;
const CLIENT_INFO_FIELD_BYTES: usize = 256;

/// The sessions of this node.
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    /// A session unused for this long is forgotten.
    idle: Duration,
    /// Most sessions kept; the least recently used goes first beyond it.
    max: usize,
    /// Most sessions per API key; that key's least recently used goes first beyond it.
    per_key: usize,
}

/// What a session is kept of a client's `clientInfo`: its `name`, `title` and `version` (when
/// they are strings), each cut to a few hundred bytes. Nothing else of it is used.
pub fn kept_client_info(client_info: &Value) -> Value {
    let mut kept = serde_json::Map::new();
    for field in ["name", "title", "version"] {
        if let Some(text) = client_info.get(field).and_then(Value::as_str) {
            let mut end = text.len().min(CLIENT_INFO_FIELD_BYTES);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            kept.insert(field.into(), Value::String(text[..end].to_string()));
        }
    }
    Value::Object(kept)
}

impl Sessions {
    pub fn new(idle: Duration, max: usize, per_key: usize) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            idle,
            max: max.max(1),
            per_key: per_key.max(1),
        }
    }

    /// Opens a session for `tenant`'s key `key_id` with what `initialize` negotiated.
    pub fn create(
        &self,
        tenant: &str,
        key_id: Option<&str>,
        revision: Revision,
        client_info: &Value,
        client_capabilities: Value,
    ) -> Arc<Session> {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        let session = Arc::new(Session {
            id: hex::encode(bytes),
            tenant: tenant.to_string(),
            key_id: key_id.map(str::to_string),
            revision,
            client_info: kept_client_info(client_info),
            client_capabilities,
            inner: Mutex::new(Inner {
                last_seen: Instant::now(),
                log_level: None,
                next_stream: 1,
                streams: HashMap::new(),
                standalone: None,
            }),
        });
        let mut map = self.map.lock().expect("sessions lock poisoned");
        if map.len() >= self.max {
            map.retain(|_, s| !s.expired(self.idle));
        }
        // The key's own least recently used sessions go first: a client that opens sessions
        // without end only ever evicts its own.
        loop {
            let own = map.values().filter(|s| s.same_owner(&session));
            if own.clone().count() < self.per_key {
                break;
            }
            let oldest = own
                .min_by_key(|s| s.last_seen())
                .map(|s| s.id.clone())
                .expect("the key has sessions");
            map.remove(&oldest);
        }
        while map.len() >= self.max {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.last_seen())
                .map(|(id, _)| id.clone())
                .expect("the map is not empty");
            map.remove(&oldest);
        }
        map.insert(session.id.clone(), session.clone());
        session
    }

    /// The live session `id` of `tenant`, marked as used; `None` when unknown, expired or
    /// another tenant's.
    pub fn get(&self, id: &str, tenant: &str) -> Option<Arc<Session>> {
        let mut map = self.map.lock().expect("sessions lock poisoned");
        let session = map.get(id)?.clone();
        if session.expired(self.idle) {
            map.remove(id);
            return None;
        }
        if session.tenant != tenant {
            return None;
        }
        session.touch();
        Some(session)
    }

    /// Ends a session; `false` when there was none (for this tenant).
    pub fn remove(&self, id: &str, tenant: &str) -> bool {
        let mut map = self.map.lock().expect("sessions lock poisoned");
        match map.get(id) {
            Some(s) if s.tenant == tenant => {
                map.remove(id);
                true
            }
            _ => false,
        }
    }

    /// How many sessions are kept (expired ones included until they are next looked at).
    pub fn count(&self) -> usize {
        self.map.lock().expect("sessions lock poisoned").len()
    }
}

/// One legacy session.
#[derive(Debug)]
pub struct Session {
    /// 64 hex digits from the operating system's random source: unguessable, visible ASCII.
    pub id: String,
    pub tenant: String,
    /// The API key that opened it (`None` without authentication).
    pub key_id: Option<String>,
    /// What `initialize` negotiated.
    pub revision: Revision,
    /// What is kept of the client's `clientInfo` ([`kept_client_info`]).
    pub client_info: Value,
    /// At most [`MAX_CAPABILITIES_BYTES`] of JSON.
    pub client_capabilities: Value,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    last_seen: Instant,
    /// Set by `logging/setLevel`.
    log_level: Option<LogLevel>,
    next_stream: u64,
    /// Streams of POST responses, resumable by `GET` with `Last-Event-ID`.
    streams: HashMap<u64, Arc<EventLog>>,
    /// The standalone `GET` stream, if one is open: notifications unrelated to a request
    /// (task status changes) go there.
    standalone: Option<mpsc::Sender<Bytes>>,
}

/// A session that ends (deleted, expired, evicted) abandons its streams: their producers stop
/// following their jobs, since nobody can resume them any more. (The jobs go on.)
impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(inner) = self.inner.get_mut() {
            for log in inner.streams.values() {
                log.abandon();
            }
        }
    }
}

impl Session {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("session lock poisoned")
    }

    fn same_owner(&self, other: &Session) -> bool {
        self.tenant == other.tenant && self.key_id == other.key_id
    }

    fn expired(&self, idle: Duration) -> bool {
        self.last_seen().elapsed() > idle
    }

    fn last_seen(&self) -> Instant {
        self.inner().last_seen
    }

    fn touch(&self) {
        self.inner().last_seen = Instant::now();
    }

    pub fn log_level(&self) -> Option<LogLevel> {
        self.inner().log_level
    }

    pub fn set_log_level(&self, level: LogLevel) {
        self.inner().log_level = Some(level);
    }

    /// Opens a new resumable stream for a POST response.
    pub fn open_stream(&self) -> Arc<EventLog> {
        let mut inner = self.inner();
        inner.streams.retain(|_, log| !log.stale());
        let id = inner.next_stream;
        inner.next_stream += 1;
        let log = Arc::new(EventLog::new(id));
        inner.streams.insert(id, log.clone());
        log
    }

    /// The stream an event id (`<stream>-<seq>`) belongs to, and the sequence number.
    pub fn stream_of(&self, event_id: &str) -> Option<(Arc<EventLog>, u64)> {
        let (stream, seq) = event_id.trim().split_once('-')?;
        let stream: u64 = stream.parse().ok()?;
        let seq: u64 = seq.parse().ok()?;
        let log = self.inner().streams.get(&stream)?.clone();
        Some((log, seq))
    }

    /// Makes `tx` the standalone stream, replacing (and so closing) an earlier one.
    pub fn attach_standalone(&self, tx: mpsc::Sender<Bytes>) {
        self.inner().standalone = Some(tx);
    }

    /// Whether a standalone stream is open.
    pub fn has_standalone(&self) -> bool {
        self.inner()
            .standalone
            .as_ref()
            .is_some_and(|tx| !tx.is_closed())
    }

    /// Whether `tx` is (still) the standalone stream.
    pub fn is_standalone(&self, tx: &mpsc::Sender<Bytes>) -> bool {
        self.inner()
            .standalone
            .as_ref()
            .is_some_and(|current| current.same_channel(tx))
    }

    /// Sends a frame on the standalone stream, if one is open; `false` if none took it.
    pub fn send_standalone(&self, frame: Bytes) -> bool {
        let tx = self.inner().standalone.clone();
        match tx {
            Some(tx) => tx.try_send(frame).is_ok(),
            None => false,
        }
    }
}

/// The events of one SSE response stream, kept so that a client whose connection dropped can
/// resume it (`GET` with `Last-Event-ID`). Event ids are `<stream>-<seq>`, unique in the
/// session; sequence 0 is the priming event.
#[derive(Debug)]
pub struct EventLog {
    stream: u64,
    state: Mutex<LogState>,
    /// The newest sequence number; readers wait on it.
    latest: watch::Sender<u64>,
    /// Fired when the session ends: no reader can come any more.
    abandoned: CancellationToken,
}

#[derive(Debug)]
struct LogState {
    events: VecDeque<(u64, Bytes)>,
    bytes: usize,
    next_seq: u64,
    finished: Option<Instant>,
}

impl EventLog {
    fn new(stream: u64) -> EventLog {
        EventLog {
            stream,
            state: Mutex::new(LogState {
                events: VecDeque::new(),
                bytes: 0,
                next_seq: 0,
                finished: None,
            }),
            latest: watch::channel(0).0,
            abandoned: CancellationToken::new(),
        }
    }

    fn abandon(&self) {
        self.abandoned.cancel();
    }

    /// Resolves when the stream's session ended, so that nobody can read it any more.
    pub async fn abandoned(&self) {
        self.abandoned.cancelled().await;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LogState> {
        self.state.lock().expect("event log lock poisoned")
    }

    fn stale(&self) -> bool {
        self.state()
            .finished
            .is_some_and(|at| at.elapsed() > FINISHED_STREAM_KEPT)
    }

    /// Appends an event; `frame` builds its bytes from the event id.
    pub fn push(&self, frame: impl FnOnce(&str) -> Bytes) {
        let seq = {
            let mut state = self.state();
            let seq = state.next_seq;
            state.next_seq += 1;
            let bytes = frame(&format!("{}-{seq}", self.stream));
            state.bytes += bytes.len();
            state.events.push_back((seq, bytes));
            while state.bytes > STREAM_BUFFER_BYTES && state.events.len() > 1 {
                if let Some((_, old)) = state.events.pop_front() {
                    state.bytes -= old.len();
                }
            }
            seq
        };
        self.latest.send_replace(seq);
    }

    /// Marks the stream complete: readers end after the last event.
    pub fn finish(&self) {
        self.state().finished = Some(Instant::now());
        self.latest.send_modify(|_| {});
    }

    /// Events after `after` (all of them when `None`), and whether the stream is complete.
    fn after(&self, after: Option<u64>) -> (Vec<(u64, Bytes)>, bool) {
        let state = self.state();
        let events = state
            .events
            .iter()
            .filter(|(seq, _)| after.is_none_or(|a| *seq > a))
            .cloned()
            .collect();
        (events, state.finished.is_some())
    }

    /// Copies the stream's events after `after` to `tx`, then the ones still to come, until
    /// the stream is complete or `tx` is closed. Sends `keepalive` when nothing happened for a
    /// while, so that proxies keep the connection and a vanished client is noticed.
    pub async fn relay(
        self: Arc<Self>,
        mut after: Option<u64>,
        tx: mpsc::Sender<Bytes>,
        keepalive: Duration,
    ) {
        let mut latest = self.latest.subscribe();
        loop {
            latest.mark_unchanged();
            let (events, finished) = self.after(after);
            for (seq, bytes) in events {
                if tx.send(bytes).await.is_err() {
                    return;
                }
                after = Some(seq);
            }
            if finished {
                return;
            }
            match tokio::time::timeout(keepalive, latest.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    if tx.send(crate::http::sse::keep_alive()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sessions_are_per_tenant_and_end() {
        let sessions = Sessions::new(Duration::from_secs(60), 10, 10);
        let s = sessions.create("a", None, Revision::V2025_11_25, &json!({}), json!({}));
        assert!(s.id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        assert!(sessions.get(&s.id, "a").is_some());
        assert!(sessions.get(&s.id, "b").is_none());
        assert!(!sessions.remove(&s.id, "b"));
        assert!(sessions.remove(&s.id, "a"));
        assert!(sessions.get(&s.id, "a").is_none());
    }

    #[test]
    fn the_least_recently_used_session_goes_first() {
        let sessions = Sessions::new(Duration::from_secs(60), 2, 10);
        let first = sessions.create("a", None, Revision::V2025_11_25, &json!({}), json!({}));
        std::thread::sleep(Duration::from_millis(2));
        let second = sessions.create("a", None, Revision::V2025_11_25, &json!({}), json!({}));
        std::thread::sleep(Duration::from_millis(2));
        assert!(sessions.get(&first.id, "a").is_some());
        sessions.create("a", None, Revision::V2025_11_25, &json!({}), json!({}));
        assert_eq!(sessions.count(), 2);
        assert!(sessions.get(&first.id, "a").is_some());
        assert!(sessions.get(&second.id, "a").is_none());
    }

    #[test]
    fn a_key_only_evicts_its_own_sessions() {
        let sessions = Sessions::new(Duration::from_secs(60), 100, 2);
        let other = sessions.create(
            "a",
            Some("k2"),
            Revision::V2025_11_25,
            &json!({}),
            json!({}),
        );
        let mut mine = Vec::new();
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(2));
            mine.push(sessions.create(
                "a",
                Some("k1"),
                Revision::V2025_11_25,
                &json!({}),
                json!({}),
            ));
        }
        assert_eq!(sessions.count(), 3);
        assert!(sessions.get(&other.id, "a").is_some());
        assert!(sessions.get(&mine[3].id, "a").is_some());
        assert!(sessions.get(&mine[4].id, "a").is_some());
        assert!(sessions.get(&mine[0].id, "a").is_none());
    }

    #[test]
    fn only_the_used_part_of_client_info_is_kept() {
        let info = json!({"name": "n".repeat(10_000), "version": "1", "icons": [{"src": "x"}],
                          "title": 7});
        let kept = kept_client_info(&info);
        assert_eq!(
            kept["name"].as_str().unwrap().len(),
            CLIENT_INFO_FIELD_BYTES
        );
        assert_eq!(kept["version"], "1");
        assert!(kept.get("icons").is_none() && kept.get("title").is_none());
        assert_eq!(kept_client_info(&json!(null)), json!({}));
    }

    #[test]
    fn idle_sessions_expire() {
        let sessions = Sessions::new(Duration::from_millis(1), 10, 10);
        let s = sessions.create("a", None, Revision::V2025_06_18, &json!({}), json!({}));
        std::thread::sleep(Duration::from_millis(5));
        assert!(sessions.get(&s.id, "a").is_none());
    }

    #[tokio::test]
    async fn a_stream_resumes_after_an_event_id() {
        let session = Sessions::new(Duration::from_secs(60), 10, 10).create(
            "a",
            None,
            Revision::V2025_11_25,
            &json!({}),
            json!({}),
        );
        let log = session.open_stream();
        for text in ["zero", "one", "two"] {
            log.push(|id| Bytes::from(format!("{id}:{text}")));
        }
        log.finish();
        let (found, seq) = session.stream_of("1-1").unwrap();
        assert_eq!(seq, 1);
        let (tx, mut rx) = mpsc::channel(8);
        found.relay(Some(seq), tx, Duration::from_secs(1)).await;
        assert_eq!(rx.recv().await.unwrap(), Bytes::from("1-2:two"));
        assert!(rx.recv().await.is_none());
        assert!(session.stream_of("9-1").is_none());
    }
}
