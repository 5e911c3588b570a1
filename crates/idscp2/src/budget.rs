//! The memory bound: how many bytes of peer data all connections together may hold, and how much
//! of that one connection may take.
//!
//! A peer decides how big its frames are, how many requests it sends and whether it ever
//! acknowledges our replies, so every byte we hold because of a peer is reserved here first:
//! frames being read, requests waiting for or being handled by the layer above, replies queued and
//! replies kept for resending until the peer ACKs them. A reservation that does not fit waits, and
//! the waiting is the backpressure: the connection stops reading from its peer (TCP then stops the
//! peer), or [`Connection::send`](super::connection::Connection::send) waits, instead of allocating.
//!
//! The total is split three ways so that a few hostile peers cannot starve the others:
//! - every connection may always read one *small* frame (ACKs, closes, handshake frames) without
//!   a reservation, so that it never stops hearing the ACKs that free its own reservations;
//! - every connection holds a guaranteed *floor* of the same size for the small requests and
//!   replies most traffic consists of (log messages, receipts);
//! - the rest is a shared *pool*, from which one connection takes at most its share.
//!
//! So `total = connections x 2 x small + pool`, and nothing beyond `total` is ever held.

use std::sync::{Arc, Mutex, PoisonError};

use metrics::SharedString;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::metric_names::MetricNames;

pub use super::settings::MemoryLimits;

/// A budget that cannot be made, or a reservation it can never grant.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BudgetError {
    #[error(
        "a total of {total} bytes cannot give {connections} connections 2 x {small} bytes each \
         and still hold one connection's share of {per_connection} bytes"
    )]
    /// The total leaves no pool of at least one connection's share beside the allowances.
    TotalTooSmall {
        /// The configured total.
        total: usize,
        /// The connections that get an allowance and a floor.
        connections: usize,
        /// The small-frame size (allowance and floor each).
        small: usize,
        /// One connection's share.
        per_connection: usize,
    },
    #[error(
        "a connection's share of {per_connection} bytes must hold a frame of {max_frame} bytes"
    )]
    /// One connection's share cannot hold the largest frame (or exceeds `u32::MAX`).
    ShareTooSmall {
        /// One connection's share.
        per_connection: usize,
        /// The largest frame.
        max_frame: usize,
    },
    #[error("{bytes} bytes exceed one connection's share of {per_connection} bytes")]
    /// A reservation beyond what one connection may ever hold.
    TooLarge {
        /// The bytes asked for.
        bytes: usize,
        /// One connection's share.
        per_connection: usize,
    },
}

/// The server-wide budget, cheap to clone; each connection takes a [`ConnectionBudget`] from it.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    limits: MemoryLimits,
    small: usize,
    pool: Arc<Semaphore>,
    pool_size: usize,
    /// One permit per connection that gets an allowance and a floor.
    seats: Arc<Semaphore>,
    /// The gauge of bytes held.
    gauge: SharedString,
}

impl MemoryBudget {
    /// `small` is the largest frame a connection may always read: the pre-handshake frame limit.
    /// `max_frame` must fit into one connection's share, or a frame that size could never be held.
    /// What is held shows in the `buffered_bytes` gauge of `metrics`.
    pub fn new(
        limits: MemoryLimits,
        small: usize,
        max_frame: usize,
        metrics: &MetricNames,
    ) -> Result<Self, BudgetError> {
        if limits.per_connection < max_frame || limits.per_connection > u32::MAX as usize {
            return Err(BudgetError::ShareTooSmall {
                per_connection: limits.per_connection,
                max_frame,
            });
        }
        let reserved = limits.connections.saturating_mul(2).saturating_mul(small);
        let pool_size = limits
            .total
            .checked_sub(reserved)
            .filter(|pool| *pool >= limits.per_connection && *pool <= Semaphore::MAX_PERMITS)
            .ok_or(BudgetError::TotalTooSmall {
                total: limits.total,
                connections: limits.connections,
                small,
                per_connection: limits.per_connection,
            })?;
        Ok(MemoryBudget {
            shared: Arc::new(Shared {
                limits,
                small,
                pool: Arc::new(Semaphore::new(pool_size)),
                pool_size,
                seats: Arc::new(Semaphore::new(limits.connections)),
                gauge: metrics.buffered_bytes.clone(),
            }),
        })
    }

    /// The bounds this budget was made with.
    pub fn limits(&self) -> MemoryLimits {
        self.shared.limits
    }

    /// The frames every connection may read without a reservation.
    pub fn small_frame(&self) -> usize {
        self.shared.small
    }

    /// Bytes of the shared pool reserved right now (floors and small-frame reads not included).
    pub fn pool_held(&self) -> usize {
        self.shared.pool_size - self.shared.pool.available_permits()
    }

