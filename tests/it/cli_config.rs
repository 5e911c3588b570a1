//! Bad configurations stop `serve` before it listens: exit code 2 and one message naming the
//! setting (or file, or variable) at fault.

use std::path::Path;

use crate::support::cli::*;

/// Runs `serve` with `config` as its file (in a directory holding a development PKI in `pki/`)
/// and returns stderr, asserting exit code 2.
fn refused(config: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    refused_in(dir.path(), config, env)
}

fn refused_in(dir: &Path, config: &str, env: &[(&str, &str)]) -> String {
    ok(run(dir, &["dev-pki", "--dir", "pki"]));
    std::fs::write(dir.join("ch.toml"), config).unwrap();
    let output = command(dir)
        .args([
            "serve",
            "--config",
            "ch.toml",
            "--listen",
            "127.0.0.1:0",
            "--ops-listen",
            "127.0.0.1:0",
        ])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        !stdout(&output).contains("listening"),
        "nothing listens: {}",
        stdout(&output)
    );
    stderr
}

/// A complete, valid TLS section from the `pki/` directory, with one key replaced.
fn tls(replace: &str, value: &str) -> String {
    let mut settings = vec![
        ("certificate", "pki/server.crt".to_owned()),
        ("private_key", "pki/server.key".to_owned()),
        ("ca_certificates", "pki/ca.crt".to_owned()),
    ];
    for (key, current) in &mut settings {
        if *key == replace {
            *current = value.to_owned();
        }
    }
    let lines: String = settings
        .iter()
        .map(|(key, value)| format!("{key} = \"{value}\"\n"))
        .collect();
    format!("[tls]\n{lines}[receipt]\nkey = \"pki/receipt-es256.key\"\n")
}

fn assert_names(stderr: &str, needles: &[&str]) {
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
}

#[test]
fn a_complete_configuration_of_its_own_starts() {
    let dir = tempfile::tempdir().unwrap();
    ok(run(dir.path(), &["dev-pki", "--dir", "pki"]));
    std::fs::write(dir.path().join("ch.toml"), tls("", "")).unwrap();
    let serve = Serve::start(dir.path(), &["--config", "ch.toml"], &[]);
    let (status, log) = serve.terminate();
    assert!(status.success(), "{log}");
}

#[test]
fn a_missing_configuration_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(dir.path(), &["serve", "--config", "nowhere.toml"]);
    assert_eq!(output.status.code(), Some(2));
    assert_names(&stderr(&output), &["nowhere.toml"]);
}

