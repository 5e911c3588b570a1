//! A clearing house on a loopback port with the embedded store in a temporary directory, and
//! clients for it, for tests that go through real IDSCP2.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clearinghouse::clearing::{ClearingHouse, ClearingHouseConfig, Quotas, DEFAULT_MAX_PAYLOAD};
use clearinghouse::client::ClearingHouseClient;
use clearinghouse::config::{LimitsConfig, QuotasConfig};
use clearinghouse::ids::Reply;
use clearinghouse::idscp2::dat::{DatIssuer, DatVerifier, DevelopmentVerifier};
use clearinghouse::idscp2::endpoint::Endpoint;
use clearinghouse::idscp2::tls::{PeerCertificate, TlsIdentity};
use clearinghouse::receipt::{Jwks, ReceiptAlgorithm, ReceiptSigner};
use clearinghouse::store::embedded::EmbeddedStore;
use clearinghouse::store::ProcessStore;
use tempfile::TempDir;

use super::pki::TestPki;
use super::transport::{client_config, dev_endpoint, test_settings, TestServer};

pub const CH_CONNECTOR_ID: &str = "https://clearinghouse.test/connector";

pub struct TestClearingHouse {
    pub pki: TestPki,
    pub server: TestServer,
    pub store: Arc<EmbeddedStore>,
    pub jwks: Jwks,
    pub store_path: PathBuf,
    /// Keeps the store file alive; restart() reuses it.
    pub data: Arc<TempDir>,
    /// The quotas, synced with the store every `quotas.sync_interval_ms`.
    pub quotas: Arc<Quotas>,
    quota_sync: tokio::task::JoinHandle<()>,
    limits: Limits,
}

/// Payload and reply bounds, request limits and quotas of a test clearing house.
#[derive(Clone)]
pub struct Limits {
    pub max_payload: usize,
    pub max_reply: usize,
    pub request: LimitsConfig,
    pub quotas: QuotasConfig,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_reply: clearinghouse::clearing::reply_limit(
                clearinghouse::idscp2::frame::DEFAULT_MAX_FRAME,
            ),
            request: LimitsConfig::default(),
            quotas: QuotasConfig::default(),
        }
    }
}

impl TestClearingHouse {
    /// Development mode: identities come from the client certificates.
    pub async fn start() -> TestClearingHouse {
        Self::start_with(Limits::default()).await
    }

    pub async fn start_with(limits: Limits) -> TestClearingHouse {
        let pki = TestPki::new();
        let data = Arc::new(tempfile::tempdir().unwrap());
        let store_path = data.path().join("clearinghouse.redb");
        Self::launch(pki, data, store_path, limits).await
    }

    async fn launch(
        pki: TestPki,
        data: Arc<TempDir>,
        store_path: PathBuf,
        limits: Limits,
    ) -> TestClearingHouse {
        let store = Arc::new(EmbeddedStore::open(&store_path).unwrap());
        let signer = receipt_signer(&pki);
        let jwks = Jwks::new(&signer, vec![]);
        let endpoint = dev_endpoint(test_settings());
        let quotas = Arc::new(Quotas::new(&limits.quotas));
        let quota_sync = quotas.spawn_sync(
            store.clone(),
            Duration::from_millis(limits.quotas.sync_interval_ms),
        );
        let service = clearing_house_with_quotas(
            store.clone(),
            signer,
            None,
            Arc::new(DevelopmentVerifier::new()),
            limits.clone(),
            quotas.clone(),
        );
        let server = TestServer::start(super::transport::server_tls(&pki), endpoint, service).await;
        TestClearingHouse {
            pki,
            server,
            store,
            jwks,
            store_path,
            data,
            quotas,
            quota_sync,
            limits,
        }
    }

    /// Stops the server, closes the store, and starts both again on the same file.
    pub async fn restart(self) -> TestClearingHouse {
        let limits = self.limits.clone();
        self.restart_with(limits).await
    }

    /// [`Self::restart`] with other limits and quotas.
    pub async fn restart_with(self, limits: Limits) -> TestClearingHouse {
        let TestClearingHouse {
            pki,
            server,
            store,
            data,
            store_path,
            quotas,
            quota_sync,
            ..
        } = self;
        drop(shut_down(server, store, &quotas, quota_sync).await);
        Self::launch(pki, data, store_path, limits).await
    }

