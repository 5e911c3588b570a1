//! The storage contract, written once and run against every backend.
//!
//! `contract_suite!(backend, Harness)` generates one `#[tokio::test]` per contract check for a
//! backend; adding a backend takes a [`Harness`] for it and one more invocation.
//! Checks that only make sense for one backend (group commit) follow the suites.
//!
//! The MongoDB suite needs a MongoDB-protocol server: `scripts/test` starts one and sets
//! `CH_TEST_MONGODB_URI`. Without it the suite is skipped with a note, except in CI (`CI` set),
//! where it fails instead, so that CI never passes without having run it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clearinghouse::store::chain::{self, verify_chain, ChainHead};
use clearinghouse::store::{
    CreateOutcome, EmbeddedStore, Entry, MongoConfig, MongoStore, NewEntry, Order, OwnerChange,
    PageQuery, ProcessStore, StoreError,
};
use futures::future::join_all;
use serde_json::json;
use tempfile::TempDir;

/// What the contract needs from a backend beyond the trait.
trait Harness: Sized {
    /// A fresh, empty store, or `None` when the backend's server is not configured (the test is
    /// then skipped).
    async fn start() -> Option<Self>;
    fn store(&self) -> Arc<dyn ProcessStore>;
    /// Closes the store and opens it again on the same data, as after a restart.
    async fn reopen(&mut self);
    /// Cleans up after a check that passed.
    async fn finish(self) {}
}

struct Embedded {
    _dir: TempDir,
    path: PathBuf,
    store: Option<Arc<EmbeddedStore>>,
}

impl Harness for Embedded {
    async fn start() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let store = Arc::new(EmbeddedStore::open(&path).unwrap());
        Some(Self {
            _dir: dir,
            path,
            store: Some(store),
        })
    }

    fn store(&self) -> Arc<dyn ProcessStore> {
        self.store.clone().unwrap()
    }

    async fn reopen(&mut self) {
        let store = self.store.take().unwrap();
        // Dropping the last handle stops the writer and closes the file.
        drop(Arc::into_inner(store).expect("a test still holds the store"));
        self.store = Some(Arc::new(EmbeddedStore::open(&self.path).unwrap()));
    }
}

/// The test server's connection string; `None` (with a note) when there is none outside CI.
fn mongodb_uri() -> Option<String> {
    match std::env::var("CH_TEST_MONGODB_URI") {
        Ok(uri) if !uri.is_empty() => Some(uri),
        _ if std::env::var_os("CI").is_some() => {
            panic!("CH_TEST_MONGODB_URI is not set in CI: run the tests with scripts/test, which starts a MongoDB-protocol server")
        }
        _ => {
            println!("skipped: CH_TEST_MONGODB_URI is not set (scripts/test starts a MongoDB-protocol server and sets it)");
            None
        }
    }
}

/// A database of its own on the shared test server for every check, dropped when it passes.
struct Mongo {
    uri: String,
    database: String,
    store: Option<Arc<MongoStore>>,
}

impl Mongo {
    async fn connect(&self) -> Arc<MongoStore> {
        let mut config = MongoConfig::new(&self.uri, &self.database);
        // Generous, because the two cores of a CI machine are busy compiling and testing.
        config.timeout = Duration::from_secs(20);
        Arc::new(MongoStore::connect(config).await.unwrap())
    }
}

impl Harness for Mongo {
    async fn start() -> Option<Self> {
        let mut harness = Self {
            uri: mongodb_uri()?,
            database: format!("ch_contract_{}", uuid::Uuid::new_v4().simple()),
            store: None,
        };
        harness.store = Some(harness.connect().await);
        Some(harness)
    }

    fn store(&self) -> Arc<dyn ProcessStore> {
        self.store.clone().unwrap()
    }

    async fn reopen(&mut self) {
        // A new client, as after a restart of the clearing house; the database keeps the data.
        self.store = None;
        self.store = Some(self.connect().await);
    }

    async fn finish(self) {
        let client = mongodb::Client::with_uri_str(&self.uri).await.unwrap();
        client.database(&self.database).drop().await.unwrap();
    }
}

