//! What an operator meets on the command line: flags checked before anything connects, RA suites
//! of their choice, server names added to a development PKI, a printed client command that works
//! for the PKI in use, help that explains itself, and one-line messages without doubled text.

use std::path::Path;

use crate::support::cli::*;

fn client(serve: &Serve, pki: &Path, extra: &[&str]) -> std::process::Output {
    let dir = pki.parent().unwrap().parent().unwrap();
    run_client(dir, &serve.idscp2, pki, "connector-a", extra)
}

fn assert_usage(output: &std::process::Output, needles: &[&str]) {
    let stderr = stderr(output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
}

#[test]
fn client_flags_are_checked_before_connecting_and_named() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: each of these must fail on its flag, not on the connection.
    let base = ["client", "--server", "127.0.0.1:1"];
    for (args, flag) in [
        (&["create", "--pid", "a b"][..], "--pid"),
        (&["create", "--pid", "default"][..], "--pid"),
        (
            &["create", "--pid", "p", "--owner", "two words"][..],
            "--owner",
        ),
        (&["log", "--pid", "", "--data", "x"][..], "--pid"),
        (&["query", "--pid", "p", "--size", "0"][..], "--size"),
        (&["query", "--pid", "p", "--page", "first"][..], "--page"),
        (&["query", "--pid", "p", "--sort", "up"][..], "--sort"),
        (
            &["query", "--pid", "p", "--from", "2024-13-01"][..],
            "--from",
        ),
        (&["query", "--pid", "p", "--to", "yesterday"][..], "--to"),
        (
            &[
                "query",
                "--pid",
                "p",
                "--from",
                "2024-02-01",
                "--to",
                "2024-01-01",
            ][..],
            "--from",
        ),
        (&["get", "--pid", "p", "--id", ""][..], "--id"),
    ] {
        let all: Vec<&str> = base.iter().chain(args).copied().collect();
        let output = run(dir.path(), &all);
        assert_usage(&output, &[flag]);
        assert!(!stderr(&output).contains("ch-ids-"), "{}", stderr(&output));
    }
    let output = run(dir.path(), &["client", "query", "--pid", "p"]);
    assert_usage(&output, &["--cert", "--key", "--ca", "required"]);
}

#[test]
fn ra_suites_are_chosen_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dev_pki(dir.path());
    // A NullRa-only peer, as idscp2-rust is.
    let null_only = [
        ("CH_IDSCP2_SUPPORTED_RA", "[\"NullRa\"]"),
        ("CH_IDSCP2_EXPECTED_RA", "[\"NullRa\"]"),
    ];
    let serve = Serve::start(dir.path(), &[], &null_only);
    let log = ["log", "--pid", "ra", "--data", "x", "--raw"];
    let output = client(&serve, &pki, &log);
    assert_eq!(
        output.status.code(),
        Some(1),
        "the defaults do not reach it"
    );
    let mut with_ra = vec!["--ra-supported", "NullRa", "--ra-expected", "NullRa"];
    with_ra.extend(log);
    ok(client(&serve, &pki, &with_ra));
    let output = client(
        &serve,
        &pki,
        &["--ra-supported", "TPM", "get", "--pid", "p", "--id", "x"],
    );
    assert_usage(&output, &["--ra-supported", "TPM"]);
    let output = client(
        &serve,
        &pki,
        &["--ra-expected", "", "get", "--pid", "p", "--id", "x"],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

#[test]
fn dev_pki_adds_server_names_and_serve_prints_a_command_that_works_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // A PKI without the default server names.
    ok(run(
        dir,
        &[
            "dev-pki",
            "--dir",
            "data/dev-pki",
            "--server-name",
            "ch.example",
            "--client",
            "partner",
        ],
    ));
    let added = ok(run(
        dir,
        &[
            "dev-pki",
            "--dir",
            "data/dev-pki",
            "--server-name",
            "127.0.0.1",
            "--client",
            "partner",
        ],
    ));
    assert!(
        added.contains("reissued") && added.contains("127.0.0.1"),
        "{added}"
    );
    let again = ok(run(
        dir,
        &[
            "dev-pki",
            "--dir",
            "data/dev-pki",
            "--server-name",
            "127.0.0.1",
            "--client",
            "partner",
        ],
    ));
    assert!(!again.contains("reissued"), "{again}");

    let serve = Serve::start(dir, &[], &[]);
    let printed = serve
        .line_containing(" client log ")
        .expect("a client command is printed");
    assert!(printed.contains("--server-name 127.0.0.1"), "{printed}");
    let output = std::process::Command::new("sh")
        .args(["-c", printed.trim()])
        .current_dir(dir)
        .output()
        .unwrap();
    let receipt: serde_json::Value = serde_json::from_str(&ok(output)).unwrap();
    assert_eq!(receipt["claims"]["process_id"], "demo");
}

