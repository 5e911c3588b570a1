//! Micro-benchmarks of the per-message hot paths of the clearing house (`cargo bench --bench micro`).
//!
//! Each one works on what a real LogMessage carries: an Infomodel header of about 1.4 KiB with a
//! DAT-sized security token, `ch-ids-*` extra headers and a 256-byte JSON payload.

// A bench is a binary with no public API; `criterion_group!` makes `benches` a public function
// without a doc.
#![allow(missing_docs)]

use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use clearinghouse::clearing::{entry_document, Offload, Quotas};
use clearinghouse::config::QuotasConfig;
use clearinghouse::devpki::{DevPki, DevPkiOptions};
use clearinghouse::ids::params::ParamLimits;
use clearinghouse::ids::{
    page_payload, request_header, ChParams, MessageType, RequestContext, RequestHeader,
};
use clearinghouse::idscp2::frame::{IdscpCodec, DEFAULT_MAX_FRAME};
use clearinghouse::idscp2::proto::app::{
    app_layer_message, AppLayerMessage, HeaderEntry, IdsMessage,
};
use clearinghouse::idscp2::proto::{idscp_message, IdscpData};
use clearinghouse::receipt::{ReceiptAlgorithm, ReceiptClaims, ReceiptSigner};
use clearinghouse::store::chain::{self, canonical_json};
use clearinghouse::store::Entry;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use prost::Message as _;
use serde_json::json;

const RSA_PEM: &[u8] = include_bytes!("../tests/fixtures/receipt-rsa.key");

fn token() -> String {
    let claims = URL_SAFE_NO_PAD.encode(
        json!({
            "scopes": ["idsc:IDS_CONNECTOR_ATTRIBUTES_ALL"], "aud": ["idsc:IDS_CONNECTORS_ALL"],
            "iss": "https://daps.example.org", "nbf": 1_700_000_000, "iat": 1_700_000_000,
            "exp": 1_700_003_600, "@type": "ids:DatPayload",
            "@context": "https://w3id.org/idsa/contexts/context.jsonld",
            "securityProfile": "idsc:BASE_SECURITY_PROFILE",
            "referringConnector": "https://connector-a.example.org/connector",
            "sub": "9C:C8:4C:A4:E1:6B:9F:84:18:62:63:15:90:7F:E1:B7:1A:68:E8:4E:keyid:CB:8C:C7:B6:85:79:A8:23:A6:CB:15:AB:17:50:2F:E6:65:43:5D:E8",
        })
        .to_string(),
    );
    format!(
        "eyJ0eXAiOiJhdCtqd3QiLCJraWQiOiJkZWZhdWx0IiwiYWxnIjoiUlMyNTYifQ.{claims}.{}",
        "S".repeat(342)
    )
}

fn log_header() -> String {
    let token = token();
    request_header(
        &RequestContext {
            connector_id: "https://connector-a.example.org/connector",
            sender_agent: "https://connector-a.example.org/agent",
            security_token: Some(&token),
        },
        &MessageType::Log,
    )
}

fn extra_headers() -> Vec<HeaderEntry> {
    [
        ("ch-ids-pid", "process-0001"),
        ("Content-Type", "application/json"),
    ]
    .into_iter()
    .map(|(name, value)| HeaderEntry {
        name: name.into(),
        value: value.into(),
    })
    .collect()
}

fn payload() -> Bytes {
    Bytes::from(format!("{{\"d\":\"{}\"}}", "x".repeat(248)))
}

fn log_message() -> AppLayerMessage {
    AppLayerMessage {
        message: Some(app_layer_message::Message::IdsMessage(IdsMessage {
            header: log_header(),
            payload: payload(),
            extra_headers: extra_headers(),
        })),
    }
}

