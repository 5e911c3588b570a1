//! `CH_` variables that belong to someone else (Kubernetes' service links, the test suite's own)
//! do not stop the binary; one that names a section but no setting still does.

mod cli_support;

use cli_support::*;

/// What Kubernetes injects for a Service named `ch`, and what `scripts/test` exports.
const FOREIGN: &[(&str, &str)] = &[
    ("CH_PORT", "tcp://10.0.0.7:29292"),
    ("CH_SERVICE_HOST", "10.0.0.7"),
    (
        "CH_TEST_MONGODB_URI",
        "mongodb://127.0.0.1:1/?directConnection=true",
    ),
];

#[test]
fn jwks_ignores_foreign_variables() {
    let dir = tempfile::tempdir().unwrap();
    dev_pki(dir.path());
    let output = run_with_env(dir.path(), &["jwks"], FOREIGN, b"");
    let jwks: serde_json::Value = serde_json::from_str(&ok(output)).unwrap();
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1), "{jwks}");
}

#[test]
fn serve_ignores_foreign_variables_with_one_debug_line() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &["--log-level", "debug"], FOREIGN);
    let (status, log) = serve.terminate();
    assert!(status.success(), "{log}");
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("ignored CH_ variables"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    for (name, _) in FOREIGN {
        assert!(lines[0].contains(name), "{name} not in {}", lines[0]);
    }
}

#[test]
fn an_unknown_key_of_a_known_section_is_still_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = FOREIGN.to_vec();
    env.push(("CH_STORE_PAHT", "x.redb"));
    let output = run_with_env(dir.path(), &["jwks"], &env, b"");
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr(&output);
    assert!(
        stderr.contains("CH_STORE_PAHT") && stderr.contains("no such setting"),
        "{stderr}"
    );
}