#[test]
fn serve_prints_no_command_that_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = dev_pki(dir);
    ok(run(dir, &["dev-pki", "--dir", "other"]));
    // The server trusts another CA than the development one its client certificates come from.
    let serve = Serve::start(dir, &[], &[("CH_TLS_CA_CERTIFICATES", "other/ca.crt")]);
    let line = serve
        .line_containing("development mode")
        .expect("a development-mode line");
    assert!(!line.contains("try"), "{line}");
    assert!(line.contains("other/ca.crt"), "{line}");
    assert!(pki.exists());
}

#[test]
fn help_describes_every_flag_and_the_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    for command in [
        &["serve"][..],
        &["client"],
        &["client", "create"],
        &["client", "log"],
        &["client", "query"],
        &["client", "get"],
        &["verify", "receipt"],
        &["verify", "chain"],
        &["export"],
        &["dev-pki"],
        &["jwks"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let help = ok(run(dir.path(), &args));
        assert!(help.contains("Exit codes:"), "{command:?}: {help}");
        // A flag line is `  -x, --name <VALUE>  Description`: something after the flag.
        for line in help.lines().filter(|l| l.trim_start().starts_with('-')) {
            let described = line
                .trim_start()
                .split_once("  ")
                .is_some_and(|(_, text)| !text.trim().is_empty());
            assert!(described, "{command:?}: undescribed flag {line:?}");
        }
    }
    let client_help = ok(run(dir.path(), &["client", "log", "--help"]));
    assert!(client_help.contains("Connection:"), "{client_help}");
    assert!(client_help.contains("--cert <FILE>") && client_help.contains("[required]"));
    assert!(!ok(run(dir.path(), &["jwks", "--help"])).contains("--store-path"));
}

#[test]
fn messages_say_things_once_and_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = dev_pki(dir);
    ok(run(dir, &["dev-pki", "--dir", "other"]));

    // Nothing listens: the OS reason once.
    let output = run(
        dir,
        &[
            "client",
            "--server",
            "127.0.0.1:1",
            "--ca",
            "other/ca.crt",
            "--cert",
            "other/clients/connector-a.crt",
            "--key",
            "other/clients/connector-a.key",
            "query",
            "--pid",
            "p",
        ],
    );
    let text = stderr(&output);
    assert_eq!(text.matches("Connection refused").count(), 1, "{text}");

    let serve = Serve::start(dir, &[], &[]);
    // A --ca that did not issue the server certificate.
    let mut args = client_args(&serve.idscp2, &pki, "connector-a");
    args[4] = "other/ca.crt".into();
    args.extend(["query", "--pid", "p"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let text = stderr(&run(dir, &args));
    assert!(
        text.contains("not signed by a CA in --ca other/ca.crt"),
        "{text}"
    );
    assert!(!text.contains("UnknownIssuer"), "{text}");

    // A receipt with a broken signature.
    let receipt = ok(client(
        &serve,
        &pki,
        &["log", "--pid", "p", "--data", "x", "--raw"],
    ));
    let table = ok(client(&serve, &pki, &["query", "--pid", "p"]));
    assert!(table.lines().all(|l| l.chars().count() <= 120), "{table}");
    assert!(table.contains("page 1 of 1: 1 of 1 entry"), "{table}");
    let (_, jwks) = serve.get("/.well-known/jwks.json");
    std::fs::write(dir.join("jwks.json"), jwks).unwrap();
    // The signature's first character changed: still base64url, no longer the signature.
    let receipt = receipt.trim();
    let at = receipt.rfind('.').unwrap() + 1;
    let flipped = if receipt[at..].starts_with('A') {
        "B"
    } else {
        "A"
    };
    let broken = format!("{}{flipped}{}", &receipt[..at], &receipt[at + 1..]);
    let output = run(dir, &["verify", "receipt", "--jwks", "jwks.json", &broken]);
    assert_eq!(output.status.code(), Some(3));
    let text = stderr(&output);
    assert_eq!(text.matches("verify").count(), 0, "{text}");
    assert!(text.contains("signature"), "{text}");
    assert!(!text.contains("InvalidSignature"), "{text}");

    // The embedded store is locked by serve.
    let output = run(dir, &["export", "--pid", "p"]);
    assert_usage(
        &output,
        &["store.path", "stop `clearinghouse serve`", "client query"],
    );
    let (status, log) = serve.terminate();
    assert!(status.success(), "{log}");
    let output = run(dir, &["export", "--pid", "p"]);
    assert!(output.status.success());
    assert!(
        stderr(&output).contains("exported 1 entry of"),
        "{}",
        stderr(&output)
    );

    // An unknown key names the file it is in.
    std::fs::write(dir.join("bad.toml"), "[server]\nlistne = \"x\"\n").unwrap();
    let output = run(dir, &["jwks", "--config", "bad.toml"]);
    assert_usage(&output, &["server.listne", "bad.toml"]);
}
