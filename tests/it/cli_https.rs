//! The IDS-Multipart door of the real binary: `serve --http-listen`, the README's `curl` example
//! as printed there, `client --transport multipart`, and a process used through both doors,
//! whose chain and receipts verify afterwards and whose metrics name the door.

use std::process::Command;

use serde_json::Value;

use crate::support::cli::*;

/// The `curl` command of the README's IDS-Multipart section, pointed at `https`.
fn readme_curl(https: &str) -> String {
    let readme = include_str!("../../README.md");
    let section = &readme[readme
        .find("## Connecting over IDS-Multipart")
        .expect("the README has the IDS-Multipart section")..];
    let start = section.find("```\ncurl ").expect("a curl example") + 4;
    let end = start + section[start..].find("```").unwrap();
    section[start..end]
        .replace("https://127.0.0.1:8443", &format!("https://{https}"))
        .replace("\\\n", " ")
        .trim()
        .to_owned()
}

#[test]
fn the_binary_serves_both_doors_into_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = dev_pki(dir);
    let serve = Serve::start(dir, &["--http-listen", "127.0.0.1:0"], &[]);
    let line = serve
        .line_containing("IDS-Multipart listening on https://")
        .expect("serve prints the HTTPS address");
    let https = line.rsplit("https://").next().unwrap().trim().to_owned();
    let idscp2 = serve.idscp2.clone();
    let multipart = |args: &[&str]| {
        let mut all = vec!["--transport", "multipart"];
        all.extend(args);
        run_client(dir, &https, &pki, "connector-a", &all)
    };

    // Created over IDSCP2, logged to over HTTPS by the CLI and by the README's curl.
    assert_eq!(
        ok(run_client(
            dir,
            &idscp2,
            &pki,
            "connector-a",
            &["create", "--pid", "demo"]
        ))
        .trim(),
        "demo"
    );
    let receipt = ok(multipart(&[
        "log",
        "--pid",
        "demo",
        "--data",
        "over https",
        "--raw",
    ]));
    let curl = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} --silent --show-error --write-out '%{{http_code}}' --output reply.txt",
            readme_curl(&https)
        ))
        .current_dir(dir)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&curl.stdout),
        "201",
        "{}",
        String::from_utf8_lossy(&curl.stderr)
    );
    let reply = std::fs::read_to_string(dir.join("reply.txt")).unwrap();
    assert!(
        reply.contains("ids:MessageProcessedNotificationMessage"),
        "{reply}"
    );

    // Read back over both doors: the same page.
    let page = |out: String| -> Value { serde_json::from_str(&out).unwrap() };
    let query = ["query", "--pid", "demo", "--format", "json"];
    let over_idscp2 = page(ok(run_client(dir, &idscp2, &pki, "connector-a", &query)));
    let over_https = page(ok(multipart(&query)));
    assert_eq!(over_idscp2["total"], 2, "{over_idscp2}");
    assert_eq!(over_idscp2["documents"], over_https["documents"]);
    // Another connector is refused through either door, with the same exit code.
    for (server, transport) in [(&idscp2, "idscp2"), (&https, "multipart")] {
        let refused = run_client(
            dir,
            server,
            &pki,
            "connector-b",
            &[
                "--transport",
                transport,
                "log",
                "--pid",
                "demo",
                "--data",
                "x",
            ],
        );
        assert_eq!(refused.status.code(), Some(4), "{}", stderr(&refused));
        assert!(
            stderr(&refused).contains("NOT_AUTHORIZED"),
            "{}",
            stderr(&refused)
        );
    }

    // The receipt from the HTTPS door verifies against the JWKS the IDSCP2 receipts do.
    let jwks = format!("http://{}/.well-known/jwks.json", serve.ops);
    let verified = ok(run(
        dir,
        &["verify", "receipt", "--jwks", &jwks, receipt.trim()],
    ));
    assert!(verified.contains(": OK"), "{verified}");

    // The metrics name the door each request came through.
    let (status, metrics) = serve.get("/metrics");
    assert_eq!(status, 200);
    for (series, count) in [
        (
            r#"clearinghouse_messages_total{type="request",outcome="ok",door="idscp2"}"#,
            1.0,
        ),
        (
            r#"clearinghouse_messages_total{type="log",outcome="ok",door="https"}"#,
            2.0,
        ),
        (
            r#"clearinghouse_messages_total{type="log",outcome="ok",door="idscp2"}"#,
            0.0,
        ),
        (
            r#"clearinghouse_messages_total{type="log",outcome="NOT_AUTHORIZED",door="idscp2"}"#,
            1.0,
        ),
        (
            r#"clearinghouse_messages_total{type="log",outcome="NOT_AUTHORIZED",door="https"}"#,
            1.0,
        ),
        (
            r#"clearinghouse_request_duration_seconds_count{type="query",door="idscp2"}"#,
            1.0,
        ),
        (
            r#"clearinghouse_request_duration_seconds_count{type="query",door="https"}"#,
            1.0,
        ),
        (
            r#"clearinghouse_request_duration_seconds_count{type="log",door="https"}"#,
            3.0,
        ),
    ] {
        assert_eq!(metric(&metrics, series), count, "{series}\n{metrics}");
    }

    let (status, log) = serve.terminate();
    assert!(status.success(), "{status:?}\n{log}");
    assert!(ok(run(dir, &["verify", "chain", "--pid", "demo"])).contains("OK (2 entries"));
}
