//! Per-connector quotas: how fast a connector may send requests, and how many processes and
//! payload bytes it may make the clearing house store per window, so that one participant's
//! bug or abuse cannot take the clearing house from the others.
//!
//! Connectors are told apart by their verified identity (the connection's
//! [`PeerInfo::identity`](crate::idscp2::connection::PeerInfo)), never by anything in the
//! message. Every check runs in memory, under one short lock per connector, before the payload
//! is parsed and before the store is asked anything: a request over its quota costs a map
//! lookup and a rejection reply.
//!
//! - Requests per second: a token bucket per connector on each instance ([`bucket`]). Several
//!   instances on one database each take `quotas.instances`'th of the rate and the burst, which
//!   holds the global rate exactly when connections are spread evenly, and errs on the strict
//!   side when they are not.
//! - Processes created and bytes logged per window: counted here on every request and added to
//!   the store's shared counters every `quotas.sync_interval_ms` ([`sync`]), which hands back the
//!   totals of all instances. Between two syncs an instance does not see what the others admit,
//!   so all instances together can exceed a quota by what the *other* instances admit within one
//!   sync interval (at most (instances - 1) x (what one connector can send in one interval)).
//!
//! A quota a request may still fail after (a create that finds its pid taken, a log the store
//! refuses) is *reserved* first and given back when the request fails ([`Reservation`]), so that
//! concurrent requests cannot all slip under the same remaining quota.
//!
//! Over a quota, the answer is a RejectionMessage `TEMPORARILY_NOT_AVAILABLE` with status 429:
//! of the Infomodel's rejection reasons it is the only one that tells a client to come back
//! later, which is what a quota means (TOO_MANY_RESULTS is about the size of an answer). Its
//! payload's `limit` names the setting, the limit in force for the caller, and when it resets.
//! The rejection is held back until then (at most `quotas.max_hold_ms`, see [`Quotas::hold`]).
//! [`metrics`] shows the connectors nearest their limits on `/metrics`.

mod bucket;
pub(crate) mod metrics;
mod sync;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bucket::TokenBucket;

use crate::config::QuotasConfig;
use crate::ids::rejection::ExceededLimit;
use crate::ids::{Rejection, RejectionReason};
use crate::store::{now_ms, Usage};

/// The status a rejection over a quota carries: "Too Many Requests".
const QUOTA_STATUS: u16 = 429;

/// The quotas of every connector, and what each one used on this instance.
pub struct Quotas {
    defaults: Rules,
    overrides: HashMap<String, Rules>,
    window_ms: i64,
    metrics_connectors: usize,
    max_hold: Duration,
    accounts: RwLock<HashMap<Arc<str>, Arc<Mutex<Account>>>>,
}

/// One connector's quotas; 0 means no limit.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rules {
    /// As configured, for rejections and metrics.
    requests_per_second: f64,
    /// This instance's share of the rate and of the burst.
    rate: f64,
    burst: f64,
    processes: u64,
    bytes: u64,
}

impl Rules {
    fn new(
        requests_per_second: f64,
        burst: u64,
        processes: u64,
        bytes: u64,
        instances: u32,
    ) -> Self {
        let burst = if burst == 0 {
            requests_per_second.ceil().max(1.0)
        } else {
            burst as f64
        };
        let share = f64::from(instances.max(1));
        Rules {
            requests_per_second,
            rate: requests_per_second / share,
            // A bucket that holds less than one token would never let a request through.
            burst: (burst / share).max(1.0),
            processes,
            bytes,
        }
    }
}

/// The quotas a connector can run into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quota {
    Requests,
    Processes,
    Bytes,
}

impl Quota {
    const ALL: [Quota; 3] = [Quota::Requests, Quota::Processes, Quota::Bytes];

    pub(crate) fn setting(self) -> &'static str {
        match self {
            Quota::Requests => "quotas.requests_per_second",
            Quota::Processes => "quotas.processes_per_window",
            Quota::Bytes => "quotas.bytes_per_window",
        }
    }

    /// The `quota` label on `/metrics`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Quota::Requests => "requests",
            Quota::Processes => "processes",
            Quota::Bytes => "bytes",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What one connector used on this instance, and the shared totals as of the last sync.