macro_rules! contract_suite {
    ($backend:ident, $harness:ty) => {
        mod $backend {
            use super::*;

            contract_suite!(@checks $harness;
                create_reports_created_then_exists_and_keeps_owners,
                append_to_an_unknown_process_fails,
                appends_are_numbered_from_one_with_non_decreasing_timestamps,
                stored_entries_form_a_verifiable_chain,
                entry_is_found_by_document_id_within_its_process_only,
                document_ids_are_distinct_uuids_v4_the_store_assigns,
                a_failing_append_fails_alone,
                an_empty_process_has_empty_pages,
                pages_slice_the_log_in_either_order,
                a_page_past_its_byte_budget_is_refused,
                date_bounds_are_inclusive_at_both_ends,
                processes_of_lists_owned_pids_sorted,
                concurrent_appends_to_one_process_are_gapless,
                concurrent_appends_to_different_processes_chain_independently,
                data_and_head_survive_reopening,
            );
        }
    };
    (@checks $harness:ty; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(mut harness) = <$harness>::start().await else {
                    return;
                };
                contract::$check(&mut harness).await;
                harness.finish().await;
            }
        )*
    };
}

contract_suite!(embedded, Embedded);
contract_suite!(mongo, Mongo);

fn owners(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| name.to_string()).collect()
}

fn new_entry(pid: &str, client_id: &str, n: u64) -> NewEntry {
    NewEntry {
        pid: pid.to_owned(),
        client_id: client_id.to_owned(),
        header: json!({
            "@type": "ids:LogMessage",
            "@id": format!("https://w3id.org/idsa/autogen/logMessage/{n}"),
            "ids:modelVersion": "4.2.7",
            "n": n,
            // A double that a careless JSON round trip changes in its last bit.
            "x-ratio": 1.0715660391465826e-75,
        }),
        payload: Bytes::from(format!("entry {n} of {pid}")),
        payload_type: "text/plain".to_owned(),
    }
}

async fn create(store: &dyn ProcessStore, pid: &str, owner_names: &[&str]) {
    match store
        .create_process(pid, &owners(owner_names))
        .await
        .unwrap()
    {
        CreateOutcome::Created(_) => {}
        CreateOutcome::Exists(process) => panic!("{pid} already existed: {process:?}"),
    }
}

async fn append_many(store: &dyn ProcessStore, pid: &str, count: u64) -> Vec<Entry> {
    let mut entries = Vec::new();
    for n in 1..=count {
        entries.push(
            store
                .append(new_entry(pid, "client-a", n).prepare())
                .await
                .unwrap(),
        );
    }
    entries
}

/// Every entry of `pid`, fetched in small batches so that batch boundaries are crossed.
async fn all_entries(store: &dyn ProcessStore, pid: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    loop {
        let batch = store
            .entries_from(pid, entries.len() as u64 + 1, 3)
            .await
            .unwrap();
        if batch.is_empty() {
            return entries;
        }
        entries.extend(batch);
    }
}

fn sequences(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|entry| entry.sequence).collect()
}

fn page_query(pid: &str, page: u64, size: u64, order: Order) -> PageQuery {
    PageQuery {
        pid: pid.to_owned(),
        page,
        size,
        order,
        from_ms: None,
        to_ms: None,
        max_bytes: usize::MAX,
    }
}

mod contract {
    use super::*;

    pub async fn create_reports_created_then_exists_and_keeps_owners(harness: &mut impl Harness) {
        let store = harness.store();
        let requested: BTreeSet<String> =
            ["b", "a", "b", "a"].iter().map(|o| o.to_string()).collect();
        let created = match store.create_process("p-1", &requested).await.unwrap() {
            CreateOutcome::Created(process) => process,
            other => panic!("expected Created, got {other:?}"),
        };
        assert_eq!(created.pid, "p-1");
        assert_eq!(created.owners, owners(&["a", "b"]));
        assert_eq!(store.process("p-1").await.unwrap(), Some(created.clone()));

        // A second creation changes nothing, not even the owners.
        match store.create_process("p-1", &owners(&["c"])).await.unwrap() {
            CreateOutcome::Exists(process) => assert_eq!(process, created),
            other => panic!("expected Exists, got {other:?}"),
        }
        assert_eq!(store.process("p-1").await.unwrap(), Some(created));
        assert_eq!(store.process("p-2").await.unwrap(), None);
        store.ping().await.unwrap();
    }

