//! A pool connection that a long-running task keeps from one use to the next (the Postgres
//! writers').
//!
//! sqlx checks every connection given back to a pool before another task can take it: under
//! load a writer paid that once per commit. A task that keeps its connection skips it, and
//! gives the connection back whenever it is about to wait, after an error (the pool then
//! checks it), and at least every [`HOLD`], so the tasks that share the pool get their turn.

use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Executor};

/// The longest a connection is kept before it goes back to the pool.
pub(super) const HOLD: Duration = Duration::from_millis(100);

pub(super) struct Kept {
    pool: AnyPool,
    hold: Duration,
    conn: Option<(PoolConnection<Any>, Instant)>,
}

impl Kept {
    pub(super) fn new(pool: AnyPool) -> Self {
        Self::holding(pool, HOLD)
    }

    fn holding(pool: AnyPool, hold: Duration) -> Self {
        Self {
            pool,
            hold,
            conn: None,
        }
    }

    /// The kept connection, or one from the pool if none is kept or it was taken `HOLD` ago.
    /// A task leaves no transaction open on it between uses.
    pub(super) async fn get(&mut self) -> Result<&mut PoolConnection<Any>, sqlx::Error> {
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
            None => (self.pool.acquire().await?, Instant::now()),
        };
        Ok(&mut self.conn.insert(conn).0)
    }

    /// The connection kept now, as it is (a transaction begun on it ends on it: never given
    /// back for being held too long).
    pub(super) fn held(&mut self) -> Option<&mut PoolConnection<Any>> {
        self.conn.as_mut().map(|(conn, _)| conn)
    }

    /// Rolls back the transaction open on the kept connection; one that cannot is closed,
    /// never given back in a transaction.
    pub(super) async fn rollback(&mut self) {
        if let Some((conn, _)) = self.conn.as_mut()
            && conn.execute("ROLLBACK").await.is_err()
            && let Some((conn, _)) = self.conn.take()
        {
            drop(conn.detach());
        }
    }

    /// Gives the connection back to the pool (which checks it before anyone takes it again).
    pub(super) async fn release(&mut self) {
        drop(self.conn.take());
    }
}

#[cfg(test)]
mod tests {
    use sqlx::any::AnyPoolOptions;

    use super::*;

    /// A pool of one connection that gives up waiting quickly.
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
    async fn a_rolled_back_transaction_leaves_nothing() {
        let pool = pool_of_one().await;
        let mut kept = Kept::new(pool.clone());
        let conn = kept.get().await.expect("the pool's connection");
        conn.execute("CREATE TABLE t (n INTEGER); BEGIN; INSERT INTO t VALUES (1)")
            .await
            .expect("a transaction begun");
        kept.rollback().await;
        let conn = kept.get().await.expect("the kept connection");
        // Not in a transaction any more (BEGIN would fail inside one), the insert undone.
        conn.execute("BEGIN").await.expect("no transaction open");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&mut **conn)
            .await
            .expect("count");
        assert_eq!(n, 0, "the transaction was rolled back");
    }
}
