//! The email worker in-process, against a capturing SMTP server (aiosmtpd), PostgreSQL and NATS
//! JetStream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use platform_core::accounts::AccountMail;
use platform_core::config::{EnvReader, NatsConfig, SecretUrl, SmtpConfig};
use platform_core::db::{CORE_MIGRATIONS, Database};
use platform_core::queue::{Backoff, Queue, QueueOptions};
use platform_core::telemetry::Metrics;
use platform_mail::leader::LeaseOptions;
use platform_mail::{
    Composer, EmailWorker, MAIL_MIGRATIONS, MAIL_STREAM, MailJob, Role, SmtpSender, WorkerOptions,
};
use platform_test_support::{
    CaptureTls, SMTP_USER, SmtpCapture, eventually, migrated_database, service_env, unique_name,
};
use tokio_util::sync::CancellationToken;

const SITE: &str = "https://forge.example.com";

/// A database, a queue namespace and a relay shared by the workers of one test.
struct Setup {
    database: Database,
    nats: NatsConfig,
    namespace: String,
    capture: SmtpCapture,
}

impl Setup {
    async fn new(tls: CaptureTls) -> anyhow::Result<Self> {
        let (_, database) = migrated_database([CORE_MIGRATIONS, MAIL_MIGRATIONS]).await?;
        let nats_url = service_env("PLATFORM_TEST_NATS_URL");
        let nats = NatsConfig { url: Some(SecretUrl::new(nats_url.parse()?)), token: None };
        Ok(Self {
            database,
            nats,
            namespace: unique_name("mail"),
            capture: SmtpCapture::start(tls)?,
        })
    }

    async fn queue(&self, metrics: &Metrics) -> anyhow::Result<Queue> {
        let options = QueueOptions {
            namespace: self.namespace.clone(),
            publish_timeout: Duration::from_secs(3),
            ..QueueOptions::default()
        };
        Ok(Queue::nats(&self.nats, options, metrics).await?)
    }

    fn smtp_config(&self, password: Option<&str>) -> anyhow::Result<SmtpConfig> {
        let mut vars: HashMap<String, String> = self.capture.env().into_iter().collect();
        vars.insert("APP_SMTP_CONNECT_TIMEOUT_SECONDS".into(), "5".into());
        if let Some(password) = password {
            vars.insert("APP_SMTP_PASSWORD".into(), password.into());
        }
        let mut env = EnvReader::new(&vars);
        let read = (SmtpConfig::read(&mut env, None), Some(()));
        Ok(env.finish(read)?.0)
    }

    /// Starts a worker; returns it, its metrics and the token that stops it.
    async fn worker(&self, password: Option<&str>) -> anyhow::Result<Running> {
        let metrics = Metrics::new("email_worker");
        let queue = self.queue(&metrics).await?;
        let sender = SmtpSender::new(&self.smtp_config(password)?)?
            .with_tls_config(trusting(&self.capture.ca_file())?);
        let mut options = WorkerOptions {
            lease: LeaseOptions {
                poll: Duration::from_millis(300),
                check_every: Duration::from_millis(500),
                check_timeout: Duration::from_secs(2),
            },
            relay_backoff: Backoff {
                initial: Duration::from_millis(200),
                max: Duration::from_millis(800),
            },
            ..WorkerOptions::default()
        };
        options.consumer.backoff =
            Backoff { initial: Duration::from_millis(300), max: Duration::from_secs(1) };
        options.consumer.fetch_wait = Duration::from_millis(200);
        let composer = Composer::new(&SITE.parse()?, "noreply@forge.example.com");
        let worker =
            EmailWorker::new(queue, self.database.clone(), composer, sender, &metrics, options);
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (worker, stop) = (worker.clone(), stop.clone());
            async move { worker.run(stop.cancelled_owned()).await }
        });
        Ok(Running { worker, metrics, stop, task })
    }
}

struct Running {
    worker: EmailWorker,
    metrics: Metrics,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), platform_core::queue::QueueError>>,
}

impl Running {
    fn counter(&self, series: &str) -> u64 {
        counter(&self.metrics, series)
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task).await???;
        Ok(())
    }
}

fn counter(metrics: &Metrics, series: &str) -> u64 {
    metrics
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

fn trusting(ca_file: &std::path::Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    platform_core::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(ca_file)? {
        roots.add(certificate?)?;
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth(),
    ))
}

fn verify_mail(to: &str) -> AccountMail {
    AccountMail::VerifyEmail {
        user_id: 1,
        username: "ada".into(),
        to: to.into(),
        token: "the-token".into(),
    }
}

async fn wait_for_leader(running: &Running) -> anyhow::Result<()> {
    let mut roles = running.worker.roles();
    tokio::time::timeout(Duration::from_secs(10), roles.wait_for(|role| *role == Role::Leader))
        .await??;
    Ok(())
}

async fn wait_for_counter(running: &Running, series: &str, value: u64) -> anyhow::Result<()> {
    eventually(&format!("{series} = {value}"), Duration::from_secs(10), || {
        running.counter(series) == value
    })
    .await
}

