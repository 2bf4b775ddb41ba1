//! The Redis Streams backend.
//!
//! Keys, for namespace `ns` and stream `s`: `ns:queue:s` (the stream), `ns:queue:s:delayed` (a
//! sorted set of jobs waiting for their retry, scored by due time) and `ns:queue:s:dead` (dead
//! letters, capped at about 100,000 entries).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Script, Value};
use tokio::sync::OnceCell;

use super::{
    BackendKind, DeadLetter, Delivery, DeliveryHandle, Envelope, QueueError, QueueOptions,
};
use crate::config::RedisConfig;

const KIND: BackendKind = BackendKind::Redis;
/// How many dead letters a stream keeps (approximately).
const DEAD_LETTER_CAP: usize = 100_000;
/// How often a consumer moves due retries back onto the stream: the granularity of backoff.
const PROMOTE_EVERY: Duration = Duration::from_millis(100);
/// How often a consumer trims its stream.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Moves due retries from the delayed set back onto the stream, atomically.
const PROMOTE: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, payload in ipairs(due) do
  redis.call('XADD', KEYS[1], '*', 'd', payload)
  redis.call('ZREM', KEYS[2], payload)
end
return #due
";

/// Acknowledges a delivery and schedules its retry in one step, so the job is never both lost
/// and never twice in flight.
const RETRY: &str = r"
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
";

/// Trims entries that every consumer group has acknowledged: below the oldest pending entry of
/// each group and at or below its last delivered entry. Streams without groups are left alone,
/// since their jobs still wait for a first consumer.
const TRIM: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return 0 end
local function parse(id)
  local dash = string.find(id, '-')
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local floor = nil
for _, group in ipairs(groups) do
  local name, pending, last
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1]
    elseif group[i] == 'pending' then pending = group[i + 1]
    elseif group[i] == 'last-delivered-id' then last = group[i + 1] end
  end
  local bound = last
  if pending > 0 then
    bound = redis.call('XPENDING', KEYS[1], name)[2]
  end
  if floor == nil or less(bound, floor) then floor = bound end
end
return redis.call('XTRIM', KEYS[1], 'MINID', floor)
";

/// Redis Streams, through a self-reconnecting connection for short commands and one dedicated
/// connection per consumer for blocking reads.
#[derive(Clone)]
pub(super) struct RedisBackend {
    client: redis::Client,
    shared: Arc<OnceCell<ConnectionManager>>,
    namespace: String,
    prepared: Arc<Mutex<HashSet<(String, String)>>>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend").field("namespace", &self.namespace).finish_non_exhaustive()
    }
}

/// Per-consumer state of the fetch loop.
#[derive(Default)]
pub(super) struct RedisFetchState {
    blocking: Option<MultiplexedConnection>,
    last_promote: Option<Instant>,
    last_reclaim: Option<Instant>,
    last_trim: Option<Instant>,
}

fn err(operation: &'static str, stream: &str, source: redis::RedisError) -> QueueError {
    QueueError::broker(KIND, operation, stream, source)
}

impl RedisBackend {
    pub(super) fn new(config: &RedisConfig, options: &QueueOptions) -> Result<Self, QueueError> {
        let client = crate::redis::client(config).map_err(QueueError::RedisUrl)?;
        Ok(Self {
            client,
            shared: Arc::new(OnceCell::new()),
            namespace: options.namespace.clone(),
            prepared: Arc::default(),
        })
    }

    fn stream_key(&self, stream: &str) -> String {
        format!("{}:queue:{stream}", self.namespace)
    }

    fn delayed_key(&self, stream: &str) -> String {
        format!("{}:queue:{stream}:delayed", self.namespace)
    }

    fn dead_key(&self, stream: &str) -> String {
        format!("{}:queue:{stream}:dead", self.namespace)
    }

