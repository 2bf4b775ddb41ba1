//! Telemetry of a real service process: JSON log lines, and spans exported over OTLP/gRPC to a
//! collector that this test runs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use platform_test_support::ServiceProcess;

const PROGRAM: &str = env!("CARGO_BIN_EXE_example-service-shell");

/// Remembers (service.name, span name) of every exported span.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(String, String)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|value| match value {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                seen.extend(scope.spans.into_iter().map(|span| (service.clone(), span.name)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tokio::test]
async fn spans_reach_the_otlp_collector_named_after_the_service() -> anyhow::Result<()> {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collector.clone()))
        .serve_with_incoming(tokio_stream_from(listener));
    let server = tokio::spawn(server);

    let env = HashMap::from([("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint.clone())]);
    let mut service = ServiceProcess::start(Path::new(PROGRAM), &env).await?;
    assert_eq!(reqwest::get(service.url("/hello/otel")).await?.status(), 200);
    service.terminate()?;
    assert_eq!(service.wait(Duration::from_secs(30)).await?.code(), Some(0));

    let seen = collector.0.lock().unwrap_or_else(PoisonError::into_inner).clone();
    assert!(
        seen.contains(&("example".to_owned(), "request".to_owned())),
        "spans received: {seen:?}\noutput:\n{}",
        service.output()
    );
    assert!(service.output().contains("exporting traces over OTLP"));
    server.abort();
    Ok(())
}

#[tokio::test]
async fn logs_are_json_lines_and_disabled_tracing_is_said_once() -> anyhow::Result<()> {
    let env = HashMap::from([("APP_LOG_LEVEL".to_owned(), "debug".to_owned())]);
    let mut service = ServiceProcess::start(Path::new(PROGRAM), &env).await?;
    reqwest::get(service.url("/hello/logs")).await?;
    service.terminate()?;
    service.wait(Duration::from_secs(30)).await?;

    let output = service.output();
    let mut levels = Vec::new();
    for line in output.lines() {
        let event: serde_json::Value =
            serde_json::from_str(line).map_err(|e| anyhow::anyhow!("not JSON ({e}): {line}"))?;
        assert!(event["timestamp"].is_string() && event["message"].is_string(), "{line}");
        levels.push(event["level"].as_str().unwrap_or_default().to_owned());
    }
    assert!(levels.iter().any(|level| level == "DEBUG"), "APP_LOG_LEVEL=debug is honoured");
    let disabled = "trace export disabled: OTEL_EXPORTER_OTLP_ENDPOINT is not set";
    assert_eq!(output.matches(disabled).count(), 1, "{output}");
    Ok(())
}

fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener)
}
