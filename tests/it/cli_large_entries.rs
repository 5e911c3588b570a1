//! Processes of large entries read with default flags through the real binary: `client query`
//! and `query --all` shrink the page until it fits the reply limit, and an entry that no reply
//! can carry is named by its document id instead of being asked for again and again.
//!
//! The server runs with a small frame limit (`idscp2.max_frame`, which sets the reply limit), so
//! that a few entries of 60 kB already make a default page too large.

use crate::support::cli::*;
use serde_json::Value;

/// 256 KiB frames: replies of up to about 190 kB.
const SMALL_FRAMES: [(&str, &str); 2] = [
    ("CH_IDSCP2_MAX_FRAME", "262144"),
    ("CH_SERVER_MAX_PAYLOAD", "250000"),
];

#[test]
fn pages_of_large_entries_shrink_until_they_fit_and_an_entry_too_large_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pki = dev_pki(dir);
    let serve = Serve::start(dir, &[], &SMALL_FRAMES);
    let server = serve.idscp2.clone();

    // Six entries of 60 kB: together three times the reply limit.
    std::fs::write(dir.join("large.txt"), "x".repeat(60_000)).unwrap();
    for _ in 0..6 {
        ok(client_a(
            dir,
            &server,
            &pki,
            &["log", "--pid", "big", "--file", "large.txt", "--raw"],
        ));
    }
    let all = ok(client_a(
        dir,
        &server,
        &pki,
        &["query", "--pid", "big", "--all", "--format", "json"],
    ));
    let all: Value = serde_json::from_str(&all).unwrap();
    let sequences: Vec<u64> = all["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|document| document["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=6).collect::<Vec<_>>());
    assert_eq!(all["total"], 6);

    // Default flags: the first page, as large as fits, newest first.
    let first = ok(client_a(
        dir,
        &server,
        &pki,
        &["query", "--pid", "big", "--format", "json"],
    ));
    let first: Value = serde_json::from_str(&first).unwrap();
    let shown = first["documents"].as_array().unwrap();
    assert!((1..6).contains(&shown.len()), "{} entries", shown.len());
    assert_eq!(shown[0]["sequence"], 6);
    assert_eq!(first["total"], 6);

    // An explicit size is asked for as given, and the server says how many would fit.
    let asked = client_a(
        dir,
        &server,
        &pki,
        &["query", "--pid", "big", "--size", "6"],
    );
    assert_eq!(asked.status.code(), Some(4), "{}", stderr(&asked));
    assert!(
        stderr(&asked).contains("TOO_MANY_RESULTS")
            && stderr(&asked).contains("entries fit: ask for at most"),
        "{}",
        stderr(&asked)
    );

    // A binary entry whose base64 form exceeds the reply limit on its own.
    let bytes: Vec<u8> = (0..240_000u32).map(|n| (n % 251) as u8).collect();
    std::fs::write(dir.join("huge.bin"), bytes).unwrap();
    ok(client_a(
        dir,
        &server,
        &pki,
        &["log", "--pid", "huge", "--data", "small", "--raw"],
    ));
    let receipt = ok(client_a(
        dir,
        &server,
        &pki,
        &[
            "log",
            "--pid",
            "huge",
            "--file",
            "huge.bin",
            "--content-type",
            "application/octet-stream",
        ],
    ));
    let receipt: Value = serde_json::from_str(&receipt).unwrap();
    let document_id = receipt["claims"]["document_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stuck = client_a(dir, &server, &pki, &["query", "--pid", "huge", "--all"]);
    assert_eq!(stuck.status.code(), Some(4), "{}", stderr(&stuck));
    let message = stderr(&stuck);
    assert!(
        message.contains(&format!(
            "entry 2 (document {document_id}) alone exceeds the reply limit"
        )),
        "{message}"
    );
}
