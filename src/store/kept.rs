//! A pool connection that a long-running task keeps from one use to the next.
//!
//! sqlx pings every connection given back to a pool before another task can take it (for
//! SQLite, a hand-off to the connection's thread and back): under load, the writer paid that
//! once per commit and the suppression reader once per round, a tenth of each. A task that
//! keeps its connection skips it, and gives the connection back whenever it is about to wait,
//! after an error (the pool then checks it), and at least every [`HOLD`], so the tasks that
//! share the pool (the store's other writes, on SQLite the same single connection) get their
//! turn.

use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool};

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
    pub(super) async fn get(&mut self) -> Result<&mut PoolConnection<Any>, sqlx::Error> {
        // One kept too long is dropped here, back to the pool, before a connection is asked
        // for (on a pool of one, asking while still holding it would wait for itself).
        let hold = self.hold;
        let kept = self.conn.take().filter(|(_, since)| since.elapsed() < hold);
        let (conn, _) = match kept {
            Some(kept) => self.conn.insert(kept),
            None => {
                let conn = self.pool.acquire().await?;
                self.conn.insert((conn, Instant::now()))
            }
        };
        Ok(conn)
    }

    /// Gives the connection back to the pool (which checks it before anyone takes it again).
    pub(super) fn release(&mut self) {
        self.conn = None;
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
        kept.release();
        // Given back (the pool checks it first): another task gets it before the pool's
        // timeout.
        let other = pool.acquire().await.expect("the connection, given back");
        drop(other);
    }
}
