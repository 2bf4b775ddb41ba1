//! The `git_hook` pool's webhook deliveries: how long a push takes to reach a receiver, and how
//! fast a backlog drains compared with an HTTP client posting the same requests directly.
//!
//! Run with `scripts/bench.sh hooks` (it starts PostgreSQL, builds `git_hook` in release and
//! passes its path in `GIT_HOOK_BIN`), or with the services of `scripts/services.sh` in the
//! environment: `GIT_HOOK_BIN=target/release/git_hook cargo bench -p git_hook --bench hooks`.
//!
//! The deployment is the pool tests' (`tests/pool.rs`): a fresh database, a Redis and a NATS
//! JetStream of its own, 20 repositories whose `main` is a line of 51 commits written by
//! `git fast-import` (each changing one of five files), two hooks per repository (`push` only,
//! JSON, signed) pointing at one [`Receiver`] in this process, which keeps connections open
//! (as receivers do: neither the pool's client nor the direct one pays a TCP set-up per
//! request) and records the instant each request was read in full. Pushes are published as
//! gitserver publishes them, with [`PushEvents::record`] (outbox row, then the queue), each
//! moving `main` of its repository one commit along the line; each makes one `push` delivery
//! per hook. `git_hook` runs as real release processes, with their default settings.
//!
//! 1. Push-to-delivery latency, with 1 and then 3 replicas: pushes at a fixed rate of 20 per
//!    second (each `record` started on schedule, whatever the previous ones take) for
//!    `BENCH_HOOKS_SECONDS` (default 30), round robin over the repositories, after a warm-up
//!    of one push per repository. A delivery's latency is the instant the receiver read it
//!    minus the instant just before `record` was called for its push, matched by the payload's
//!    `repository.full_name` and `after` (unique within a run). Every delivery must arrive, once.
//!    The receiver answers at once. Goal: p99 under 1 s.
//! 2. Deliveries per second, 3 replicas: a backlog of 2,000 deliveries (1,000 pushes, 50 per
//!    repository, recorded all at once, to 40 hooks) is made while the hooks are paused (their
//!    `disabled_until` in the future, as after failures: the engine leaves them alone); once all
//!    three reactions of every push are done, the pause is lifted and each hook woken (a `Wake`
//!    on `webhook_deliveries`, as the fan-out sends). The time is from there to the last answer
//!    the receiver wrote (the tables are vacuumed and analysed before, so that autovacuum
//!    does not run in the middle). "direct" posts the same 2,000 bodies (taken from the deliveries the
//!    pool made) with reqwest (one client, its connection pool kept warm across runs) and the
//!    engine's headers and signatures, one request at a time per hook and 40 hooks at once: the
//!    most the engine has in flight for 40 hooks; its time is from its start to the last answer.
//!    Both rows are measured with a receiver that answers after 50 ms (one doing work, as CI
//!    servers do) and with one that answers at once. Goal: the pool at least 0.8x direct.
//!    "cycle" is the median time between two consecutive requests to one hook: the receiver's
//!    time plus what the sender does between an answer and its next request.
//!
//! Where the time goes: each latency is cut at the delivery row's `created_at` and the
//! attempt's `started_at` ("made": `record`, the push's fan-out, the `webhooks` reaction and its
//! payload; "woken": the wake through the queue, the hook's lease and the claim; "sent": the
//! HTTP request); each drain gets the median cycle, the time until the last hook's first
//! request, and the CPU time per delivery of `git_hook`, PostgreSQL (the postmaster of
//! `$PLATFORM_SERVICES_DIR` and its backends), the brokers and this process, from `/proc`.
//!
//! Each backlog figure is the median of `BENCH_HOOKS_RUNS` (default 3) runs, direct and pool
//! alternating, after an untimed run of each. The whole takes about four minutes on 2 cores.
//!
//! Also: `BENCH_HOOKS_ONLY=latency` or `backlog` runs one half; `BENCH_HOOKS_QUEUE=redis` runs
//! the queue on Redis Streams alone (no `NATS_URL`); `BENCH_HOOKS_PG_STATS=1` prints, after each
//! drain, the statements PostgreSQL spent it on, per delivery (it needs `pg_stat_statements` in
//! `shared_preload_libraries`, and `pg_stat_statements.track_planning` for planning times).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use platform_core::accounts::users;
use platform_core::config::{DatabaseConfig, EnvReader, NatsConfig, RedisConfig};
use platform_core::db::{CORE_MIGRATIONS, Database};
use platform_core::queue::{Queue, QueueOptions};
use platform_core::telemetry::Metrics;
use platform_git::events::{PushEvent, PushEvents, RefChange};
use platform_git::records::{self, NewRepo};
use platform_git::store::RepoStore;
use platform_git::webhooks::HookEvent;
use platform_git::webhooks::engine::{DELIVERY_STREAM, Wake};
use platform_git::webhooks::hooks::{self, ContentType, EventSet, NewHook};
use platform_git::webhooks::sign::signature_headers;
use platform_test_support::{
    Broker, BrokerKind, Received, Receiver, ServiceProcess, fresh_database, unique_name,
    wait_for_status,
};
use tokio::task::JoinSet;

