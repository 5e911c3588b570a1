//! Encryption at rest: every process's content sealed under its own data key, data keys wrapped
//! by key-encryption keys (KEKs) that live in files, never in the store, and erasure by
//! destroying a data key (crypto-shredding).
//!
//! - Each process gets a random 256-bit *data key* when it is created. From it HKDF-SHA256
//!   (RFC 5869; salt `clearinghouse-data-key-v2`, 32 bytes out) derives two keys: with info
//!   `clearinghouse-entry-seal-v2` an AES-256-GCM key that seals each entry's payload and
//!   canonical header, and with info `clearinghouse-entry-commitment-v2` an HMAC-SHA256 key (the
//!   *commitment key*) under which the chain commits to that content (see
//!   [`chain`](super::chain), version 2). A sealed field is `nonce (12) || ciphertext ||
//!   tag (16)`, the nonce random (ring's `SystemRandom`), and its associated data
//!   `F("clearinghouse-entry-seal-v2") || F(pid) || F(sequence, 8 bytes big-endian) ||
//!   F(document id) || F(field)`, field being `payload` or `header` (`F` as in the chain: a
//!   64-bit big-endian length, then the bytes). So a ciphertext copied to another entry, another
//!   field or another process does not open, and the read names the entry.
//! - A process's saved view (`store::views`) repeats what its entries say, so it is sealed the
//!   same way, field `view`, with the sequence the view reaches in place of the entry's and an
//!   empty document id: a view does not open in another process or as a later one.
//! - The data key is stored only wrapped by the active KEK (`keyring`), with the KEK's id.
//!   Rotating a KEK re-wraps data keys (`keys rewrap`); entries are never rewritten.
//! - What stays in the clear is what the chain and the queries need: pid, sequence, document id,
//!   timestamp, client id, payload media type, entry hash and chain hash. No plain hash of a
//!   payload or header is stored anywhere: the v2 entry hash covers the content only through the
//!   keyed commitment, so a guessed payload cannot be confirmed from a copy of the store.
//! - Erasing a process removes its wrapped data key from the process record and records who
//!   erased it and when, in one write (its saved view is deleted in or right after it); the
//!   entries and their hashes stay, so the chain and every receipt still verify, but their
//!   content can never be read or checked again.
//!
//! Unwrapped keys are kept in a small cache keyed by the wrapped key (so a rewrapped or erased
//! key is never found under its old record), which spares each append and read an unwrap and
//! two HKDF expansions; erasing through this process empties the cache of that process.

mod keyring;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::{hkdf, hmac};

pub use keyring::{generate_kek_file, parse_kek, KekFile, Keyring, KeyringError, UnwrapError};

use super::StoreError;

/// Bytes in a data key (AES-256 and HMAC-SHA256 are derived from it).
pub(crate) const DATA_KEY_LEN: usize = 32;
const DERIVATION_SALT: &[u8] = b"clearinghouse-data-key-v2";
const SEAL_INFO: &[u8] = b"clearinghouse-entry-seal-v2";
const COMMITMENT_INFO: &[u8] = b"clearinghouse-entry-commitment-v2";
const SEAL_CONTEXT: &[u8] = b"clearinghouse-entry-seal-v2";
/// Cached unwrapped keys; past this many the cache starts over.
const CACHE_LIMIT: usize = 10_000;

/// A data key wrapped by a KEK, as a process record keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The KEK's id from `store.encryption.keys`.
    pub kek_id: String,
    /// Nonce, ciphertext and tag (see `keyring`).
    pub wrapped: Vec<u8>,
}

/// Who erased a process, and when: kept in the process record in place of its data key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    /// The admin connector id, or `cli:<name>` for an offline erasure.
    pub by: String,
    /// UTC milliseconds.
    pub at_ms: i64,
}

/// What a process record holds about its content's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// No key: a process created before encryption or with it switched off; its entries are
    /// plaintext, chained as version 1.
    Plaintext,
    /// The process's data key, wrapped.
    Wrapped(WrappedKey),
    /// The data key was destroyed.
    Erased(Erasure),
}

