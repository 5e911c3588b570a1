//! What the operator reads about connections, through the real binary's JSON log: every line of a
//! connection carries the peer's address and, once its DAT is accepted, its identity; TLS
//! handshakes that fail are warned about with address and reason, at a bounded rate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use crate::support::cli::*;

/// Turns a hang into a failure; nothing is asserted about how long anything takes.
const GENEROUS: Duration = Duration::from_secs(30);

const JSON_LOGS: [(&str, &str); 2] = [
    ("CH_LOG_FORMAT", "json"),
    // A USER_SHUTDOWN close is a debug line; it belongs to the connection too. Rejections are
    // info lines.
    ("CH_LOG_LEVEL", "info,idscp2=debug"),
];

fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

/// The fields of the line's `connection` span, if it was logged in one.
fn connection_span(line: &Value) -> Option<&Value> {
    line["spans"]
        .as_array()?
        .iter()
        .find(|span| span["name"] == "connection")
}

/// Waits until the server's log holds lines for which `done` holds.
fn wait_for_log(serve: &Serve, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + GENEROUS;
    loop {
        let lines = json_lines(&serve.stderr());
        if done(&lines) {
            return lines;
        }
        assert!(Instant::now() < deadline, "{}", serve.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_of_a_connection_names_address_and_identity() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = dev_pki(dir);
    let serve = Serve::start(dir, &[], &JSON_LOGS);
    let identity = connector_id(&pki, "connector-a");

    let mut client = library_client(&serve.idscp2, &pki, "connector-a").await;
    let logged = client
        .log("p1", Bytes::from_static(b"{}"), Some("application/json"))
        .await
        .unwrap();
    assert!(!logged.is_rejection(), "{logged:?}");
    let rejected = client.create("p1", &[]).await.unwrap();
    assert!(rejected.is_rejection(), "{rejected:?}");
    client.close().await;

    let lines = wait_for_log(&serve, |lines| {
        lines
            .iter()
            .any(|line| message(line) == "IDSCP2 connection closed")
    });
    let of_connection: Vec<&Value> = lines
        .iter()
        .filter(|line| connection_span(line).is_some())
        .collect();
    let logged = |what: &str, matches: &dyn Fn(&Value) -> bool| {
        assert!(
            of_connection.iter().any(|line| matches(line)),
            "no {what} line in the connection span:\n{}",
            serve.stderr()
        );
    };
    logged("established", &|line| {
        message(line) == "IDSCP2 connection established"
    });
    logged("rejected", &|line| {
        message(line) == "request rejected" && line["fields"]["reason"] == "BAD_PARAMETERS"
    });
    logged("closed", &|line| {
        message(line) == "IDSCP2 connection closed"
    });
    let established = of_connection
        .iter()
        .position(|line| message(line) == "IDSCP2 connection established")
        .unwrap();
    let addr = connection_span(of_connection[0]).unwrap()["addr"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    for (index, line) in of_connection.iter().enumerate() {
        let span = connection_span(line).unwrap();
        assert_eq!(span["addr"], addr.as_str(), "{line}");
        // The identity is known from the accepted DAT on, which comes before establishment.
        if index >= established {
            assert_eq!(span["peer"], identity.as_str(), "{line}");
        }
    }
}

/// Sends bytes that are not TLS and waits for the server to close; returns our address.
fn garbage(server: &str) -> String {
    let mut socket = TcpStream::connect(server).unwrap();
    socket.set_read_timeout(Some(GENEROUS)).unwrap();
    socket
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let _ = socket.read_to_end(&mut Vec::new());
    socket.local_addr().unwrap().to_string()
}

fn tls_failures<'a>(lines: &'a [Value], reason: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|line| {
            message(line) == "TLS handshake failed" && line["fields"]["reason"] == reason
        })
        .collect()
}

const NOT_TLS: &str = "not TLS, or malformed TLS";
const UNKNOWN_CA: &str = "client certificate from an unknown CA";

#[test]
fn failed_tls_handshakes_are_warned_about_with_address_and_reason_at_a_bounded_rate() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = dev_pki(dir);
    let other = dir.join("other");
    ok(run(dir, &["dev-pki", "--dir", other.to_str().unwrap()]));
    let serve = Serve::start(dir, &[], &JSON_LOGS);

    let from = garbage(&serve.idscp2);
    let lines = wait_for_log(&serve, |lines| !tls_failures(lines, NOT_TLS).is_empty());
    let warning = tls_failures(&lines, NOT_TLS)[0];
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert_eq!(connection_span(warning).unwrap()["addr"], from.as_str());

    // A connector whose certificate comes from a CA the clearing house does not trust.
    let mut args = client_args(&serve.idscp2, &pki, "connector-a");
    let cert = other.join("clients/connector-a.crt").display().to_string();
    let key = other.join("clients/connector-a.key").display().to_string();
    let flag = |name: &str| args.iter().position(|a| a == name).unwrap() + 1;
    let (cert_at, key_at) = (flag("--cert"), flag("--key"));
    args[cert_at] = cert;
    args[key_at] = key;
    args.extend(["create", "--pid", "p1"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = run(dir, &args);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let lines = wait_for_log(&serve, |lines| !tls_failures(lines, UNKNOWN_CA).is_empty());
    let warning = tls_failures(&lines, UNKNOWN_CA)[0];
    assert_eq!(warning["level"], "WARN", "{warning}");
    let addr = connection_span(warning).unwrap()["addr"].as_str().unwrap();
    assert!(addr.starts_with("127.0.0.1:"), "{warning}");

    // A flood gets a bounded number of lines, whatever the time it takes.
    let flood = 100;
    for _ in 0..flood {
        garbage(&serve.idscp2);
    }
    let (_, metrics) = serve.get("/metrics");
    let failed = metric(
        &metrics,
        r#"clearinghouse_handshakes_total{outcome="tls_failed"}"#,
    );
    // The counter may lag the last socket's close by a moment.
    assert!(failed >= f64::from(flood), "{metrics}");
    let lines = json_lines(&serve.stderr());
    let logged = tls_failures(&lines, NOT_TLS).len();
    assert!(
        (1..=10).contains(&logged),
        "{logged} lines for {} failures",
        flood + 1
    );
}

#[test]
fn the_cli_closes_cleanly_after_a_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = dev_pki(dir);
    let serve = Serve::start(dir, &[], &JSON_LOGS);
    let mut args = client_args(&serve.idscp2, &pki, "connector-a");
    args.extend(["create", "--pid", "p1"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(run(dir, &args));
    // Without a close on the rejection path, about a third of these vanished without one.
    let rejections = 8;
    for _ in 0..rejections {
        let rejected = run(dir, &args);
        assert_eq!(rejected.status.code(), Some(4), "{}", stderr(&rejected));
    }

    let closes = |lines: &[Value]| -> Vec<String> {
        lines
            .iter()
            .filter(|line| message(line) == "IDSCP2 connection closed")
            .map(|line| {
                line["fields"]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    let lines = wait_for_log(&serve, |lines| closes(lines).len() > rejections);
    for reason in closes(&lines) {
        assert_eq!(
            reason,
            "USER_SHUTDOWN (Shutdown; closed by peer)",
            "{}",
            serve.stderr()
        );
    }
    assert!(
        !serve.stderr().contains("close_notify"),
        "{}",
        serve.stderr()
    );
}