const OWNER: &str = "bench";
const SECRET: &str = "It's a Secret to Everybody";
const REPOSITORIES: usize = 20;
const HOOKS_PER_REPOSITORY: usize = 2;
const HOOKS: usize = REPOSITORIES * HOOKS_PER_REPOSITORY;
const PUSHES_PER_SECOND: u32 = 20;
/// Pushes per repository in a backlog run: 1,000 pushes, 2,000 deliveries.
const BACKLOG_STEPS: usize = 50;
const BACKLOG_PUSHES: usize = REPOSITORIES * BACKLOG_STEPS;
const BACKLOG_DELIVERIES: usize = BACKLOG_PUSHES * HOOKS_PER_REPOSITORY;
/// The reactions each push has (metadata, webhooks, notifications).
const REACTIONS: usize = 3;
/// What a receiver doing work takes to answer.
const WORKING: Duration = Duration::from_millis(50);
/// The latency goal.
const LATENCY_GOAL: Duration = Duration::from_secs(1);
/// The throughput goal, as a share of the direct client's.
const RATIO_GOAL: f64 = 0.8;
const USER_AGENT: &str = concat!("platform-Hookshot/", env!("CARGO_PKG_VERSION"));

fn env_number(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(value) => value.parse().with_context(|| format!("{name}={value:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// One repository: its record, its line of commits and its hooks.
struct Repo {
    id: i64,
    full_name: String,
    /// `chain[0]` is the first commit, `chain[BACKLOG_STEPS]` the tip.
    chain: Vec<String>,
    hooks: Vec<Hook>,
}

#[derive(Clone)]
struct Hook {
    id: i64,
    repository_id: i64,
    url: String,
}

struct Deployment {
    database: Database,
    env: HashMap<String, String>,
    // Kept for as long as the deployment lives: dropping them stops them.
    _redis: Broker,
    _nats: Broker,
    scratch: PathBuf,
    receiver: Receiver,
    repos: Vec<Repo>,
    pusher_id: i64,
    queue: Queue,
    events: PushEvents,
    git_hook: PathBuf,
    replicas: Vec<ServiceProcess>,
    /// The PostgreSQL server's main process, when `scripts/services.sh` says where it is.
    postmaster: Option<u32>,
    /// Whether each drain's statements are printed (`BENCH_HOOKS_PG_STATS`).
    pg_stats: bool,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

impl Deployment {
    async fn new(git_hook: PathBuf) -> anyhow::Result<Self> {
        let database_url = fresh_database().await?;
        let scratch = std::env::temp_dir().join(unique_name("bench-hooks"));
        std::fs::create_dir_all(scratch.join("repos"))?;
        let redis = Broker::start(BrokerKind::Redis)?;
        let nats = Broker::start(BrokerKind::Nats)?;
        let dir = |name: &str| scratch.join(name).to_string_lossy().into_owned();
        let mut env = HashMap::from([
            ("APP_DATABASE_URL".to_owned(), database_url),
            ("APP_REDIS_URL".to_owned(), redis.url()),
            ("NATS_URL".to_owned(), nats.url()),
            ("APP_DOMAIN_URL".to_owned(), "http://forge.bench".to_owned()),
            ("APP_REPOS_ROOT".to_owned(), dir("repos")),
            ("APP_AI_BASIC_URL".to_owned(), "http://127.0.0.1:9/v1".to_owned()),
            ("APP_AI_API_KEY".to_owned(), "sk-bench".to_owned()),
            ("APP_WEBHOOK_ALLOWED_HOSTS".to_owned(), "loopback".to_owned()),
        ]);
        if std::env::var("BENCH_HOOKS_QUEUE").is_ok_and(|queue| queue == "redis") {
            env.remove("NATS_URL");
        }
        let mut reader = EnvReader::new(&env);
        let read = (
            DatabaseConfig::read(&mut reader),
            NatsConfig::read(&mut reader),
            RedisConfig::read(&mut reader),
        );
        let (database_config, nats_config, redis_config) = reader.finish(read)?;
        let database = Database::connect(&database_config);
        database.migrate_all([CORE_MIGRATIONS, platform_git::GIT_MIGRATIONS]).await?;
        let queue = Queue::connect(
            &nats_config,
            &redis_config,
            QueueOptions::default(),
            &Metrics::new("bench"),
        )
        .await?;
        let events = PushEvents::new(database.clone(), queue.clone());

        let receiver = Receiver::start("127.0.0.1:0").await?;
        receiver.set_keep_alive(true);
        let store = RepoStore::new(scratch.join("repos"));
        let mut conn = database.get().await?;
        let email = format!("{OWNER}@example.com");
        let pusher = users::create(&mut conn, OWNER, &email, "not a password hash").await?;
        users::mark_email_verified(&mut conn, pusher.id).await?;
        let mut repos = Vec::new();
        for index in 0..REPOSITORIES {
            let name = format!("r{index}");
            let new = NewRepo {
                owner_id: pusher.id,
                name: &name,
                description: "",
                is_private: false,
                default_branch: "main",
                forked_from: None,
            };
            let id = records::insert(&mut conn, new).await?.id;
            store.create(OWNER, &name, "main").await?;
            let chain = commit_line(&store.path(OWNER, &name)?, index, &scratch)?;
            let mut repo_hooks = Vec::new();
            for number in 0..HOOKS_PER_REPOSITORY {
                let new = NewHook {
                    url: receiver.url(&format!("/r{index}/h{number}")),
                    content_type: ContentType::Json,
                    secret: Some(SECRET.to_owned()),
                    events: EventSet::Only(vec![HookEvent::Push]),
                    active: true,
                    verify_tls: true,
                };
                let hook = hooks::create(&mut conn, id, new).await?;
                repo_hooks.push(Hook { id: hook.id, repository_id: id, url: hook.url });
            }
            repos.push(Repo { id, full_name: format!("{OWNER}/{name}"), chain, hooks: repo_hooks });
        }
        let pg_stats = std::env::var_os("BENCH_HOOKS_PG_STATS").is_some();
        if pg_stats {
            diesel::sql_query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .execute(&mut conn)
                .await?;
        }
        drop(conn);
        Ok(Self {
            database,
            env,
            _redis: redis,
            _nats: nats,
            scratch,
            receiver,
            repos,
            pusher_id: pusher.id,
            queue,
            events,
            git_hook,
            replicas: Vec::new(),
            postmaster: std::env::var_os("PLATFORM_SERVICES_DIR")
                .map(|dir| Path::new(&dir).join("postgres/postmaster.pid"))
                .and_then(|path| std::fs::read_to_string(path).ok())
                .and_then(|pid| pid.lines().next().and_then(|line| line.trim().parse().ok())),
            pg_stats,
        })
    }

    /// Starts replicas until `count` run, and waits until each is ready.
    async fn scale_to(&mut self, count: usize) -> anyhow::Result<()> {
        while self.replicas.len() < count {
            let replica = ServiceProcess::start(&self.git_hook, &self.env).await?;
            wait_for_status(&replica.url("/readyz"), 200, Duration::from_secs(60)).await?;
            self.replicas.push(replica);
        }
        Ok(())
    }

    /// The push moving `main` of repository `index` from commit `step - 1` to `step`.
    fn push(&self, index: usize, step: usize) -> PushEvent {
        let repo = &self.repos[index];
        PushEvent {
            id: uuid::Uuid::new_v4(),
            repository_id: repo.id,
            repository: repo.full_name.clone(),
            pusher_id: self.pusher_id,
            pusher: OWNER.to_owned(),
            refs: vec![RefChange {
                name: "refs/heads/main".to_owned(),
                old: repo.chain[step - 1].clone(),
                new: repo.chain[step].clone(),
            }],
            pushed_at: Utc::now(),
            sequence: None,
        }
    }

    fn cpu(&self) -> Cpu {
        let replicas: Vec<u32> = self.replicas.iter().filter_map(ServiceProcess::id).collect();
        Cpu::now(&replicas, self.postmaster)
    }

    fn hooks(&self) -> impl Iterator<Item = &Hook> {
        self.repos.iter().flat_map(|repo| &repo.hooks)
    }

    /// Waits until the receiver has answered `count` requests; `None` after `limit`.
    async fn received(&self, count: usize, limit: Duration) -> Option<Vec<Received>> {
        let deadline = Instant::now() + limit;
        while self.receiver.received_count() < count {
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Some(self.receiver.take_received())
    }

    async fn count(&self, query: &str) -> anyhow::Result<i64> {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            count: i64,
        }
        let mut conn = self.database.get().await?;
        Ok(diesel::sql_query(query).get_result::<Count>(&mut conn).await?.count)
    }

    async fn execute(&self, statement: &str) -> anyhow::Result<()> {
        let mut conn = self.database.get().await?;
        diesel::sql_query(statement).execute(&mut conn).await?;
        Ok(())
    }
}

/// Writes a line of `BACKLOG_STEPS + 1` commits to `main` of the bare repository at `bare` with
/// `git fast-import`, and returns their ids, oldest first.
fn commit_line(bare: &Path, index: usize, scratch: &Path) -> anyhow::Result<Vec<String>> {
    let mut stream = String::new();
    for step in 0..=BACKLOG_STEPS {
        let time = 1_760_000_000 + step * 60;
        let message = format!("Step {step} of r{index}\n\nMoves the work along by one step.\n");
        let content: String = (0..40)
            .map(|line| format!("// r{index} line {line}: {}\n", step * 1000 + line))
            .collect();
        let _ = write!(
            stream,
            "commit refs/heads/main\nmark :{mark}\n\
             author Ada Lovelace <{OWNER}@example.com> {time} +0000\n\
             committer Ada Lovelace <{OWNER}@example.com> {time} +0000\n\
             data {message_len}\n{message}",
            mark = step + 1,
            message_len = message.len(),
        );
        if step > 0 {
            let _ = writeln!(stream, "from :{step}");
        }
        let _ = write!(
            stream,
            "M 100644 inline src/file{}.rs\ndata {}\n{content}\n",
            step % 5,
            content.len()
        );
    }
    let marks = scratch.join(format!("marks-{index}"));
    let mut child = std::process::Command::new("git")
        .arg("fast-import")
        .arg("--quiet")
        .arg(format!("--export-marks={}", marks.display()))
        .current_dir(bare)
        .stdin(Stdio::piped())
        .spawn()
        .context("cannot run git fast-import")?;
    child.stdin.take().context("git fast-import's input")?.write_all(stream.as_bytes())?;
    anyhow::ensure!(child.wait()?.success(), "git fast-import failed in {bare:?}");
    let mut chain = vec![String::new(); BACKLOG_STEPS + 1];
    for line in std::fs::read_to_string(&marks)?.lines() {
        let (mark, id) = line.split_once(' ').context("a marks line")?;
        let mark: usize = mark.trim_start_matches(':').parse()?;
        let slot = mark.checked_sub(1).and_then(|index| chain.get_mut(index));
        *slot.with_context(|| format!("git fast-import made an unknown mark :{mark}"))? =
            id.to_owned();
    }
    anyhow::ensure!(chain.iter().all(|id| id.len() == 40), "git fast-import left out commits");
    Ok(chain)
}

/// The `(repository.full_name, after)` of a push delivery.
fn push_key(request: &Received) -> Option<(String, String)> {
    let body: serde_json::Value = serde_json::from_slice(&request.body).ok()?;
    let full_name = body["repository"]["full_name"].as_str()?.to_owned();
    Some((full_name, body["after"].as_str()?.to_owned()))
}

/// The `p`-quantile (nearest rank) of sorted `values`.
fn quantile<T: Copy>(sorted: &[T], p: f64) -> T {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    quantile(&values, 0.5)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Where one delivery's time went.
#[derive(Clone, Copy)]
struct Sample {
    /// From just before `record` to the receiver's reading of it.
    total: Duration,
    /// To the delivery row (`webhook_deliveries.created_at`): `record`, the fan-out of the push,
    /// the `webhooks` reaction's turn and its payload.
    made: Duration,
    /// From there to the attempt (`webhook_attempts.started_at`): the wake through the queue,
    /// the hook's lease, the claim.
    woken: Duration,
    /// From there to the receiver's reading of it: the HTTP request.
    sent: Duration,
}

struct Latency {
    replicas: usize,
    pushes: usize,
    samples: Vec<Sample>,
    /// How long `record` took, sorted.
    records: Vec<Duration>,
}

impl Latency {
    /// The sorted values of one part of the samples.
    fn sorted(&self, part: fn(&Sample) -> Duration) -> Vec<Duration> {
        let mut values: Vec<Duration> = self.samples.iter().map(part).collect();
        values.sort();
        values
    }
}

/// When each delivery was made and attempted, by delivery id.
async fn delivery_times(
    deployment: &Deployment,
    ids: Vec<String>,
) -> anyhow::Result<HashMap<String, (DateTime<Utc>, DateTime<Utc>)>> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        id: String,
        #[diesel(sql_type = Timestamptz)]
        created_at: DateTime<Utc>,
        #[diesel(sql_type = Timestamptz)]
        started_at: DateTime<Utc>,
    }
    let mut conn = deployment.database.get().await?;
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT d.id::text AS id, d.created_at, a.started_at FROM webhook_deliveries d \
         JOIN webhook_attempts a ON a.delivery_id = d.id WHERE d.id = ANY($1::uuid[])",
    )
    .bind::<Array<Text>, _>(ids)
    .load(&mut conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.id, (row.created_at, row.started_at))).collect())
}

