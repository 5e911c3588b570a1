//! A MongoDB-protocol server for tests: the shared one `scripts/test` starts (a fresh database
//! per test), or a test's own on its own port, which the test may kill and restart.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clearinghouse::store::{MongoConfig, MongoStore};

/// An env var the tests need; `None` (with a note) when it is missing outside CI.
pub fn required_env(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{name} is not set in CI: run the tests with scripts/test, which starts a MongoDB-protocol server")
        }
        _ => {
            println!("skipped: {name} is not set (scripts/test starts a MongoDB-protocol server and sets it)");
            None
        }
    }
}

/// The environment that puts `clearinghouse serve` (or `export`, `verify`) on `database`.
pub fn serve_env<'a>(uri: &'a str, database: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("CH_STORE_BACKEND", "mongodb"),
        ("CH_STORE_MONGODB_URI", uri),
        ("CH_STORE_MONGODB_DATABASE", database),
        ("CH_STORE_MONGODB_TIMEOUT_MS", "1500"),
    ]
}

/// A database of its own on the shared test server, dropped when the test passes.
pub struct TestDatabase {
    pub uri: String,
    pub name: String,
}

impl TestDatabase {
    pub fn new() -> Option<Self> {
        Some(Self {
            uri: required_env("CH_TEST_MONGODB_URI")?,
            name: format!("ch_store_{}", uuid::Uuid::new_v4().simple()),
        })
    }

    pub fn config(&self) -> MongoConfig {
        let mut config = MongoConfig::new(&self.uri, &self.name);
        config.timeout = Duration::from_secs(20);
        config
    }

    /// A store with a client of its own, like one clearing-house instance.
    pub async fn instance(&self) -> Arc<MongoStore> {
        Arc::new(MongoStore::connect(self.config()).await.unwrap())
    }

    /// [`Self::instance`], encrypting and decrypting with `sealing`.
    pub async fn instance_with(&self, sealing: clearinghouse::store::Sealing) -> Arc<MongoStore> {
        let config = self.config().with_sealing(sealing);
        Arc::new(MongoStore::connect(config).await.unwrap())
    }

    /// The database as an operator (or an intruder) sees it, past the store.
    pub async fn raw(&self) -> mongodb::Database {
        mongodb::Client::with_uri_str(&self.uri)
            .await
            .unwrap()
            .database(&self.name)
    }

    pub async fn drop_database(self) {
        self.raw().await.drop().await.unwrap();
    }
}

/// A loopback port nobody listens on (it may be taken again before it is used; unlikely).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server of the test's own, on its own port and data dir, stopped by its PID.
pub struct OwnServer {
    binary: String,
    port: u16,
    data: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnServer {
    pub fn start(binary: String) -> Self {
        let mut server = Self {
            binary,
            port: free_port(),
            data: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.run();
        server
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
    }

    /// Starts the server (again) on the same port and data, and waits until it accepts
    /// connections.
    pub fn run(&mut self) {
        let storage = self.data.path().join("db");
        std::fs::create_dir_all(&storage).unwrap();
        // The script knows each server's command line; ask it rather than repeat it.
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mongodb-server");
        let args = Command::new(script)
            .arg("args")
            .arg(&self.binary)
            .arg(self.port.to_string())
            .arg(&storage)
            .output()
            .unwrap();
        assert!(args.status.success(), "{args:?}");
        let args = String::from_utf8(args.stdout).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.path().join("server.log"))
            .unwrap();
        let mut child = Command::new(&self.binary)
            .args(args.lines())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        for _ in 0..600 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                self.child = Some(child);
                return;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the server exited with {status}; see its log");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        panic!(
            "the server did not accept connections on port {}",
            self.port
        );
    }

    /// SIGKILL: the server dies as in a crash or power cut, with no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}