/// How an entry's content is protected, as a read returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protection {
    /// Stored in the clear, entry hash version 1.
    Plaintext,
    /// Stored sealed and decrypted for this read; entry hash version 2 under this commitment key.
    Encrypted {
        /// The process's commitment key (see the module documentation), needed to recompute the
        /// entry hash; an export carries it.
        commitment_key: [u8; 32],
    },
    /// Stored sealed, and the key is gone: header and payload are withheld (empty), the entry
    /// hash cannot be recomputed, only its link in the chain checked.
    Erased,
}

/// Which sealed field of an entry; part of the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Payload,
    Header,
    /// A saved view of the process (`store::views`), bound to the entries it has folded in.
    View,
}

impl Field {
    /// The field's name, as the associated data and error messages spell it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Field::Payload => "payload",
            Field::Header => "header",
            Field::View => "view",
        }
    }
}

/// Where a sealed field belongs: what its associated data binds it to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place<'a> {
    pub(crate) pid: &'a str,
    pub(crate) sequence: u64,
    pub(crate) document_id: &'a str,
}

/// A process's content keys, derived from its data key.
pub(crate) struct ProcessKeys {
    seal: LessSafeKey,
    commitment: hmac::Key,
    commitment_key: [u8; 32],
}

impl ProcessKeys {
    fn derive(data_key: &[u8; DATA_KEY_LEN]) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, DERIVATION_SALT).extract(data_key);
        let expand = |info: &[u8]| {
            let mut out = [0u8; 32];
            // 32 bytes is far below HKDF-SHA256's limit of 8160; neither step can fail.
            let filled = prk
                .expand(&[info], hkdf::HKDF_SHA256)
                .and_then(|okm| okm.fill(&mut out));
            debug_assert!(filled.is_ok());
            out
        };
        let seal_key = expand(SEAL_INFO);
        let commitment_key = expand(COMMITMENT_INFO);
        let seal = match UnboundKey::new(&AES_256_GCM, &seal_key) {
            Ok(key) => LessSafeKey::new(key),
            Err(_) => unreachable!("a 32-byte key is an AES-256 key"),
        };
        Self {
            seal,
            commitment: hmac::Key::new(hmac::HMAC_SHA256, &commitment_key),
            commitment_key,
        }
    }

    /// The HMAC key the v2 entry hash commits to content with.
    pub(crate) fn commitment(&self) -> &hmac::Key {
        &self.commitment
    }

    /// The raw commitment key, as an export hands it to auditors.
    pub(crate) fn commitment_key(&self) -> [u8; 32] {
        self.commitment_key
    }

    /// `field` of the entry at `place`, sealed with a fresh random nonce.
    pub(crate) fn seal(
        &self,
        random: &ring::rand::SystemRandom,
        place: Place<'_>,
        field: Field,
        plaintext: &[u8],
    ) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        keyring::fill(random, &mut nonce);
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plaintext);
        let mut tag_room = sealed.split_off(NONCE_LEN);
        let aad = seal_aad(place, field);
        // Only inputs beyond GCM's 64 GiB limit are refused; payloads are bounded far below.
        if self
            .seal
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut tag_room,
            )
            .is_err()
        {
            unreachable!("AES-GCM refused a payload below its size limit");
        }
        sealed.extend_from_slice(&tag_room);
        sealed
    }

    /// The plaintext of `field` at `place`, or `None` if it does not open there: modified, or
    /// copied from another entry, field or process.
    pub(crate) fn open(&self, place: Place<'_>, field: Field, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN + 16 {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = ciphertext.to_vec();
        let aad = seal_aad(place, field);
        let length = self
            .seal
            .open_in_place(nonce, Aad::from(&aad), &mut buffer)
            .ok()?
            .len();
        buffer.truncate(length);
        Some(buffer)
    }
}

/// Where the saved view of `pid` that has folded in entries up to `entries_seen` belongs (sealed
/// as [`Field::View`], so it never opens as an entry's content, nor an entry's as a view).
pub(crate) fn view_place(pid: &str, entries_seen: u64) -> Place<'_> {
    Place {
        pid,
        sequence: entries_seen,
        document_id: "",
    }
}

