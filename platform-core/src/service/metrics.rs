//! Every request counted and timed by method, matched route and status.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use tower::{Layer, Service};

use crate::telemetry::{HttpMetrics, RequestLabels, RouteLabels};

/// Decrements the in-flight gauge however the request ends, including when the client goes away.
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts and times every request by method and matched route.
#[derive(Clone, Debug)]
pub(super) struct RecordMetricsLayer {
    pub(super) metrics: HttpMetrics,
}

impl<S> Layer<S> for RecordMetricsLayer {
    type Service = RecordMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RecordMetrics { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Clone, Debug)]
pub(super) struct RecordMetrics<S> {
    inner: S,
    metrics: HttpMetrics,
}

impl<S, B> Service<Request> for RecordMetrics<S>
where
    S: Service<Request, Response = axum::http::Response<B>>,
{
    type Response = axum::http::Response<B>;
    type Error = S::Error;
    type Future = RecordMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let method = method_label(request.method());
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or(Cow::Borrowed("unmatched"), |path| Cow::Owned(path.as_str().to_owned()));
        self.metrics.in_flight.inc();
        let recording = Recording {
            _in_flight: InFlight(self.metrics.in_flight.clone()),
            metrics: self.metrics.clone(),
            method,
            route,
            started: Instant::now(),
        };
        RecordMetricsFuture { inner: self.inner.call(request), recording: Some(recording) }
    }
}

/// The label of a method: the common ones without allocating.
fn method_label(method: &axum::http::Method) -> Cow<'static, str> {
    const COMMON: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    COMMON
        .into_iter()
        .find(|name| *name == method.as_str())
        .map_or_else(|| Cow::Owned(method.as_str().to_owned()), Cow::Borrowed)
}

struct Recording {
    /// Dropped with the recording, however the request ends.
    _in_flight: InFlight,
    metrics: HttpMetrics,
    method: Cow<'static, str>,
    route: Cow<'static, str>,
    started: Instant,
}

pin_project_lite::pin_project! {
    pub(super) struct RecordMetricsFuture<F> {
        #[pin]
        inner: F,
        recording: Option<Recording>,
    }
}

impl<F, B, E> Future for RecordMetricsFuture<F>
where
    F: Future<Output = Result<axum::http::Response<B>, E>>,
{
    type Output = Result<axum::http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some(recording)) = (&result, this.recording.take()) {
            let Recording { metrics, method, route, started, .. } = recording;
            metrics
                .duration
                .get_or_create(&RouteLabels { method: method.clone(), route: route.clone() })
                .observe(started.elapsed().as_secs_f64());
            metrics
                .requests
                .get_or_create(&RequestLabels { method, route, status: response.status().as_u16() })
                .inc();
        }
        Poll::Ready(result)
    }
}
