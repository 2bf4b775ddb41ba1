//! `email_worker` as a process (with `app` for the account flows), against a capturing SMTP
//! server with STARTTLS and AUTH, PostgreSQL, and a Redis of each test's own.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use platform_core::config::{RedisConfig, SecretUrl};
use platform_core::queue::{Queue, QueueOptions};
use platform_core::telemetry::Metrics;
use platform_mail::{MAIL_STREAM, MailJob};
use platform_test_support::{
    Broker, BrokerKind, CaptureTls, ServiceProcess, SmtpCapture, TcpProxy, eventually,
    fresh_database, wait_for_status, workspace_binary,
};

const EMAIL_WORKER: &str = env!("CARGO_BIN_EXE_email_worker");
const DOMAIN: &str = "http://forge.test:8080";

/// A database, a Redis (the queue) and a relay for one test's processes.
struct Deployment {
    database_url: String,
    redis: Broker,
    capture: SmtpCapture,
}

impl Deployment {
    async fn new() -> anyhow::Result<Self> {
        Ok(Self {
            database_url: fresh_database().await?,
            redis: Broker::start(BrokerKind::Redis)?,
            capture: SmtpCapture::start(CaptureTls::StartTls)?,
        })
    }

    fn common_env(&self) -> HashMap<String, String> {
        HashMap::from([
            ("APP_DATABASE_URL".into(), self.database_url.clone()),
            ("APP_REDIS_URL".into(), self.redis.url()),
            ("APP_DOMAIN_URL".into(), DOMAIN.into()),
        ])
    }

    async fn worker(&self) -> anyhow::Result<ServiceProcess> {
        self.worker_with(&HashMap::new()).await
    }

    async fn worker_with(
        &self,
        overrides: &HashMap<String, String>,
    ) -> anyhow::Result<ServiceProcess> {
        let mut env = self.common_env();
        env.extend(self.capture.env());
        env.extend(overrides.clone());
        ServiceProcess::start(EMAIL_WORKER.as_ref(), &env).await
    }

    async fn queue(&self) -> anyhow::Result<Queue> {
        let config = RedisConfig::new(SecretUrl::new(self.redis.url().parse()?));
        Ok(Queue::redis(&config, QueueOptions::default(), &Metrics::new("test"))?)
    }

    async fn delivery_records(&self, message_key: &str) -> anyhow::Result<i64> {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            count: i64,
        }
        let mut conn = AsyncPgConnection::establish(&self.database_url).await?;
        let row: Count = diesel::sql_query(
            "SELECT count(*) AS count FROM mail_deliveries WHERE message_key = $1",
        )
        .bind::<Text, _>(message_key)
        .get_result(&mut conn)
        .await?;
        Ok(row.count)
    }
}

/// The role the worker's `/readyz` reports (`leader` or `standby`), once it is ready.
async fn role(worker: &ServiceProcess) -> anyhow::Result<String> {
    let body = wait_for_status(&worker.url("/readyz"), 200, Duration::from_secs(20)).await?;
    let report: serde_json::Value = serde_json::from_str(&body)?;
    let check = report["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == "mail_sender"))
        .ok_or_else(|| anyhow::anyhow!("no mail_sender check in {body}"))?;
    Ok(check["detail"].as_str().unwrap_or_default().to_owned())
}

async fn wait_for_role(
    worker: &ServiceProcess,
    wanted: &str,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let now = role(worker).await?;
        if now == wanted {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "still {now} after {limit:?}, not {wanted}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metric(worker: &ServiceProcess, series: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(worker.url("/metrics")).await?.text().await?;
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64))
}