    /// A budget for one more connection. Beyond `limits.connections` (which the server's
    /// connection limit rules out) a connection gets no floor and draws everything from the pool.
    pub fn connection(&self) -> Arc<ConnectionBudget> {
        let seat = self.shared.seats.clone().try_acquire_owned().ok();
        let floor = if seat.is_some() { self.shared.small } else { 0 };
        Arc::new(ConnectionBudget {
            shared: self.shared.clone(),
            share: Arc::new(Semaphore::new(self.shared.limits.per_connection)),
            floor_free: Mutex::new(floor),
            _seat: seat,
        })
    }
}

/// One connection's part of the budget: its floor, and its share of the pool.
#[derive(Debug)]
pub struct ConnectionBudget {
    shared: Arc<Shared>,
    share: Arc<Semaphore>,
    floor_free: Mutex<usize>,
    _seat: Option<OwnedSemaphorePermit>,
}

impl ConnectionBudget {
    /// The frames this connection may always read without a reservation.
    pub fn small_frame(&self) -> usize {
        self.shared.small
    }

    /// The most this connection may hold at once.
    pub fn share(&self) -> usize {
        self.shared.limits.per_connection
    }

    /// Reserves `bytes`, waiting until this connection's share and the pool have room.
    pub async fn reserve(self: &Arc<Self>, bytes: usize) -> Result<Held, BudgetError> {
        let count = self.permit_count(bytes)?;
        // Neither semaphore is ever closed, so acquiring fails only if it was; treat that as full.
        let share = self
            .share
            .clone()
            .acquire_many_owned(count)
            .await
            .map_err(|_| self.too_large(bytes))?;
        let floor = self.take_floor(bytes);
        let mut held = Held::new(self.clone(), bytes, floor, share);
        if bytes > floor {
            let from_pool = (bytes - floor) as u32;
            let pool = self.shared.pool.clone().acquire_many_owned(from_pool).await;
            held.pool = Some(pool.map_err(|_| self.too_large(bytes))?);
        }
        Ok(held.counted())
    }

    /// Reserves `bytes` if there is room now.
    pub fn try_reserve(self: &Arc<Self>, bytes: usize) -> Option<Held> {
        let count = self.permit_count(bytes).ok()?;
        let share = self.share.clone().try_acquire_many_owned(count).ok()?;
        let floor = self.take_floor(bytes);
        let mut held = Held::new(self.clone(), bytes, floor, share);
        if bytes > floor {
            let from_pool = (bytes - floor) as u32;
            held.pool = Some(
                self.shared
                    .pool
                    .clone()
                    .try_acquire_many_owned(from_pool)
                    .ok()?,
            );
        }
        Some(held.counted())
    }

    fn permit_count(&self, bytes: usize) -> Result<u32, BudgetError> {
        if bytes > self.shared.limits.per_connection {
            return Err(self.too_large(bytes));
        }
        // per_connection <= u32::MAX, checked when the budget was made.
        Ok(bytes as u32)
    }

    fn too_large(&self, bytes: usize) -> BudgetError {
        BudgetError::TooLarge {
            bytes,
            per_connection: self.shared.limits.per_connection,
        }
    }

    fn take_floor(&self, bytes: usize) -> usize {
        let mut free = self
            .floor_free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let taken = bytes.min(*free);
        *free -= taken;
        taken
    }

    fn return_floor(&self, bytes: usize) {
        *self
            .floor_free
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += bytes;
    }
}

/// Bytes reserved in the budget, given back when dropped.
#[derive(Debug)]
pub struct Held {
    owner: Arc<ConnectionBudget>,
    bytes: usize,
    floor: usize,
    _share: OwnedSemaphorePermit,
    pool: Option<OwnedSemaphorePermit>,
    counted: bool,
}

impl Held {
    fn new(
        owner: Arc<ConnectionBudget>,
        bytes: usize,
        floor: usize,
        share: OwnedSemaphorePermit,
    ) -> Held {
        Held {
            owner,
            bytes,
            floor,
            _share: share,
            pool: None,
            counted: false,
        }
    }

    /// Complete: shows in the gauge from now on.
    fn counted(mut self) -> Held {
        self.counted = true;
        self.gauge().increment(self.bytes as f64);
        self
    }