#[derive(Debug)]
struct Account {
    rules: Rules,
    bucket: TokenBucket,
    window_start_ms: i64,
    /// All instances' usage in the window, as the store last reported it.
    shared: Usage,
    /// This instance's usage in the window since the last sync.
    pending: Usage,
    /// Requests admitted in the window, on this instance.
    requests: u64,
    /// Requests rejected in the window per [`Quota`], on this instance.
    rejections: [u64; 3],
    last_request: Instant,
}

impl Account {
    fn used(&self) -> Usage {
        self.shared.plus(self.pending)
    }

    /// Moves to the window `window_start_ms` if the account is still in an earlier one.
    fn roll(&mut self, window_start_ms: i64) {
        if self.window_start_ms < window_start_ms {
            self.window_start_ms = window_start_ms;
            self.shared = Usage::default();
            self.pending = Usage::default();
            self.requests = 0;
            self.rejections = [0; 3];
        }
    }
}

impl Quotas {
    /// Quotas with `config`'s defaults and per-connector overrides, all counters empty.
    pub fn new(config: &QuotasConfig) -> Self {
        let defaults = Rules::new(
            config.requests_per_second,
            config.burst,
            config.processes_per_window,
            config.bytes_per_window,
            config.instances,
        );
        let overrides = config
            .connectors
            .iter()
            .map(|(connector, quota)| {
                let rules = Rules::new(
                    quota
                        .requests_per_second
                        .unwrap_or(config.requests_per_second),
                    quota.burst.unwrap_or(config.burst),
                    quota
                        .processes_per_window
                        .unwrap_or(config.processes_per_window),
                    quota.bytes_per_window.unwrap_or(config.bytes_per_window),
                    config.instances,
                );
                (connector.clone(), rules)
            })
            .collect();
        Quotas {
            defaults,
            overrides,
            window_ms: i64::try_from(config.window_s.saturating_mul(1000))
                .unwrap_or(i64::MAX)
                .max(1),
            metrics_connectors: config.metrics_connectors,
            max_hold: Duration::from_millis(config.max_hold_ms),
            accounts: RwLock::new(HashMap::new()),
        }
    }

    /// No quota at all; usage is still counted for `/metrics`.
    pub fn unlimited() -> Self {
        Self::new(&QuotasConfig::default())
    }

    /// How long to hold the answer to a request rejected over a quota: until the quota has room
    /// again, at most `quotas.max_hold_ms`. IDSCP2 is stop-and-wait, so a held connection sends
    /// nothing meanwhile, and a connector that ignores its quota costs a sleeping task per
    /// connection instead of a rejection per round trip.
    pub(crate) fn hold(&self, rejection: &Rejection) -> Option<Duration> {
        if rejection.status != QUOTA_STATUS {
            return None;
        }
        let resets_at_ms = rejection.limit.as_ref()?.resets_at_ms?;
        let wait = u64::try_from(resets_at_ms.saturating_sub(now_ms())).unwrap_or(0);
        Some(Duration::from_millis(wait).min(self.max_hold)).filter(|hold| !hold.is_zero())
    }

    fn window_start(&self, now_ms: i64) -> i64 {
        now_ms - now_ms.rem_euclid(self.window_ms)
    }

    fn account(&self, connector: &str) -> Arc<Mutex<Account>> {
        let accounts = self.accounts.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(account) = accounts.get(connector) {
            return Arc::clone(account);
        }
        drop(accounts);
        let mut accounts = self
            .accounts
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let account = accounts.entry(Arc::from(connector)).or_insert_with(|| {
            let rules = self
                .overrides
                .get(connector)
                .copied()
                .unwrap_or(self.defaults);
            let now = Instant::now();
            Arc::new(Mutex::new(Account {
                rules,
                bucket: TokenBucket::full(rules.burst, now),
                window_start_ms: self.window_start(now_ms()),
                shared: Usage::default(),
                pending: Usage::default(),
                requests: 0,
                rejections: [0; 3],
                last_request: now,
            }))
        });
        Arc::clone(account)
    }