fn codec(c: &mut Criterion) {
    let app = Bytes::from(log_message().encode_to_vec());
    let data = idscp_message::Message::IdscpData(IdscpData {
        data: app.clone(),
        alternating_bit: true,
    });
    let mut encoded = BytesMut::new();
    IdscpCodec::new(DEFAULT_MAX_FRAME)
        .encode(data.clone(), &mut encoded)
        .expect("encodes");
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("encode IdscpData (log message)", |b| {
        let mut codec = IdscpCodec::new(DEFAULT_MAX_FRAME);
        let mut out = BytesMut::with_capacity(4096);
        b.iter(|| {
            out.clear();
            codec.encode(data.clone(), &mut out).expect("encodes");
        })
    });
    group.bench_function("decode IdscpData (log message)", |b| {
        let mut codec = IdscpCodec::new(DEFAULT_MAX_FRAME);
        b.iter_batched(
            || encoded.clone(),
            |mut src| codec.decode(&mut src).expect("decodes").expect("a frame"),
            BatchSize::SmallInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("app layer");
    group.throughput(Throughput::Bytes(app.len() as u64));
    group.bench_function("AppLayerMessage::decode (log message)", |b| {
        b.iter(|| AppLayerMessage::decode(app.clone()).expect("decodes"))
    });
    group.finish();
}

fn header(c: &mut Criterion) {
    let header = log_header();
    let extra = extra_headers();
    let mut group = c.benchmark_group("header");
    group.throughput(Throughput::Bytes(header.len() as u64));
    group.bench_function("RequestHeader::parse + ChParams::parse", |b| {
        b.iter(|| {
            let parsed = RequestHeader::parse(&header).expect("parses");
            let params = ChParams::parse(&extra, &ParamLimits::default()).expect("parses");
            (parsed, params)
        })
    });
    group.finish();
}

fn entry() -> Entry {
    let header = RequestHeader::parse(&log_header()).expect("parses").stored;
    Entry {
        pid: "process-0001".into(),
        sequence: 123_456,
        document_id: "7d4c1a9e-4c1f-4f3e-9a55-2b1d1c0e9f10".into(),
        timestamp_ms: 1_710_028_800_123,
        client_id: "9C:C8:4C:A4:E1:6B:9F:84:18:62:63:15:90:7F:E1:B7:1A:68:E8:4E:keyid:CB:8C:C7:B6:85:79:A8:23:A6:CB:15:AB:17:50:2F:E6:65:43:5D:E8".into(),
        header,
        payload: payload(),
        payload_type: "application/json".into(),
        entry_hash: [0; 32],
        chain_hash: [0; 32],
        protection: clearinghouse::store::Protection::Plaintext,
    }
}

fn hashing(c: &mut Criterion) {
    let entry = entry();
    let mut group = c.benchmark_group("chain");
    group.bench_function("entry_hash (canonical header + payload digest)", |b| {
        b.iter(|| chain::entry_hash(&entry))
    });
    group.bench_function("canonical_json (stored header)", |b| {
        b.iter(|| canonical_json(&entry.header))
    });
    group.bench_function("chain_hash", |b| {
        let previous = [7u8; 32];
        let hash = [9u8; 32];
        b.iter(|| chain::chain_hash(&previous, &hash))
    });
    group.finish();
}

fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
    .into_bytes()
}

/// The receipt signers of every algorithm, and the claims of the log message's receipt.
fn signers() -> (Vec<ReceiptSigner>, ReceiptClaims) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let pki = DevPki::generate(
        dir.path(),
        &DevPkiOptions {
            clients: vec![],
            ..DevPkiOptions::default()
        },
    )
    .expect("development PKI");
    let es256 = std::fs::read(pki.receipt_key()).expect("receipt key");
    let ed25519 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .expect("Ed25519 key");
    let ed25519 = pem("PRIVATE KEY", ed25519.as_ref());
    let keys: [(ReceiptAlgorithm, &[u8]); 4] = [
        (ReceiptAlgorithm::Es256, &es256),
        (ReceiptAlgorithm::EdDsa, &ed25519),
        (ReceiptAlgorithm::Ps512, RSA_PEM),
        (ReceiptAlgorithm::Rs256, RSA_PEM),
    ];
    let signers = keys
        .into_iter()
        .map(|(algorithm, key)| ReceiptSigner::from_pem(algorithm, key).expect("signing key"))
        .collect();
    let entry = entry();
    let claims = ReceiptClaims {
        iss: "https://clearinghouse.example/connector".into(),
        iat: 1_710_028_800,
        process_id: entry.pid.clone(),
        document_id: entry.document_id.clone(),
        sequence: entry.sequence,
        timestamp: 1_710_028_800,
        timestamp_ms: entry.timestamp_ms,
        client_id: entry.client_id.clone(),
        payload_hash: clearinghouse::receipt::payload_hash(&entry.payload),
        entry_hash: hex::encode([0xab; 32]),
        chain_hash: hex::encode([0xcd; 32]),
        clearing_house_version: "0.1.0".into(),
    };
    (signers, claims)
}

fn signing(c: &mut Criterion) {
    let (signers, claims) = signers();
    let mut group = c.benchmark_group("receipt");
    for signer in signers {
        group.bench_function(format!("sign {}", signer.algorithm()), |b| {
            b.iter(|| signer.sign(&claims).expect("signs"))
        });
    }
    group.finish();
}

/// What handing work to the clearing house's offload threads costs, next to the work it moves:
/// the round trip of an empty job and of each signature, as a task on a tokio runtime waits for
/// it, and SHA-256 of payloads by size (what a worker would otherwise do inline).
fn offload(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let offload = Offload::per_core();
    let mut group = c.benchmark_group("offload");
    group.bench_function("round trip of an empty job", |b| {
        b.iter(|| runtime.block_on(offload.run("bench", || ())))
    });
    let (signers, claims) = signers();
    for signer in signers {
        let work = Arc::new((signer, claims.clone()));
        group.bench_function(
            format!("sign {} on an offload thread", work.0.algorithm()),
            |b| {
                b.iter(|| {
                    let work = Arc::clone(&work);
                    runtime.block_on(offload.run("bench", move || work.0.sign(&work.1)))
                })
            },
        );
    }
    for size in [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20] {
        let payload = Bytes::from(vec![b'x'; size]);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("SHA-256 of a {} KiB payload", size >> 10), |b| {
            b.iter(|| chain::payload_hash(&payload))
        });
    }
    group.finish();
}

