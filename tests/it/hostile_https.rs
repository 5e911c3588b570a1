//! Bad input at the IDS-Multipart door: each gets a clear 4xx (a RejectionMessage once there is
//! anything to answer), within the door's bounds, and never a hang. Requests are written with
//! `reqwest` where it can write them, and by hand over TLS where it would not (trickling,
//! HTTP/1.0, pipelining, absurd headers).

use std::time::{Duration, Instant};

use bytes::Bytes;
use clearinghouse::http::HttpLimits;
use clearinghouse::idscp2::budget::MemoryLimits;
use clearinghouse::idscp2::endpoint::Settings;
use clearinghouse::store::ProcessStore;
use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::support::clearing::Limits;
use crate::support::doors::{DoorOptions, TwoDoors};
use crate::support::transport::{client_tls, test_settings};

fn header(message_type: &str) -> String {
    json!({
        "@context": {"ids": "https://w3id.org/idsa/core/"},
        "@type": message_type,
        "@id": "urn:message:hostile",
        "ids:modelVersion": "4.2.7",
        "ids:issuerConnector": {"@id": "urn:connector:a"},
        "ids:senderAgent": {"@id": "urn:connector:a"},
    })
    .to_string()
}

fn form(header: String, payload: &'static [u8]) -> Form {
    Form::new()
        .part("header", Part::text(header))
        .part("payload", Part::bytes(payload))
}

/// The status, the IDS header and the JSON payload of a reply, read with multer.
async fn reply(response: reqwest::Response) -> (StatusCode, Value, Value) {
    let status = response.status();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.bytes().await.unwrap();
    let boundary = multer::parse_boundary(&content_type).unwrap();
    let mut multipart = multer::Multipart::new(
        futures::stream::once(async move { Ok::<_, std::convert::Infallible>(body) }),
        boundary,
    );
    let mut parts = vec![];
    while let Some(field) = multipart.next_field().await.unwrap() {
        let name = field.name().unwrap().to_owned();
        parts.push((
            name,
            serde_json::from_slice::<Value>(&field.bytes().await.unwrap()).unwrap(),
        ));
    }
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(
        (parts[0].0.as_str(), parts[1].0.as_str()),
        ("header", "payload")
    );
    (status, parts[0].1.clone(), parts[1].1.clone())
}

/// A RejectionMessage with `reason` and `status`, correlated with the request or not.
fn assert_rejection(
    reply: &(StatusCode, Value, Value),
    status: u16,
    reason: &str,
    correlated: bool,
) {
    let (http_status, header, payload) = reply;
    assert_eq!(http_status.as_u16(), status, "{payload}");
    assert_eq!(payload["status"], status, "{payload}");
    assert_eq!(header["@type"], "ids:RejectionMessage", "{header}");
    assert_eq!(
        header["ids:rejectionReason"]["@id"],
        format!("https://w3id.org/idsa/code/{reason}"),
        "{header}"
    );
    assert_eq!(
        header.get("ids:correlationMessage").is_some(),
        correlated,
        "{header}"
    );
}

fn limits(read_timeout: Duration, max_connections: usize) -> HttpLimits {
    HttpLimits {
        max_body_bytes: 64 * 1024,
        max_header_bytes: 16 * 1024,
        read_timeout,
        max_connections,
    }
}

async fn start(read_timeout: Duration, max_connections: usize) -> TwoDoors {
    TwoDoors::start_with(DoorOptions {
        http: limits(read_timeout, max_connections),
        ..DoorOptions::default()
    })
    .await
}

