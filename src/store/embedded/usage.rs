//! The embedded store's usage counters: table `usage`, (connector id, window start ms) ->
//! (processes, bytes).
//!
//! One redb file has one clearing house, so the counters need no sharing; they are kept so that
//! a restart does not hand every connector a fresh quota. They are written in a write
//! transaction of their own on the blocking pool, once per sync interval at most: redb runs it
//! between two of the writer thread's batches, and the table is one the writer never touches.

use futures::future::BoxFuture;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};

use super::EmbeddedStore;
use crate::store::{StoreError, Usage, UsageStore};

const USAGE: TableDefinition<(&str, i64), (u64, u64)> = TableDefinition::new("usage");

impl UsageStore for EmbeddedStore {
    fn add_usage<'a>(
        &'a self,
        window_start_ms: i64,
        _window_ms: i64,
        amounts: &'a [(String, Usage)],
    ) -> BoxFuture<'a, Result<Vec<Usage>, StoreError>> {
        let database = self.database.clone();
        let amounts = amounts.to_vec();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                if amounts.iter().all(|(_, amount)| amount.is_zero()) {
                    read_totals(&database, window_start_ms, &amounts)
                } else {
                    add_totals(&database, window_start_ms, &amounts)
                }
            })
            .await
            .map_err(|error| StoreError::Unavailable(format!("usage task failed: {error}")))?
        })
    }
}

fn read_totals(
    database: &redb::Database,
    window_start_ms: i64,
    amounts: &[(String, Usage)],
) -> Result<Vec<Usage>, StoreError> {
    let transaction = database.begin_read()?;
    let table = match transaction.open_table(USAGE) {
        Ok(table) => table,
        // Nothing was ever counted.
        Err(TableError::TableDoesNotExist(_)) => return Ok(vec![Usage::default(); amounts.len()]),
        Err(error) => return Err(error.into()),
    };
    amounts
        .iter()
        .map(|(connector, _)| {
            Ok(table
                .get((connector.as_str(), window_start_ms))?
                .map(|counts| usage_of(counts.value()))
                .unwrap_or_default())
        })
        .collect()
}

fn add_totals(
    database: &redb::Database,
    window_start_ms: i64,
    amounts: &[(String, Usage)],
) -> Result<Vec<Usage>, StoreError> {
    let transaction = database.begin_write()?;
    let totals = {
        let mut table = transaction.open_table(USAGE)?;
        // Earlier windows no longer limit anyone.
        table.retain(|(_, window), _| window >= window_start_ms)?;
        let mut totals = Vec::with_capacity(amounts.len());
        for (connector, amount) in amounts {
            let key = (connector.as_str(), window_start_ms);
            let before = table
                .get(key)?
                .map(|counts| usage_of(counts.value()))
                .unwrap_or_default();
            let total = before.plus(*amount);
            if !amount.is_zero() {
                table.insert(key, (total.processes, total.bytes))?;
            }
            totals.push(total);
        }
        totals
    };
    transaction.commit()?;
    Ok(totals)
}

fn usage_of((processes, bytes): (u64, u64)) -> Usage {
    Usage { processes, bytes }
}