#[test]
fn a_missing_certificate_file_is_named() {
    let stderr = refused(&tls("certificate", "pki/missing.crt"), &[]);
    assert_names(&stderr, &["tls.certificate", "missing.crt"]);
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_named() {
    let stderr = refused(&tls("private_key", "pki/clients/connector-a.key"), &[]);
    assert_names(&stderr, &["tls.private_key", "does not match"]);
}

#[test]
fn an_unknown_key_is_named() {
    let stderr = refused(
        &format!("{}[server]\nlistne = \"0.0.0.0:1\"\n", tls("", "")),
        &[],
    );
    assert_names(&stderr, &["server", "listne"]);
    let stderr = refused(&format!("{}[srever]\n", tls("", "")), &[]);
    assert_names(&stderr, &["srever"]);
}

#[test]
fn bad_values_are_named() {
    let stderr = refused(
        &format!("{}[dat]\nmode = \"sometimes\"\n", tls("", "")),
        &[],
    );
    assert_names(&stderr, &["dat.mode", "sometimes"]);
    let stderr = refused(
        &format!("{}[server]\nmax_connections = 0\n", tls("", "")),
        &[],
    );
    assert_names(&stderr, &["server.max_connections"]);
    let stderr = refused(
        &tls("", "").replace("[receipt]\n", "[receipt]\nalgorithm = \"es256\"\n"),
        &[],
    );
    assert_names(&stderr, &["receipt.algorithm", "es256"]);
    let stderr = refused(
        &format!("{}[idscp2]\nsupported_ra = [\"TPM\"]\n", tls("", "")),
        &[],
    );
    assert_names(&stderr, &["idscp2.supported_ra", "TPM"]);
    let stderr = refused(&format!("{}[dat]\nmode = \"daps\"\n", tls("", "")), &[]);
    assert_names(&stderr, &["dat.daps_url"]);
    let stderr = refused(
        &tls("", ""),
        &[("CH_SERVER_MAX_HANDSHAKES_PER_ADDRESS", "1000")],
    );
    assert_names(
        &stderr,
        &["server.max_handshakes_per_address", "server.max_handshakes"],
    );
    let stderr = refused(
        &format!("{}[server]\nclient_hello_timeout_ms = 60000\n", tls("", "")),
        &[],
    );
    assert_names(
        &stderr,
        &[
            "server.client_hello_timeout_ms",
            "idscp2.handshake_timeout_ms",
        ],
    );
}

#[test]
fn environment_overrides_are_checked_and_named() {
    let stderr = refused(&tls("", ""), &[("CH_SERVER_MAX_CONNECTIONS", "lots")]);
    assert_names(
        &stderr,
        &["CH_SERVER_MAX_CONNECTIONS", "server.max_connections"],
    );
    let stderr = refused(&tls("", ""), &[("CH_SERVER_LISTN", "127.0.0.1:0")]);
    assert_names(&stderr, &["CH_SERVER_LISTN", "no such setting"]);
    // File < environment < flags: the file's bad max_connections is overridden by the
    // environment, the environment's bad ops.listen by the --ops-listen flag, so what is left to
    // report is the bad receipt algorithm, checked after both.
    let file = format!("{}[server]\nmax_connections = 0\n", tls("", ""));
    let stderr = refused(
        &file,
        &[
            ("CH_SERVER_MAX_CONNECTIONS", "5"),
            ("CH_OPS_LISTEN", "not an address"),
            ("CH_RECEIPT_ALGORITHM", "none"),
        ],
    );
    assert_names(&stderr, &["receipt.algorithm"]);
    assert!(
        !stderr.contains("max_connections") && !stderr.contains("ops.listen"),
        "{stderr}"
    );
}

#[test]
fn an_unusable_store_path_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a-file"), "not a directory").unwrap();
    let config = format!("{}[store]\npath = \"a-file/store.redb\"\n", tls("", ""));
    let stderr = refused_in(dir.path(), &config, &[]);
    assert_names(&stderr, &["store.path", "a-file/store.redb"]);
}

#[test]
fn an_unreachable_mongodb_is_refused_at_startup() {
    // A port nothing listens on: startup must give up within the timeout and name the setting.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stderr = refused(
        &format!(
            "{}[store]\nbackend = \"mongodb\"\n[store.mongodb]\nuri = \"mongodb://127.0.0.1:{port}/?directConnection=true\"\ntimeout_ms = 500\n",
            tls("", "")
        ),
        &[],
    );
    assert_names(&stderr, &["store.mongodb", "unavailable"]);
}

#[test]
fn a_bad_mongodb_write_concern_is_refused() {
    let stderr = refused(
        &format!(
            "{}[store]\nbackend = \"mongodb\"\n[store.mongodb]\nwrite_concern = \"most\"\n",
            tls("", "")
        ),
        &[],
    );
    assert_names(&stderr, &["store.mongodb.write_concern", "most"]);
}

#[test]
fn a_memory_bound_that_cannot_hold_its_parts_is_named() {
    let stderr = refused(
        &format!(
            "{}[server]\nconnection_buffer_bytes = 1000000\n",
            tls("", "")
        ),
        &[],
    );
    assert_names(&stderr, &["server.connection_buffer_bytes", "16777216"]);
    // 1,024 connections x 2 x 64 KiB alone are 128 MiB.
    let stderr = refused(
        &format!("{}[server]\nmax_buffered_bytes = 100000000\n", tls("", "")),
        &[],
    );
    assert_names(&stderr, &["server.max_buffered_bytes", "1024 connections"]);
    let stderr = refused(&format!("{}[idscp2]\nmax_resends = 0\n", tls("", "")), &[]);
    assert_names(&stderr, &["idscp2.max_resends"]);
}