    async fn conn(&self, stream: &str) -> Result<ConnectionManager, QueueError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2);
        self.shared
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config))
            .await
            .cloned()
            .map_err(|e| err("connect", stream, e))
    }

    pub(super) async fn ping(&self) -> Result<(), QueueError> {
        let mut conn = self.conn("-").await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| err("ping", "-", e))?;
        Ok(())
    }

    pub(super) async fn publish(&self, stream: &str, payload: Bytes) -> Result<(), QueueError> {
        let mut conn = self.conn(stream).await?;
        redis::cmd("XADD")
            .arg(self.stream_key(stream))
            .arg("*")
            .arg("d")
            .arg(payload.as_ref())
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| err("publish", stream, e))?;
        Ok(())
    }

    /// Creates the stream and the group if needed. The group starts at the beginning of the
    /// stream, so jobs published before any consumer existed are not skipped.
    pub(super) async fn prepare(&self, stream: &str, group: &str) -> Result<(), QueueError> {
        let key = (stream.to_owned(), group.to_owned());
        if self.prepared.lock().unwrap_or_else(PoisonError::into_inner).contains(&key) {
            return Ok(());
        }
        let mut conn = self.conn(stream).await?;
        let created = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.stream_key(stream))
            .arg(group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async::<String>(&mut conn)
            .await;
        match created {
            Ok(_) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(err("create the consumer group", stream, e)),
        }
        self.prepared.lock().unwrap_or_else(PoisonError::into_inner).insert(key);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fetch(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
        lease: Duration,
        state: &mut RedisFetchState,
        deliver: &mut (dyn FnMut(Delivery) + Send),
    ) -> Result<usize, QueueError> {
        self.prepare(stream, group).await?;
        let key = self.stream_key(stream);
        let mut conn = self.conn(stream).await?;
        if state.last_promote.is_none_or(|t| t.elapsed() >= PROMOTE_EVERY) {
            state.last_promote = Some(Instant::now());
            Script::new(PROMOTE)
                .key(&key)
                .key(self.delayed_key(stream))
                .arg(super::now_ms())
                .arg(1000)
                .invoke_async::<i64>(&mut conn)
                .await
                .map_err(|e| err("promote due retries", stream, e))?;
        }

        if state.last_trim.is_none_or(|t| t.elapsed() >= TRIM_EVERY) {
            state.last_trim = Some(Instant::now());
            Script::new(TRIM)
                .key(&key)
                .invoke_async::<i64>(&mut conn)
                .await
                .map_err(|e| err("trim", stream, e))?;
        }

        let mut delivered = 0;
        if state.last_reclaim.is_none_or(|t| t.elapsed() >= lease / 2) {
            state.last_reclaim = Some(Instant::now());
            delivered +=
                self.reclaim(stream, group, consumer, max, lease, &mut conn, deliver).await?;
        }
        if delivered >= max {
            return Ok(delivered);
        }

        let mut blocking = match state.blocking.take() {
            Some(connection) => connection,
            None => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(wait + Duration::from_secs(5)));
                self.client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|e| err("connect", stream, e))?
            }
        };
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP").arg(group).arg(consumer).arg("COUNT").arg(max - delivered);
        if delivered == 0 {
            read.arg("BLOCK").arg(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        }
        read.arg("STREAMS").arg(&key).arg(">");
        let reply: Option<StreamReadReply> =
            read.query_async(&mut blocking).await.map_err(|e| err("read", stream, e))?;
        // Keep the connection only after a clean reply: after an error its state is unknown.
        state.blocking = Some(blocking);
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            deliver(decode(entry, 1));
            delivered += 1;
        }
        Ok(delivered)
    }

    /// Claims entries whose lease expired (their consumer died or hung) for this consumer.
    #[allow(clippy::too_many_arguments)]
    async fn reclaim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        max: usize,
        lease: Duration,
        conn: &mut ConnectionManager,
        deliver: &mut (dyn FnMut(Delivery) + Send),
    ) -> Result<usize, QueueError> {
        let key = self.stream_key(stream);
        let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&key)
            .arg(group)
            .arg(consumer)
            .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
            .arg("0-0")
            .arg("COUNT")
            .arg(max)
            .query_async(conn)
            .await
            .map_err(|e| err("reclaim expired jobs", stream, e))?;
        if claimed.claimed.is_empty() {
            return Ok(0);
        }
        let first = claimed.claimed.first().map(|e| e.id.clone()).unwrap_or_default();
        let last = claimed.claimed.last().map(|e| e.id.clone()).unwrap_or_default();
        let pending: StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&key)
            .arg(group)
            .arg(&first)
            .arg(&last)
            .arg(claimed.claimed.len())
            .arg(consumer)
            .query_async(conn)
            .await
            .map_err(|e| err("read delivery counts", stream, e))?;
        let count = claimed.claimed.len();
        tracing::warn!(stream, group, count, "reclaimed jobs whose lease expired");
        for entry in claimed.claimed {
            let deliveries = pending
                .ids
                .iter()
                .find(|p| p.id == entry.id)
                .map_or(2, |p| u32::try_from(p.times_delivered).unwrap_or(u32::MAX));
            deliver(decode(entry, deliveries));
        }
        Ok(count)
    }

    pub(super) async fn ack(
        &self,
        stream: &str,
        group: &str,
        entry_id: &str,
    ) -> Result<(), QueueError> {
        let mut conn = self.conn(stream).await?;
        redis::cmd("XACK")
            .arg(self.stream_key(stream))
            .arg(group)
            .arg(entry_id)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(|e| err("acknowledge", stream, e))?;
        Ok(())
    }

    pub(super) async fn retry(
        &self,
        stream: &str,
        group: &str,
        entry_id: &str,
        envelope: &Envelope,
        attempt: u32,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let next = Envelope {
            id: envelope.id.clone(),
            retries: attempt,
            published_at_ms: envelope.published_at_ms,
            job: envelope.job.clone(),
        };
        let payload = serde_json::to_vec(&next)
            .map_err(|source| QueueError::Encode { stream: stream.to_owned(), source })?;
        let due =
            super::now_ms().saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        let mut conn = self.conn(stream).await?;
        Script::new(RETRY)
            .key(self.stream_key(stream))
            .key(self.delayed_key(stream))
            .arg(group)
            .arg(entry_id)
            .arg(due)
            .arg(payload)
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(|e| err("schedule a retry", stream, e))?;
        Ok(())
    }

    pub(super) async fn dead_letter(
        &self,
        stream: &str,
        group: &str,
        entry_id: &str,
        record: &DeadLetter,
    ) -> Result<(), QueueError> {
        let payload = serde_json::to_vec(record)
            .map_err(|source| QueueError::Encode { stream: stream.to_owned(), source })?;
        let mut conn = self.conn(stream).await?;
        redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(self.dead_key(stream))
            .arg("MAXLEN")
            .arg("~")
            .arg(DEAD_LETTER_CAP)
            .arg("*")
            .arg("d")
            .arg(payload)
            .ignore()
            .cmd("XACK")
            .arg(self.stream_key(stream))
            .arg(group)
            .arg(entry_id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| err("dead-letter", stream, e))
    }

    /// Resets the entry's idle time, so it is not reclaimed while its handler still runs.
    pub(super) async fn heartbeat(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        entry_id: &str,
    ) -> Result<(), QueueError> {
        let mut conn = self.conn(stream).await?;
        redis::cmd("XCLAIM")
            .arg(self.stream_key(stream))
            .arg(group)
            .arg(consumer)
            .arg(0)
            .arg(entry_id)
            .arg("JUSTID")
            .query_async::<Value>(&mut conn)
            .await
            .map_err(|e| err("extend a lease", stream, e))?;
        Ok(())
    }

    /// Jobs not yet acknowledged by `group`: undelivered, in flight, and waiting for a retry.
    pub(super) async fn depth(&self, stream: &str, group: &str) -> Result<u64, QueueError> {
        let mut conn = self.conn(stream).await?;
        let groups: Vec<Vec<Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(self.stream_key(stream))
            .query_async(&mut conn)
            .await
            .map_err(|e| err("read the depth", stream, e))?;
        let delayed: u64 = redis::cmd("ZCARD")
            .arg(self.delayed_key(stream))
            .query_async(&mut conn)
            .await
            .map_err(|e| err("read the depth", stream, e))?;
        for fields in groups {
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|pair| matches!(&pair[0], Value::BulkString(b) if b == name.as_bytes()))
                    .and_then(|pair| pair.get(1))
            };
            let is_group = field("name")
                .is_some_and(|v| matches!(v, Value::BulkString(b) if b == group.as_bytes()));
            if is_group {
                let number = |v: Option<&Value>| match v {
                    Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
                    _ => 0,
                };
                return Ok(number(field("lag")) + number(field("pending")) + delayed);
            }
        }
        Ok(delayed)
    }

    pub(super) async fn dead_letters(
        &self,
        stream: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        let mut conn = self.conn(stream).await?;
        let entries: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(self.dead_key(stream))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await
            .map_err(|e| err("read dead letters", stream, e))?;
        Ok(entries
            .ids
            .iter()
            .filter_map(|entry| entry.get::<Vec<u8>>("d"))
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect())
    }
}

/// Turns a stream entry into a delivery; `deliveries` is how often Redis has delivered it.
fn decode(entry: StreamId, deliveries: u32) -> Delivery {
    let envelope = entry
        .get::<Vec<u8>>("d")
        .ok_or_else(|| "entry has no job field".to_owned())
        .and_then(|bytes| super::decode_envelope(&bytes));
    let attempt = envelope.as_ref().map_or(0, |e| e.retries).saturating_add(deliveries.max(1));
    Delivery { envelope, attempt, handle: DeliveryHandle::Redis { entry_id: entry.id } }
}
