//! The NATS JetStream backend.
//!
//! For namespace `ns` and stream `s`: the work-queue stream `ns-jobs-s` on subject `ns.jobs.s`,
//! and the dead-letter stream `ns-dead-s` on subject `ns.dead.s` (limits retention, about
//! 100,000 messages kept). Both use file storage. Each group is a durable pull consumer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use futures_util::StreamExt as _;
use secrecy::{ExposeSecret, SecretString};

use super::{BackendKind, DeadLetter, Delivery, DeliveryHandle, QueueError, QueueOptions};
use crate::config::SecretUrl;

const KIND: BackendKind = BackendKind::Nats;
const DEAD_LETTER_CAP: i64 = 100_000;

fn err(operation: &'static str, stream: &str, source: impl Into<super::BoxError>) -> QueueError {
    QueueError::broker(KIND, operation, stream, source)
}

/// A JetStream context, with the streams and consumers already set up by this process.
#[derive(Clone)]
pub(super) struct NatsBackend {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    namespace: String,
    streams: Arc<Mutex<HashSet<String>>>,
    consumers: Arc<Mutex<HashMap<(String, String), PullConsumer>>>,
}

impl std::fmt::Debug for NatsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBackend")
            .field("namespace", &self.namespace)
            .field("state", &self.client.connection_state())
            .finish_non_exhaustive()
    }
}

fn connect_options(
    token: Option<&SecretString>,
    options: &QueueOptions,
) -> async_nats::ConnectOptions {
    let mut connect = async_nats::ConnectOptions::new()
        .connection_timeout(options.nats_connect_timeout)
        .name("platform-queue");
    if let Some(token) = token {
        connect = connect.token(token.expose_secret().to_owned());
    }
    connect
}

impl NatsBackend {
    /// Connects and checks that JetStream answers, within the connect timeout.
    pub(super) async fn connect(
        url: &SecretUrl,
        token: Option<&SecretString>,
        options: &QueueOptions,
    ) -> Result<Self, QueueError> {
        let connecting = async {
            let client = connect_options(token, options)
                .connect(url.expose().as_str())
                .await
                .map_err(|e| QueueError::NatsUnavailable(e.into()))?;
            let backend = Self::with_client(client, options);
            backend.jetstream_info().await?;
            Ok(backend)
        };
        tokio::time::timeout(options.nats_connect_timeout, connecting).await.unwrap_or_else(|_| {
            Err(QueueError::NatsUnavailable(
                format!("no answer within {:?}", options.nats_connect_timeout).into(),
            ))
        })
    }

    /// Returns at once with a client that keeps trying to connect in the background.
    pub(super) async fn connect_in_background(
        url: &SecretUrl,
        token: Option<&SecretString>,
        options: &QueueOptions,
    ) -> Result<Self, QueueError> {
        let client = connect_options(token, options)
            .retry_on_initial_connect()
            .connect(url.expose().as_str())
            .await
            .map_err(|e| QueueError::NatsUnavailable(e.into()))?;
        Ok(Self::with_client(client, options))
    }

    fn with_client(client: async_nats::Client, options: &QueueOptions) -> Self {
        Self {
            jetstream: jetstream::new(client.clone()),
            client,
            namespace: options.namespace.clone(),
            streams: Arc::default(),
            consumers: Arc::default(),
        }
    }

    fn subject(&self, kind: &str, stream: &str) -> String {
        format!("{}.{kind}.{stream}", self.namespace)
    }

    fn stream_name(&self, kind: &str, stream: &str) -> String {
        format!("{}-{kind}-{stream}", self.namespace)
    }