/// Waits up to 10 s for `series` to reach at least `value`.
async fn wait_for_metric(worker: &ServiceProcess, series: &str, value: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = metric(worker, series).await?;
        if now >= value {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{series} is {now}, not {value}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_mail(capture: &SmtpCapture, count: usize, limit: Duration) -> anyhow::Result<()> {
    eventually(&format!("{count} captured messages"), limit, || {
        capture.messages().map(|m| m.len() >= count).unwrap_or(false)
    })
    .await
}

fn verify_job(to: &str) -> MailJob {
    MailJob::VerifyEmail { user_id: 1, username: "u".into(), to: to.into(), token: "t".into() }
}

/// The `token` query parameter of the first link in `text` that goes to `page`.
fn token_in(text: &str, page: &str) -> anyhow::Result<String> {
    let start = text
        .find(&format!("{DOMAIN}/{page}?"))
        .ok_or_else(|| anyhow::anyhow!("no {page} link in:\n{text}"))?;
    let link = text[start..].split_whitespace().next().unwrap_or_default();
    let url = url::Url::parse(link)?;
    url.query_pairs()
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned())
        .ok_or_else(|| anyhow::anyhow!("no token in {link}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_and_password_reset_work_end_to_end_through_mail() -> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    let data = std::env::temp_dir().join(platform_test_support::unique_name("mail-app"));
    let mut app_env = deployment.common_env();
    for (name, dir) in
        [("APP_REPOS_ROOT", "repos"), ("APP_AVATAR_PATH", "avatars"), ("STORAGE_PATH", "files")]
    {
        app_env.insert(name.into(), data.join(dir).to_string_lossy().into_owned());
    }
    app_env.extend([
        ("APP_SESSION_SECRET".into(), "a-test-session-secret-of-at-least-32-bytes".into()),
        ("APP_AI_BASIC_URL".into(), "http://127.0.0.1:9/v1".into()),
        ("APP_AI_API_KEY".into(), "sk-test".into()),
    ]);
    let app = ServiceProcess::start(&workspace_binary("app"), &app_env).await?;
    let worker = deployment.worker().await?;
    let client = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| client.post(app.url(path)).json(&body).send();

    let registered = post(
        "/api/auth/register",
        serde_json::json!({"username": "ada", "email": "ada@example.com", "password": "correct horse battery"}),
    )
    .await?;
    assert_eq!(registered.status(), 202, "{}", registered.text().await?);
    wait_for_mail(&deployment.capture, 1, Duration::from_secs(30)).await?;
    let mail = deployment.capture.messages_to("ada@example.com")?.remove(0);
    assert!(mail.tls && mail.auth_login.is_some(), "STARTTLS and AUTH: {mail:?}");
    let (text, html) = (mail.text.unwrap_or_default(), mail.html.unwrap_or_default());
    let token = token_in(&text, "verify-email")?;
    assert_eq!(token_in(&html.replace('"', " "), "verify-email")?, token, "both parts link alike");

    let verified = post("/api/auth/verify-email", serde_json::json!({"token": token})).await?;
    assert_eq!(verified.status(), 204, "{}", verified.text().await?);
    let login = |password: &'static str| {
        post("/api/auth/login", serde_json::json!({"login": "ada", "password": password}))
    };
    let signed_in: serde_json::Value = login("correct horse battery").await?.json().await?;
    assert_eq!(signed_in["user"]["email_verified"], true, "{signed_in}");

    let asked =
        post("/api/auth/password-reset", serde_json::json!({"email": "ada@example.com"})).await?;
    assert_eq!(asked.status(), 202);
    wait_for_mail(&deployment.capture, 2, Duration::from_secs(30)).await?;
    let reset = deployment.capture.messages_to("ada@example.com")?.remove(1);
    assert_eq!(reset.subject.as_deref(), Some("Reset your forge.test password"));
    let token = token_in(&reset.text.unwrap_or_default(), "reset-password")?;
    let confirmed = post(
        "/api/auth/password-reset/confirm",
        serde_json::json!({"token": token, "password": "a brand new passphrase"}),
    )
    .await?;
    assert_eq!(confirmed.status(), 204, "{}", confirmed.text().await?);
    assert_eq!(login("correct horse battery").await?.status(), 401);
    assert_eq!(login("a brand new passphrase").await?.status(), 200);
    wait_for_metric(&worker, "mail_sent_total{kind=\"verify_email\"}", 1).await?;
    wait_for_metric(&worker, "mail_sent_total{kind=\"reset_password\"}", 1).await?;
    let _ = std::fs::remove_dir_all(data);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_between_the_relays_acceptance_and_the_ack_sends_no_duplicate()
-> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    // The worker reaches Redis, its queue, through a proxy that can cut it off.
    let redis_addr = deployment.redis.url().trim_start_matches("redis://").parse()?;
    let proxy = TcpProxy::start(redis_addr).await?;
    let through_proxy =
        HashMap::from([("APP_REDIS_URL".to_owned(), format!("redis://{}", proxy.addr()))]);
    let mut first = deployment.worker_with(&through_proxy).await?;
    wait_for_role(&first, "leader", Duration::from_secs(20)).await?;
    let queue = deployment.queue().await?;
    // The capture server holds its reply to DATA for 3 s for `slow-` recipients.
    let job_id = queue.publish(MAIL_STREAM, &verify_job("slow-once@example.com")).await?;
    wait_for_mail(&deployment.capture, 1, Duration::from_secs(20)).await?;

    // The message is in the relay and its 250 not yet sent: cut the worker off from the queue so
    // that its ack cannot arrive, wait until the 250 is recorded, and kill the worker.
    proxy.sever();
    let recorded = async {
        for _ in 0..100 {
            if deployment.delivery_records(&job_id).await? == 1 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the delivery was never recorded")
    }
    .await;
    first.kill().await?;
    proxy.heal();
    recorded?;

    let second = deployment.worker_with(&through_proxy).await?;
    wait_for_role(&second, "leader", Duration::from_secs(20)).await?;
    // The job comes back once its 30-second lease has expired, and is acknowledged unsent.
    let deadline = Instant::now() + Duration::from_secs(75);
    while metric(&second, "mail_duplicates_skipped_total").await? < 1 {
        anyhow::ensure!(Instant::now() < deadline, "the job never came back:\n{}", second.output());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(deployment.capture.messages_to("slow-once@example.com")?.len(), 1, "no duplicate");
    assert_eq!(deployment.capture.rcpt_attempts("slow-once@example.com"), 1);

    queue.publish(MAIL_STREAM, &verify_job("next@example.com")).await?;
    wait_for_mail(&deployment.capture, 2, Duration::from_secs(20)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_send_each_mail_once_and_the_standby_takes_over_a_killed_leader()
-> anyhow::Result<()> {
    let mut deployment = Deployment::new().await?;
    let mut first = deployment.worker().await?;
    wait_for_role(&first, "leader", Duration::from_secs(20)).await?;
    let second = deployment.worker().await?;
    assert_eq!(role(&second).await?, "standby", "a standby is ready, and says what it is");
    assert_eq!(metric(&first, "mail_leader").await?, 1);
    assert_eq!(metric(&second, "mail_leader").await?, 0);

    let queue = deployment.queue().await?;
    for n in 0..10 {
        queue.publish(MAIL_STREAM, &verify_job(&format!("early{n}@example.com"))).await?;
    }
    wait_for_mail(&deployment.capture, 10, Duration::from_secs(30)).await?;
    wait_for_metric(&first, "mail_sent_total{kind=\"verify_email\"}", 10).await?;
    assert_eq!(metric(&second, "mail_sent_total{kind=\"verify_email\"}").await?, 0);

    // With the relay down, the leader holds the next jobs, unsent, when it dies.
    deployment.capture.stop()?;
    for n in 0..10 {
        queue.publish(MAIL_STREAM, &verify_job(&format!("late{n}@example.com"))).await?;
    }
    wait_for_metric(
        &first,
        "mail_failed_total{kind=\"verify_email\",reason=\"relay_unavailable\"}",
        1,
    )
    .await?;
    first.kill().await?;
    let killed = Instant::now();
    deployment.capture.restart()?;
    wait_for_role(&second, "leader", Duration::from_secs(30)).await?;
    let takeover = killed.elapsed();
    assert!(takeover < Duration::from_secs(30), "took over after {takeover:?}");
    eprintln!("the standby took over {takeover:?} after the leader was killed");

    if let Err(error) = wait_for_mail(&deployment.capture, 20, Duration::from_secs(75)).await {
        anyhow::bail!(
            "{error}: {} captured; standby output:\n{}",
            deployment.capture.messages()?.len(),
            second.output()
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut recipients: Vec<String> =
        deployment.capture.messages()?.into_iter().flat_map(|m| m.rcpt_tos).collect();
    recipients.sort();
    let mut expected: Vec<String> = (0..10)
        .flat_map(|n| [format!("early{n}@example.com"), format!("late{n}@example.com")])
        .collect();
    expected.sort();
    assert_eq!(recipients, expected, "every mail exactly once");
    wait_for_metric(&second, "mail_sent_total{kind=\"verify_email\"}", 10).await?;
    Ok(())
}
