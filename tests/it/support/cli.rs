//! Driving the real `clearinghouse` binary: running commands, and a `serve` process on free
//! ports whose addresses are read from its stdout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clearinghouse::client::ClearingHouseClient;
use clearinghouse::idscp2::client::{connect, ClientConfig};
use clearinghouse::idscp2::dat::{DevelopmentIssuer, DevelopmentVerifier};
use clearinghouse::idscp2::endpoint::{Endpoint, Settings};
use clearinghouse::idscp2::ra::RaRegistry;
use clearinghouse::idscp2::tls::{client_config, load_ca_file, PeerCertificate, TlsIdentity};

pub const BIN: &str = env!("CARGO_BIN_EXE_clearinghouse");

/// How long a starting server may take before the test gives up (a debug build on a busy machine).
const START_LIMIT: Duration = Duration::from_secs(60);

/// The binary with a clean environment: no `CH_` variable of the caller leaks in.
pub fn command(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(dir);
    for (name, _) in std::env::vars() {
        if name.starts_with("CH_") {
            command.env_remove(name);
        }
    }
    command
}

/// Runs a command to completion with `stdin` as its input.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    run_with_input(dir, args, b"")
}

pub fn run_with_input(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    run_with_env(dir, args, &[], input)
}

/// Runs a command to completion with extra environment and `input` as its stdin.
pub fn run_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)], input: &[u8]) -> Output {
    let mut child = command(dir)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        stdout(&output),
        stderr(&output)
    );
    stdout(&output)
}

/// A development PKI made by `clearinghouse dev-pki` in `<dir>/data/dev-pki`, where `serve`
/// finds it with the default configuration.
pub fn dev_pki(dir: &Path) -> PathBuf {
    ok(run(dir, &["dev-pki", "--dir", "data/dev-pki"]));
    dir.join("data/dev-pki")
}

/// A running `clearinghouse serve`.
pub struct Serve {
    child: Child,
    pub idscp2: String,
    pub ops: String,
    /// Every stdout line so far.
    pub lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Serve {
    /// `serve` in `dir` on free loopback ports, with extra arguments and environment.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut all = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--ops-listen",
            "127.0.0.1:0",
        ];
        all.extend(args);
        Self::spawn(dir, &all, env)
    }

    /// Plain `serve`, with the free ports given through `CH_SERVER_LISTEN` and `CH_OPS_LISTEN`.
    pub fn start_env_only(dir: &Path) -> Serve {
        let env = [
            ("CH_SERVER_LISTEN", "127.0.0.1:0"),
            ("CH_OPS_LISTEN", "127.0.0.1:0"),
        ];
        Self::spawn(dir, &["serve"], &env)
    }

    fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut child = command(dir)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        match Self::watch(&mut child, START_LIMIT) {
            Ok((lines, stderr, idscp2, ops)) => Serve {
                child,
                idscp2,
                ops,
                lines,
                stderr,
            },
            Err(stderr) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("serve did not start: {stderr}")
            }
        }
    }

    /// Reads stdout until both addresses are printed.
    #[allow(clippy::type_complexity)]
    fn watch(
        child: &mut Child,
        limit: Duration,
    ) -> Result<(Arc<Mutex<Vec<String>>>, Arc<Mutex<String>>, String, String), String> {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let seen = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                seen.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut err = child.stderr.take().unwrap();
        let collected = stderr.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = err.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        let (mut idscp2, mut ops) = (None, None);
        while idscp2.is_none() || ops.is_none() {
            match rx.recv_timeout(limit) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("clearinghouse: IDSCP2 listening on ") {
                        idscp2 = Some(addr.to_owned());
                    }
                    if let Some(addr) =
                        line.strip_prefix("clearinghouse: operations endpoint on http://")
                    {
                        ops = Some(addr.to_owned());
                    }
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(200));
                    return Err(stderr.lock().unwrap().clone());
                }
            }
        }
        Ok((
            lines,
            stderr,
            idscp2.unwrap_or_default(),
            ops.unwrap_or_default(),
        ))
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The first stdout line containing `needle`, waiting for it: lines printed after the two
    /// addresses may not have been read yet when `start` returns.
    pub fn line_containing(&self, needle: &str) -> Option<String> {
        let deadline = std::time::Instant::now() + START_LIMIT;
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|line| line.contains(needle))
                .cloned();
            if found.is_some() || std::time::Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        // Let the reader threads drain the pipes.
        std::thread::sleep(Duration::from_millis(100));
        (exit, self.stderr())
    }

    /// SIGKILL: the process dies as in a crash or power cut, with no chance to finish a
    /// request, flush a buffer or close a connection.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// `GET http://<ops><path>`: status code and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.ops, path)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A minimal HTTP/1.1 GET, so the tests need no HTTP client.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The `client` arguments for a development client certificate.