    /// Counts one request of `connector` against its rate, or rejects it.
    pub fn admit(&self, connector: &str) -> Result<(), Rejection> {
        let account = self.account(connector);
        let mut account = lock(&account);
        let now = Instant::now();
        account.last_request = now;
        let rules = account.rules;
        if rules.rate > 0.0 {
            if let Err(wait) = account.bucket.take(rules.rate, rules.burst, now) {
                account.rejections[Quota::Requests.index()] += 1;
                drop(account);
                let retry_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                return Err(over_quota(
                    Quota::Requests,
                    format!(
                        "the connector sends more than its {} requests per second (quotas.requests_per_second)",
                        rules.requests_per_second
                    ),
                    rules.requests_per_second.ceil() as u64,
                    now_ms().saturating_add(retry_ms.max(1)),
                ));
            }
        }
        account.requests += 1;
        Ok(())
    }

    /// Reserves one process creation of `connector`; given back unless [`Reservation::keep`].
    pub(crate) fn reserve_process(&self, connector: &str) -> Result<Reservation, Rejection> {
        self.reserve(
            connector,
            Usage {
                processes: 1,
                bytes: 0,
            },
        )
    }

    /// Reserves `bytes` of logged payload of `connector`; given back unless [`Reservation::keep`].
    pub fn reserve_bytes(&self, connector: &str, bytes: u64) -> Result<Reservation, Rejection> {
        self.reserve(
            connector,
            Usage {
                processes: 0,
                bytes,
            },
        )
    }

    fn reserve(&self, connector: &str, amount: Usage) -> Result<Reservation, Rejection> {
        let account_ref = self.account(connector);
        let mut account = lock(&account_ref);
        let now_ms = now_ms();
        let window_start_ms = self.window_start(now_ms);
        account.roll(window_start_ms);
        let used = account.used();
        let rules = account.rules;
        let exceeded = [
            (
                Quota::Processes,
                rules.processes,
                used.processes,
                amount.processes,
            ),
            (Quota::Bytes, rules.bytes, used.bytes, amount.bytes),
        ]
        .into_iter()
        .find(|(_, limit, used, wanted)| {
            *wanted > 0 && *limit > 0 && used.saturating_add(*wanted) > *limit
        });
        if let Some((quota, limit, used, wanted)) = exceeded {
            account.rejections[quota.index()] += 1;
            drop(account);
            let what = match quota {
                Quota::Processes => "processes created",
                _ => "payload bytes logged",
            };
            return Err(over_quota(
                quota,
                format!(
                    "{used} {what} of {limit} per {} s window ({}); {wanted} more do not fit",
                    self.window_ms / 1000,
                    quota.setting()
                ),
                limit,
                window_start_ms.saturating_add(self.window_ms),
            ));
        }
        account.pending = account.pending.plus(amount);
        drop(account);
        Ok(Reservation {
            held: Some((account_ref, window_start_ms, amount)),
        })
    }
}

/// Quota taken by a request that may still fail; given back when dropped without
/// [`Reservation::keep`].
#[derive(Debug)]
#[must_use = "a reservation is given back when dropped"]
pub struct Reservation {
    held: Option<(Arc<Mutex<Account>>, i64, Usage)>,
}

impl Reservation {
    /// The request succeeded: what it reserved stays used.
    pub fn keep(mut self) {
        self.held = None;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some((account, window_start_ms, amount)) = self.held.take() else {
            return;
        };
        let mut account = lock(&account);
        if account.window_start_ms != window_start_ms {
            return;
        }
        // A sync may have passed the amount on already; then the store keeps counting it, which
        // charges the connector for a request that failed rather than ever undercounting.
        account.pending = Usage {
            processes: account.pending.processes.saturating_sub(amount.processes),
            bytes: account.pending.bytes.saturating_sub(amount.bytes),
        };
    }
}

fn lock(account: &Mutex<Account>) -> MutexGuard<'_, Account> {
    account.lock().unwrap_or_else(PoisonError::into_inner)
}

