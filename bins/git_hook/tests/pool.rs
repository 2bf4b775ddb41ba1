//! Three `git_hook` processes sharing 500 pushes to 20 repositories with two hooks each: every
//! delivery arrives, none twice after a recorded success, one replica killed mid-run, a failing
//! receiver retried without holding the other hook back.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::Utc;
use common::{Deployment, git, poll};
use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use platform_core::config::{EnvReader, NatsConfig, RedisConfig};
use platform_core::db::Database;
use platform_core::queue::{Queue, QueueOptions};
use platform_core::telemetry::Metrics;
use platform_git::events::{PushEvent, PushEvents, RefChange};
use platform_git::webhooks::HookEvent;
use platform_git::webhooks::hooks::{self, ContentType, EventSet, NewHook};
use platform_test_support::{Received, Receiver};

const REPOSITORIES: usize = 20;
const PUSHES_PER_REPOSITORY: usize = 25;
const FIRST_PHASE: usize = 12;
const ZERO: &str = "0000000000000000000000000000000000000000";

/// The receptions answered 200, by delivery id.
fn accepted(received: &[Received]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for got in received.iter().filter(|got| got.status == 200) {
        let id = got.header("x-github-delivery").expect("a delivery id").to_owned();
        *counts.entry(id).or_default() += 1;
    }
    counts
}

#[derive(diesel::QueryableByName)]
struct DeliveryRow {
    #[diesel(sql_type = Text)]
    id: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = BigInt)]
    delivered_attempts: i64,
}

/// Every delivery with its state, attempts and recorded successes.
async fn deliveries(database: &Database) -> anyhow::Result<Vec<DeliveryRow>> {
    let mut conn = database.get().await?;
    Ok(diesel::sql_query(
        "SELECT d.id::text AS id, d.state, d.attempts::bigint AS attempts, \
         (SELECT count(*) FROM webhook_attempts a WHERE a.delivery_id = d.id AND a.delivered) \
           AS delivered_attempts \
         FROM webhook_deliveries d",
    )
    .load(&mut conn)
    .await?)
}

/// Makes a line of `length` commits on `main` of `ada/{name}` (already created), with the real
/// git, and returns their ids, oldest first.
fn commit_chain(deployment: &Deployment, name: &str, length: usize) -> anyhow::Result<Vec<String>> {
    let work = deployment.scratch.join(format!("work-{name}"));
    std::fs::create_dir_all(&work)?;
    git(&work, &["init", "--quiet", "--initial-branch=main"])?;
    let mut chain = Vec::new();
    for step in 0..length {
        std::fs::write(work.join(format!("file{}.txt", step % 5)), format!("{name} {step}\n"))?;
        git(&work, &["add", "."])?;
        git(&work, &["commit", "--quiet", "-m", &format!("Step {step}")])?;
        chain.push(git(&work, &["rev-parse", "HEAD"])?);
    }
    // Fetched into the bare repository: a push would run its policy hooks, which only
    // gitserver can satisfy.
    let bare = deployment.repos().join(format!("ada/{name}.git"));
    git(&bare, &["fetch", "--quiet", &work.to_string_lossy(), "+main:main"])?;
    Ok(chain)
}

/// A hook of repository `id` that listens to pushes, sent to `url`.
async fn push_hook(
    conn: &mut diesel_async::AsyncPgConnection,
    id: i64,
    url: String,
) -> anyhow::Result<hooks::Hook> {
    let hook = NewHook {
        url,
        content_type: ContentType::Json,
        secret: Some("s3cret".to_owned()),
        events: EventSet::Only(vec![HookEvent::Push]),
        active: true,
        verify_tls: true,
    };
    Ok(hooks::create(conn, id, hook).await?)
}

/// The queue the deployment's services use, and push events recorded as gitserver records
/// them (the outbox, then the queue).
async fn push_events(deployment: &Deployment) -> anyhow::Result<PushEvents> {
    let vars = deployment.env();
    let mut env = EnvReader::new(&vars);
    let read = (NatsConfig::read(&mut env), RedisConfig::read(&mut env));
    let (nats, redis) = env.finish(read)?;
    let queue =
        Queue::connect(&nats, &redis, QueueOptions::default(), &Metrics::new("test")).await?;
    Ok(PushEvents::new(deployment.database.clone(), queue))
}