    /// The bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn gauge(&self) -> metrics::Gauge {
        metrics::gauge!(self.owner.shared.gauge.clone())
    }

    /// Gives back what is held beyond `bytes` (pool first, then floor), keeping the rest: a
    /// reservation made for the largest possible reply shrinks to the reply that was built.
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes >= self.bytes {
            return;
        }
        let excess = self.bytes - bytes;
        let from_pool = excess.min(self.bytes - self.floor);
        if let Some(pool) = &mut self.pool {
            // Split off and dropped: those permits go back to the pool now.
            drop(pool.split(from_pool));
        }
        let from_floor = excess - from_pool;
        self.floor -= from_floor;
        self.owner.return_floor(from_floor);
        drop(self._share.split(excess));
        if self.counted {
            self.gauge().decrement(excess as f64);
        }
        self.bytes = bytes;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.owner.return_floor(self.floor);
        if self.counted {
            self.gauge().decrement(self.bytes as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: usize = 100;

    fn budget(total: usize, per_connection: usize, connections: usize) -> MemoryBudget {
        let limits = MemoryLimits {
            total,
            per_connection,
            connections,
        };
        MemoryBudget::new(limits, SMALL, per_connection, &MetricNames::default()).unwrap()
    }

    #[test]
    fn refuses_limits_that_cannot_hold_a_frame_or_the_allowances() {
        let limits = MemoryLimits {
            total: 10_000,
            per_connection: 1_000,
            connections: 10,
        };
        assert!(matches!(
            MemoryBudget::new(limits, SMALL, 2_000, &MetricNames::default()),
            Err(BudgetError::ShareTooSmall { .. })
        ));
        // 10 x 2 x 100 leaves 8,000, enough for a share of 1,000; 50 connections do not fit.
        assert!(MemoryBudget::new(limits, SMALL, 1_000, &MetricNames::default()).is_ok());
        let crowded = MemoryLimits {
            connections: 50,
            ..limits
        };
        assert!(matches!(
            MemoryBudget::new(crowded, SMALL, 1_000, &MetricNames::default()),
            Err(BudgetError::TotalTooSmall { .. })
        ));
    }

    #[test]
    fn small_reservations_come_from_the_floor_and_the_rest_from_the_pool() {
        let budget = budget(1_400, 500, 2);
        let connection = budget.connection();
        let small = connection.try_reserve(60).unwrap();
        assert_eq!(budget.pool_held(), 0);
        let big = connection.try_reserve(300).unwrap();
        assert_eq!(budget.pool_held(), 260, "40 bytes of floor were left");
        drop(small);
        drop(big);
        assert_eq!(budget.pool_held(), 0);
        assert_eq!(connection.try_reserve(100).map(|h| h.bytes()), Some(100));
        assert_eq!(budget.pool_held(), 0, "the floor was given back");
    }

    #[test]
    fn a_shrunk_reservation_gives_back_pool_then_floor_and_share() {
        let budget = budget(1_400, 500, 2);
        let connection = budget.connection();
        let mut held = connection.try_reserve(400).unwrap();
        assert_eq!(budget.pool_held(), 300, "100 bytes came from the floor");
        held.shrink_to(150);
        assert_eq!((held.bytes(), budget.pool_held()), (150, 50));
        held.shrink_to(40);
        assert_eq!((held.bytes(), budget.pool_held()), (40, 0));
        // What was given back is usable again: the share (500 - 40) and the floor (100 - 40).
        let rest = connection.try_reserve(460).unwrap();
        assert_eq!(budget.pool_held(), 400);
        drop((held, rest));
        assert_eq!(budget.pool_held(), 0);
    }

    #[test]
    fn one_connection_cannot_take_more_than_its_share() {
        let budget = budget(10_000, 500, 2);
        let connection = budget.connection();
        let held = connection.try_reserve(400).unwrap();
        assert!(connection.try_reserve(200).is_none());
        assert!(connection.try_reserve(501).is_none());
        // Another connection is not affected.
        assert!(budget.connection().try_reserve(500).is_some());
        drop(held);
        assert!(connection.try_reserve(500).is_some());
    }

    #[test]
    fn a_spent_pool_stops_big_reservations_but_not_the_floor() {
        // Pool: 1,400 - 2 x 2 x 100 = 1,000.
        let budget = budget(1_400, 1_000, 2);
        let hog = budget.connection();
        let other = budget.connection();
        let all = hog.try_reserve(1_000).unwrap();
        assert_eq!(budget.pool_held(), 900);
        // The other connection's floor is still there, and what the hog left of the pool.
        let floor = other.try_reserve(100).unwrap();
        let last = other.try_reserve(100).unwrap();
        assert!(other.try_reserve(1).is_none());
        drop((all, floor, last));
        assert_eq!(budget.pool_held(), 0);
    }

    #[tokio::test]
    async fn reserve_waits_until_bytes_are_given_back() {
        let budget = budget(1_400, 1_000, 2);
        let connection = budget.connection();
        let first = connection.reserve(800).await.unwrap();
        let waiting = tokio::spawn({
            let connection = connection.clone();
            async move { connection.reserve(800).await.map(|h| h.bytes()) }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        assert_eq!(waiting.await.unwrap(), Ok(800));
        assert!(matches!(
            connection.reserve(1_001).await,
            Err(BudgetError::TooLarge { .. })
        ));
    }
}