    /// Stops the server as `serve` does at shutdown; the store handle returned is then the
    /// only one.
    pub async fn stop(self) -> Arc<EmbeddedStore> {
        let TestClearingHouse {
            server,
            store,
            quotas,
            quota_sync,
            ..
        } = self;
        shut_down(server, store, &quotas, quota_sync).await
    }

    pub fn limits(&self) -> Limits {
        self.limits.clone()
    }

    /// A connector's usage of `quota` (`processes` or `bytes`) as `/metrics` would show it.
    pub fn usage_of(&self, connector: &str, quota: &str) -> Option<u64> {
        let series = format!(
            "clearinghouse_connector_usage{{connector=\"{connector}\",quota=\"{quota}\"}} "
        );
        self.quotas
            .render_metrics()
            .lines()
            .find_map(|line| line.strip_prefix(&series)?.parse().ok())
    }

    pub async fn client(&self, name: &str) -> ClearingHouseClient {
        self.client_with(name, dev_endpoint(test_settings()), None)
            .await
    }

    pub async fn client_with(
        &self,
        name: &str,
        endpoint: Endpoint,
        dat: Option<Arc<dyn DatIssuer>>,
    ) -> ClearingHouseClient {
        let config = client_config(&self.pki, name, endpoint);
        let connection = self.server.connect(&config).await.unwrap();
        ClearingHouseClient::new(
            connection,
            format!("https://{name}.test/connector"),
            dat,
            Duration::from_secs(10),
        )
    }

    /// The identity the clearing house knows a client certificate by (development mode).
    pub fn id_of(&self, name: &str) -> String {
        connector_id_of(&self.pki, name)
    }
}

/// The server stops, the quota sync task lets go of the store, and the last usage is saved.
async fn shut_down(
    server: TestServer,
    store: Arc<EmbeddedStore>,
    quotas: &Quotas,
    quota_sync: tokio::task::JoinHandle<()>,
) -> Arc<EmbeddedStore> {
    server.stop().await;
    quota_sync.abort();
    let _ = quota_sync.await;
    quotas.sync(store.as_ref()).await.unwrap();
    store
}

pub fn connector_id_of(pki: &TestPki, name: &str) -> String {
    let identity =
        TlsIdentity::from_pem_files(&pki.client_cert(name), &pki.client_key(name)).unwrap();
    PeerCertificate::new(identity.leaf().clone())
        .connector_id()
        .unwrap()
}

pub fn receipt_signer(pki: &TestPki) -> Arc<ReceiptSigner> {
    let pem = std::fs::read(pki.receipt_key()).unwrap();
    Arc::new(ReceiptSigner::from_pem(ReceiptAlgorithm::Es256, &pem).unwrap())
}

pub fn clearing_house(
    store: Arc<dyn ProcessStore>,
    signer: Arc<ReceiptSigner>,
    own_dat: Option<Arc<dyn DatIssuer>>,
    token_verifier: Arc<dyn DatVerifier>,
    limits: Limits,
) -> ClearingHouse {
    let quotas = Arc::new(Quotas::new(&limits.quotas));
    clearing_house_with_quotas(store, signer, own_dat, token_verifier, limits, quotas)
}

pub fn clearing_house_with_quotas(
    store: Arc<dyn ProcessStore>,
    signer: Arc<ReceiptSigner>,
    own_dat: Option<Arc<dyn DatIssuer>>,
    token_verifier: Arc<dyn DatVerifier>,
    limits: Limits,
    quotas: Arc<Quotas>,
) -> ClearingHouse {
    ClearingHouse::new(ClearingHouseConfig {
        store,
        signer,
        connector_id: CH_CONNECTOR_ID.into(),
        own_dat,
        token_verifier,
        max_payload: limits.max_payload,
        max_reply: limits.max_reply,
        quotas,
        limits: limits.request,
        admins: Default::default(),
    })
}

/// Asserts a reply is a RejectionMessage with `reason`, `status` and the JSON error payload.
pub fn assert_rejected(reply: &Reply, reason: &str, status: u16) {
    assert_eq!(reply.message_type, "ids:RejectionMessage", "{reply:?}");
    assert_eq!(reply.rejection_reason.as_deref(), Some(reason), "{reply:?}");
    let payload = reply.json().expect("rejection payload is JSON");
    assert_eq!(payload["status"], status, "{payload}");
    assert!(
        payload["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{payload}"
    );
    assert!(
        payload["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{payload}"
    );
}