/// The push moving `main` of `ada/{name}` from `chain[step - 1]` to `chain[step]`.
fn push(ada: &common::User, id: i64, name: &str, chain: &[String], step: usize) -> PushEvent {
    PushEvent {
        id: uuid::Uuid::new_v4(),
        repository_id: id,
        repository: format!("ada/{name}"),
        pusher_id: ada.id,
        pusher: "ada".to_owned(),
        refs: vec![RefChange {
            name: "refs/heads/main".to_owned(),
            old: if step == 0 { ZERO.to_owned() } else { chain[step - 1].clone() },
            new: chain[step].clone(),
        }],
        pushed_at: Utc::now(),
        sequence: None,
    }
}

/// The `after` of each push `path` accepted, in the order first accepted.
fn afters_on(receiver: &Receiver, path: &str) -> Vec<String> {
    let mut afters = Vec::new();
    for got in receiver.received_on(path).iter().filter(|got| got.status == 200) {
        let after = common::json(got)["after"].as_str().unwrap_or_default().to_owned();
        if !afters.contains(&after) {
            afters.push(after);
        }
    }
    afters
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repositorys_pushes_arrive_in_push_order_from_three_replicas() -> anyhow::Result<()> {
    const PUSHES: usize = 40;
    let deployment = Deployment::new().await?;
    let ada = deployment.user("ada", true).await?;
    let receiver = Receiver::start("127.0.0.1:0").await?;
    let id = deployment.repo(&ada, "busy", false).await?;
    let chain = commit_chain(&deployment, "busy", PUSHES)?;
    push_hook(&mut *deployment.database.get().await?, id, receiver.url("/busy")).await?;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(deployment.git_hook(&[]).await?);
    }
    let events = push_events(&deployment).await?;
    // As fast as they can be recorded: the replicas fan them out side by side.
    for step in 0..PUSHES {
        events.record(&push(&ada, id, "busy", &chain, step)).await?;
    }
    poll(Duration::from_secs(60), "every push of busy", || {
        let count = afters_on(&receiver, "/busy").len();
        async move { Ok((count >= PUSHES).then_some(())) }
    })
    .await?;
    assert_eq!(afters_on(&receiver, "/busy"), chain, "the order of the pushes");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_deliver_every_push_once_through_a_crash() -> anyhow::Result<()> {
    let deployment = Deployment::new().await?;
    let ada = deployment.user("ada", true).await?;
    let receiver = Receiver::start("127.0.0.1:0").await?;
    receiver.fail_first("/flaky", 2, 500);

    // Twenty repositories, each with a line of 25 commits made by the real git; the pushes
    // move `main` along it one commit at a time.
    let mut chains = Vec::new();
    let mut repository_ids = Vec::new();
    let mut hook_paths = HashMap::new();
    for index in 0..REPOSITORIES {
        let name = format!("r{index}");
        let id = deployment.repo(&ada, &name, false).await?;
        let chain = commit_chain(&deployment, &name, PUSHES_PER_REPOSITORY)?;
        let mut conn = deployment.database.get().await?;
        for kind in ["steady", "other"] {
            let path = if index == 0 && kind == "other" {
                "/flaky".to_owned()
            } else {
                format!("/{kind}-{index}")
            };
            let hook = push_hook(&mut conn, id, receiver.url(&path)).await?;
            hook_paths.insert(hook.id, path);
        }
        chains.push(chain);
        repository_ids.push(id);
    }

    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(deployment.git_hook(&[]).await?);
    }

    let events = push_events(&deployment).await?;
    let names: Vec<String> = (0..REPOSITORIES).map(|index| format!("r{index}")).collect();
    let push = |index: usize, step: usize| {
        push(&ada, repository_ids[index], &names[index], &chains[index], step)
    };

    // The first push to r0 alone: its flaky hook answers 500 twice, then 200 to the same
    // delivery, while the steady hook of r0 is not held up.
    events.record(&push(0, 0)).await?;
    let flaky = poll(Duration::from_secs(60), "the flaky hook's third attempt", || {
        let flaky = receiver.received_on("/flaky");
        async move { Ok((flaky.len() >= 3).then_some(flaky)) }
    })
    .await?;
    assert_eq!(flaky.iter().map(|got| got.status).collect::<Vec<_>>(), [500, 500, 200]);
    let flaky_ids: Vec<_> = flaky.iter().map(|got| got.header("x-github-delivery")).collect();
    assert!(flaky_ids.iter().all(|id| *id == flaky_ids[0]), "retries keep the delivery id");
    let steady = receiver.received_on("/steady-0");
    assert!(
        steady.as_slice().first().is_some_and(|first| first.at < flaky[1].at),
        "the steady hook waited for the failing one"
    );

    // The rest of the first half: all three replicas up. Every delivery arrives exactly once.
    for step in 0..FIRST_PHASE {
        for index in 0..REPOSITORIES {
            if (index, step) != (0, 0) {
                events.record(&push(index, step)).await?;
            }
        }
    }
    let first_half = REPOSITORIES * FIRST_PHASE * 2;
    poll(Duration::from_secs(120), "the first half's deliveries", || {
        let count = accepted(&receiver.received()).len();
        async move { Ok((count >= first_half).then_some(())) }
    })
    .await?;
    let counts = accepted(&receiver.received());
    assert_eq!(counts.len(), first_half);
    let twice: Vec<_> = counts.iter().filter(|(_, count)| **count > 1).collect();
    assert!(twice.is_empty(), "delivered more than once with three healthy replicas: {twice:?}");

    // Second half: one replica is killed once deliveries are flowing.
    for step in FIRST_PHASE..PUSHES_PER_REPOSITORY {
        for index in 0..REPOSITORIES {
            events.record(&push(index, step)).await?;
        }
    }
    poll(Duration::from_secs(60), "the second half under way", || {
        let count = accepted(&receiver.received()).len();
        async move { Ok((count >= first_half + 60).then_some(())) }
    })
    .await?;
    replicas[1].kill().await?;
    let all = REPOSITORIES * PUSHES_PER_REPOSITORY * 2;
    poll(Duration::from_secs(180), "every delivery after the crash", || {
        let count = accepted(&receiver.received()).len();
        async move { Ok((count >= all).then_some(())) }
    })
    .await?;
    // A delivery the killed replica had sent but not recorded may have arrived already and stay
    // `delivering` until its hook's lease (30 s) expires and another replica sends it again.
    poll(Duration::from_secs(120), "every delivery recorded as delivered", || {
        let database = deployment.database.clone();
        async move {
            let rows = deliveries(&database).await?;
            Ok(rows.iter().all(|row| row.state == "delivered").then_some(()))
        }
    })
    .await?;
    // Give a repeat, if one were coming, time to arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = receiver.received();
    let counts = accepted(&received);
    assert_eq!(counts.len(), all, "every delivery arrived");

    let rows = deliveries(&deployment.database).await?;
    assert_eq!(rows.len(), all);
    let mut repeats = 0;
    for row in &rows {
        assert_eq!(row.state, "delivered", "delivery {}", row.id);
        assert_eq!(row.delivered_attempts, 1, "delivery {} recorded as delivered twice", row.id);
        let times = counts.get(&row.id).copied().unwrap_or(0);
        // A repeat is only possible for the delivery a killed worker had sent but not yet
        // recorded: never after a recorded success.
        if times > 1 {
            assert_eq!(times, 2, "delivery {} arrived {times} times", row.id);
            assert!(row.attempts >= 2, "delivery {} repeated without a second attempt", row.id);
            repeats += 1;
        }
    }
    assert!(
        repeats <= hook_paths.len(),
        "{repeats} repeats: more than the killed replica had in flight"
    );

    // Each steady hook got its repository's pushes in push order.
    for (index, chain) in chains.iter().enumerate().skip(1) {
        assert_eq!(
            &afters_on(&receiver, &format!("/steady-{index}")),
            chain,
            "the order of r{index}'s pushes"
        );
    }
    Ok(())
}
