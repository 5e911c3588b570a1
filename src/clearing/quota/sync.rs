//! Meeting the store's shared usage counters: add what this instance counted since the last
//! sync, learn what all instances counted together, and forget connectors that went quiet.

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::{lock, Account, Quotas};
use crate::store::{now_ms, StoreError, Usage, UsageStore};

impl Quotas {
    /// One sync with `store`. On failure what this instance counted stays pending, for the next.
    pub async fn sync(&self, store: &dyn UsageStore) -> Result<(), StoreError> {
        let window_start_ms = self.window_start(now_ms());
        self.forget_idle();
        let accounts: Vec<(Arc<str>, Arc<Mutex<Account>>)> = self
            .accounts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(connector, account)| (Arc::clone(connector), Arc::clone(account)))
            .collect();
        if accounts.is_empty() {
            return Ok(());
        }
        let amounts: Vec<(String, Usage)> = accounts
            .iter()
            .map(|(connector, account)| {
                let mut account = lock(account);
                account.roll(window_start_ms);
                (connector.to_string(), std::mem::take(&mut account.pending))
            })
            .collect();
        let result = store
            .add_usage(window_start_ms, self.window_ms, &amounts)
            .await;
        for (index, ((_, account), (_, amount))) in accounts.iter().zip(&amounts).enumerate() {
            let mut account = lock(account);
            if account.window_start_ms != window_start_ms {
                continue;
            }
            match &result {
                Ok(totals) => {
                    if let Some(total) = totals.get(index) {
                        account.shared = *total;
                    }
                }
                Err(_) => account.pending = account.pending.plus(*amount),
            }
        }
        result.map(drop)
    }

    /// Drops the accounts of connectors that sent nothing for a whole window and have nothing
    /// pending or reserved, so that the table holds the connectors that are active.
    fn forget_idle(&self) {
        let idle_after = Duration::from_millis(u64::try_from(self.window_ms).unwrap_or(u64::MAX));
        let now = Instant::now();
        let mut accounts = self
            .accounts
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        accounts.retain(|_, account| {
            // A reservation holds a second reference.
            if Arc::strong_count(account) > 1 {
                return true;
            }
            let account = lock(account);
            !account.pending.is_zero()
                || now.saturating_duration_since(account.last_request) < idle_after
        });
    }

    /// Syncs every `interval` until the quotas are dropped. A failed sync is logged and retried
    /// at the next tick; the quotas keep counting locally meanwhile.
    pub fn spawn_sync(
        self: &Arc<Self>,
        store: Arc<dyn UsageStore>,
        interval: Duration,
    ) -> JoinHandle<()> {
        let quotas: Weak<Quotas> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(quotas) = quotas.upgrade() else {
                    return;
                };
                if let Err(error) = quotas.sync(store.as_ref()).await {
                    tracing::warn!(%error, "cannot sync quota usage with the store");
                }
            }
        })
    }
}
