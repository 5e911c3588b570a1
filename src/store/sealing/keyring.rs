//! Key-encryption keys (KEKs): read from files named by `store.encryption.keys`, never from the
//! store, and used for one thing only: wrapping and unwrapping the per-process data keys.
//!
//! A KEK file holds 32 bytes in one of three spellings, told apart by length: exactly 32 raw
//! bytes; or, surrounding whitespace ignored, 64 hex digits or 44 characters of standard base64.
//! Raw is what `head -c 32 /dev/urandom` writes; hex is what `clearinghouse keys generate` and the
//! development KEK use, because it survives copying through a terminal or a secret manager. Any
//! other content is refused at startup: a key that is silently shorter than 256 bits is the
//! worst kind of misconfiguration.
//!
//! A wrapped data key is `nonce (12) || AES-256-GCM(KEK, data key) (32) || tag (16)`, with the
//! process id as associated data, so that a wrapped key copied into another process's record does
//! not unwrap there. The id of the KEK is stored next to it (never the KEK), which is what lets
//! rotation re-wrap keys one by one while both KEKs are configured, and what startup checks
//! against the configured KEKs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use super::{WrappedKey, DATA_KEY_LEN};

/// Bytes in a KEK (AES-256).
pub(crate) const KEK_LEN: usize = 32;
/// Bytes in a wrapped data key: nonce, ciphertext, tag.
const WRAPPED_LEN: usize = NONCE_LEN + DATA_KEY_LEN + 16;
const WRAP_CONTEXT: &[u8] = b"clearinghouse-data-key-v2";

/// One configured KEK file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekFile {
    /// The id stored next to every data key it wraps.
    pub id: String,
    /// Where its 32 bytes are.
    pub file: PathBuf,
    /// Whether new data keys (and `keys rewrap`) use it.
    pub active: bool,
}

/// Why the configured KEKs cannot be used; each names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// No KEK at all.
    #[error("no KEK is configured")]
    Empty,
    /// A KEK without an id.
    #[error("a KEK has an empty id")]
    EmptyId,
    #[error("KEK id {0:?} appears more than once")]
    /// Two KEKs with one id.
    DuplicateId(String),
    #[error(
        "none of the KEKs is marked active = true (with more than one KEK, exactly one must be)"
    )]
    /// Several KEKs, none active.
    NoActive,
    #[error("KEKs {0:?} and {1:?} are both marked active = true; exactly one may be")]
    /// More than one active KEK.
    SeveralActive(String, String),
    #[error("KEK {id:?}: cannot read {}: {reason}", path.display())]
    /// A KEK file that cannot be read.
    Unreadable {
        /// The KEK's id.
        id: String,
        /// Its file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    #[error("KEK {id:?}: {} {reason}", path.display())]
    /// A KEK file that does not hold a 256-bit key.
    Malformed {
        /// The KEK's id.
        id: String,
        /// Its file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A data key that does not unwrap: the KEK is not configured, or the wrapped key was modified
/// or moved from another process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnwrapError {
    #[error(
        "its data key is wrapped by KEK {0:?}, which is not configured in store.encryption.keys"
    )]
    /// The KEK with this id is not configured.
    UnknownKek(String),
    #[error("its data key does not unwrap under KEK {0:?}: the wrapped key was modified, moved from another process, or the KEK file holds another key than the one it was wrapped with")]
    /// The wrapped key does not open under the KEK with this id.
    Damaged(String),
}

/// The configured KEKs and which one is active.
pub struct Keyring {
    keks: BTreeMap<String, LessSafeKey>,
    active: String,
    random: SystemRandom,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        formatter
            .debug_struct("Keyring")
            .field("keks", &self.keks.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish()
    }
}

impl Keyring {
    /// Reads and checks every KEK file.
    pub fn load(files: &[KekFile]) -> Result<Self, KeyringError> {
        let mut keys = Vec::with_capacity(files.len());
        for kek in files {
            let bytes = std::fs::read(&kek.file).map_err(|e| KeyringError::Unreadable {
                id: kek.id.clone(),
                path: kek.file.clone(),
                reason: e.to_string(),
            })?;
            let key = parse_kek(&bytes).map_err(|reason| KeyringError::Malformed {
                id: kek.id.clone(),
                path: kek.file.clone(),
                reason,
            })?;
            keys.push((kek.id.clone(), key, kek.active));
        }
        Self::new(keys)
    }

