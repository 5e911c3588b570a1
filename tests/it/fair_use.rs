//! Fair use among participants, over real IDSCP2 connections: every size a peer controls is
//! bounded by a `limits.*` setting, and every connector has quotas (`quotas.*`) that others'
//! traffic does not use up. Each bound and quota: under it accepted, over it rejected with the
//! setting named, other connectors unaffected, reset after its window, overrides per connector;
//! and two `clearinghouse serve` processes on one MongoDB sharing one quota.
//!
//! Windows and rates are tiny so that each test takes seconds; waits are polls with generous
//! limits, never timing assertions.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clearinghouse::client::{ClearingHouseClient, QueryOptions};
use clearinghouse::config::QuotaOverride;
use clearinghouse::ids::{request_header, MessageType, Reply, RequestContext};
use clearinghouse::idscp2::proto::app::{
    app_layer_message, AppLayerMessage, HeaderEntry, IdsMessage,
};
use clearinghouse::store::ProcessStore;
use serde_json::{json, Value};

use crate::support::clearing::*;
use crate::support::cli;

/// How long a test waits for a quota to reset or an instance to learn another's usage.
const PATIENCE: Duration = Duration::from_secs(30);

fn header(name: &str, value: &str) -> HeaderEntry {
    HeaderEntry {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

fn accepted(reply: &Reply) {
    assert!(!reply.is_rejection(), "{reply:?}");
}

/// Asserts the rejection names `setting` in its payload's `limit`, and returns that object.
fn rejected_by(reply: &Reply, reason: &str, status: u16, setting: &str) -> Value {
    assert_rejected(reply, reason, status);
    let payload = reply.json().unwrap();
    assert_eq!(payload["limit"]["setting"], setting, "{payload}");
    assert!(
        payload["message"].as_str().unwrap().contains(setting),
        "{payload}"
    );
    payload["limit"].clone()
}

fn over_bound(reply: &Reply, setting: &str) -> Value {
    rejected_by(reply, "BAD_PARAMETERS", 413, setting)
}

fn over_quota(reply: &Reply, setting: &str) -> Value {
    let limit = rejected_by(reply, "TEMPORARILY_NOT_AVAILABLE", 429, setting);
    assert!(limit["resets_at"].as_str().is_some(), "{limit}");
    assert!(limit["retry_after_ms"].as_i64().is_some(), "{limit}");
    limit
}

async fn start(configure: impl FnOnce(&mut Limits)) -> TestClearingHouse {
    let mut limits = Limits::default();
    // Quota rejections are held back until the quota resets; long windows would slow the tests.
    limits.quotas.max_hold_ms = 100;
    configure(&mut limits);
    TestClearingHouse::start_with(limits).await
}

/// Sends `request` until it is accepted, for quotas that reset with time.
async fn until_accepted(
    client: &mut ClearingHouseClient,
    mut request: impl FnMut(&mut ClearingHouseClient) -> futures::future::BoxFuture<'_, Reply>,
) {
    let started = Instant::now();
    loop {
        let reply = request(client).await;
        if !reply.is_rejection() {
            return;
        }
        assert!(started.elapsed() < PATIENCE, "still rejected: {reply:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- bounds ---------------------------------------------------------------------------------

#[tokio::test]
async fn owners_of_a_new_process_are_bounded() {
    let ch = start(|l| l.request.max_owners = 4).await;
    let mut a = ch.client("connector-a").await;
    let mut b = ch.client("connector-b").await;
    let others = |n: usize| -> Vec<String> { (0..n).map(|i| format!("owner-{i}")).collect() };
    // The caller counts: three others make four owners.
    accepted(&a.create("four", &others(3)).await.unwrap());
    let reply = a.create("five", &others(4)).await.unwrap();
    let limit = over_bound(&reply, "limits.max_owners");
    assert_eq!(limit["value"], 4);
    assert!(ch.store.process("five").await.unwrap().is_none());
    // Duplicates collapse before counting.
    let mut repeated = others(3);
    repeated.extend(others(3));
    accepted(&b.create("repeated", &repeated).await.unwrap());
}

#[tokio::test]
async fn a_create_payload_is_bounded_before_it_is_parsed() {
    let ch = start(|l| l.request.max_create_payload = 200).await;
    let mut a = ch.client("connector-a").await;
    let create = |payload: Vec<u8>| {
        (
            vec![
                header("ch-ids-pid", "p"),
                header("Content-Type", "application/json"),
            ],
            Bytes::from(payload),
        )
    };
    // Not JSON, but too large: the size is what it is told, so nothing was parsed.
    let (headers, payload) = create(vec![b'['; 201]);
    let reply = a
        .request(MessageType::Request, headers, payload)
        .await
        .unwrap();
    assert_eq!(
        over_bound(&reply, "limits.max_create_payload")["value"],
        200
    );
    // At the limit it is parsed (and here found not to be JSON).
    let (headers, payload) = create(vec![b'['; 200]);
    let reply = a
        .request(MessageType::Request, headers, payload)
        .await
        .unwrap();
    assert_rejected(&reply, "BAD_PARAMETERS", 400);
    let mut owners = json!({"owners": ["x"]}).to_string().into_bytes();
    owners.resize(200, b' ');
    let (headers, payload) = create(owners);
    accepted(
        &a.request(MessageType::Request, headers, payload)
            .await
            .unwrap(),
    );
}

#[tokio::test]
async fn the_ids_header_is_bounded_before_it_is_parsed() {
    let ch = start(|l| l.request.max_header_bytes = 4096).await;
    let mut a = ch.client("connector-a").await;
    let message = |padding: usize| {
        let ctx = RequestContext {
            connector_id: "https://connector-a.test/connector",
            sender_agent: "https://connector-a.test/connector",
            security_token: None,
        };
        let mut header: Value =
            serde_json::from_str(&request_header(&ctx, &MessageType::Log)).unwrap();
        header["ids:contentVersion"] = "x".repeat(padding).into();
        AppLayerMessage {
            message: Some(app_layer_message::Message::IdsMessage(IdsMessage {
                header: header.to_string(),
                payload: Bytes::from_static(b"entry"),
                extra_headers: vec![header_entry("ch-ids-pid", "p")],
            })),
        }
    };
    accepted(&a.exchange(message(1000)).await.unwrap());
    let reply = a.exchange(message(5000)).await.unwrap();
    assert_eq!(over_bound(&reply, "limits.max_header_bytes")["value"], 4096);
    // Unread, so it cannot be correlated.
    assert_eq!(reply.correlation, None);
}

fn header_entry(name: &str, value: &str) -> HeaderEntry {
    header(name, value)
}

#[tokio::test]
async fn extra_headers_are_bounded_in_number_and_size() {
    let ch = start(|l| {
        l.request.max_parameters = 3;
        l.request.max_parameter_bytes = 64;
    })
    .await;
    let mut a = ch.client("connector-a").await;
    let log = |extra: Vec<HeaderEntry>| {
        let mut headers = vec![header("ch-ids-pid", "p")];
        headers.extend(extra);
        headers
    };
    let three = log(vec![
        header("X-One", "1"),
        header("Content-Type", "text/plain"),
    ]);
    accepted(
        &a.request(MessageType::Log, three, Bytes::from_static(b"e"))
            .await
            .unwrap(),
    );
    let four = log(vec![
        header("X-One", "1"),
        header("X-Two", "2"),
        header("X-Three", "3"),
    ]);
    let reply = a
        .request(MessageType::Log, four, Bytes::from_static(b"e"))
        .await
        .unwrap();
    assert_eq!(over_bound(&reply, "limits.max_parameters")["value"], 3);
    // Content-Type is stored with every entry: its size is bounded too.
    let long_type = log(vec![header("Content-Type", &"t".repeat(60))]);
    let reply = a
        .request(MessageType::Log, long_type, Bytes::from_static(b"e"))
        .await
        .unwrap();
    over_bound(&reply, "limits.max_parameter_bytes");
    let page = a.query("p", &QueryOptions::default()).await.unwrap();
    assert_eq!(
        page.json().unwrap()["total"],
        1,
        "nothing over a bound was logged"
    );
}

#[tokio::test]
async fn pid_length_and_page_size_are_settings() {
    let ch = start(|l| {
        l.request.max_pid_length = 10;
        l.request.max_page_size = 2;
    })
    .await;
    let mut a = ch.client("connector-a").await;
    for n in 0..3 {
        accepted(
            &a.log(
                "ten-chars!"[..10].replace('!', "x").as_str(),
                Bytes::from(format!("{n}")),
                None,
            )
            .await
            .unwrap(),
        );
    }
    let reply = a
        .log("eleven-char", Bytes::from_static(b"e"), None)
        .await
        .unwrap();
    let limit = rejected_by(&reply, "BAD_PARAMETERS", 400, "limits.max_pid_length");
    assert_eq!(limit["value"], 10);
    let page = a
        .query(
            "ten-charsx",
            &QueryOptions {
                size: Some(50),
                ..QueryOptions::default()
            },
        )
        .await
        .unwrap();
    let page = page.json().unwrap();
    assert_eq!(
        (page["size"].as_u64(), page["total"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(page["documents"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn processes_with_more_owners_than_the_bound_keep_working() {
    let ch = start(|l| l.request.max_owners = 4).await;
    // Created before the bound existed: straight into the store.
    let mut owners: BTreeSet<String> = (0..100).map(|i| format!("owner-{i}")).collect();
    owners.insert(ch.id_of("connector-a"));
    ch.store.create_process("legacy", &owners).await.unwrap();
    let mut a = ch.client("connector-a").await;
    accepted(
        &a.log("legacy", Bytes::from_static(b"still"), None)
            .await
            .unwrap(),
    );
    let page = a.query("legacy", &QueryOptions::default()).await.unwrap();
    assert_eq!(page.json().unwrap()["total"], 1);
}

// ---- quotas ---------------------------------------------------------------------------------

#[tokio::test]
async fn the_request_rate_is_a_token_bucket_per_connector() {
    let ch = start(|l| {
        l.quotas.requests_per_second = 2.0;
        l.quotas.burst = 3;
    })
    .await;
    let mut a = ch.client("connector-a").await;
    let mut b = ch.client("connector-b").await;
    // A second connection of the same connector shares its bucket.
    let mut a2 = ch.client("connector-a").await;
    for n in 0..3 {
        let client = if n == 0 { &mut a2 } else { &mut a };
        accepted(
            &client
                .log("a", Bytes::from_static(b"e"), None)
                .await
                .unwrap(),
        );
    }
    let reply = a.log("a", Bytes::from_static(b"e"), None).await.unwrap();
    let limit = over_quota(&reply, "quotas.requests_per_second");
    assert_eq!(limit["value"], 2);
    assert!(reply.correlation.is_some(), "a quota rejection correlates");
    let reply = a2.query("a", &QueryOptions::default()).await.unwrap();
    over_quota(&reply, "quotas.requests_per_second");
    // Meanwhile another connector is served.
    for _ in 0..3 {
        accepted(&b.log("b", Bytes::from_static(b"e"), None).await.unwrap());
    }
    // The bucket refills.
    until_accepted(&mut a, |client| {
        Box::pin(async {
            client
                .log("a", Bytes::from_static(b"e"), None)
                .await
                .unwrap()
        })
    })
    .await;
}

#[tokio::test]
async fn processes_per_window_count_creates_and_first_logs_and_reset() {
    let ch = start(|l| {
        l.quotas.processes_per_window = 2;
        l.quotas.window_s = 2;
    })
    .await;
    let mut a = ch.client("connector-a").await;
    let mut b = ch.client("connector-b").await;
    // The window may turn over between two requests; then start again in the new one.
    let started = Instant::now();
    let rejection = loop {
        assert!(started.elapsed() < PATIENCE);
        let n = started.elapsed().as_nanos();
        let first = a.create(&format!("c-{n}"), &[]).await.unwrap();
        let second = a
            .log(&format!("l-{n}"), Bytes::from_static(b"e"), None)
            .await
            .unwrap();
        let third = a.create(&format!("x-{n}"), &[]).await.unwrap();
        if !first.is_rejection() && !second.is_rejection() && third.is_rejection() {
            break third;
        }
    };
    let limit = over_quota(&rejection, "quotas.processes_per_window");
    assert_eq!(limit["value"], 2);
    // Logging to an existing process creates nothing and stays allowed; so does another
    // connector's create.
    accepted(&b.create("b-1", &[]).await.unwrap());
    until_accepted(&mut a, |client| {
        Box::pin(async {
            client
                .create(&format!("later-{}", uuid()), &[])
                .await
                .unwrap()
        })
    })
    .await;
}

fn uuid() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        .to_string()
}

#[tokio::test]
async fn bytes_per_window_with_an_override_and_refunds_for_failed_logs() {
    let ch = start(|l| {
        l.quotas.bytes_per_window = 100;
        l.quotas.window_s = 3600;
    })
    .await;
    let b_id = ch.id_of("connector-b");
    let ch = {
        // Restart with an override for connector-b, now that its id is known.
        let mut limits = ch.limits();
        limits.quotas.bytes_per_window = 100;
        limits.quotas.window_s = 3600;
        limits.quotas.connectors.insert(
            b_id,
            QuotaOverride {
                bytes_per_window: Some(1000),
                ..QuotaOverride::default()
            },
        );
        ch.restart_with(limits).await
    };
    let mut a = ch.client("connector-a").await;
    let mut b = ch.client("connector-b").await;
    let bytes = |n: usize| Bytes::from(vec![b'x'; n]);
    accepted(&b.create("b-only", &[]).await.unwrap());
    // A log that fails is not counted: not an owner.
    let reply = a.log("b-only", bytes(100), None).await.unwrap();
    assert_rejected(&reply, "NOT_AUTHORIZED", 403);
    accepted(&a.log("a", bytes(60), None).await.unwrap());
    let reply = a.log("a", bytes(60), None).await.unwrap();
    assert_eq!(over_quota(&reply, "quotas.bytes_per_window")["value"], 100);
    accepted(&a.log("a", bytes(40), None).await.unwrap());
    over_quota(
        &a.log("a", bytes(1), None).await.unwrap(),
        "quotas.bytes_per_window",
    );
    // connector-b has its own, larger quota.
    for _ in 0..9 {
        accepted(&b.log("b-only", bytes(100), None).await.unwrap());
    }
    let reply = b.log("b-only", bytes(200), None).await.unwrap();
    assert_eq!(over_quota(&reply, "quotas.bytes_per_window")["value"], 1000);
    let page = a.query("a", &QueryOptions::default()).await.unwrap();
    assert_eq!(page.json().unwrap()["total"], 2);
}

#[tokio::test]
async fn usage_survives_a_restart_of_the_embedded_store() {
    let ch = start(|l| {
        l.quotas.bytes_per_window = 100;
        l.quotas.window_s = 3600;
        l.quotas.sync_interval_ms = 50;
    })
    .await;
    let a_id = ch.id_of("connector-a");
    let mut a = ch.client("connector-a").await;
    accepted(&a.log("a", Bytes::from(vec![b'x'; 90]), None).await.unwrap());
    a.close().await;
    let limits = ch.limits();
    let ch = ch.restart_with(limits).await;
    let mut a = ch.client("connector-a").await;
    // A request makes the connector known; the next sync reads its usage back.
    accepted(&a.query("a", &QueryOptions::default()).await.unwrap());
    let started = Instant::now();
    while ch.usage_of(&a_id, "bytes") != Some(90) {
        assert!(
            started.elapsed() < PATIENCE,
            "{:?}",
            ch.usage_of(&a_id, "bytes")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    over_quota(
        &a.log("a", Bytes::from(vec![b'x'; 20]), None).await.unwrap(),
        "quotas.bytes_per_window",
    );
}

// ---- the real binary: configuration file, /metrics, two instances on one MongoDB ------------

fn bytes_used(serve: &cli::Serve, connector: &str) -> f64 {
    let (status, text) = serve.get("/metrics");
    assert_eq!(status, 200);
    cli::metric(
        &text,
        &format!("clearinghouse_connector_usage{{connector=\"{connector}\",quota=\"bytes\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_overrides_from_its_file_and_shows_who_is_near_a_limit() {
    let dir = tempfile::tempdir().unwrap();
    let pki = cli::dev_pki(dir.path());
    let b_id = cli::connector_id(&pki, "connector-b");
    let config = dir.path().join("fair-use.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nmax_owners = 2\n\n[quotas]\nbytes_per_window = 100\nmetrics_connectors = 1\n\n\
             [quotas.connectors.\"{b_id}\"]\nbytes_per_window = 1000\n"
        ),
    )
    .unwrap();
    let serve = cli::Serve::start(dir.path(), &["--config", config.to_str().unwrap()], &[]);
    let mut a = cli::library_client(&serve.idscp2, &pki, "connector-a").await;
    let mut b = cli::library_client(&serve.idscp2, &pki, "connector-b").await;
    let reply = a
        .create("three", &["x".to_owned(), "y".to_owned()])
        .await
        .unwrap();
    assert_eq!(over_bound(&reply, "limits.max_owners")["value"], 2);
    accepted(&a.log("a", Bytes::from(vec![b'x'; 90]), None).await.unwrap());
    over_quota(
        &a.log("a", Bytes::from(vec![b'x'; 20]), None).await.unwrap(),
        "quotas.bytes_per_window",
    );
    accepted(
        &b.log("b", Bytes::from(vec![b'x'; 500]), None)
            .await
            .unwrap(),
    );

    // connector-a is nearest its limit (90 %, b is at 50 %), so it is the one shown by name.
    let a_id = cli::connector_id(&pki, "connector-a");
    let (_, text) = serve.get("/metrics");
    let series = |connector: &str, quota: &str| {
        format!(
            "clearinghouse_connector_usage_ratio{{connector=\"{connector}\",quota=\"{quota}\"}}"
        )
    };
    assert_eq!(cli::metric(&text, &series(&a_id, "bytes")), 0.9, "{text}");
    assert!(!text.contains(&b_id), "{text}");
    assert_eq!(bytes_used(&serve, "other"), 500.0, "{text}");
    assert_eq!(
        cli::metric(
            &text,
            &format!("clearinghouse_connector_rejections{{connector=\"{a_id}\",quota=\"bytes\"}}")
        ),
        1.0
    );
    assert_eq!(
        cli::metric(
            &text,
            "clearinghouse_quota_rejections_total{quota=\"bytes\"}"
        ),
        1.0
    );
    let (status, log) = tokio::task::spawn_blocking(move || serve.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_mongodb_share_a_quota() {
    let Some(db) = crate::support::mongo::TestDatabase::new() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = cli::dev_pki(dir.path());
    let env = [
        ("CH_STORE_BACKEND", "mongodb"),
        ("CH_STORE_MONGODB_URI", db.uri.as_str()),
        ("CH_STORE_MONGODB_DATABASE", db.name.as_str()),
        ("CH_QUOTAS_BYTES_PER_WINDOW", "1000"),
        ("CH_QUOTAS_WINDOW_S", "3600"),
        ("CH_QUOTAS_SYNC_INTERVAL_MS", "100"),
    ];
    let first = cli::Serve::start(dir.path(), &[], &env);
    let second = cli::Serve::start(dir.path(), &[], &env);
    let a_id = cli::connector_id(&pki, "connector-a");
    let mut a_first = cli::library_client(&first.idscp2, &pki, "connector-a").await;
    let mut a_second = cli::library_client(&second.idscp2, &pki, "connector-a").await;
    let mut b_second = cli::library_client(&second.idscp2, &pki, "connector-b").await;

    // The second instance learns of connector-a by a request, then of its usage by a sync.
    assert_rejected(
        &a_second
            .query("nothing", &QueryOptions::default())
            .await
            .unwrap(),
        "NOT_FOUND",
        404,
    );
    accepted(
        &a_first
            .log("a", Bytes::from(vec![b'x'; 800]), None)
            .await
            .unwrap(),
    );
    let started = Instant::now();
    while bytes_used(&second, &a_id) < 800.0 {
        assert!(
            started.elapsed() < PATIENCE,
            "the second instance never saw the usage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 800 + 300 is over the shared 1000, though the second instance itself admitted nothing.
    let reply = a_second
        .log("a", Bytes::from(vec![b'x'; 300]), None)
        .await
        .unwrap();
    assert_eq!(over_quota(&reply, "quotas.bytes_per_window")["value"], 1000);
    accepted(
        &a_second
            .log("a", Bytes::from(vec![b'x'; 200]), None)
            .await
            .unwrap(),
    );
    accepted(
        &b_second
            .log("b", Bytes::from(vec![b'x'; 900]), None)
            .await
            .unwrap(),
    );
    for serve in [first, second] {
        let (status, log) = tokio::task::spawn_blocking(move || serve.terminate())
            .await
            .unwrap();
        assert!(status.success(), "{log}");
    }
    db.drop_database().await;
}