async fn wait_for_messages(capture: &SmtpCapture, count: usize) -> anyhow::Result<()> {
    eventually(&format!("{count} captured messages"), Duration::from_secs(30), || {
        capture.messages().map(|m| m.len() >= count).unwrap_or(false)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn starttls_and_auth_deliver_a_verification_mail_with_text_and_html() -> anyhow::Result<()> {
    let setup = Setup::new(CaptureTls::StartTls).await?;
    let running = setup.worker(None).await?;
    wait_for_leader(&running).await?;
    let producer = setup.queue(&Metrics::new("app")).await?;
    // Published as the accounts publish it.
    let job_id = producer.publish(MAIL_STREAM, &verify_mail("ada@example.com")).await?;

    wait_for_messages(&setup.capture, 1).await?;
    let mail = setup.capture.messages()?.remove(0);
    assert!(mail.tls, "STARTTLS was used");
    assert_eq!(mail.auth_login.as_deref(), Some(SMTP_USER), "AUTH was used");
    assert_eq!(mail.mail_from, "noreply@forge.example.com");
    assert_eq!(mail.rcpt_tos, ["ada@example.com"]);
    assert_eq!(mail.content_type, "multipart/alternative");
    assert_eq!(mail.message_id.as_deref(), Some(format!("<{job_id}@forge.example.com>").as_str()));
    let link = "https://forge.example.com/verify-email?token=the-token";
    assert!(mail.text.as_deref().is_some_and(|t| t.contains(link)), "{mail:?}");
    assert!(mail.html.as_deref().is_some_and(|h| h.contains(link)), "{mail:?}");

    wait_for_counter(&running, "mail_sent_total{kind=\"verify_email\"}", 1).await?;
    assert_eq!(counter(&running.metrics, "mail_leader"), 1);
    running.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn implicit_tls_and_plain_sessions_deliver_too() -> anyhow::Result<()> {
    for tls in [CaptureTls::Implicit, CaptureTls::None] {
        let setup = Setup::new(tls).await?;
        let running = setup.worker(None).await?;
        setup
            .queue(&Metrics::new("app"))
            .await?
            .publish(MAIL_STREAM, &verify_mail("b@example.com"))
            .await?;
        wait_for_messages(&setup.capture, 1).await?;
        let mail = setup.capture.messages()?.remove(0);
        assert_eq!(mail.tls, tls == CaptureTls::Implicit, "{tls:?}");
        assert_eq!(mail.auth_login.as_deref(), Some(SMTP_USER), "{tls:?}");
        running.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn mail_published_while_the_relay_is_down_is_delivered_once_it_is_back() -> anyhow::Result<()>
{
    let mut setup = Setup::new(CaptureTls::StartTls).await?;
    setup.capture.stop()?;
    let running = setup.worker(None).await?;
    let producer = setup.queue(&Metrics::new("app")).await?;
    for n in 0..3 {
        producer.publish(MAIL_STREAM, &verify_mail(&format!("user{n}@example.com"))).await?;
    }
    eventually("failed attempts while the relay is down", Duration::from_secs(10), || {
        running.counter("mail_failed_total{kind=\"verify_email\",reason=\"relay_unavailable\"}")
            >= 6
    })
    .await?;
    assert!(producer.dead_letters(MAIL_STREAM, 10).await?.is_empty(), "nothing given up");

    setup.capture.restart()?;
    wait_for_messages(&setup.capture, 3).await?;
    wait_for_counter(&running, "mail_sent_total{kind=\"verify_email\"}", 3).await?;
    let mut recipients: Vec<String> =
        setup.capture.messages()?.into_iter().flat_map(|m| m.rcpt_tos).collect();
    recipients.sort();
    assert_eq!(recipients, ["user0@example.com", "user1@example.com", "user2@example.com"]);
    assert_eq!(running.counter("mail_sent_total{kind=\"verify_email\"}"), 3);
    assert_eq!(running.counter("mail_retried_total{kind=\"verify_email\"}"), 0, "no attempt used");
    running.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_message_is_dead_lettered_with_the_reply_after_one_attempt() -> anyhow::Result<()>
{
    let setup = Setup::new(CaptureTls::StartTls).await?;
    let running = setup.worker(None).await?;
    let producer = setup.queue(&Metrics::new("app")).await?;
    let job_id = producer.publish(MAIL_STREAM, &verify_mail("reject-me@example.com")).await?;
    producer.publish(MAIL_STREAM, &verify_mail("after@example.com")).await?;

    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = producer.dead_letters(MAIL_STREAM, 10).await?;
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].id, job_id);
    assert_eq!(dead[0].attempts, 1);
    assert!(
        dead[0].error.contains("550 5.1.1 <reject-me@example.com>: mailbox unavailable"),
        "{}",
        dead[0].error
    );
    assert!(dead[0].error.contains("RCPT TO"), "{}", dead[0].error);

    wait_for_messages(&setup.capture, 1).await?;
    // Well past the retry backoff: still one attempt.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(setup.capture.rcpt_attempts("reject-me@example.com"), 1, "no retry storm");
    assert_eq!(running.counter("mail_dead_lettered_total{kind=\"verify_email\"}"), 1);
    assert_eq!(running.counter("mail_failed_total{kind=\"verify_email\",reason=\"rejected\"}"), 1);
    running.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deferred_message_is_retried_with_backoff_then_delivered() -> anyhow::Result<()> {
    let setup = Setup::new(CaptureTls::StartTls).await?;
    let running = setup.worker(None).await?;
    setup
        .queue(&Metrics::new("app"))
        .await?
        .publish(MAIL_STREAM, &verify_mail("defer-once-x@example.com"))
        .await?;
    wait_for_messages(&setup.capture, 1).await?;
    assert_eq!(setup.capture.rcpt_attempts("defer-once-x@example.com"), 2);
    wait_for_counter(&running, "mail_sent_total{kind=\"verify_email\"}", 1).await?;
    assert_eq!(running.counter("mail_retried_total{kind=\"verify_email\"}"), 1);
    assert_eq!(running.counter("mail_failed_total{kind=\"verify_email\",reason=\"transient\"}"), 1);
    assert_eq!(running.counter("mail_sent_total{kind=\"verify_email\"}"), 1);
    running.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_credentials_keep_mail_waiting_instead_of_losing_it() -> anyhow::Result<()> {
    let setup = Setup::new(CaptureTls::StartTls).await?;
    let wrong = setup.worker(Some("not-the-password")).await?;
    let producer = setup.queue(&Metrics::new("app")).await?;
    producer.publish(MAIL_STREAM, &verify_mail("c@example.com")).await?;
    eventually("AUTH failures", Duration::from_secs(10), || {
        wrong.counter("mail_failed_total{kind=\"verify_email\",reason=\"relay_unavailable\"}") >= 2
    })
    .await?;
    assert!(setup.capture.messages()?.is_empty());
    assert!(producer.dead_letters(MAIL_STREAM, 10).await?.is_empty());
    wrong.stop().await?;

    let fixed = setup.worker(None).await?;
    wait_for_messages(&setup.capture, 1).await?;
    wait_for_counter(&fixed, "mail_sent_total{kind=\"verify_email\"}", 1).await?;
    fixed.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_leader_sends_and_a_standby_takes_over_when_it_stops() -> anyhow::Result<()> {
    let setup = Setup::new(CaptureTls::StartTls).await?;
    let first = setup.worker(None).await?;
    wait_for_leader(&first).await?;
    let second = setup.worker(None).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(second.worker.role(), Role::Standby);
    assert_eq!(counter(&second.metrics, "mail_leader"), 0);

    let producer = setup.queue(&Metrics::new("app")).await?;
    for n in 0..5 {
        producer.publish(MAIL_STREAM, &verify_mail(&format!("first{n}@example.com"))).await?;
    }
    wait_for_messages(&setup.capture, 5).await?;
    wait_for_counter(&first, "mail_sent_total{kind=\"verify_email\"}", 5).await?;
    assert_eq!(first.counter("mail_sent_total{kind=\"verify_email\"}"), 5);
    assert_eq!(second.counter("mail_sent_total{kind=\"verify_email\"}"), 0, "the standby sent");

    first.stop().await?;
    wait_for_leader(&second).await?;
    for n in 0..5 {
        producer.publish(MAIL_STREAM, &verify_mail(&format!("second{n}@example.com"))).await?;
    }
    wait_for_messages(&setup.capture, 10).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let messages = setup.capture.messages()?;
    assert_eq!(messages.len(), 10, "each message once");
    wait_for_counter(&second, "mail_sent_total{kind=\"verify_email\"}", 5).await?;
    assert_eq!(second.counter("mail_sent_total{kind=\"verify_email\"}"), 5);
    second.stop().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_notification_renders_and_sends() -> anyhow::Result<()> {
    let setup = Setup::new(CaptureTls::StartTls).await?;
    let running = setup.worker(None).await?;
    let job = MailJob::PushNotification(platform_mail::job::PushNotification {
        to: "watcher@example.com".into(),
        repository: "ada/engine".into(),
        pusher: "ada".into(),
        refs: vec![platform_mail::job::PushedRef {
            name: "refs/heads/main".into(),
            old: "1".repeat(40),
            new: "2".repeat(40),
            commits: vec![platform_mail::job::PushedCommit {
                id: "2".repeat(40),
                summary: "Fix <the> & bug".into(),
                author: "Ada".into(),
            }],
            total_commits: 1,
        }],
    });
    setup.queue(&Metrics::new("app")).await?.publish(MAIL_STREAM, &job).await?;
    wait_for_messages(&setup.capture, 1).await?;
    let mail = setup.capture.messages()?.remove(0);
    assert_eq!(mail.subject.as_deref(), Some("[ada/engine] ada pushed to main"));
    let text = mail.text.unwrap_or_default();
    assert!(text.contains("Updated branch main: 1 commit"), "{text}");
    assert!(text.contains("2222222222 Fix <the> & bug (Ada)"), "{text}");
    assert!(mail.html.unwrap_or_default().contains("Fix &#60;the&#62; &#38; bug"));
    running.stop().await
}