/// Records `pushes` pushes at 20 per second starting at commit `first_step` and measures how
/// long each delivery took to arrive.
async fn latency_run(
    deployment: &Deployment,
    pushes: usize,
    first_step: usize,
) -> anyhow::Result<(Vec<Sample>, Vec<Duration>)> {
    deployment.receiver.take_received();
    let interval = Duration::from_secs(1) / PUSHES_PER_SECOND;
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let mut recording = JoinSet::new();
    for number in 0..pushes {
        let event = deployment.push(number % REPOSITORIES, first_step + number / REPOSITORIES);
        let events = deployment.events.clone();
        let due = start + interval * u32::try_from(number)?;
        recording.spawn(async move {
            tokio::time::sleep_until(due).await;
            let before = (Instant::now(), Utc::now());
            events.record(&event).await?;
            let key = (event.repository, event.refs[0].new.clone());
            anyhow::Ok((key, before, before.0.elapsed()))
        });
    }
    let mut pushed_at = HashMap::new();
    let mut records = Vec::new();
    while let Some(recorded) = recording.join_next().await {
        let (key, before, took) = recorded??;
        pushed_at.insert(key, before);
        records.push(took);
    }
    let expected = pushes * HOOKS_PER_REPOSITORY;
    let received =
        deployment.received(expected, Duration::from_secs(60)).await.with_context(|| {
            format!(
                "only {} of {expected} deliveries arrived within 60 s of the last push",
                deployment.receiver.received_count()
            )
        })?;
    // Let a repeat, if one were coming, arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let repeats = deployment.receiver.take_received().len();
    anyhow::ensure!(repeats == 0, "{repeats} deliveries arrived more than once");
    let ids = received
        .iter()
        .map(|request| request.header("x-github-delivery").unwrap_or_default().to_owned())
        .collect();
    let times = delivery_times(deployment, ids).await?;
    let mut per_push: HashMap<&(String, String), usize> = HashMap::new();
    let mut samples = Vec::new();
    for request in &received {
        anyhow::ensure!(request.status == 200, "the receiver answered {}", request.status);
        let key = push_key(request).context("a push payload without repository or after")?;
        let (key, (before, before_utc)) =
            pushed_at.get_key_value(&key).context("a delivery of no push")?;
        *per_push.entry(key).or_default() += 1;
        let id = request.header("x-github-delivery").context("a delivery without an id")?;
        let (created_at, started_at) = times.get(id).context("a delivery not recorded")?;
        let total = request.read_at.saturating_duration_since(*before);
        let arrived = *before_utc + chrono::Duration::from_std(total)?;
        let between =
            |from: DateTime<Utc>, to: DateTime<Utc>| (to - from).to_std().unwrap_or_default();
        samples.push(Sample {
            total,
            made: between(*before_utc, *created_at),
            woken: between(*created_at, *started_at),
            sent: between(*started_at, arrived),
        });
    }
    anyhow::ensure!(
        per_push.len() == pushes && per_push.values().all(|count| *count == HOOKS_PER_REPOSITORY),
        "not every push was delivered once to each of its hooks"
    );
    records.sort();
    Ok((samples, records))
}

