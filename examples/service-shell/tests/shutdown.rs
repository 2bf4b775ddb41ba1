//! SIGTERM while a slow request is in flight: the request completes, then the process exits 0.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use platform_test_support::ServiceProcess;

#[tokio::test]
async fn sigterm_lets_the_in_flight_request_finish_then_exits_zero() -> anyhow::Result<()> {
    let program = Path::new(env!("CARGO_BIN_EXE_example-service-shell"));
    let mut service = ServiceProcess::start(program, &HashMap::new()).await?;
    let hello = reqwest::get(service.url("/hello/world")).await?.text().await?;
    assert_eq!(hello, "hello, world\n");

    let slow = tokio::spawn(reqwest::get(service.url("/sleep/2000")));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let signalled = Instant::now();
    service.terminate()?;

    let response = slow.await??;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await?, "slept 2000 ms\n");
    let status = service.wait(Duration::from_secs(30)).await?;
    assert_eq!(status.code(), Some(0), "output:\n{}", service.output());
    assert!(signalled.elapsed() >= Duration::from_millis(1000), "it waited for the request");

    let output = service.output();
    let shutdown_logged = output.find("shutdown requested").expect("shutdown is logged");
    let stopped_logged = output.find(r#""message":"stopped""#).expect("stop is logged");
    assert!(shutdown_logged < stopped_logged);
    Ok(())
}
