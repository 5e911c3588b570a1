//! A process's owners after its creation, through the real binary and server: `whoami` and
//! `dev-pki` print the ids to name owners by, `client info` shows a process to its owners, and
//! `client owners` changes them, recorded in the process's own chain with a receipt.

use std::process::Output;

use crate::support::cli::*;
use serde_json::Value;

fn rejected(output: Output, reason: &str) -> String {
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(message.contains(reason), "{message}");
    message
}

fn json(output: Output) -> Value {
    serde_json::from_str(&ok(output)).unwrap()
}

#[test]
fn whoami_and_dev_pki_print_the_id_the_server_sees() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let listing = ok(run(dir, &["dev-pki", "--dir", "data/dev-pki"]));
    let pki = dir.join("data/dev-pki");
    for name in ["connector-a", "connector-b", "auditor"] {
        let expected = connector_id(&pki, name);
        let cert = pki.join(format!("clients/{name}.crt"));
        let whoami = ok(run(dir, &["whoami", "--cert", cert.to_str().unwrap()]));
        assert_eq!(whoami.trim(), expected);
        assert!(
            listing.contains(&format!("connector id: {expected}")),
            "{listing}"
        );
    }
    let key = pki.join("clients/connector-a.key");
    let not_a_certificate = run(dir, &["whoami", "--cert", key.to_str().unwrap()]);
    assert_eq!(not_a_certificate.status.code(), Some(2));
    assert!(
        stderr(&not_a_certificate).contains("--cert"),
        "{}",
        stderr(&not_a_certificate)
    );
}

#[test]
fn owners_read_a_process_and_change_its_owners_in_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = dev_pki(dir);
    let serve = Serve::start(dir, &[], &[]);
    let server = serve.idscp2.as_str();
    let a = connector_id(&pki, "connector-a");
    let b = connector_id(&pki, "connector-b");
    let cli = |name: &str, args: &[&str]| run_client(dir, server, &pki, name, args);

    ok(cli("connector-a", &["create", "--pid", "p1"]));
    let logged = json(cli(
        "connector-a",
        &["log", "--pid", "p1", "--data", "first"],
    ));

    // Info: owners, creation, entries, and the head the latest receipt names.
    let info = json(cli("connector-a", &["info", "--pid", "p1"]));
    assert_eq!(info["pid"], "p1");
    assert_eq!(info["owners"], serde_json::json!([a]));
    assert_eq!(info["entries"], 1);
    assert_eq!(info["head"]["sequence"], 1);
    assert_eq!(info["head"]["chain_hash"], logged["claims"]["chain_hash"]);
    assert!(
        info["created_at"].as_str().unwrap().ends_with('Z'),
        "{info}"
    );
    // Non-owners learn nothing more than a query tells them.
    rejected(
        cli("connector-b", &["info", "--pid", "p1"]),
        "NOT_AUTHORIZED",
    );
    rejected(
        cli("connector-a", &["info", "--pid", "nowhere"]),
        "NOT_FOUND",
    );

    // A non-owner cannot change the owners; an owner can, and gets a receipt.
    rejected(
        cli("connector-b", &["owners", "--pid", "p1", "--set", &b]),
        "NOT_AUTHORIZED",
    );
    let changed = json(cli(
        "connector-a",
        &["owners", "--pid", "p1", "--set", &a, "--set", &b],
    ));
    assert_eq!(changed["claims"]["sequence"], 2);
    assert_eq!(changed["claims"]["client_id"], a.as_str());
    let info = json(cli("connector-b", &["info", "--pid", "p1"]));
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(info["owners"], serde_json::json!(both));
    assert_eq!(info["head"]["chain_hash"], changed["claims"]["chain_hash"]);

    // The chain says who changed what, for every owner to read.
    let page = json(cli(
        "connector-b",
        &["query", "--pid", "p1", "--all", "--format", "json"],
    ));
    let change = &page["documents"][1];
    assert_eq!(change["sequence"], 2);
    assert_eq!(
        change["payload_type"],
        "application/vnd.clearinghouse.owners+json"
    );
    assert_eq!(change["client_id"], a.as_str());
    let recorded: Value = serde_json::from_str(change["payload"].as_str().unwrap()).unwrap();
    assert_eq!(
        recorded,
        serde_json::json!({"previous_owners": [a], "owners": both, "changed_by": a})
    );

    // The new owner hands the process over; the old one is out for reads and writes.
    ok(cli(
        "connector-b",
        &["owners", "--pid", "p1", "--set", &b, "--raw"],
    ));
    rejected(
        cli("connector-a", &["info", "--pid", "p1"]),
        "NOT_AUTHORIZED",
    );
    rejected(
        cli("connector-a", &["log", "--pid", "p1", "--data", "late"]),
        "NOT_AUTHORIZED",
    );
    let owners = ok(cli(
        "connector-b",
        &["info", "--pid", "p1", "--owners-only"],
    ));
    assert_eq!(owners.trim(), b);

    // Changing the owners of a process that does not exist does not create it.
    rejected(
        cli("connector-a", &["owners", "--pid", "p2", "--set", &a]),
        "NOT_FOUND",
    );
    // The payload type of owner changes cannot be logged.
    let forged = cli(
        "connector-b",
        &[
            "log",
            "--pid",
            "p1",
            "--data",
            "{\"owners\": []}",
            "--content-type",
            "application/vnd.clearinghouse.owners+json",
        ],
    );
    assert!(rejected(forged, "BAD_PARAMETERS").contains("reserved for owner changes"));
}