async fn latency(
    deployment: &mut Deployment,
    replicas: usize,
    seconds: usize,
) -> anyhow::Result<Latency> {
    deployment.scale_to(replicas).await?;
    eprintln!("latency with {replicas} replica(s): warm-up, then {seconds} s of pushes...");
    latency_run(deployment, REPOSITORIES, 1).await?;
    let pushes = seconds * PUSHES_PER_SECOND as usize;
    let (samples, records) = latency_run(deployment, pushes, 1).await?;
    Ok(Latency { replicas, pushes, samples, records })
}

/// CPU time used so far, in seconds, by the parts of the deployment (Linux: `/proc`).
#[derive(Clone, Copy, Default)]
struct Cpu {
    git_hook: f64,
    postgres: f64,
    /// This process's NATS and Redis.
    brokers: f64,
    /// This process: the receiver, the direct client, the polling.
    bench: f64,
}

impl Cpu {
    /// Reads the CPU time of `replicas`, of the PostgreSQL server whose postmaster is
    /// `postmaster` and its backends, of this process and of its brokers.
    fn now(replicas: &[u32], postmaster: Option<u32>) -> Self {
        let me = std::process::id();
        let mut cpu = Self::default();
        let Ok(entries) = std::fs::read_dir("/proc") else { return cpu };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
            let comm = &stat[open + 1..close];
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let field = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok());
            let (Some(ppid), Some(utime), Some(stime)) = (field(1), field(11), field(12)) else {
                continue;
            };
            let seconds = (utime + stime) / 100.0;
            let ppid = ppid as u32;
            if pid == me {
                cpu.bench += seconds;
            } else if replicas.contains(&pid) {
                cpu.git_hook += seconds;
            } else if postmaster.is_some_and(|postmaster| pid == postmaster || ppid == postmaster) {
                cpu.postgres += seconds;
            } else if ppid == me && (comm == "nats-server" || comm == "redis-server") {
                cpu.brokers += seconds;
            }
        }
        cpu
    }

    fn since(self, before: Self) -> Self {
        Self {
            git_hook: self.git_hook - before.git_hook,
            postgres: self.postgres - before.postgres,
            brokers: self.brokers - before.brokers,
            bench: self.bench - before.bench,
        }
    }
}

