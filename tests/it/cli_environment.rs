//! `CH_` variables that belong to someone else (Kubernetes' service links, the test suite's own)
//! do not stop the binary; one that names a section but no setting still does.

use crate::support::cli::*;

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

#[test]
fn a_log_level_that_is_no_level_is_refused_wherever_it_comes_from() {
    let dir = tempfile::tempdir().unwrap();
    let serve = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--ops-listen",
        "127.0.0.1:0",
    ];
    let mut from_env = command(dir.path());
    from_env.args(serve).env("CH_LOG_LEVEL", "verbose");
    let mut from_flag = command(dir.path());
    from_flag.args(serve).args(["--log-level", "verbose"]);
    for command in [from_env, from_flag] {
        let output = refused_at_once(command);
        let stderr = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("log.level") && stderr.contains("\"verbose\""),
            "{stderr}"
        );
    }
    // Levels and target directives still work.
    let serve = Serve::start(
        dir.path(),
        &["--log-level", "clearinghouse=debug,WARN"],
        &[],
    );
    let (status, log) = serve.terminate();
    assert!(status.success(), "{log}");
}

/// Runs `command`, which must exit by itself: a `serve` that starts instead is killed, and the
/// test fails.
fn refused_at_once(mut command: std::process::Command) -> std::process::Output {
    use std::process::Stdio;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!("it started instead: {}", stdout(&output));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}
