//! Logs, traces and metrics.
//!
//! [`init`] installs the process-wide `tracing` subscriber: JSON lines on standard output at
//! `APP_LOG_LEVEL`, the same lines pushed to a Loki push API when `APP_LOG_PUSH_URL` is set
//! (the aggregator's, normally; never on the request path: see [`LogPushConfig`]), and
//! OTLP/gRPC trace export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! [`Metrics`] is the Prometheus registry a service exposes at `/metrics`; it comes with the HTTP
//! request metrics the service shell records.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt as _};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

#[cfg(doc)]
use crate::config::LogPushConfig;
use crate::config::TelemetryConfig;

mod shipping;

/// The error returned by [`init`].
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `APP_LOG_LEVEL` is not a valid filter (normally caught when the configuration loads).
    #[error("invalid log filter {filter:?}")]
    InvalidFilter {
        /// The rejected filter.
        filter: String,
        /// Why it was rejected.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// The OTLP exporter could not be built.
    #[error("failed to build the OTLP trace exporter for {endpoint}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// Why it failed.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The log shipping thread could not start.
    #[error("failed to start the log shipping thread")]
    Shipper(#[source] std::io::Error),
    /// A global subscriber was already installed.
    #[error("a tracing subscriber is already installed in this process")]
    AlreadyInitialized(#[source] tracing_subscriber::util::TryInitError),
}

/// Keeps trace export running; dropping it flushes the spans not yet exported.
#[must_use = "dropping the guard stops trace export"]
#[derive(Debug)]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    shipper: Option<shipping::Shipper>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take()
            && let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            tracing::warn!(%error, "failed to flush traces at exit");
        }
        // Last, so that what the flush above logged is shipped too.
        self.shipper.take();
    }
}

/// Installs logging and, when configured, trace export for the process.
///
/// Call it once, first thing in `main`, and keep the guard alive until the end of `main`.
///
/// # Errors
///
/// Fails when the exporter cannot be built or a subscriber is already installed.
pub fn init(
    service_name: &str,
    config: &TelemetryConfig,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::try_new(&config.log_level).map_err(|source| {
        TelemetryError::InvalidFilter { filter: config.log_level.clone(), source }
    })?;
    let (shipper, writer) = match &config.log_push {
        Some(push) => {
            let (shipper, queue) =
                shipping::Shipper::start(service_name, push).map_err(TelemetryError::Shipper)?;
            (Some(shipper), BoxMakeWriter::new(std::io::stdout.and(queue)))
        }
        None => (None, BoxMakeWriter::new(std::io::stdout)),
    };
    let json = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true);

    let tracer_provider = match &config.otlp_endpoint {
        Some(endpoint) => Some(otlp_tracer_provider(service_name, endpoint.as_str())?),
        None => None,
    };
    let otel = tracer_provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("platform")));

    tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(otel)
        .try_init()
        .map_err(TelemetryError::AlreadyInitialized)?;

    match &config.otlp_endpoint {
        Some(endpoint) => {
            tracing::info!(service = service_name, %endpoint, "exporting traces over OTLP")
        }
        None => tracing::info!(
            service = service_name,
            "trace export disabled: OTEL_EXPORTER_OTLP_ENDPOINT is not set"
        ),
    }
    match &config.log_push {
        Some(push) => tracing::info!(
            service = service_name,
            sink = %push.url.origin().ascii_serialization(),
            instance = %push.instance,
            buffer_bytes = push.buffer_bytes,
            "shipping log records"
        ),
        None => tracing::info!(
            service = service_name,
            "log shipping disabled: APP_LOG_PUSH_URL is not set; logs go to standard output only"
        ),
    }
    Ok(TelemetryGuard { tracer_provider, shipper })
}

fn otlp_tracer_provider(
    service_name: &str,
    endpoint: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|source| TelemetryError::Exporter { endpoint: endpoint.to_owned(), source })?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service_name.to_owned()).build())
        .build())
}

/// Labels of a finished HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The HTTP method.
    pub method: Cow<'static, str>,
    /// The route pattern (`/api/repos/{owner}/{name}`), never the raw path, to bound cardinality.
    pub route: Cow<'static, str>,
    /// The response status code.
    pub status: u16,
}

/// Labels of a request's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The HTTP method.
    pub method: Cow<'static, str>,
    /// The route pattern.
    pub route: Cow<'static, str>,
}

/// The HTTP metrics the service shell records for every request.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    /// `http_requests_total{method,route,status}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `http_request_duration_seconds{method,route}`.
    pub duration: Family<RouteLabels, Histogram>,
    /// `http_requests_in_flight`.
    pub in_flight: Gauge,
}

/// A service's Prometheus registry, shared by everything that records metrics in the process.
///
/// Cloning is cheap and every clone is the same registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    http: HttpMetrics,
}

impl Metrics {
    /// Creates a registry for `service`, with the HTTP metrics and a `service_info` gauge
    /// already registered.
    pub fn new(service: &str) -> Self {
        let mut registry = Registry::default();
        let info = Family::<Vec<(String, String)>, Gauge>::default();
        info.get_or_create(&vec![
            ("service".to_owned(), service.to_owned()),
            ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ])
        .set(1);
        registry.register("service_info", "The running service and its version", info);

        let http = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            }),
            in_flight: Gauge::default(),
        };
        registry.register("http_requests", "HTTP requests answered", http.requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time from receiving a request to sending the response head",
            http.duration.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being handled",
            http.in_flight.clone(),
        );
        let shipping = &*shipping::SHIPPING;
        shipping.count_drops_from_zero();
        registry.register(
            "log_records_shipped",
            "Log records the log sink accepted",
            shipping.shipped.clone(),
        );
        registry.register(
            "log_records_dropped",
            "Log records not shipped: the buffer was full, or the sink refused them",
            shipping.dropped.clone(),
        );
        registry.register(
            "log_buffer_bytes",
            "Bytes of log records waiting to be shipped",
            shipping.buffer_bytes.clone(),
        );
        Self { registry: Arc::new(Mutex::new(registry)), http }
    }

    /// Registers a metric. `name` gets no prefix; counters get the `_total` suffix on output.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner).register(name, help, metric);
    }

    /// Returns the HTTP request metrics.
    pub fn http(&self) -> &HttpMetrics {
        &self.http
    }

    /// Encodes every metric in the Prometheus text exposition format (OpenMetrics flavour).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }
}
