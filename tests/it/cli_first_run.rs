//! The README's first run: no configuration and no PKI; `serve` creates the development PKI and
//! the store in `./data` and prints a `client` command that works exactly as printed.

use crate::support::cli::*;

#[test]
fn first_run_creates_the_pki_and_prints_a_working_client_command() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // Free ports through the environment, the documented CH_ mapping.
    let serve = Serve::start_env_only(dir);
    assert!(dir.join("data/dev-pki/ca.crt").exists());
    assert!(dir.join("data/dev-pki/clients/connector-a.key").exists());
    assert!(dir.join("data/clearinghouse.redb").exists());

    let printed = serve
        .line_containing(" client log ")
        .expect("a client command is printed");
    assert!(
        printed.contains(&format!("--server {}", serve.idscp2)),
        "{printed}"
    );
    let output = std::process::Command::new("sh")
        .args(["-c", printed.trim()])
        .current_dir(dir)
        .output()
        .unwrap();
    let receipt: serde_json::Value = serde_json::from_str(&ok(output)).unwrap();
    assert_eq!(receipt["claims"]["process_id"], "demo");
    assert_eq!(receipt["claims"]["sequence"], 1);

    let (status, log) = serve.terminate();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("development"),
        "the development mode warning is logged: {log}"
    );
}