    pub async fn append_to_an_unknown_process_fails(harness: &mut impl Harness) {
        let store = harness.store();
        match store
            .append(new_entry("nobody", "client-a", 1).prepare())
            .await
        {
            Err(StoreError::UnknownProcess(pid)) => assert_eq!(pid, "nobody"),
            other => panic!("expected UnknownProcess, got {other:?}"),
        }
        assert_eq!(store.process("nobody").await.unwrap(), None);
    }

    pub async fn appends_are_numbered_from_one_with_non_decreasing_timestamps(
        harness: &mut impl Harness,
    ) {
        let store = harness.store();
        create(&*store, "p-1", &["client-a"]).await;
        let created_at = store.process("p-1").await.unwrap().unwrap().created_at_ms;
        let mut previous_ms = created_at;
        for n in 1..=5 {
            let asked = new_entry("p-1", "client-a", n);
            let stored = store.append(asked.clone().prepare()).await.unwrap();
            assert_eq!(stored.sequence, n);
            assert_eq!(stored.pid, asked.pid);
            assert_eq!(stored.client_id, asked.client_id);
            assert_eq!(stored.header, asked.header);
            assert_eq!(stored.payload, asked.payload);
            assert_eq!(stored.payload_type, asked.payload_type);
            assert_eq!(Some(stored.entry_hash), chain::entry_hash(&stored));
            assert!(stored.timestamp_ms >= previous_ms, "timestamps went back");
            previous_ms = stored.timestamp_ms;
        }
    }

    pub async fn stored_entries_form_a_verifiable_chain(harness: &mut impl Harness) {
        let store = harness.store();
        create(&*store, "p-1", &["client-a"]).await;
        let appended = append_many(&*store, "p-1", 7).await;
        let stored = all_entries(&*store, "p-1").await;
        assert_eq!(stored, appended);
        assert_eq!(
            verify_chain("p-1", stored).unwrap(),
            ChainHead {
                sequence: 7,
                chain_hash: appended[6].chain_hash
            }
        );
        assert_eq!(
            sequences(&store.entries_from("p-1", 6, 100).await.unwrap()),
            [6, 7]
        );
        assert!(store.entries_from("p-1", 8, 100).await.unwrap().is_empty());
        assert!(store.entries_from("p-1", 1, 0).await.unwrap().is_empty());
        assert!(matches!(
            store.entries_from("nobody", 1, 10).await,
            Err(StoreError::UnknownProcess(_))
        ));
    }

    pub async fn entry_is_found_by_document_id_within_its_process_only(harness: &mut impl Harness) {
        let store = harness.store();
        create(&*store, "p-1", &["client-a"]).await;
        create(&*store, "p-2", &["client-a"]).await;
        let first = append_many(&*store, "p-1", 2).await;
        append_many(&*store, "p-2", 1).await;

        let found = store.entry("p-1", &first[1].document_id).await.unwrap();
        assert_eq!(found.as_ref(), Some(&first[1]));
        assert_eq!(
            store.entry("p-2", &first[1].document_id).await.unwrap(),
            None
        );
        let unknown = uuid::Uuid::new_v4().to_string();
        assert_eq!(store.entry("p-1", &unknown).await.unwrap(), None);
        // Ids are looked up as the exact strings the store gave out.
        let shouted = first[1].document_id.to_uppercase();
        assert_eq!(store.entry("p-1", &shouted).await.unwrap(), None);
        for malformed in ["", "not-a-uuid", "{\"$gt\": \"\"}"] {
            assert_eq!(store.entry("p-1", malformed).await.unwrap(), None);
        }
    }

