//! Per-connector usage on `/metrics`, with a bounded number of series.
//!
//! A label per connector id would let every participant add series to the operator's monitoring,
//! so only the `quotas.metrics_connectors` connectors nearest a limit are named, and the others
//! are summed under `connector="other"`. Which connectors are named is decided at each scrape,
//! so the values are gauges of the current window (on this instance; usage is all instances'
//! as of the last sync), not counters:
//!
//! - `clearinghouse_connector_requests{connector}`: requests admitted in the window.
//! - `clearinghouse_connector_usage{connector, quota="processes"|"bytes"}`: used in the window.
//! - `clearinghouse_connector_limit{connector, quota="requests"|"processes"|"bytes"}`: the quota
//!   (requests per second for `requests`); absent when there is none.
//! - `clearinghouse_connector_usage_ratio{connector, quota}`: the share of the quota used; for
//!   `requests`, the share of the token bucket that is empty. 1 means throttled.
//! - `clearinghouse_connector_rejections{connector, quota}`: requests rejected over the quota.

use std::fmt::Write as _;
use std::time::Instant;

use super::{lock, Quota, Quotas};

/// One row of the table: a connector, or "other".
#[derive(Default)]
struct Row {
    connector: String,
    requests: u64,
    used: [u64; 3],
    limits: [Option<f64>; 3],
    ratios: [f64; 3],
    rejections: [u64; 3],
}

impl Row {
    fn nearest(&self) -> f64 {
        self.ratios.iter().copied().fold(0.0, f64::max)
    }
}

impl Quotas {
    /// The per-connector series in Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let mut rows = self.rows();
        rows.sort_by(|a, b| {
            b.nearest()
                .total_cmp(&a.nearest())
                .then(b.requests.cmp(&a.requests))
                .then(a.connector.cmp(&b.connector))
        });
        let mut other = Row {
            connector: "other".to_owned(),
            ..Row::default()
        };
        let rest = rows.split_off(rows.len().min(self.metrics_connectors));
        for row in &rest {
            other.requests += row.requests;
            for quota in 0..3 {
                other.used[quota] += row.used[quota];
                other.rejections[quota] += row.rejections[quota];
            }
        }
        if !rest.is_empty() {
            rows.push(other);
        }
        render(&rows)
    }

    fn rows(&self) -> Vec<Row> {
        let now = Instant::now();
        let window_start_ms = self.window_start(crate::store::now_ms());
        let accounts = self
            .accounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        accounts
            .iter()
            .map(|(connector, account)| {
                let mut account = lock(account);
                account.roll(window_start_ms);
                let rules = account.rules;
                let used = account.used();
                let mut row = Row {
                    connector: connector.to_string(),
                    requests: account.requests,
                    used: [0, used.processes, used.bytes],
                    rejections: account.rejections,
                    ..Row::default()
                };
                if rules.rate > 0.0 {
                    row.limits[Quota::Requests.index()] = Some(rules.requests_per_second);
                    let level = account.bucket.level(rules.rate, rules.burst, now);
                    row.ratios[Quota::Requests.index()] = 1.0 - level / rules.burst;
                }
                for (quota, limit, used) in [
                    (Quota::Processes, rules.processes, used.processes),
                    (Quota::Bytes, rules.bytes, used.bytes),
                ] {
                    if limit > 0 {
                        row.limits[quota.index()] = Some(limit as f64);
                        row.ratios[quota.index()] = used as f64 / limit as f64;
                    }
                }
                row
            })
            .collect()
    }
}

fn render(rows: &[Row]) -> String {
    let mut text = String::new();
    let mut family = |name: &str, help: &str, series: &mut dyn FnMut(&mut String)| {
        let _ = writeln!(text, "# HELP {name} {help}");
        let _ = writeln!(text, "# TYPE {name} gauge");
        series(&mut text);
    };
    family(
        "clearinghouse_connector_requests",
        "Requests admitted in the current quota window on this instance.",
        &mut |text| {
            for row in rows {
                let connector = escape(&row.connector);
                let _ = writeln!(
                    text,
                    "clearinghouse_connector_requests{{connector=\"{connector}\"}} {}",
                    row.requests
                );
            }
        },
    );
    family(
        "clearinghouse_connector_usage",
        "Processes created and payload bytes logged in the current quota window.",
        &mut |text| {
            for row in rows {
                let connector = escape(&row.connector);
                for quota in [Quota::Processes, Quota::Bytes] {
                    let _ = writeln!(
                        text,
                        "clearinghouse_connector_usage{{connector=\"{connector}\",quota=\"{}\"}} {}",
                        quota.label(),
                        row.used[quota.index()]
                    );
                }
            }
        },
    );
    family(
        "clearinghouse_connector_limit",
        "The connector's quota (requests: per second); absent when it has none.",
        &mut |text| {
            for row in rows {
                let connector = escape(&row.connector);
                for quota in Quota::ALL {
                    if let Some(limit) = row.limits[quota.index()] {
                        let _ = writeln!(
                            text,
                            "clearinghouse_connector_limit{{connector=\"{connector}\",quota=\"{}\"}} {limit}",
                            quota.label()
                        );
                    }
                }
            }
        },
    );
    family(
        "clearinghouse_connector_usage_ratio",
        "Share of the quota used (requests: share of the token bucket that is empty).",
        &mut |text| {
            for row in rows {
                let connector = escape(&row.connector);
                for quota in Quota::ALL {
                    if row.limits[quota.index()].is_some() {
                        let _ = writeln!(
                            text,
                            "clearinghouse_connector_usage_ratio{{connector=\"{connector}\",quota=\"{}\"}} {}",
                            quota.label(),
                            row.ratios[quota.index()]
                        );
                    }
                }
            }
        },
    );
    family(
        "clearinghouse_connector_rejections",
        "Requests rejected over a quota in the current quota window on this instance.",
        &mut |text| {
            for row in rows {
                let connector = escape(&row.connector);
                for quota in Quota::ALL {
                    let _ = writeln!(
                        text,
                        "clearinghouse_connector_rejections{{connector=\"{connector}\",quota=\"{}\"}} {}",
                        quota.label(),
                        row.rejections[quota.index()]
                    );
                }
            }
        },
    );
    text
}

/// A label value as Prometheus text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QuotasConfig;

    #[test]
    fn names_the_connectors_nearest_a_limit_and_sums_the_rest() {
        let quotas = Quotas::new(&QuotasConfig {
            bytes_per_window: 100,
            metrics_connectors: 2,
            ..QuotasConfig::default()
        });
        for (connector, bytes) in [("a", 10), ("b\"x", 90), ("c", 50), ("d", 20)] {
            quotas.admit(connector).unwrap();
            quotas.reserve_bytes(connector, bytes).unwrap().keep();
        }
        let text = quotas.render_metrics();
        assert!(
            text.contains("clearinghouse_connector_usage{connector=\"b\\\"x\",quota=\"bytes\"} 90")
        );
        assert!(text.contains("clearinghouse_connector_usage{connector=\"c\",quota=\"bytes\"} 50"));
        assert!(
            text.contains("clearinghouse_connector_usage{connector=\"other\",quota=\"bytes\"} 30")
        );
        assert!(text.contains("clearinghouse_connector_requests{connector=\"other\"} 2"));
        assert!(!text.contains("connector=\"a\""), "{text}");
        assert!(text.contains(
            "clearinghouse_connector_usage_ratio{connector=\"b\\\"x\",quota=\"bytes\"} 0.9"
        ));
    }
}