fn seal_aad(place: Place<'_>, field: Field) -> Vec<u8> {
    let mut aad = Vec::with_capacity(96 + place.pid.len() + place.document_id.len());
    put_field(&mut aad, SEAL_CONTEXT);
    put_field(&mut aad, place.pid.as_bytes());
    put_field(&mut aad, &place.sequence.to_be_bytes());
    put_field(&mut aad, place.document_id.as_bytes());
    put_field(&mut aad, field.name().as_bytes());
    aad
}

pub(super) fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// How a backend reads one process's entries.
pub(crate) enum EntryKeys {
    /// The process has no data key: sealed entries in it are corrupt.
    Plaintext,
    /// Its content keys.
    Keys(Arc<ProcessKeys>),
    /// Its key was destroyed: sealed entries come back withheld.
    Erased,
}

/// Unwrapped keys by wrapped key bytes, with the process each belongs to.
type KeyCache = HashMap<Vec<u8>, (String, Arc<ProcessKeys>)>;

/// A store's encryption: the keyring, or none when encryption is off, and the cache of
/// unwrapped keys. Each backend holds one.
pub struct Sealing {
    keyring: Option<Arc<Keyring>>,
    random: ring::rand::SystemRandom,
    /// Wrapped key bytes -> (pid, keys).
    cache: Mutex<KeyCache>,
}

impl std::fmt::Debug for Sealing {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Sealing")
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

impl Sealing {
    /// New processes are plaintext; existing encrypted ones cannot be read.
    pub fn disabled() -> Self {
        Self::new(None)
    }

    /// New processes get data keys wrapped by the keyring's active KEK.
    pub fn with_keyring(keyring: Keyring) -> Self {
        Self::new(Some(Arc::new(keyring)))
    }