    pub(super) async fn ping(&self) -> Result<(), QueueError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(QueueError::NatsUnavailable("not connected".into()));
        }
        tokio::time::timeout(Duration::from_secs(2), self.jetstream_info()).await.map_err(|_| {
            QueueError::NatsUnavailable("JetStream did not answer within 2 s".into())
        })?
    }

    /// Asks JetStream for the account's information, which fails when JetStream is off.
    ///
    /// The raw API is used because the typed reply of the client library expects fields that
    /// servers older than 2.10 do not send.
    async fn jetstream_info(&self) -> Result<(), QueueError> {
        let reply = self
            .client
            .request("$JS.API.INFO", Bytes::new())
            .await
            .map_err(|e| QueueError::NatsUnavailable(e.into()))?;
        let info: serde_json::Value = serde_json::from_slice(&reply.payload)
            .map_err(|e| QueueError::NatsUnavailable(e.into()))?;
        match info.get("error") {
            None => Ok(()),
            Some(error) => {
                Err(QueueError::NatsUnavailable(format!("JetStream refused: {error}").into()))
            }
        }
    }

    /// Creates the job and dead-letter streams of `stream` if needed.
    async fn ensure_stream(&self, stream: &str) -> Result<(), QueueError> {
        if self.streams.lock().unwrap_or_else(PoisonError::into_inner).contains(stream) {
            return Ok(());
        }
        self.jetstream
            .get_or_create_stream(stream::Config {
                name: self.stream_name("jobs", stream),
                subjects: vec![self.subject("jobs", stream)],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| err("create the stream", stream, e))?;
        self.jetstream
            .get_or_create_stream(stream::Config {
                name: self.stream_name("dead", stream),
                subjects: vec![self.subject("dead", stream)],
                retention: RetentionPolicy::Limits,
                storage: StorageType::File,
                max_messages: DEAD_LETTER_CAP,
                ..Default::default()
            })
            .await
            .map_err(|e| err("create the dead-letter stream", stream, e))?;
        self.streams.lock().unwrap_or_else(PoisonError::into_inner).insert(stream.to_owned());
        Ok(())
    }

    /// Publishes and waits for JetStream's acknowledgement; the job id deduplicates a publish
    /// repeated within two minutes.
    pub(super) async fn publish(
        &self,
        stream: &str,
        id: &str,
        payload: Bytes,
    ) -> Result<(), QueueError> {
        self.ensure_stream(stream).await?;
        self.jetstream
            .send_publish(
                self.subject("jobs", stream),
                PublishMessage::build().payload(payload).message_id(id),
            )
            .await
            .map_err(|e| err("publish", stream, e))?
            .await
            .map_err(|e| err("publish", stream, e))?;
        Ok(())
    }

    async fn consumer(
        &self,
        stream: &str,
        group: &str,
        lease: Duration,
    ) -> Result<PullConsumer, QueueError> {
        let key = (stream.to_owned(), group.to_owned());
        if let Some(consumer) =
            self.consumers.lock().unwrap_or_else(PoisonError::into_inner).get(&key)
        {
            return Ok(consumer.clone());
        }
        self.ensure_stream(stream).await?;
        let jobs = self
            .jetstream
            .get_stream(self.stream_name("jobs", stream))
            .await
            .map_err(|e| err("open the stream", stream, e))?;
        let consumer: PullConsumer = jobs
            .get_or_create_consumer(
                group,
                pull::Config {
                    durable_name: Some(group.to_owned()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: lease,
                    // Attempts are counted and capped by the consumer loop, which dead-letters.
                    max_deliver: -1,
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| err("create the consumer", stream, e))?;
        self.consumers.lock().unwrap_or_else(PoisonError::into_inner).insert(key, consumer.clone());
        Ok(consumer)
    }

    /// Pulls up to `max` jobs, handing each over as it arrives, for at most `wait`.
    pub(super) async fn fetch(
        &self,
        stream: &str,
        group: &str,
        max: usize,
        wait: Duration,
        lease: Duration,
        deliver: &mut (dyn FnMut(Delivery) + Send),
    ) -> Result<usize, QueueError> {
        let consumer = self.consumer(stream, group, lease).await?;
        let mut batch = consumer
            .batch()
            .max_messages(max)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| err("fetch", stream, e))?;
        let mut delivered = 0;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| err("fetch", stream, e))?;
            let deliveries =
                message.info().map_or(1, |info| u32::try_from(info.delivered).unwrap_or(1));
            let envelope = super::decode_envelope(&message.payload);
            let attempt =
                envelope.as_ref().map_or(0, |e| e.retries).saturating_add(deliveries.max(1));
            deliver(Delivery {
                envelope,
                attempt,
                handle: DeliveryHandle::Nats(Box::new(message)),
            });
            delivered += 1;
        }
        Ok(delivered)
    }

    /// Acknowledges without waiting for the server's confirmation: a lost acknowledgement
    /// only means a redelivery, which at-least-once consumers handle anyway, and waiting would
    /// cost a round trip per job. [`NatsBackend::flush`] pushes them out before shutdown.
    pub(super) async fn ack(
        &self,
        stream: &str,
        message: &jetstream::Message,
    ) -> Result<(), QueueError> {
        message.ack().await.map_err(|e| err("acknowledge", stream, e))
    }

    /// Sends everything buffered, acknowledgements included.
    pub(super) async fn flush(&self) -> Result<(), QueueError> {
        self.client.flush().await.map_err(|e| err("flush", "-", e))
    }

    pub(super) async fn retry(
        &self,
        stream: &str,
        message: &jetstream::Message,
        delay: Duration,
    ) -> Result<(), QueueError> {
        message
            .double_ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|e| err("schedule a retry", stream, e))
    }

    pub(super) async fn heartbeat(
        &self,
        stream: &str,
        message: &jetstream::Message,
    ) -> Result<(), QueueError> {
        message.ack_with(AckKind::Progress).await.map_err(|e| err("extend a lease", stream, e))
    }

    pub(super) async fn dead_letter(
        &self,
        stream: &str,
        message: &jetstream::Message,
        record: &DeadLetter,
    ) -> Result<(), QueueError> {
        let payload = serde_json::to_vec(record)
            .map_err(|source| QueueError::Encode { stream: stream.to_owned(), source })?;
        self.jetstream
            .publish(self.subject("dead", stream), payload.into())
            .await
            .map_err(|e| err("dead-letter", stream, e))?
            .await
            .map_err(|e| err("dead-letter", stream, e))?;
        message.double_ack().await.map_err(|e| err("acknowledge", stream, e))
    }

    /// Jobs not yet acknowledged by `group`: waiting and in flight.
    pub(super) async fn depth(
        &self,
        stream: &str,
        group: &str,
        lease: Duration,
    ) -> Result<u64, QueueError> {
        let mut consumer = self.consumer(stream, group, lease).await?;
        let info = consumer.info().await.map_err(|e| err("read the depth", stream, e))?;
        Ok(info.num_pending + u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX))
    }

    pub(super) async fn dead_letters(
        &self,
        stream: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, QueueError> {
        self.ensure_stream(stream).await?;
        let mut dead = self
            .jetstream
            .get_stream(self.stream_name("dead", stream))
            .await
            .map_err(|e| err("open the dead-letter stream", stream, e))?;
        let state =
            dead.info().await.map_err(|e| err("read dead letters", stream, e))?.state.clone();
        let mut letters = Vec::new();
        let mut sequence = state.last_sequence;
        while sequence >= state.first_sequence.max(1) && letters.len() < limit {
            match dead.get_raw_message(sequence).await {
                Ok(message) => {
                    if let Ok(letter) = serde_json::from_slice(&message.payload) {
                        letters.push(letter);
                    }
                }
                Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(err("read dead letters", stream, e)),
            }
            sequence -= 1;
        }
        Ok(letters)
    }
}