pub fn client_args(server: &str, pki: &Path, name: &str) -> Vec<String> {
    let path = |p: PathBuf| p.display().to_string();
    vec![
        "client".into(),
        "--server".into(),
        server.into(),
        "--ca".into(),
        path(pki.join("ca.crt")),
        "--cert".into(),
        path(pki.join(format!("clients/{name}.crt"))),
        "--key".into(),
        path(pki.join(format!("clients/{name}.key"))),
    ]
}

/// Runs `client` as the development client `name`, with `args` after the connection flags.
pub fn run_client(dir: &Path, server: &str, pki: &Path, name: &str, args: &[&str]) -> Output {
    let mut all = client_args(server, pki, name);
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    run(dir, &all)
}

/// `clearinghouse client ARGS` as the development client `connector-a`.
pub fn client_a(dir: &Path, server: &str, pki: &Path, args: &[&str]) -> Output {
    run_client(dir, server, pki, "connector-a", args)
}

/// The connector id the server sees for a development client certificate.
pub fn connector_id(pki: &Path, name: &str) -> String {
    let identity = TlsIdentity::from_pem_files(
        &pki.join(format!("clients/{name}.crt")),
        &pki.join(format!("clients/{name}.key")),
    )
    .unwrap();
    PeerCertificate::new(identity.leaf().clone())
        .connector_id()
        .unwrap()
}

/// The value of a Prometheus sample line `name{labels} value`, 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// A library client of a development connector, as a connector would connect.
pub async fn library_client(server: &str, pki: &Path, name: &str) -> ClearingHouseClient {
    let identity = TlsIdentity::from_pem_files(
        &pki.join(format!("clients/{name}.crt")),
        &pki.join(format!("clients/{name}.key")),
    )
    .unwrap();
    let cas = load_ca_file(&pki.join("ca.crt")).unwrap();
    let endpoint = Endpoint::new(
        Settings::default(),
        Arc::new(DevelopmentIssuer::new()),
        Arc::new(DevelopmentVerifier::new()),
        RaRegistry::builtin(),
    )
    .unwrap();
    let config = ClientConfig {
        tls: client_config(&identity, &cas).unwrap(),
        endpoint,
    };
    let connection = connect(server, "localhost", &config).await.unwrap();
    ClearingHouseClient::new(
        connection,
        format!("urn:test:{name}"),
        None,
        Duration::from_secs(30),
    )
}

/// The encryption `serve` in `dir` uses in development mode: the KEK it generated beside the
/// development PKI, so that a test can open the store it wrote.
pub fn dev_sealing(dir: &Path) -> clearinghouse::store::Sealing {
    use clearinghouse::store::sealing::{KekFile, Keyring};
    let keyring = Keyring::load(&[KekFile {
        id: "development".into(),
        file: dir.join("data/dev-pki/store-kek.hex"),
        active: true,
    }])
    .unwrap();
    clearinghouse::store::Sealing::with_keyring(keyring)
}
