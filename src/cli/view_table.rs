//! A process's view (`client query --view`, `verify view`) as a table: one row per transfer or
//! contract, then the findings one per line, so that what is wrong is read in words.

use anyhow::bail;
use comfy_table::Table;
use serde_json::Value;

use super::client::{shorten, Shorten};
use crate::ids::ViewKind;

/// `--view`: which view of a process.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(super) enum ViewArg {
    Transfers,
    Contracts,
}

impl ViewArg {
    pub(super) fn kind(self) -> ViewKind {
        match self {
            ViewArg::Transfers => ViewKind::Transfers,
            ViewArg::Contracts => ViewKind::Contracts,
        }
    }
}

/// Transfer columns; ids are shortened in the middle, so that a table fits 120 columns.
const TRANSFER_COLUMNS: [(&str, usize); 6] = [
    ("consumer_pid", 22),
    ("provider_pid", 22),
    ("state", 10),
    ("parties", 30),
    ("last message", 26),
    ("findings", 8),
];

const CONTRACT_COLUMNS: [(&str, usize); 5] = [
    ("agreement_id", 44),
    ("agreed at", 9),
    ("messages", 8),
    ("artifact requests", 17),
    ("transfers", 9),
];

/// Prints `page` (a view reply) as JSON or as a table with its findings.
pub(super) fn print_view(page: &Value, kind: ViewKind, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(page)?);
        return Ok(());
    }
    let Some(rows) = page[kind.name()].as_array() else {
        bail!("the result has no {}", kind.name());
    };
    let mut table = Table::new();
    let mut findings = Vec::new();
    match kind {
        ViewKind::Transfers => {
            table.set_header(TRANSFER_COLUMNS.map(|(name, _)| name));
            for transfer in rows {
                table.add_row(transfer_row(transfer));
                for finding in transfer["findings"].as_array().into_iter().flatten() {
                    findings.push(format!(
                        "{} #{} {}: {}",
                        text(&transfer["consumer_pid"]),
                        text(&finding["sequence"]),
                        text(&finding["kind"]),
                        text(&finding["detail"])
                    ));
                }
            }
        }
        ViewKind::Contracts => {
            table.set_header(CONTRACT_COLUMNS.map(|(name, _)| name));
            for contract in rows {
                let cells = [
                    text(&contract["agreement_id"]),
                    text(&contract["agreed_at"]),
                    count(&contract["messages"]),
                    text(&contract["artifact_requests"]),
                    text(&contract["transfers"]),
                ];
                table.add_row(fit(cells, &CONTRACT_COLUMNS));
            }
        }
    }
    println!("{table}");
    for finding in &findings {
        println!("{finding}");
    }
    if let (Some(total), Some(number), Some(pages)) = (
        page["total"].as_u64(),
        page["page"].as_u64(),
        page["pages"].as_u64(),
    ) {
        println!(
            "page {number} of {pages}: {} of {total} {}, {} entries read",
            rows.len(),
            kind.name(),
            text(&page["entries"])
        );
    }
    if let Some(total) = page["findings"].as_u64() {
        println!("{total} findings in all");
    }
    Ok(())
}

fn transfer_row(transfer: &Value) -> Vec<String> {
    let parties = transfer["parties"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|party| {
            let state = party["state"].as_str().unwrap_or("-");
            format!("{}:{state}", party["side"].as_str().unwrap_or("?"))
        })
        .collect::<Vec<_>>()
        .join(" ");
    let last = transfer["timeline"]
        .as_array()
        .and_then(|timeline| timeline.last())
        .map(|event| format!("#{} {}", text(&event["sequence"]), text(&event["message"])))
        .unwrap_or_default();
    let cells = [
        text(&transfer["consumer_pid"]),
        text(&transfer["provider_pid"]),
        transfer["state"].as_str().unwrap_or("(differ)").to_owned(),
        parties,
        last,
        count(&transfer["findings"]),
    ];
    fit(cells, &TRANSFER_COLUMNS)
}

fn fit<const N: usize>(cells: [String; N], columns: &[(&str, usize); N]) -> Vec<String> {
    cells
        .iter()
        .zip(columns)
        .map(|(cell, (_, width))| shorten(cell, *width, Shorten::Middle))
        .collect()
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn count(value: &Value) -> String {
    value.as_array().map_or(0, Vec::len).to_string()
}