/// One timed drain of the backlog.
struct Drain {
    /// From the start to the receiver's last answer.
    elapsed: Duration,
    /// The median time between two consecutive requests to one hook.
    cycle: Duration,
    /// From the start to the first request of the hook sent to last.
    last_start: Duration,
    /// CPU time used meanwhile.
    cpu: Cpu,
}

/// Checks that every delivery of the backlog arrived once and was accepted, and times the
/// drain from `start`.
fn drained(received: &[Received], start: Instant, cpu: Cpu) -> anyhow::Result<Drain> {
    anyhow::ensure!(
        received.len() == BACKLOG_DELIVERIES,
        "{} requests for {BACKLOG_DELIVERIES} deliveries",
        received.len()
    );
    let mut ids = std::collections::HashSet::new();
    let mut by_hook: BTreeMap<&str, Vec<Instant>> = BTreeMap::new();
    for request in received {
        anyhow::ensure!(request.status == 200, "the receiver answered {}", request.status);
        let id = request.header("x-github-delivery").context("a delivery without an id")?;
        anyhow::ensure!(ids.insert(id), "delivery {id} arrived twice");
        by_hook.entry(&request.path).or_default().push(request.read_at);
    }
    let last = received.iter().map(|request| request.at).max().context("no request")?;
    let mut gaps = Vec::new();
    let mut last_start = Duration::ZERO;
    for arrivals in by_hook.values_mut() {
        arrivals.sort();
        gaps.extend(arrivals.windows(2).map(|pair| pair[1] - pair[0]));
        last_start = last_start.max(arrivals[0].saturating_duration_since(start));
    }
    gaps.sort();
    Ok(Drain { elapsed: last - start, cycle: quantile(&gaps, 0.5), last_start, cpu })
}