    pub async fn document_ids_are_distinct_uuids_v4_the_store_assigns(harness: &mut impl Harness) {
        let store = harness.store();
        create(&*store, "p-1", &["client-a"]).await;
        create(&*store, "p-2", &["client-a"]).await;
        // Issued together, so that a batching backend is likely to put them in one batch.
        let mut entries: Vec<Entry> = join_all((1..=30).map(|n| {
            let pid = if n % 3 == 0 { "p-2" } else { "p-1" };
            store.append(new_entry(pid, "client-a", n).prepare())
        }))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
        let change = OwnerChange::new(
            "p-1",
            "client-a",
            json!({"@type": "ids:RequestMessage"}),
            owners(&["client-a"]),
            owners(&["client-a", "client-b"]),
        );
        entries.push(store.change_owners(change).await.unwrap());

        let mut ids = BTreeSet::new();
        for entry in &entries {
            let id = &entry.document_id;
            let uuid = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(uuid.get_version(), Some(uuid::Version::Random), "{id}");
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert_eq!(&uuid.hyphenated().to_string(), id, "canonical form");
            assert!(ids.insert(id.clone()), "{id} assigned twice");
            assert_eq!(
                store.entry(&entry.pid, id).await.unwrap().as_ref(),
                Some(entry)
            );
        }
        for pid in ["p-1", "p-2"] {
            verify_chain(pid, all_entries(&*store, pid).await).unwrap();
        }
    }

    pub async fn a_failing_append_fails_alone(harness: &mut impl Harness) {
        let store = harness.store();
        create(&*store, "p-1", &["client-a"]).await;
        // Issued together, so that a batching backend is likely to put them in one batch.
        let results = join_all((1..=20).map(|n| {
            let pid = if n % 2 == 0 { "p-1" } else { "nobody" };
            store.append(new_entry(pid, "client-a", n).prepare())
        }))
        .await;
        for (index, result) in results.into_iter().enumerate() {
            match (index % 2, result) {
                (1, Ok(_)) | (0, Err(StoreError::UnknownProcess(_))) => {}
                (_, other) => panic!("append {index} came out as {other:?}"),
            }
        }
        let stored = all_entries(&*store, "p-1").await;
        assert_eq!(sequences(&stored), (1..=10).collect::<Vec<_>>());
        verify_chain("p-1", stored).unwrap();
    }

    pub async fn a_page_past_its_byte_budget_is_refused(harness: &mut impl Harness) {
        let store = harness.store();
        create(&*store, "p-1", &["client-a"]).await;
        for n in 1..=10 {
            let mut entry = new_entry("p-1", "client-a", n);
            entry.payload = Bytes::from(vec![b'x'; 1000]);
            store.append(entry.prepare()).await.unwrap();
        }
        let budgeted = |size: u64, order: Order, max_bytes: usize| PageQuery {
            max_bytes,
            ..page_query("p-1", 1, size, order)
        };
        for order in [Order::Asc, Order::Desc] {
            match store.query(&budgeted(10, order, 5_000)).await {
                Err(StoreError::PageTooLarge { limit: 5_000, .. }) => {}
                other => panic!("expected PageTooLarge, got {other:?}"),
            }
            let fits = store.query(&budgeted(3, order, 5_000)).await.unwrap();
            assert_eq!(fits.entries.len(), 3);
            assert_eq!(fits.total, 10);
            let all = store.query(&budgeted(10, order, 100_000)).await.unwrap();
            assert_eq!(all.entries.len(), 10);
        }
    }

    pub async fn an_empty_process_has_empty_pages(harness: &mut impl Harness) {
        let store = harness.store();
        create(&*store, "p-1", &["client-a"]).await;
        for order in [Order::Asc, Order::Desc] {
            let page = store.query(&page_query("p-1", 1, 10, order)).await.unwrap();
            assert!(page.entries.is_empty());
            assert_eq!(page.total, 0);
        }
        let mut dated = page_query("p-1", 1, 10, Order::Desc);
        dated.from_ms = Some(0);
        dated.to_ms = Some(i64::MAX);
        assert_eq!(store.query(&dated).await.unwrap().total, 0);

        assert!(matches!(
            store.query(&page_query("nobody", 1, 10, Order::Asc)).await,
            Err(StoreError::UnknownProcess(_))
        ));
        assert!(matches!(
            store.query(&page_query("p-1", 0, 10, Order::Asc)).await,
            Err(StoreError::InvalidQuery(_))
        ));
        assert!(matches!(
            store.query(&page_query("p-1", 1, 0, Order::Asc)).await,
            Err(StoreError::InvalidQuery(_))
        ));
    }

