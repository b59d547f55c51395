//! A pool connection that a long-running task keeps from one use to the next.
//!
//! sqlx pings every connection given back to a pool before another task can take it (for
//! SQLite, a hand-off to the connection's thread and back): under load, the writer paid that
//! once per commit and the suppression reader once per round, a tenth of each. A task that
//! keeps its connection skips it, and gives the connection back whenever it is about to wait,
//! after an error (the pool then checks it), and at least every [`HOLD`], so the tasks that
//! share the pool (the store's other writes, on SQLite the same single connection) get their
//! turn.
//!
//! A task may leave a transaction open on its kept connection (the writer begins the next
//! batch's with the last one's commit, in the same hand-off): it is rolled back before the
//! connection goes back.

use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Executor};

/// The longest a connection is kept before it goes back to the pool.
pub(super) const HOLD: Duration = Duration::from_millis(100);

pub(super) struct Kept {
    pool: AnyPool,
    hold: Duration,
    conn: Option<(PoolConnection<Any>, Instant)>,
    /// Whether the task left a transaction open on the kept connection.
    open: bool,
    /// A setting the task wants on its connection only while it keeps it: the statement that
    /// sets it when the connection is taken, and the one that undoes it before it goes back.
    setting: Option<(&'static str, &'static str)>,
}

impl Kept {
    pub(super) fn new(pool: AnyPool) -> Self {
        Self::holding(pool, HOLD)
    }

    /// A kept connection that runs `set` when taken from the pool and `undo` before it goes
    /// back. One that cannot be undone is closed, never given back with the setting.
    pub(super) fn with_setting(pool: AnyPool, set: &'static str, undo: &'static str) -> Self {
        let mut kept = Self::new(pool);
        kept.setting = Some((set, undo));
        kept
    }

    fn holding(pool: AnyPool, hold: Duration) -> Self {
        Self {
            pool,
            hold,
            conn: None,
            open: false,
            setting: None,
        }
    }

    /// The connection alone (see [`Kept::get_with_transaction`]).
    #[cfg(test)]
    async fn get(&mut self) -> Result<&mut PoolConnection<Any>, sqlx::Error> {
        Ok(self.get_with_transaction().await?.0)
    }

    /// The kept connection, or one from the pool if none is kept or it was taken `HOLD` ago,
    /// with whether a transaction is open on it: the task sets that when it begins or ends
    /// one it leaves open (a connection fresh from the pool has none).
    pub(super) async fn get_with_transaction(
        &mut self,
    ) -> Result<(&mut PoolConnection<Any>, &mut bool), sqlx::Error> {
        // One kept too long goes back to the pool before a connection is asked for (on a
        // pool of one, asking while still holding it would wait for itself).
        if self
            .conn
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() >= self.hold)
        {
            self.release().await;
        }
        let conn = match self.conn.take() {
            Some(kept) => kept,
            None => {
                let mut conn = self.pool.acquire().await?;
                if let Some((set, _)) = self.setting
                    && let Err(e) = conn.execute(set).await
                {
                    // In an unknown state: closed, not given back.
                    drop(conn.detach());
                    return Err(e);
                }
                (conn, Instant::now())
            }
        };
        Ok((&mut self.conn.insert(conn).0, &mut self.open))
    }

    /// Gives the connection back to the pool (which checks it before anyone takes it again),
    /// an open transaction rolled back and its setting undone first.
    pub(super) async fn release(&mut self) {
        let open = std::mem::take(&mut self.open);
        let Some((mut conn, _)) = self.conn.take() else {
            return;
        };
        if open && conn.execute("ROLLBACK").await.is_err() {
            // In an unknown state: closed, not given back.
            drop(conn.detach());
            return;
        }
        if let Some((_, undo)) = self.setting
            && conn.execute(undo).await.is_err()
        {
            drop(conn.detach());
        }
    }
}

impl Drop for Kept {
    /// A connection still carrying the setting or an open transaction is closed, not given
    /// back (the task ended without releasing it).
    fn drop(&mut self) {
        if let Some((conn, _)) = self.conn.take()
            && (self.setting.is_some() || self.open)
        {
            drop(conn.detach());
        }
    }
}

#[cfg(test)]
mod tests {
    use sqlx::any::AnyPoolOptions;

    use super::*;

    /// A pool of one connection, as the SQLite writer's is, that gives up waiting quickly.
    async fn pool_of_one() -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(2))
            .connect("sqlite::memory:")
            .await
            .expect("an in-memory database")
    }

    #[tokio::test]
    async fn a_connection_kept_too_long_is_given_back_before_another_is_taken() {
        let mut kept = Kept::holding(pool_of_one().await, Duration::ZERO);
        kept.get().await.expect("the pool's connection");
        // The one connection is held past its time: the next get must give it back first
        // (else it waits for itself until the pool times out).
        let conn = kept
            .get()
            .await
            .expect("the connection, given back and taken again");
        sqlx::query("SELECT 1")
            .execute(&mut **conn)
            .await
            .expect("a usable connection");
    }

    #[tokio::test]
    async fn a_kept_connection_is_nobody_elses_until_released() {
        let pool = pool_of_one().await;
        let mut kept = Kept::new(pool.clone());
        kept.get().await.expect("the pool's connection");
        kept.get().await.expect("the kept connection");
        assert!(
            pool.try_acquire().is_none(),
            "kept between uses, not in the pool"
        );
        kept.release().await;
        // Given back (the pool checks it first): another task gets it before the pool's
        // timeout.
        let other = pool.acquire().await.expect("the connection, given back");
        drop(other);
    }

    #[tokio::test]
    async fn a_setting_holds_while_kept_and_is_undone_before_the_connection_goes_back() {
        let pool = pool_of_one().await;
        let mut kept = Kept::with_setting(
            pool.clone(),
            "PRAGMA synchronous = NORMAL",
            "PRAGMA synchronous = FULL",
        );
        let conn = kept.get().await.expect("the pool's connection");
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut **conn)
            .await
            .expect("the setting");
        assert_eq!(level, 1, "NORMAL while kept");
        kept.release().await;
        let mut other = pool.acquire().await.expect("the connection, given back");
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *other)
            .await
            .expect("the setting");
        assert_eq!(level, 2, "FULL again once given back");
    }

    #[tokio::test]
    async fn a_transaction_left_open_is_rolled_back_before_the_connection_goes_back() {
        let pool = pool_of_one().await;
        let mut kept = Kept::new(pool.clone());
        let (conn, open) = kept
            .get_with_transaction()
            .await
            .expect("the pool's connection");
        assert!(
            !*open,
            "a connection fresh from the pool has no transaction"
        );
        conn.execute("CREATE TABLE t (n INTEGER); BEGIN; INSERT INTO t VALUES (1)")
            .await
            .expect("a transaction begun");
        *open = true;
        kept.release().await;
        let mut other = pool.acquire().await.expect("the connection, given back");
        // Not in a transaction any more (BEGIN would fail inside one), the insert undone.
        other.execute("BEGIN").await.expect("no transaction open");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&mut *other)
            .await
            .expect("count");
        assert_eq!(n, 0, "the open transaction was rolled back");
        other.execute("ROLLBACK").await.expect("rolled back");
    }
}