    /// A keyring of these `(id, key, active)`; with one key, that one is active.
    pub fn new(keys: Vec<(String, [u8; KEK_LEN], bool)>) -> Result<Self, KeyringError> {
        let mut keks = BTreeMap::new();
        let mut active: Option<String> = None;
        let single = keys.len() == 1;
        for (id, key, is_active) in keys {
            if id.trim().is_empty() {
                return Err(KeyringError::EmptyId);
            }
            if keks.contains_key(&id) {
                return Err(KeyringError::DuplicateId(id));
            }
            if is_active || single {
                if let Some(other) = &active {
                    return Err(KeyringError::SeveralActive(other.clone(), id));
                }
                active = Some(id.clone());
            }
            let unbound =
                UnboundKey::new(&AES_256_GCM, &key).map_err(|_| KeyringError::Malformed {
                    id: id.clone(),
                    path: PathBuf::new(),
                    reason: "is not an AES-256 key".to_owned(),
                })?;
            keks.insert(id, LessSafeKey::new(unbound));
        }
        if keks.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Self {
            keks,
            active: active.ok_or(KeyringError::NoActive)?,
            random: SystemRandom::new(),
        })
    }

    /// The id of the KEK new data keys are wrapped by.
    pub fn active_id(&self) -> &str {
        &self.active
    }

    /// The ids of the configured KEKs.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keks.keys().map(String::as_str)
    }

    pub(super) fn random(&self) -> &SystemRandom {
        &self.random
    }

    /// Wraps `data_key` of process `pid` under the active KEK.
    pub(super) fn wrap(&self, pid: &str, data_key: &[u8; DATA_KEY_LEN]) -> WrappedKey {
        let kek = &self.keks[&self.active];
        let mut nonce = [0u8; NONCE_LEN];
        fill(&self.random, &mut nonce);
        let mut sealed = data_key.to_vec();
        let aad = wrap_aad(pid);
        // Sealing 32 bytes under a valid key cannot fail; `seal_in_place` only refuses inputs
        // beyond GCM's 64 GiB limit.
        if kek
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut sealed,
            )
            .is_err()
        {
            unreachable!("AES-GCM refused to seal 32 bytes");
        }
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(&sealed);
        WrappedKey {
            kek_id: self.active.clone(),
            wrapped,
        }
    }

    /// The data key of process `pid`.
    pub(super) fn unwrap(
        &self,
        pid: &str,
        key: &WrappedKey,
    ) -> Result<[u8; DATA_KEY_LEN], UnwrapError> {
        let kek = self
            .keks
            .get(&key.kek_id)
            .ok_or_else(|| UnwrapError::UnknownKek(key.kek_id.clone()))?;
        let damaged = || UnwrapError::Damaged(key.kek_id.clone());
        if key.wrapped.len() != WRAPPED_LEN {
            return Err(damaged());
        }
        let (nonce, sealed) = key.wrapped.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| damaged())?;
        let mut buffer = sealed.to_vec();
        let aad = wrap_aad(pid);
        let opened = kek
            .open_in_place(nonce, Aad::from(&aad), &mut buffer)
            .map_err(|_| damaged())?;
        <[u8; DATA_KEY_LEN]>::try_from(&*opened).map_err(|_| damaged())
    }
}

fn wrap_aad(pid: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(WRAP_CONTEXT.len() + pid.len() + 16);
    super::put_field(&mut aad, WRAP_CONTEXT);
    super::put_field(&mut aad, pid.as_bytes());
    aad
}

pub(super) fn fill(random: &SystemRandom, out: &mut [u8]) {
    // The operating system's random source failing is not something to carry on from: a
    // predictable key or nonce would break every promise this module makes.
    if random.fill(out).is_err() {
        panic!("the operating system's random number generator failed");
    }
}