    pub async fn pages_slice_the_log_in_either_order(harness: &mut impl Harness) {
        let store = harness.store();
        create(&*store, "p-1", &["client-a"]).await;
        create(&*store, "p-2", &["client-a"]).await;
        let appended = append_many(&*store, "p-1", 7).await;
        append_many(&*store, "p-2", 2).await;

        let expectations: [(u64, Order, &[u64]); 8] = [
            (1, Order::Asc, &[1, 2, 3]),
            (2, Order::Asc, &[4, 5, 6]),
            (3, Order::Asc, &[7]),
            (4, Order::Asc, &[]),
            (1, Order::Desc, &[7, 6, 5]),
            (2, Order::Desc, &[4, 3, 2]),
            (3, Order::Desc, &[1]),
            (99, Order::Desc, &[]),
        ];
        for (number, order, expected) in expectations {
            let page = store
                .query(&page_query("p-1", number, 3, order))
                .await
                .unwrap();
            assert_eq!(
                sequences(&page.entries),
                expected,
                "page {number} {order:?}"
            );
            assert_eq!(page.total, 7, "page {number} {order:?}");
        }
        let everything = store
            .query(&page_query("p-1", 1, 1000, Order::Asc))
            .await
            .unwrap();
        assert_eq!(everything.entries, appended);
    }

    pub async fn date_bounds_are_inclusive_at_both_ends(harness: &mut impl Harness) {
        let store = harness.store();
        create(&*store, "p-1", &["client-a"]).await;
        let mut appended = Vec::new();
        for n in 1..=5 {
            // Apart by more than a millisecond, so that every entry has its own timestamp.
            tokio::time::sleep(Duration::from_millis(3)).await;
            appended.push(
                store
                    .append(new_entry("p-1", "client-a", n).prepare())
                    .await
                    .unwrap(),
            );
        }
        let ts: Vec<i64> = appended.iter().map(|entry| entry.timestamp_ms).collect();
        assert!(ts.windows(2).all(|pair| pair[0] < pair[1]), "{ts:?}");

        let ranged =
            |from_ms: Option<i64>, to_ms: Option<i64>, page: u64, order: Order| PageQuery {
                from_ms,
                to_ms,
                ..page_query("p-1", page, 2, order)
            };
        let cases: [(PageQuery, &[u64], u64); 10] = [
            (ranged(Some(ts[1]), Some(ts[3]), 1, Order::Asc), &[2, 3], 3),
            (ranged(Some(ts[1]), Some(ts[3]), 2, Order::Asc), &[4], 3),
            (ranged(Some(ts[1]), Some(ts[3]), 1, Order::Desc), &[4, 3], 3),
            (ranged(Some(ts[1]), Some(ts[3]), 3, Order::Desc), &[], 3),
            (
                ranged(Some(ts[1] + 1), Some(ts[3] - 1), 1, Order::Asc),
                &[3],
                1,
            ),
            (ranged(Some(ts[2]), None, 1, Order::Desc), &[5, 4], 3),
            (ranged(None, Some(ts[0]), 1, Order::Desc), &[1], 1),
            (ranged(Some(ts[2]), Some(ts[2]), 1, Order::Asc), &[3], 1),
            (ranged(None, Some(ts[0] - 1), 1, Order::Asc), &[], 0),
            (ranged(Some(ts[3]), Some(ts[1]), 1, Order::Asc), &[], 0),
        ];
        for (query, expected, total) in cases {
            let page = store.query(&query).await.unwrap();
            assert_eq!(sequences(&page.entries), expected, "{query:?}");
            assert_eq!(page.total, total, "{query:?}");
        }
        let after_all = ranged(Some(ts[4] + 1), None, 1, Order::Asc);
        assert_eq!(store.query(&after_all).await.unwrap().total, 0);
    }

    pub async fn processes_of_lists_owned_pids_sorted(harness: &mut impl Harness) {
        let store = harness.store();
        create(&*store, "p-3", &["client-a"]).await;
        create(&*store, "p-1", &["client-a", "client-b"]).await;
        create(&*store, "p-2", &["client-b"]).await;
        create(&*store, "p-4", &["client-ab"]).await;

        assert_eq!(
            store.processes_of("client-a").await.unwrap(),
            ["p-1", "p-3"]
        );
        assert_eq!(
            store.processes_of("client-b").await.unwrap(),
            ["p-1", "p-2"]
        );
        assert!(store.processes_of("client-c").await.unwrap().is_empty());
    }