/// What the direct client sends to one hook.
struct HookBodies {
    hook: Hook,
    bodies: Vec<String>,
}

/// The payloads of the last backlog the pool made, per hook, oldest first.
async fn backlog_bodies(deployment: &Deployment) -> anyhow::Result<Vec<HookBodies>> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        hook_id: i64,
        #[diesel(sql_type = Text)]
        payload: String,
    }
    let mut conn = deployment.database.get().await?;
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT hook_id, payload FROM (SELECT hook_id, payload, seq FROM webhook_deliveries \
         ORDER BY seq DESC LIMIT $1) last ORDER BY seq",
    )
    .bind::<BigInt, _>(i64::try_from(BACKLOG_DELIVERIES)?)
    .load(&mut conn)
    .await?;
    let mut bodies: HashMap<i64, Vec<String>> = HashMap::new();
    for row in rows {
        bodies.entry(row.hook_id).or_default().push(row.payload);
    }
    let all: Vec<HookBodies> = deployment
        .hooks()
        .map(|hook| HookBodies {
            hook: hook.clone(),
            bodies: bodies.remove(&hook.id).unwrap_or_default(),
        })
        .collect();
    anyhow::ensure!(
        all.iter().all(|hook| hook.bodies.len() == BACKLOG_STEPS),
        "the last backlog does not hold {BACKLOG_STEPS} deliveries per hook"
    );
    Ok(all)
}