#[tokio::test]
async fn malformed_bodies_get_typed_rejections() {
    let house = start(Duration::from_secs(10), 16).await;
    let http = house.reqwest(Some("connector-a"));
    let post = |path: &str, form: Form| http.post(house.url(path)).multipart(form).send();

    // A body without the header part, with two, or with one that is not JSON-LD.
    let missing = Form::new().part("payload", Part::bytes(&b"x"[..]));
    let r = reply(post("/messages/log/p", missing).await.unwrap()).await;
    assert_rejection(&r, 400, "MALFORMED_MESSAGE", false);
    assert!(
        r.2["message"].as_str().unwrap().contains("\"header\""),
        "{}",
        r.2
    );
    let twice =
        form(header("ids:LogMessage"), b"x").part("header", Part::text(header("ids:LogMessage")));
    let r = reply(post("/messages/log/p", twice).await.unwrap()).await;
    assert_rejection(&r, 400, "MALFORMED_MESSAGE", false);
    assert!(
        r.2["message"].as_str().unwrap().contains("twice"),
        "{}",
        r.2
    );
    let r = reply(
        post("/messages/log/p", form("not json-ld".into(), b"x"))
            .await
            .unwrap(),
    )
    .await;
    assert_rejection(&r, 400, "MALFORMED_MESSAGE", false);

    // The wrong message type for the route; path and header naming different pids.
    let r = reply(
        post("/messages/log/p", form(header("ids:RequestMessage"), b"x"))
            .await
            .unwrap(),
    )
    .await;
    assert_rejection(&r, 400, "MESSAGE_TYPE_NOT_SUPPORTED", true);
    let r = reply(
        http.post(house.url("/messages/log/p"))
            .header("ch-ids-pid", "q")
            .multipart(form(header("ids:LogMessage"), b"x"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_rejection(&r, 400, "BAD_PARAMETERS", true);
    assert!(
        r.2["message"].as_str().unwrap().contains("ch-ids-pid"),
        "{}",
        r.2
    );
    // URL query and header contradicting each other; an unknown query parameter.
    let r = reply(
        http.post(house.url("/messages/query/p?page=1"))
            .header("ch-ids-page", "2")
            .multipart(form(header("ids:QueryMessage"), b""))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_rejection(&r, 400, "BAD_PARAMETERS", true);
    let r = reply(
        post(
            "/messages/query/p?pgae=1",
            form(header("ids:QueryMessage"), b""),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_rejection(&r, 400, "BAD_PARAMETERS", true);

    // Not multipart at all: 415 saying what is expected.
    let r = reply(
        http.post(house.url("/messages/log/p"))
            .header("content-type", "application/json")
            .body(header("ids:LogMessage"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_rejection(&r, 415, "MALFORMED_MESSAGE", false);
    assert!(
        r.2["message"]
            .as_str()
            .unwrap()
            .contains("multipart/form-data"),
        "{}",
        r.2
    );

    // Hundreds of parts (written by hand: reqwest nests a stream per part): refused after
    // a few.
    let mut many = format!(
        "--b\r\nContent-Disposition: form-data; name=\"header\"\r\n\r\n{}\r\n",
        header("ids:LogMessage")
    );
    for i in 0..900 {
        many.push_str(&format!(
            "--b\r\nContent-Disposition: form-data; name=\"part{i}\"\r\n\r\nx\r\n"
        ));
    }
    many.push_str("--b--\r\n");
    let r = reply(
        http.post(house.url("/messages/log/p"))
            .header("content-type", "multipart/form-data; boundary=b")
            .body(many)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_rejection(&r, 400, "MALFORMED_MESSAGE", false);
    assert!(
        r.2["message"].as_str().unwrap().contains("parts"),
        "{}",
        r.2
    );

    // A body over http.max_body_bytes, said before it is sent.
    let big = Form::new()
        .part("header", Part::text(header("ids:LogMessage")))
        .part("payload", Part::bytes(vec![b'x'; 70 * 1024]));
    let r = reply(post("/messages/log/p", big).await.unwrap()).await;
    assert_rejection(&r, 413, "BAD_PARAMETERS", false);
    assert_eq!(r.2["limit"]["setting"], "http.max_body_bytes", "{}", r.2);

    // Other paths and methods.
    let r = reply(
        post("/messages/unknown/p", form(header("ids:LogMessage"), b"x"))
            .await
            .unwrap(),
    )
    .await;
    assert_rejection(&r, 404, "NOT_FOUND", false);
    let r = reply(http.get(house.url("/messages/log/p")).send().await.unwrap()).await;
    assert_rejection(&r, 405, "MALFORMED_MESSAGE", false);

    // None of it reached the store.
    assert!(house.store.process("p").await.unwrap().is_none());
    assert!(house.store.process("q").await.unwrap().is_none());
}

/// A TLS connection with connector-a's certificate, for requests written by hand.
async fn raw(house: &TwoDoors) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(house.https).await?;
    let connector = TlsConnector::from(client_tls(&house.pki, &house.pki, "connector-a"));
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    // TLS 1.3: a refused client learns it at its first read, so make one that shows it.
    tls.flush().await?;
    Ok(tls)
}

fn raw_request(version: &str, pid: &str, extra: &str) -> Vec<u8> {
    let body = format!(
        "--b\r\nContent-Disposition: form-data; name=\"header\"\r\n\r\n{}\r\n--b\r\nContent-Disposition: form-data; name=\"payload\"\r\n\r\nhello\r\n--b--\r\n",
        header("ids:LogMessage")
    );
    format!(
        "POST /messages/log/{pid} {version}\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn read_to_end(tls: &mut TlsStream<TcpStream>) -> String {
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response))
        .await
        .expect("the server closes the connection")
        .ok();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn http_1_0_pipelining_and_absurd_headers_behave() {
    let house = start(Duration::from_secs(10), 16).await;

    // HTTP/1.0: answered, then closed.
    let mut tls = raw(&house).await.unwrap();
    tls.write_all(&raw_request("HTTP/1.0", "old", ""))
        .await
        .unwrap();
    let response = read_to_end(&mut tls).await;
    assert!(
        response.starts_with("HTTP/1.0 201") || response.starts_with("HTTP/1.1 201"),
        "{response}"
    );

    // Two requests in one write: both answered, in order.
    let mut tls = raw(&house).await.unwrap();
    let mut both = raw_request("HTTP/1.1", "piped", "");
    both.extend(raw_request("HTTP/1.1", "piped", "Connection: close\r\n"));
    tls.write_all(&both).await.unwrap();
    let response = read_to_end(&mut tls).await;
    assert_eq!(
        response.matches("HTTP/1.1 201 Created").count(),
        2,
        "{response}"
    );
    let sequences = house.store.entries_from("piped", 1, 10).await.unwrap();
    assert_eq!(sequences.len(), 2);

    // A header beyond http.max_header_bytes: 431, and the connection is closed.
    let mut tls = raw(&house).await.unwrap();
    let absurd = format!("X-Absurd: {}\r\n", "a".repeat(64 * 1024));
    let _ = tls
        .write_all(&raw_request("HTTP/1.1", "absurd", &absurd))
        .await;
    let response = read_to_end(&mut tls).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    assert!(house.store.process("absurd").await.unwrap().is_none());
}

#[tokio::test]
async fn a_trickling_body_is_cut_off_at_the_read_timeout() {
    let house = start(Duration::from_secs(1), 16).await;
    let mut tls = raw(&house).await.unwrap();
    let request = raw_request("HTTP/1.1", "slow", "");
    // Headers and a little of the body, then a byte now and then.
    let split = request.len() - 40;
    tls.write_all(&request[..split]).await.unwrap();
    let started = Instant::now();
    let trickle = async {
        for byte in &request[split..] {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if tls.write_all(std::slice::from_ref(byte)).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(1500), trickle).await;
    let response = read_to_end(&mut tls).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("http.read_timeout_ms"), "{response}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(house.store.process("slow").await.unwrap().is_none());
}

/// Whether the server has closed `tls` (or never completed TLS on it) within a second.
async fn closed_by_server(tls: std::io::Result<TlsStream<TcpStream>>) -> bool {
    let Ok(mut tls) = tls else {
        return true;
    };
    let mut buf = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tls.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed() {
    let house = start(Duration::from_secs(10), 2).await;
    let first = raw(&house).await.unwrap();
    let _second = raw(&house).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(closed_by_server(raw(&house).await).await);
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = raw(&house).await.unwrap();
    again
        .write_all(&raw_request("HTTP/1.1", "room", "Connection: close\r\n"))
        .await
        .unwrap();
    let response = read_to_end(&mut again).await;
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
}

/// An idle connection, new or kept alive, gives its place back after the read timeout.
#[tokio::test]
async fn idle_connections_are_closed_at_the_read_timeout() {
    let house = start(Duration::from_millis(500), 16).await;
    let fresh = raw(&house).await.unwrap();
    let mut kept = raw(&house).await.unwrap();
    kept.write_all(&raw_request("HTTP/1.1", "idle", ""))
        .await
        .unwrap();
    let mut head = [0u8; 12];
    kept.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 201");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(closed_by_server(Ok(fresh)).await);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(1), kept.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the kept-alive connection is still open");
}

/// Request bodies count against the memory bound the IDSCP2 connections share: a body larger
/// than one connection may hold is refused, naming the setting.
#[tokio::test]
async fn bodies_count_against_the_shared_memory_bound() {
    let share = 256 * 1024;
    let settings = settings_with_share(share);
    let house = TwoDoors::start_with(DoorOptions {
        http: HttpLimits {
            max_body_bytes: 1024 * 1024,
            ..limits(Duration::from_secs(10), 16)
        },
        settings,
        ..DoorOptions::default()
    })
    .await;
    let http = house.reqwest(Some("connector-a"));
    let over = Form::new()
        .part("header", Part::text(header("ids:LogMessage")))
        .part(
            "payload",
            Part::stream(Bytes::from(vec![b'x'; share / 2 + 1024])),
        );
    let r = reply(
        http.post(house.url("/messages/log/big"))
            .multipart(over)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_rejection(&r, 413, "BAD_PARAMETERS", false);
    assert_eq!(
        r.2["limit"]["setting"], "server.connection_buffer_bytes",
        "{}",
        r.2
    );
    let fits = Form::new()
        .part("header", Part::text(header("ids:LogMessage")))
        .part("payload", Part::bytes(vec![b'x'; share / 4]));
    let response = http
        .post(house.url("/messages/log/big"))
        .multipart(fits)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

/// A query's reply is reserved in the memory bound before the store is read, as on IDSCP2: when
/// the connection cannot hold it beside the request's body, the query is answered 503 (correlated
/// with its header), and every reservation is given back once the reply is sent. A small query
/// is read without a reservation, as a small frame is on IDSCP2, so a share of one full reply
/// still takes it.
#[tokio::test]
async fn query_replies_are_reserved_in_the_shared_memory_bound() {
    query_replies_are_reserved(3 * 256 * 1024 / 4).await;
    query_replies_are_reserved(256 * 1024 - 32).await;
}

/// Settings whose memory bound gives one connection `share` bytes, frames as large as that
/// share, and room for four connections' handshakes besides.
fn settings_with_share(share: usize) -> Settings {
    let mut settings = test_settings();
    settings.max_frame = share;
    settings.memory = MemoryLimits {
        total: 4 * 2 * settings.handshake_frame_limit() + share,
        per_connection: share,
        connections: 4,
    };
    settings
}

/// The scenario above, with a share of 256 KiB and queries reserving `reserved` bytes.
async fn query_replies_are_reserved(reserved: usize) {
    let share = 256 * 1024;
    let settings = settings_with_share(share);
    let house = TwoDoors::start_with(DoorOptions {
        http: HttpLimits {
            max_body_bytes: share / 2,
            ..limits(Duration::from_secs(10), 16)
        },
        // Reserved for a query: the reply limit and the room for its header.
        limits: Limits {
            max_reply: reserved - 64 * 1024,
            ..Limits::default()
        },
        settings,
        ..DoorOptions::default()
    })
    .await;
    let http = house.reqwest(Some("connector-a"));
    let post = |path: &str, form: Form| http.post(house.url(path)).multipart(form).send();
    let logged = post("/messages/log/q", form(header("ids:LogMessage"), b"{}"));
    assert_eq!(logged.await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(house.budget.pool_held(), 0);

    // A body of a quarter of the share is held twice: half the share is left, too little for
    // three quarters, or for all of it.
    let padded = Form::new()
        .part("header", Part::text(header("ids:QueryMessage")))
        .part("padding", Part::bytes(vec![b' '; share / 4]));
    let r = reply(post("/messages/query/q", padded).await.unwrap()).await;
    assert_rejection(&r, 503, "TEMPORARILY_NOT_AVAILABLE", true);
    assert!(
        r.2["message"]
            .as_str()
            .unwrap()
            .contains("server.connection_buffer_bytes"),
        "{}",
        r.2
    );
    assert_eq!(
        house.budget.pool_held(),
        0,
        "the body's reservation is back"
    );

    // Without the padding the reply fits, and its reservation is given back once it is sent.
    let query = Form::new().part("header", Part::text(header("ids:QueryMessage")));
    let r = reply(post("/messages/query/q", query).await.unwrap()).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.2);
    assert_eq!(r.2["total"], 1, "{}", r.2);
    assert_eq!(
        house.budget.pool_held(),
        0,
        "the reply's reservation is back"
    );
}
