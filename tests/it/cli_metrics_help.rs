//! `/metrics` of the real server describes every metric: each `# TYPE` line has its `# HELP`.

use crate::support::cli::*;

#[test]
fn every_metric_on_the_endpoint_has_help() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[], &[]);
    let pki = dir.path().join("data/dev-pki");
    // Traffic, so that the request, store and handshake metrics exist.
    let log = ["log", "--pid", "metrics", "--data", "x"];
    ok(run_client(
        dir.path(),
        &serve.idscp2,
        &pki,
        "connector-a",
        &log,
    ));

    let (status, text) = serve.get("/metrics");
    assert_eq!(status, 200);
    let typed: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    for name in [
        "clearinghouse_messages_total",
        "clearinghouse_request_duration_seconds",
        "clearinghouse_handshakes_total",
    ] {
        assert!(typed.contains(&name), "{name} not on /metrics: {text}");
    }
    for name in &typed {
        let help = format!("# HELP {name} ");
        assert!(
            text.lines().any(|line| line.starts_with(&help)),
            "no help for {name}: {text}"
        );
    }
    let (status, log) = serve.terminate();
    assert!(status.success(), "{log}");
}