/// Posts every body to its hook as the engine does (its headers and signatures), one request at
/// a time per hook, every hook at once.
async fn direct_drain(
    deployment: &Deployment,
    client: &reqwest::Client,
    hooks: &[HookBodies],
) -> anyhow::Result<Drain> {
    deployment.receiver.take_received();
    let cpu = deployment.cpu();
    let start = Instant::now();
    let mut sending = JoinSet::new();
    for HookBodies { hook, bodies } in hooks {
        let (client, hook, bodies) = (client.clone(), hook.clone(), bodies.clone());
        sending.spawn(async move {
            for body in bodies {
                let id = uuid::Uuid::new_v4().to_string();
                let (hook_id, repository_id) =
                    (hook.id.to_string(), hook.repository_id.to_string());
                let mut request = client
                    .post(&hook.url)
                    .header("Content-Type", "application/json")
                    .header("User-Agent", USER_AGENT)
                    .header("X-GitHub-Event", "push")
                    .header("X-GitHub-Delivery", &id)
                    .header("X-GitHub-Hook-ID", &hook_id)
                    .header("X-GitHub-Hook-Installation-Target-Type", "repository")
                    .header("X-GitHub-Hook-Installation-Target-ID", &repository_id)
                    .header("X-Gitea-Event", "push")
                    .header("X-Gitea-Event-Type", "push")
                    .header("X-Gitea-Delivery", &id)
                    .header("X-Gitea-Hook-ID", &hook_id);
                let timestamp = Utc::now().timestamp();
                for (name, value) in
                    signature_headers(Some(SECRET), &id, timestamp, body.as_bytes())
                {
                    request = request.header(name, value);
                }
                let response = request.body(body).send().await?;
                anyhow::ensure!(
                    response.status() == 200,
                    "the receiver answered {}",
                    response.status()
                );
                response.bytes().await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(sent) = sending.join_next().await {
        sent??;
    }
    let cpu = deployment.cpu().since(cpu);
    let received = deployment.receiver.take_received();
    drained(&received, start, cpu)
}

/// One backlog run of the pool: the pushes recorded while the hooks are paused, then the pause
/// lifted. Returns the drain and how long the fan-out of the pushes took.
async fn pool_drain(deployment: &Deployment) -> anyhow::Result<(Drain, Duration)> {
    deployment.execute("UPDATE webhooks SET disabled_until = now() + interval '1 hour'").await?;
    let done_before = deployment.count("SELECT count(*) AS count FROM push_reactions_done").await?;
    let fan_out_start = Instant::now();
    let mut recording = JoinSet::new();
    for number in 0..BACKLOG_PUSHES {
        let event = deployment.push(number % REPOSITORIES, 1 + number / REPOSITORIES);
        let events = deployment.events.clone();
        recording.spawn(async move { events.record(&event).await });
    }
    while let Some(recorded) = recording.join_next().await {
        recorded??;
    }
    let done = done_before + i64::try_from(BACKLOG_PUSHES * REACTIONS)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = deployment.count("SELECT count(*) AS count FROM push_reactions_done").await?;
        if now >= done {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{} of {done} reactions done", now);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fan_out = fan_out_start.elapsed();
    let waiting = deployment
        .count("SELECT count(*) AS count FROM webhook_deliveries WHERE state = 'pending'")
        .await?;
    anyhow::ensure!(
        waiting == i64::try_from(BACKLOG_DELIVERIES)?,
        "{waiting} deliveries waiting, not {BACKLOG_DELIVERIES}"
    );
    let received = deployment.receiver.take_received();
    anyhow::ensure!(received.is_empty(), "{} requests to paused hooks", received.len());

    // The backlog's inserts would otherwise set autovacuum and autoanalyze off in the middle
    // of the drain, on two cores: what is timed is the engine, on tables as they are between
    // bursts.
    deployment.execute("VACUUM ANALYZE webhook_deliveries, webhook_attempts, webhooks").await?;
    if deployment.pg_stats {
        deployment.execute("SELECT pg_stat_statements_reset()").await?;
    }
    let cpu = deployment.cpu();
    let start = Instant::now();
    deployment.execute("UPDATE webhooks SET disabled_until = NULL").await?;
    for hook in deployment.hooks() {
        deployment.queue.publish(DELIVERY_STREAM, &Wake { hook_id: hook.id }).await?;
    }
    let received = deployment
        .received(BACKLOG_DELIVERIES, Duration::from_secs(120))
        .await
        .with_context(|| {
            format!(
                "only {} of {BACKLOG_DELIVERIES} deliveries arrived within 120 s",
                deployment.receiver.received_count()
            )
        })?;
    let cpu = deployment.cpu().since(cpu);
    if deployment.pg_stats {
        print_statements(deployment).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let repeats = deployment.receiver.take_received().len();
    anyhow::ensure!(repeats == 0, "{repeats} deliveries arrived more than once");
    Ok((drained(&received, start, cpu)?, fan_out))
}

/// Prints, to standard error, the statements PostgreSQL spent the most time on since the last
/// reset, per delivery of the backlog.
async fn print_statements(deployment: &Deployment) -> anyhow::Result<()> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        calls: i64,
        #[diesel(sql_type = diesel::sql_types::Double)]
        total: f64,
        #[diesel(sql_type = diesel::sql_types::Double)]
        plan: f64,
        #[diesel(sql_type = Text)]
        query: String,
    }
    let mut conn = deployment.database.get().await?;
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT calls, total_exec_time AS total, total_plan_time AS plan, query FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         ORDER BY total_exec_time DESC LIMIT 15",
    )
    .load(&mut conn)
    .await?;
    let per = BACKLOG_DELIVERIES as f64;
    eprintln!("statements of the drain (pg_stat_statements), per delivery:");
    eprintln!("  calls  exec ms  plan ms  statement");
    for row in rows {
        let query: String = row.query.split_whitespace().collect::<Vec<_>>().join(" ");
        let query: String = query.chars().take(150).collect();
        eprintln!(
            "  {:>5.2}  {:>7.3}  {:>7.3}  {query}",
            row.calls as f64 / per,
            row.total / per,
            row.plan / per
        );
    }
    Ok(())
}

struct Throughput {
    receiver: &'static str,
    direct: Vec<Drain>,
    pool: Vec<Drain>,
    fan_outs: Vec<Duration>,
}

async fn throughput(
    deployment: &Deployment,
    client: &reqwest::Client,
    receiver: &'static str,
    delay: Duration,
    runs: usize,
) -> anyhow::Result<Throughput> {
    deployment.receiver.set_delay(delay);
    eprintln!("backlog, receiver answering {receiver}: an untimed run of each, then {runs}...");
    pool_drain(deployment).await?;
    let bodies = backlog_bodies(deployment).await?;
    direct_drain(deployment, client, &bodies).await?;
    let mut result =
        Throughput { receiver, direct: Vec::new(), pool: Vec::new(), fan_outs: Vec::new() };
    for _ in 0..runs {
        result.direct.push(direct_drain(deployment, client, &bodies).await?);
        let (drain, fan_out) = pool_drain(deployment).await?;
        result.pool.push(drain);
        result.fan_outs.push(fan_out);
    }
    Ok(result)
}

fn print_latency(rows: &[Latency], seconds: usize) {
    println!(
        "Push-to-delivery latency: {PUSHES_PER_SECOND} pushes/s for {seconds} s over {REPOSITORIES} \
         repositories, {HOOKS_PER_REPOSITORY} hooks each (receiver answering at once), in ms"
    );
    println!(
        "| replicas | pushes | deliveries | p50 | p99 | max | goal: p99 < 1 s | p50 / p99 of: made | woken | sent | record |"
    );
    println!(
        "|----------|--------|------------|-----|-----|-----|-----------------|--------------------|-------|------|--------|"
    );
    let both = |sorted: &[Duration]| {
        format!("{:.0} / {:.0}", ms(quantile(sorted, 0.5)), ms(quantile(sorted, 0.99)))
    };
    for row in rows {
        let total = row.sorted(|sample| sample.total);
        let p99 = quantile(&total, 0.99);
        println!(
            "| {:>8} | {:>6} | {:>10} | {:>3.0} | {:>3.0} | {:>3.0} | {:<15} | {:>18} | {:>5} | {:>4} | {:>6} |",
            row.replicas,
            row.pushes,
            total.len(),
            ms(quantile(&total, 0.5)),
            ms(p99),
            ms(quantile(&total, 1.0)),
            if p99 < LATENCY_GOAL { "met" } else { "MISSED" },
            both(&row.sorted(|sample| sample.made)),
            both(&row.sorted(|sample| sample.woken)),
            both(&row.sorted(|sample| sample.sent)),
            both(&row.records),
        );
    }
}

fn rate(drains: &[Drain]) -> f64 {
    median(
        drains
            .iter()
            .map(|drain| BACKLOG_DELIVERIES as f64 / drain.elapsed.as_secs_f64())
            .collect(),
    )
}

fn print_throughput(rows: &[Throughput], runs: usize) {
    println!(
        "Deliveries per second: a backlog of {BACKLOG_DELIVERIES} deliveries ({BACKLOG_PUSHES} pushes, \
         {HOOKS} hooks) drained by 3 replicas, against a direct reqwest client with {HOOKS} requests \
         in flight; median of {runs} runs"
    );
    println!("| receiver answers | direct (/s) | git_hook x3 (/s) | ratio | goal: >= 0.80x |");
    println!("|------------------|-------------|------------------|-------|----------------|");
    for row in rows {
        let (direct, pool) = (rate(&row.direct), rate(&row.pool));
        let ratio = pool / direct;
        println!(
            "| {:<16} | {direct:>11.0} | {pool:>16.0} | {ratio:>4.2}x | {:<14} |",
            row.receiver,
            if ratio >= RATIO_GOAL { "met" } else { "MISSED" },
        );
    }
    println!();
    println!(
        "Where the time goes (medians): cycle = time between two requests to one hook; start = until \
         the last hook's first request; CPU ms per delivery, by process"
    );
    println!(
        "| receiver answers | sender      | cycle (ms) | start (ms) | CPU: git_hook | postgres | brokers | bench |"
    );
    println!(
        "|------------------|-------------|------------|------------|---------------|----------|---------|-------|"
    );
    for row in rows {
        for (sender, drains) in [("direct", &row.direct), ("git_hook x3", &row.pool)] {
            let pick = |part: fn(&Drain) -> f64| median(drains.iter().map(part).collect());
            let per = |part: fn(&Cpu) -> f64| {
                median(drains.iter().map(|drain| part(&drain.cpu)).collect()) * 1000.0
                    / BACKLOG_DELIVERIES as f64
            };
            println!(
                "| {:<16} | {sender:<11} | {:>10.1} | {:>10.0} | {:>13.2} | {:>8.2} | {:>7.2} | {:>5.2} |",
                row.receiver,
                pick(|drain| ms(drain.cycle)),
                pick(|drain| ms(drain.last_start)),
                per(|cpu| cpu.git_hook),
                per(|cpu| cpu.postgres),
                per(|cpu| cpu.brokers),
                per(|cpu| cpu.bench),
            );
        }
    }
    let fan_outs: Vec<f64> =
        rows.iter().flat_map(|row| &row.fan_outs).map(Duration::as_secs_f64).collect();
    let fan_out = median(fan_outs);
    println!(
        "(making each backlog: {BACKLOG_PUSHES} pushes recorded at once, and all {REACTIONS} reactions \
         of each done by the 3 replicas, took a median {fan_out:.1} s: {:.0} pushes/s)",
        BACKLOG_PUSHES as f64 / fan_out
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let git_hook = std::env::var_os("GIT_HOOK_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_git_hook")), PathBuf::from);
    anyhow::ensure!(
        git_hook.exists(),
        "{git_hook:?} is missing: cargo build --release -p git_hook"
    );
    let seconds = env_number("BENCH_HOOKS_SECONDS", 30)?;
    // Each second moves every repository one commit along its line.
    let most = REPOSITORIES * BACKLOG_STEPS / PUSHES_PER_SECOND as usize;
    anyhow::ensure!((1..=most).contains(&seconds), "BENCH_HOOKS_SECONDS is 1 to {most}");
    let runs = env_number("BENCH_HOOKS_RUNS", 3)?.max(1);
    eprintln!(
        "setting up {REPOSITORIES} repositories with {HOOKS_PER_REPOSITORY} hooks each; \
         git_hook is {git_hook:?}"
    );
    let mut deployment = Deployment::new(git_hook).await?;

    let only = std::env::var("BENCH_HOOKS_ONLY").unwrap_or_default();
    let mut latencies = Vec::new();
    if only != "backlog" {
        for replicas in [1, 3] {
            latencies.push(latency(&mut deployment, replicas, seconds).await?);
        }
    }
    deployment.scale_to(3).await?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut throughputs = Vec::new();
    if only != "latency" {
        for (receiver, delay) in [("after 50 ms", WORKING), ("at once", Duration::ZERO)] {
            throughputs.push(throughput(&deployment, &client, receiver, delay, runs).await?);
        }
    }

    if !latencies.is_empty() {
        println!();
        print_latency(&latencies, seconds);
    }
    if !throughputs.is_empty() {
        println!();
        print_throughput(&throughputs, runs);
    }
    Ok(())
}