    pub async fn concurrent_appends_to_one_process_are_gapless(harness: &mut impl Harness) {
        let store = harness.store();
        create(&*store, "p-1", &["client-a"]).await;
        let tasks: Vec<_> = (1..=32)
            .map(|n| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    store
                        .append(new_entry("p-1", "client-a", n).prepare())
                        .await
                })
            })
            .collect();
        let mut assigned = Vec::new();
        for task in tasks {
            assigned.push(task.await.unwrap().unwrap().sequence);
        }
        assigned.sort_unstable();
        assert_eq!(assigned, (1..=32).collect::<Vec<_>>());

        let stored = all_entries(&*store, "p-1").await;
        assert!(stored
            .windows(2)
            .all(|pair| pair[0].timestamp_ms <= pair[1].timestamp_ms));
        assert_eq!(verify_chain("p-1", stored).unwrap().sequence, 32);
    }

    pub async fn concurrent_appends_to_different_processes_chain_independently(
        harness: &mut impl Harness,
    ) {
        let store = harness.store();
        let pids = ["p-1", "p-2", "p-3", "p-4"];
        for pid in pids {
            create(&*store, pid, &["client-a"]).await;
        }
        let tasks: Vec<_> = (0..32)
            .map(|n| {
                let store = Arc::clone(&store);
                let pid = pids[n % pids.len()];
                tokio::spawn(async move {
                    store
                        .append(new_entry(pid, "client-a", n as u64).prepare())
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        for pid in pids {
            let head = verify_chain(pid, all_entries(&*store, pid).await).unwrap();
            assert_eq!(head.sequence, 8, "{pid}");
        }
    }

    pub async fn data_and_head_survive_reopening(harness: &mut impl Harness) {
        let before = {
            let store = harness.store();
            create(&*store, "p-1", &["client-a", "client-b"]).await;
            append_many(&*store, "p-1", 3).await;
            (
                store.process("p-1").await.unwrap(),
                all_entries(&*store, "p-1").await,
            )
        };
        harness.reopen().await;
        let store = harness.store();
        store.ping().await.unwrap();

        assert_eq!(store.process("p-1").await.unwrap(), before.0);
        assert_eq!(all_entries(&*store, "p-1").await, before.1);
        assert_eq!(store.processes_of("client-b").await.unwrap(), ["p-1"]);
        let last = &before.1[2];
        assert_eq!(
            store
                .entry("p-1", &last.document_id)
                .await
                .unwrap()
                .as_ref(),
            Some(last)
        );

        let next = store
            .append(new_entry("p-1", "client-a", 4).prepare())
            .await
            .unwrap();
        assert_eq!(next.sequence, 4);
        assert!(next.timestamp_ms >= last.timestamp_ms);
        assert!(
            before
                .1
                .iter()
                .all(|old| old.document_id != next.document_id),
            "an id given out before the reopen is given out again"
        );
        assert_eq!(
            store
                .entry("p-1", &next.document_id)
                .await
                .unwrap()
                .as_ref(),
            Some(&next)
        );
        assert_eq!(
            next.chain_hash,
            chain::chain_hash(&last.chain_hash, &next.entry_hash)
        );
        assert_eq!(
            verify_chain("p-1", all_entries(&*store, "p-1").await)
                .unwrap()
                .sequence,
            4
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_group_commit_batches_concurrent_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path().join("store.redb")).unwrap());
    create(&*store, "p-1", &["client-a"]).await;
    let commits_before = store.commits();

    let barrier = Arc::new(tokio::sync::Barrier::new(200));
    let tasks: Vec<_> = (1..=200)
        .map(|n| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .append(new_entry("p-1", "client-a", n).prepare())
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }

    let commits = store.commits() - commits_before;
    assert!(commits >= 1);
    assert!(commits < 200, "200 appends took {commits} commits");
    assert_eq!(
        verify_chain("p-1", all_entries(&*store, "p-1").await)
            .unwrap()
            .sequence,
        200
    );
}