/// The 32 bytes of a KEK file: raw, 64 hex digits or standard base64 (see the module docs).
pub fn parse_kek(bytes: &[u8]) -> Result<[u8; KEK_LEN], String> {
    if bytes.len() == KEK_LEN {
        let mut key = [0u8; KEK_LEN];
        key.copy_from_slice(bytes);
        return Ok(key);
    }
    let text = std::str::from_utf8(bytes).map(str::trim).unwrap_or("");
    let decoded = match text.len() {
        64 => hex::decode(text).ok(),
        44 => STANDARD.decode(text).ok(),
        _ => None,
    };
    match decoded.and_then(|key| <[u8; KEK_LEN]>::try_from(key.as_slice()).ok()) {
        Some(key) => Ok(key),
        None => Err(format!(
            "must hold a 256-bit key: exactly 32 raw bytes, 64 hex digits or 44 characters of base64 (it has {} bytes)",
            bytes.len()
        )),
    }
}

/// Writes a new random KEK as 64 hex digits and a newline, readable by its owner only. Never
/// overwrites a key: if `path` exists (another process made it meanwhile), it is left as it is
/// and `Ok` returned. The file appears whole or not at all (written aside, then linked).
pub fn generate_kek_file(path: &Path) -> std::io::Result<()> {
    let mut key = [0u8; KEK_LEN];
    fill(&SystemRandom::new(), &mut key);
    let aside = path.with_extension(format!("new-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&aside).and_then(|mut file| {
        std::io::Write::write_all(&mut file, format!("{}\n", hex::encode(key)).as_bytes())?;
        file.sync_all()
    });
    let linked = written.and_then(|()| match std::fs::hard_link(&aside, path) {
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    });
    let _ = std::fs::remove_file(&aside);
    linked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kek_files_are_raw_hex_or_base64_and_nothing_shorter() {
        let key = [7u8; 32];
        assert_eq!(parse_kek(&key).unwrap(), key);
        assert_eq!(
            parse_kek(format!("{}\n", hex::encode(key)).as_bytes()).unwrap(),
            key
        );
        assert_eq!(parse_kek(STANDARD.encode(key).as_bytes()).unwrap(), key);
        for bad in [&[1u8; 31][..], &[1u8; 33][..], b"", &[b'a'; 63][..]] {
            assert!(parse_kek(bad).unwrap_err().contains("256-bit"));
        }
    }

    #[test]
    fn a_wrapped_key_unwraps_only_for_its_process_and_kek() {
        let ring = Keyring::new(vec![
            ("old".into(), [1; 32], false),
            ("new".into(), [2; 32], true),
        ])
        .unwrap();
        let data_key = [9u8; 32];
        let wrapped = ring.wrap("p-1", &data_key);
        assert_eq!(wrapped.kek_id, "new");
        assert_eq!(ring.unwrap("p-1", &wrapped).unwrap(), data_key);
        assert_eq!(
            ring.unwrap("p-2", &wrapped),
            Err(UnwrapError::Damaged("new".into()))
        );
        let only_old = Keyring::new(vec![("old".into(), [1; 32], true)]).unwrap();
        assert_eq!(
            only_old.unwrap("p-1", &wrapped),
            Err(UnwrapError::UnknownKek("new".into()))
        );
    }

    #[test]
    fn keyrings_need_one_active_key_and_unique_ids() {
        let key = |id: &str, active| (id.to_owned(), [0u8; 32], active);
        assert!(matches!(
            Keyring::new(vec![key("a", false), key("a", true)]),
            Err(KeyringError::DuplicateId(_))
        ));
        assert!(matches!(
            Keyring::new(vec![key("a", false), key("b", false)]),
            Err(KeyringError::NoActive)
        ));
        assert!(matches!(
            Keyring::new(vec![key("a", true), key("b", true)]),
            Err(KeyringError::SeveralActive(..))
        ));
        assert_eq!(
            Keyring::new(vec![key("a", false)]).unwrap().active_id(),
            "a"
        );
    }
}
