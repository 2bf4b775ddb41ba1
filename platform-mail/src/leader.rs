//! One active sender: a leader lease held as a PostgreSQL advisory lock.
//!
//! The leader holds a session-level advisory lock on a connection of its own. PostgreSQL releases
//! it the moment that session ends, so when the leader's process dies the lock is free at once,
//! and a standby, which tries to take it every few seconds, takes over within one poll.
//!
//! When the leader is cut off from PostgreSQL rather than dead, the lock outlives it until the
//! server notices the silence. The lock session therefore asks the server to probe the peer with
//! TCP keepalives (no answer for 5 + 3 × 2 seconds ends the session), while the leader runs a
//! query on it every few seconds and stands down as soon as one fails or takes longer than the
//! check timeout: a cut-off leader stops before the server can hand the lock to anyone else.

use std::time::Duration;

use diesel::sql_types::{BigInt, Bool};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection as _};
use platform_core::db::Database;
use tokio_util::sync::CancellationToken;

/// How a [`LeaderLease`] polls and checks.
#[derive(Clone, Debug)]
pub struct LeaseOptions {
    /// How often a standby tries to take the lock. Default 5 s.
    pub poll: Duration,
    /// How often the leader checks that its lock session is alive. Default 3 s.
    pub check_every: Duration,
    /// The longest a check (or taking the lock) may take. Default 4 s.
    pub check_timeout: Duration,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(5),
            check_every: Duration::from_secs(3),
            check_timeout: Duration::from_secs(4),
        }
    }
}

/// A named lease that at most one process of a deployment holds at a time.
#[derive(Clone, Debug)]
pub struct LeaderLease {
    database: Database,
    name: String,
    key: i64,
    options: LeaseOptions,
}

/// Held while this process is the leader. Dropping it, or [`Leadership::release`], gives the
/// lease up.
#[derive(Debug)]
pub struct Leadership {
    lost: CancellationToken,
    release: CancellationToken,
    watcher: tokio::task::JoinHandle<()>,
}

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// FNV-1a: a stable 64-bit lock key from the lease's name.
fn lock_key(name: &str) -> i64 {
    let hash =
        format!("platform-mail:{name}").bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    i64::from_ne_bytes(hash.to_ne_bytes())
}

impl LeaderLease {
    /// Returns the lease called `name` in `database`.
    pub fn new(database: Database, name: &str, options: LeaseOptions) -> Self {
        Self { database, name: name.to_owned(), key: lock_key(name), options }
    }

    /// Waits until this process holds the lease, or `stop` is cancelled (then `None`).
    pub async fn acquire(&self, stop: &CancellationToken) -> Option<Leadership> {
        let mut session: Option<AsyncPgConnection> = None;
        let mut failures = 0_u32;
        loop {
            let attempt =
                tokio::time::timeout(self.options.check_timeout, self.try_lock(&mut session));
            match attempt.await {
                Ok(Ok(true)) => {
                    let conn = session.take()?;
                    tracing::info!(lease = %self.name, "took the leader lease");
                    return Some(self.hold(conn));
                }
                Ok(Ok(false)) => failures = 0,
                Ok(Err(error)) => {
                    session = None;
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(lease = %self.name, %error, "cannot try the leader lease; retrying");
                    }
                }
                Err(_) => {
                    session = None;
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(lease = %self.name, "trying the leader lease timed out; retrying");
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(self.options.poll) => {}
            }
        }
    }

    async fn try_lock(&self, session: &mut Option<AsyncPgConnection>) -> Result<bool, String> {
        if session.is_none() {
            let mut conn =
                self.database.pool().dedicated_connection().await.map_err(|e| e.to_string())?;
            conn.batch_execute(
                "SET application_name = 'platform mail leader lease'; \
                 SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; \
                 SET tcp_keepalives_count = 3; SET tcp_user_timeout = 10000",
            )
            .await
            .map_err(|e| e.to_string())?;
            *session = Some(conn);
        }
        let Some(conn) = session.as_mut() else { return Ok(false) };
        let row: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
            .bind::<BigInt, _>(self.key)
            .get_result(conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(row.locked)
    }

    fn hold(&self, mut conn: AsyncPgConnection) -> Leadership {
        let lost = CancellationToken::new();
        let release = CancellationToken::new();
        let options = self.options.clone();
        let name = self.name.clone();
        let watcher = tokio::spawn({
            let (lost, release) = (lost.clone(), release.clone());
            async move {
                loop {
                    tokio::select! {
                        () = release.cancelled() => {
                            // Ending the session would release the lock too, but only once the
                            // server notices; unlocking first hands it over at once.
                            let unlock = diesel::sql_query("SELECT pg_advisory_unlock_all()").execute(&mut conn);
                            let _ = tokio::time::timeout(options.check_timeout, unlock).await;
                            return;
                        }
                        () = tokio::time::sleep(options.check_every) => {}
                    }
                    let check = diesel::sql_query("SELECT 1").execute(&mut conn);
                    match tokio::time::timeout(options.check_timeout, check).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => {
                            tracing::error!(lease = %name, %error, "the leader lease's session failed; standing down");
                            lost.cancel();
                            return;
                        }
                        Err(_) => {
                            tracing::error!(lease = %name, "the leader lease's session stopped answering; standing down");
                            lost.cancel();
                            return;
                        }
                    }
                }
            }
        });
        Leadership { lost, release, watcher }
    }
}

impl Leadership {
    /// Completes when the lease was lost (its session failed): stop acting as the leader.
    pub async fn lost(&self) {
        self.lost.cancelled().await;
    }

    /// Returns whether the lease was lost.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Gives the lease up and waits until PostgreSQL has it back.
    pub async fn release(mut self) {
        self.release.cancel();
        let _ = (&mut self.watcher).await;
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.release.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_distinct() {
        assert_eq!(lock_key("email_worker"), lock_key("email_worker"));
        assert_ne!(lock_key("email_worker"), lock_key("other"));
    }
}