    fn new(keyring: Option<Arc<Keyring>>) -> Self {
        Self {
            keyring,
            random: ring::rand::SystemRandom::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether new processes are encrypted.
    pub fn enabled(&self) -> bool {
        self.keyring.is_some()
    }

    pub(crate) fn random(&self) -> &ring::rand::SystemRandom {
        &self.random
    }

    /// The key state a new process `pid` starts with: a fresh wrapped data key, or plaintext.
    pub(crate) fn new_process(&self, pid: &str) -> KeyState {
        match &self.keyring {
            Some(keyring) => {
                let mut data_key = [0u8; DATA_KEY_LEN];
                keyring::fill(keyring.random(), &mut data_key);
                KeyState::Wrapped(keyring.wrap(pid, &data_key))
            }
            None => KeyState::Plaintext,
        }
    }

    /// How the entries of process `pid`, whose record says `state`, are read and written.
    pub(crate) fn entry_keys(&self, pid: &str, state: &KeyState) -> Result<EntryKeys, StoreError> {
        match state {
            KeyState::Plaintext => Ok(EntryKeys::Plaintext),
            KeyState::Erased(_) => Ok(EntryKeys::Erased),
            KeyState::Wrapped(wrapped) => self.keys(pid, wrapped).map(EntryKeys::Keys),
        }
    }

    fn keys(&self, pid: &str, wrapped: &WrappedKey) -> Result<Arc<ProcessKeys>, StoreError> {
        if let Some((owner, keys)) = self.cached().get(&wrapped.wrapped) {
            if owner == pid {
                return Ok(Arc::clone(keys));
            }
        }
        let keyring = self
            .keyring
            .as_ref()
            .ok_or_else(|| StoreError::MissingKek {
                pid: pid.to_owned(),
                reason: UnwrapError::UnknownKek(wrapped.kek_id.clone()).to_string(),
            })?;
        let data_key = keyring
            .unwrap(pid, wrapped)
            .map_err(|error| StoreError::MissingKek {
                pid: pid.to_owned(),
                reason: error.to_string(),
            })?;
        let keys = Arc::new(ProcessKeys::derive(&data_key));
        let mut cache = self.cached();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(wrapped.wrapped.clone(), (pid.to_owned(), Arc::clone(&keys)));
        Ok(keys)
    }

    /// Drops every cached key of `pid`: it was erased.
    pub(crate) fn forget(&self, pid: &str) {
        self.cached().retain(|_, (owner, _)| owner != pid);
    }

    /// `wrapped` re-wrapped under the active KEK, or `None` if it is wrapped by it already.
    pub(crate) fn rewrap(
        &self,
        pid: &str,
        wrapped: &WrappedKey,
    ) -> Result<Option<WrappedKey>, StoreError> {
        let Some(keyring) = &self.keyring else {
            return Ok(None);
        };
        if wrapped.kek_id == keyring.active_id() {
            return Ok(None);
        }
        let data_key = keyring
            .unwrap(pid, wrapped)
            .map_err(|error| StoreError::MissingKek {
                pid: pid.to_owned(),
                reason: error.to_string(),
            })?;
        Ok(Some(keyring.wrap(pid, &data_key)))
    }

    /// The ids of the configured KEKs (none when encryption is off).
    pub fn kek_ids(&self) -> BTreeSet<String> {
        self.keyring
            .as_ref()
            .map(|ring| ring.ids().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The active KEK's id, when encryption is on.
    pub fn active_kek(&self) -> Option<&str> {
        self.keyring.as_ref().map(|ring| ring.active_id())
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        // Entries are only inserted, removed or cleared: a poisoned lock is still consistent.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for Sealing {
    fn default() -> Self {
        Self::disabled()
    }
}

/// Keys for tests of this crate: a process's content keys from a fixed data key.
#[cfg(test)]
pub(crate) fn test_keys(data_key: [u8; DATA_KEY_LEN]) -> ProcessKeys {
    ProcessKeys::derive(&data_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(pid: &str, sequence: u64, document_id: &str) -> Place<'static> {
        Place {
            pid: Box::leak(pid.to_owned().into_boxed_str()),
            sequence,
            document_id: Box::leak(document_id.to_owned().into_boxed_str()),
        }
    }

    #[test]
    fn a_sealed_field_opens_only_in_its_place() {
        let keys = test_keys([3; 32]);
        let random = ring::rand::SystemRandom::new();
        let here = place("p-1", 2, "d-2");
        let sealed = keys.seal(&random, here, Field::Payload, b"yes");
        assert_eq!(
            keys.open(here, Field::Payload, &sealed).as_deref(),
            Some(&b"yes"[..])
        );
        assert!(!sealed.windows(3).any(|w| w == b"yes"));
        for elsewhere in [
            place("p-2", 2, "d-2"),
            place("p-1", 3, "d-2"),
            place("p-1", 2, "d-3"),
        ] {
            assert_eq!(keys.open(elsewhere, Field::Payload, &sealed), None);
        }
        assert_eq!(keys.open(here, Field::Header, &sealed), None);
        assert_eq!(test_keys([4; 32]).open(here, Field::Payload, &sealed), None);
        // Fresh nonces: the same plaintext never seals to the same bytes.
        assert_ne!(sealed, keys.seal(&random, here, Field::Payload, b"yes"));
    }

    #[test]
    fn rewrapping_moves_a_key_to_the_active_kek_and_keeps_it() {
        let old = Sealing::with_keyring(Keyring::new(vec![("old".into(), [1; 32], true)]).unwrap());
        let KeyState::Wrapped(wrapped) = old.new_process("p-1") else {
            panic!("encryption is on");
        };
        let both = Sealing::with_keyring(
            Keyring::new(vec![
                ("old".into(), [1; 32], false),
                ("new".into(), [2; 32], true),
            ])
            .unwrap(),
        );
        let rewrapped = both.rewrap("p-1", &wrapped).unwrap().unwrap();
        assert_eq!(rewrapped.kek_id, "new");
        assert_eq!(both.rewrap("p-1", &rewrapped).unwrap(), None);
        let keys_before = both.keys("p-1", &wrapped).unwrap();
        let keys_after = both.keys("p-1", &rewrapped).unwrap();
        assert_eq!(keys_before.commitment_key(), keys_after.commitment_key());
        assert_eq!(both.kek_ids(), ["new".to_owned(), "old".to_owned()].into());
    }
}