fn over_quota(quota: Quota, message: String, limit: u64, resets_at_ms: i64) -> Rejection {
    ::metrics::counter!("clearinghouse_quota_rejections_total", "quota" => quota.label())
        .increment(1);
    Rejection::new(
        RejectionReason::TemporarilyNotAvailable,
        QUOTA_STATUS,
        message,
    )
    .exceeding(ExceededLimit {
        setting: quota.setting(),
        value: limit,
        resets_at_ms: Some(resets_at_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QuotaOverride;

    fn quotas(configure: impl FnOnce(&mut QuotasConfig)) -> Quotas {
        let mut config = QuotasConfig::default();
        configure(&mut config);
        Quotas::new(&config)
    }

    #[test]
    fn unlimited_admits_everything_and_still_counts() {
        let quotas = Quotas::unlimited();
        for _ in 0..1000 {
            quotas.admit("a").unwrap();
            quotas.reserve_bytes("a", 1 << 20).unwrap().keep();
        }
        let account = quotas.account("a");
        let account = lock(&account);
        assert_eq!(account.requests, 1000);
        assert_eq!(account.used().bytes, 1000 << 20);
    }

    #[test]
    fn rate_rejection_names_the_quota_and_when_to_retry() {
        let quotas = quotas(|c| {
            c.requests_per_second = 1.0;
            c.burst = 2;
        });
        quotas.admit("a").unwrap();
        quotas.admit("a").unwrap();
        let rejection = quotas.admit("a").unwrap_err();
        assert_eq!(rejection.reason, RejectionReason::TemporarilyNotAvailable);
        assert_eq!(rejection.status, 429);
        let limit = rejection.limit.unwrap();
        assert_eq!(limit.setting, "quotas.requests_per_second");
        let retry = limit.resets_at_ms.unwrap() - now_ms();
        assert!((0..=1000).contains(&retry), "{retry}");
        // Another connector has a bucket of its own.
        quotas.admit("b").unwrap();
    }

    #[test]
    fn failed_requests_give_their_reservation_back() {
        let quotas = quotas(|c| c.bytes_per_window = 10);
        drop(quotas.reserve_bytes("a", 10).unwrap());
        quotas.reserve_bytes("a", 6).unwrap().keep();
        let rejection = quotas.reserve_bytes("a", 5).unwrap_err();
        assert_eq!(rejection.limit.unwrap().setting, "quotas.bytes_per_window");
        quotas.reserve_bytes("a", 4).unwrap().keep();
        quotas.reserve_bytes("b", 10).unwrap().keep();
    }

    #[test]
    fn overrides_replace_only_what_they_name() {
        let quotas = quotas(|c| {
            c.processes_per_window = 1;
            c.bytes_per_window = 100;
            c.connectors.insert(
                "big".into(),
                QuotaOverride {
                    processes_per_window: Some(3),
                    ..QuotaOverride::default()
                },
            );
        });
        for _ in 0..3 {
            quotas.reserve_process("big").unwrap().keep();
        }
        assert!(quotas.reserve_process("big").is_err());
        assert!(quotas.reserve_bytes("big", 101).is_err());
        quotas.reserve_process("small").unwrap().keep();
        assert!(quotas.reserve_process("small").is_err());
    }

    #[test]
    fn quota_rejections_are_held_until_the_reset_at_most_max_hold() {
        let quotas = quotas(|c| {
            c.requests_per_second = 0.001;
            c.burst = 1;
            c.bytes_per_window = 1;
            c.max_hold_ms = 300;
        });
        quotas.admit("a").unwrap();
        let rate = quotas.admit("a").unwrap_err();
        assert_eq!(quotas.hold(&rate), Some(Duration::from_millis(300)));
        let bytes = quotas.reserve_bytes("a", 2).unwrap_err();
        assert_eq!(quotas.hold(&bytes), Some(Duration::from_millis(300)));
        let other = Rejection::with_default_status(RejectionReason::NotFound, "no");
        assert_eq!(quotas.hold(&other), None);
        let unheld = quotas_with_hold(0);
        assert_eq!(unheld.hold(&rate), None);
    }

    fn quotas_with_hold(max_hold_ms: u64) -> Quotas {
        quotas(|c| c.max_hold_ms = max_hold_ms)
    }

    #[test]
    fn instances_share_rate_and_burst() {
        let rules = Rules::new(10.0, 4, 0, 0, 2);
        assert_eq!((rules.rate, rules.burst), (5.0, 2.0));
        let tiny = Rules::new(1.0, 1, 0, 0, 4);
        assert_eq!(tiny.burst, 1.0);
    }
}
