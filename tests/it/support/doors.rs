//! One clearing house behind both front doors, IDSCP2 and IDS-Multipart over HTTPS, on loopback,
//! and clients through either: so that one table of cases runs over two transports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clearinghouse::client::{ClearingHouseClient, MultipartConfig, MultipartTransport};
use clearinghouse::http::{server_tls, ClientAuth, HttpDoorConfig, HttpLimits, HttpServer};
use clearinghouse::idscp2::budget::MemoryBudget;
use clearinghouse::idscp2::dat::{DatIssuer, DatVerifier, DevelopmentVerifier};
use clearinghouse::idscp2::endpoint::{Endpoint, Settings};
use clearinghouse::idscp2::server::{Server, ServerConfig};
use clearinghouse::idscp2::tls::load_ca_file;
use clearinghouse::receipt::Jwks;
use clearinghouse::store::embedded::EmbeddedStore;
use tempfile::TempDir;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::clearing::{clearing_house, connector_id_of, receipt_signer, Limits};
use super::pki::TestPki;
use super::transport::{client_config, dev_endpoint, server_tls as idscp2_tls, test_settings};

/// The two transports a request can come through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Idscp2,
    Multipart,
}

/// Both doors, for tables of cases.
pub const DOORS: [Door; 2] = [Door::Idscp2, Door::Multipart];

/// How the clearing house behind the doors is set up.
pub struct DoorOptions {
    pub limits: Limits,
    pub http: HttpLimits,
    pub client_auth: ClientAuth,
    /// `None`: development mode (the client certificate names the caller).
    pub verifier: Option<Arc<dyn DatVerifier>>,
    /// The IDSCP2 settings, whose memory bound the HTTPS door shares.
    pub settings: Settings,
}

impl Default for DoorOptions {
    fn default() -> Self {
        DoorOptions {
            limits: Limits::default(),
            http: HttpLimits {
                max_body_bytes: 4 * 1024 * 1024 + 64 * 1024,
                max_header_bytes: 16 * 1024,
                read_timeout: Duration::from_secs(10),
                max_connections: 64,
            },
            client_auth: ClientAuth::Required,
            verifier: None,
            settings: test_settings(),
        }
    }
}

pub struct TwoDoors {
    pub pki: TestPki,
    pub idscp2: SocketAddr,
    pub https: SocketAddr,
    pub store: Arc<EmbeddedStore>,
    pub jwks: Jwks,
    /// The memory bound both doors share.
    pub budget: MemoryBudget,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    _data: TempDir,
}

impl TwoDoors {
    /// Development mode, default limits.
    pub async fn start() -> TwoDoors {
        Self::start_with(DoorOptions::default()).await
    }

    pub async fn start_with(options: DoorOptions) -> TwoDoors {
        let pki = TestPki::new();
        let data = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(data.path().join("ch.redb")).unwrap());
        let signer = receipt_signer(&pki);
        let jwks = Jwks::new(&signer, vec![]);
        let development = options.verifier.is_none();
        let verifier = options
            .verifier
            .unwrap_or_else(|| Arc::new(DevelopmentVerifier::new()));
        let house = Arc::new(clearing_house(
            store.clone(),
            signer,
            None,
            verifier.clone(),
            options.limits,
        ));
        let endpoint: Endpoint = dev_endpoint(options.settings);
        let budget = endpoint.budget.clone();
        let cas = load_ca_file(&pki.ca_cert()).unwrap();
        let identity = clearinghouse::idscp2::tls::TlsIdentity::from_pem_files(
            &pki.server_cert(),
            &pki.server_key(),
        )
        .unwrap();
        let https = HttpServer::bind(
            "127.0.0.1:0",
            HttpDoorConfig {
                tls: server_tls(&identity, &cas, options.client_auth).unwrap(),
                limits: options.http,
                budget: endpoint.budget.clone(),
                verifier,
                token_required: !development,
            },
        )
        .await
        .unwrap();
        let idscp2 = Server::bind(
            "127.0.0.1:0",
            ServerConfig {
                tls: idscp2_tls(&pki),
                endpoint,
                max_connections: 256,
                handshake_limits: Default::default(),
            },
        )
        .await
        .unwrap();
        let (stop, stopped) = watch::channel(false);
        let until_stopped = |mut stopped: watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        let addrs = (idscp2.local_addr().unwrap(), https.local_addr().unwrap());
        let tasks = vec![
            tokio::spawn(idscp2.run(house.clone(), until_stopped(stopped.clone()))),
            tokio::spawn(https.run(house, until_stopped(stopped))),
        ];
        TwoDoors {
            pki,
            idscp2: addrs.0,
            https: addrs.1,
            store,
            jwks,
            budget,
            stop,
            tasks,
            _data: data,
        }
    }

    /// Stops both doors as `serve` does; returns when every connection is closed.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
    }

    /// A client of `name` (a client of the test PKI) through `door`.
    pub async fn client(&self, door: Door, name: &str) -> ClearingHouseClient {
        self.client_with(door, name, None).await
    }

    /// [`Self::client`] sending `dat` as the header's `ids:securityToken`.
    pub async fn client_with(
        &self,
        door: Door,
        name: &str,
        dat: Option<Arc<dyn DatIssuer>>,
    ) -> ClearingHouseClient {
        let connector_id = format!("https://{name}.test/connector");
        let timeout = Duration::from_secs(10);
        match door {
            Door::Idscp2 => {
                let config = client_config(&self.pki, name, dev_endpoint(test_settings()));
                let connection = clearinghouse::idscp2::client::connect(
                    &self.idscp2.to_string(),
                    "localhost",
                    &config,
                )
                .await
                .unwrap();
                ClearingHouseClient::new(connection, connector_id, dat, timeout)
            }
            Door::Multipart => ClearingHouseClient::over_https(
                self.https_transport(Some(name)),
                connector_id,
                dat,
                timeout,
            ),
        }
    }

    /// An HTTPS client of the multipart door, with the client certificate of `name` if any.
    pub fn https_transport(&self, name: Option<&str>) -> MultipartTransport {
        let ca_pem = std::fs::read(self.pki.ca_cert()).unwrap();
        let identity = name.map(|name| self.identity_pem(name));
        MultipartTransport::new(&MultipartConfig {
            server_name: "localhost",
            addr: self.https,
            ca_pem: &ca_pem,
            identity_pem: identity.as_deref(),
        })
        .unwrap()
    }

    /// A plain `reqwest` client for the HTTPS door (`https://localhost:PORT`), with the client
    /// certificate of `name` if any.
    pub fn reqwest(&self, name: Option<&str>) -> reqwest::Client {
        let ca =
            reqwest::Certificate::from_pem(&std::fs::read(self.pki.ca_cert()).unwrap()).unwrap();
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .resolve("localhost", self.https);
        if let Some(name) = name {
            builder =
                builder.identity(reqwest::Identity::from_pem(&self.identity_pem(name)).unwrap());
        }
        builder.build().unwrap()
    }

    /// `https://localhost:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https.port())
    }

    fn identity_pem(&self, name: &str) -> Vec<u8> {
        let mut pem = std::fs::read(self.pki.client_cert(name)).unwrap();
        pem.push(b'\n');
        pem.extend(std::fs::read(self.pki.client_key(name)).unwrap());
        pem
    }

    /// The identity the clearing house knows a client certificate by (development mode).
    pub fn id_of(&self, name: &str) -> String {
        connector_id_of(&self.pki, name)
    }
}