/// What a 100-entry page costs above the store: documents built from the stored entries, and the
/// JSON of the ResultMessage payload (two ways, to show why the server uses `to_vec`).
fn page(c: &mut Criterion) {
    let entry = entry();
    let params = ChParams::parse(
        &[HeaderEntry {
            name: "ch-ids-size".into(),
            value: "100".into(),
        }],
        &ParamLimits::default(),
    )
    .expect("parses")
    .query()
    .expect("valid query");
    let document = || entry_document(&entry).expect("document");
    let payload = page_payload(&params, 1_000_000, (0..100).map(|_| document()).collect());
    let mut group = c.benchmark_group("query page (100 entries)");
    group.bench_function("log_document x100 + page_payload", |b| {
        b.iter(|| page_payload(&params, 1_000_000, (0..100).map(|_| document()).collect()))
    });
    group.bench_function("serialize: Value::to_string", |b| {
        b.iter(|| payload.to_string())
    });
    group.bench_function("serialize: serde_json::to_vec", |b| {
        b.iter(|| serde_json::to_vec(&payload).expect("serializes"))
    });
    group.finish();
}

/// What the quotas add to a LogMessage: the rate check of every request and the byte
/// reservation of a log, for one of 64 connectors with every quota on (and never exceeded), and
/// with none (usage is still counted for /metrics).
fn quota(c: &mut Criterion) {
    let on = Quotas::new(&QuotasConfig {
        requests_per_second: 1e12,
        burst: 1_000_000_000,
        processes_per_window: u64::MAX,
        bytes_per_window: u64::MAX,
        ..QuotasConfig::default()
    });
    let off = Quotas::unlimited();
    let connectors: Vec<String> = (0..64)
        .map(|n| format!("{n:02X}:C8:4C:A4:E1:6B:9F:84:18:62:63:15:90:7F:E1:B7:1A:68:E8:4E:keyid:CB:8C:C7:B6:85:79:A8:23:A6:CB:15:AB:17:50:2F:E6:65:43:5D:E8"))
        .collect();
    let mut group = c.benchmark_group("quota check per log (64 connectors)");
    for (name, quotas) in [("quotas on", &on), ("quotas off", &off)] {
        let mut next = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                next = (next + 1) % connectors.len();
                let connector = &connectors[next];
                quotas.admit(connector).expect("admitted");
                quotas
                    .reserve_bytes(connector, 256)
                    .expect("reserved")
                    .keep();
            })
        });
    }
    group.finish();
}

/// What encryption at rest adds to reading a page: 100 entries of a 1,000-entry process from the
/// embedded store (header and payload as a real LogMessage's), stored in the clear and sealed
/// (each entry's header and payload opened with AES-256-GCM).
fn sealed_page(c: &mut Criterion) {
    use clearinghouse::store::sealing::Keyring;
    use clearinghouse::store::{EmbeddedStore, NewEntry, Order, PageQuery, ProcessStore, Sealing};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let sample = entry();
    let mut group = c.benchmark_group("store page (100 of 1,000 entries)");
    for (name, sealing) in [
        ("plaintext", Sealing::disabled()),
        (
            "sealed (AES-256-GCM)",
            Sealing::with_keyring(
                Keyring::new(vec![("k".into(), [7; 32], true)]).expect("keyring"),
            ),
        ),
    ] {
        let store = EmbeddedStore::open_with(dir.path().join(format!("{name}.redb")), sealing)
            .expect("store");
        runtime.block_on(async {
            store
                .create_process("p", &["a".to_owned()].into())
                .await
                .expect("create");
            for _ in 0..1000 {
                let entry = NewEntry {
                    pid: "p".into(),
                    client_id: sample.client_id.clone(),
                    header: sample.header.clone(),
                    payload: sample.payload.clone(),
                    payload_type: sample.payload_type.clone(),
                };
                store.append(entry.prepare()).await.expect("append");
            }
        });
        let query = PageQuery {
            pid: "p".into(),
            page: 5,
            size: 100,
            order: Order::Asc,
            from_ms: None,
            to_ms: None,
            max_bytes: usize::MAX,
        };
        group.bench_function(name, |b| {
            b.iter(|| runtime.block_on(store.query(&query)).expect("page"))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    codec,
    header,
    hashing,
    signing,
    offload,
    page,
    quota,
    sealed_page
);
criterion_main!(benches);
