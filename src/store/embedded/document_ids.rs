//! The embedded store's document ids: UUIDs v4 whose index grows at its end.
//!
//! An entry's document id is a UUID v4 (see the spec, "Log"). Random ids, as the store once took
//! from its callers, scatter over an index keyed by the id: every append dirtied one random leaf
//! page of the `documents` table, which the commit then checksummed, wrote and fsync'd, about a
//! 4 KiB page per entry (BENCHMARKS.md, "Seventh session: document ids"). So the store assigns
//! the ids itself: the `n`th entry of the store gets the id `P(n)`, where `P` is a keyed
//! pseudo-random permutation of the 122 bits a UUID v4 leaves free, and the index
//! (`document_numbers`) is keyed by `n`, which only grows: a batch of appends touches its last
//! leaf only.
//!
//! - `P` is a balanced Feistel network on two 61-bit halves, [`ROUNDS`] rounds, the round
//!   function AES-256 under the store's 32-byte document-id key, of one block (the round and
//!   the half), truncated to 61 bits: the construction of NIST's FF1 format-preserving
//!   encryption, with a plain block where FF1 takes a CBC-MAC over its tweak and radix. A
//!   Feistel network is a permutation whatever its round function, so ids are unique by
//!   construction; with a pseudo-random round function it is a pseudo-random permutation
//!   (Luby and Rackoff with four rounds, Patarin's bounds for more), so without the key the ids
//!   look like random UUIDs v4 and tell nothing of their order or of how many entries there are
//!   (RFC 9562 allows a v4 UUID from pseudo-random bits). AES rather than HMAC-SHA256 for the
//!   round: one AES block (AES-NI) costs far less than an HMAC's two SHA-256 compressions; an
//!   id costs about 2,300 instructions, against 40,000 with HMAC rounds (callgrind, which hides
//!   SHA-NI; BENCHMARKS.md, "Seventh session: document ids"). The key is made at the store's
//!   first open, from the operating system's random source, and kept in the file (table
//!   `meta`): it guards only the order of the ids, not any content, so it needs no KEK; it is
//!   never rewrapped or erased. Whoever holds the file can tell the order; whoever has only ids
//!   cannot.
//! - `n` comes from a store-wide counter, the last number in `document_numbers` plus one when
//!   the store opens, taken by [`DocumentIds::assign`] as an append arrives, on the caller's
//!   thread: the writer thread, which every append waits for in turn, does none of the AES.
//!   An append that is refused leaves its number unused. After a crash the counter starts
//!   again after the last number committed, so a number whose append never committed may be
//!   given out again: no receipt ever named its id, since receipts wait for the commit.
//! - A lookup ([`DocumentIds::number`]) inverts `P`: an id that is not a UUID v4 or whose
//!   number the counter has not reached is none of this store's new ids. Ids of entries
//!   written before (random, in the legacy `documents` table) are found there (see `reads`).
//!   A new id equals one of those only by chance: both are uniform over 2^122 values, so the
//!   chance is 2^-122 per pair, far below any disk's error rate. Were it to happen, the lookup
//!   under the new entry's process would find the new entry; under the old entry's process,
//!   the old one.

use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::cipher::{EncryptingKey, UnboundCipherKey, AES_256};
use redb::{Database, ReadableTable};
use ring::rand::{SecureRandom, SystemRandom};
use uuid::Uuid;

use super::{DOCUMENTS, DOCUMENT_NUMBERS, META};
use crate::store::StoreError;

/// Feistel rounds. Four make a pseudo-random permutation secure to about 2^30 ids (the birthday
/// bound of a 61-bit half); eight keep ids indistinguishable from random well beyond the
/// number of entries a store holds, for four more AES blocks per id.
const ROUNDS: u8 = 8;
/// Bits of each Feistel half: a UUID v4 leaves 122 bits free.
const HALF_BITS: u32 = 61;
const HALF_MASK: u64 = (1 << HALF_BITS) - 1;
/// Where the key is kept in the `meta` table.
const KEY_NAME: &str = "document-id-key";
const KEY_LEN: usize = 32;

/// The store's document ids: the permutation and the counter.
pub(super) struct DocumentIds {
    permutation: Permutation,
    /// The number the next entry gets.
    next: AtomicU64,
}

impl DocumentIds {
    /// Reads the store's key, making it at the first open, and starts the counter after the
    /// last number in use. The key is committed before any id is derived from it.
    pub(super) fn open(database: &Database) -> Result<Self, StoreError> {
        let transaction = database.begin_write()?;
        let (key, next) = {
            let mut meta = transaction.open_table(META)?;
            let stored = meta.get(KEY_NAME)?.map(|key| key.value().to_vec());
            let key = match stored {
                Some(key) => <[u8; KEY_LEN]>::try_from(key.as_slice()).map_err(|_| {
                    StoreError::Corrupt(format!(
                        "the document-id key is {} bytes long, not {KEY_LEN}",
                        key.len()
                    ))
                })?,
                None => {
                    let mut key = [0u8; KEY_LEN];
                    SystemRandom::new().fill(&mut key).map_err(|_| {
                        StoreError::Unavailable(
                            "the operating system's random number generator failed".to_owned(),
                        )
                    })?;
                    meta.insert(KEY_NAME, key.as_slice())?;
                    key
                }
            };
            // Created empty in a new store, so that lookups can read it as in an old one.
            transaction.open_table(DOCUMENTS)?;
            let numbers = transaction.open_table(DOCUMENT_NUMBERS)?;
            let last = numbers.last()?.map_or(0, |(number, _)| number.value());
            (key, last.saturating_add(1))
        };
        transaction.commit()?;
        Ok(Self {
            permutation: Permutation::new(&key),
            next: AtomicU64::new(next),
        })
    }

    /// A new entry's number and document id.
    pub(super) fn assign(&self) -> (u64, String) {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let id = to_uuid(self.permutation.forward(u128::from(number)));
        (number, id.hyphenated().to_string())
    }

    /// The number `document_id` was assigned, if it can be one of this store's new ids. The
    /// caller still compares the id stored with the entry: a legacy id may decode by chance.
    pub(super) fn number(&self, document_id: &str) -> Option<u64> {
        let value = from_uuid(&Uuid::try_parse(document_id).ok()?)?;
        let number = u64::try_from(self.permutation.backward(value)).ok()?;
        (number < self.next.load(Ordering::Relaxed)).then_some(number)
    }
}

/// The keyed permutation of 122-bit values.
struct Permutation {
    key: EncryptingKey,
}

impl Permutation {
    fn new(key: &[u8; KEY_LEN]) -> Self {
        let key = UnboundCipherKey::new(&AES_256, key).and_then(EncryptingKey::ecb);
        match key {
            Ok(key) => Self { key },
            Err(_) => unreachable!("a 32-byte key is an AES-256 key"),
        }
    }

    fn forward(&self, value: u128) -> u128 {
        let (mut left, mut right) = split(value);
        for round in 0..ROUNDS {
            (left, right) = (right, left ^ self.round(round, right));
        }
        join(left, right)
    }

    fn backward(&self, value: u128) -> u128 {
        let (mut left, mut right) = split(value);
        for round in (0..ROUNDS).rev() {
            (left, right) = (right ^ self.round(round, left), left);
        }
        join(left, right)
    }

    /// `AES-256(key, round || half || 0...)`, truncated to a half.
    fn round(&self, round: u8, half: u64) -> u64 {
        let mut block = [0u8; 16];
        block[0] = round;
        block[1..9].copy_from_slice(&half.to_be_bytes());
        if self.key.encrypt(&mut block).is_err() {
            unreachable!("ECB refused one AES block");
        }
        let mut first = [0u8; 8];
        first.copy_from_slice(&block[..8]);
        u64::from_be_bytes(first) & HALF_MASK
    }
}

fn split(value: u128) -> (u64, u64) {
    // Both halves fit: `value` has 122 bits at most.
    (
        (value >> HALF_BITS) as u64 & HALF_MASK,
        value as u64 & HALF_MASK,
    )
}

fn join(left: u64, right: u64) -> u128 {
    (u128::from(left) << HALF_BITS) | u128::from(right)
}

/// The UUID v4 whose 122 free bits are `value`: its top 48 bits, the version (4 bits), the next
/// 12, the variant (2 bits, `10`), the last 62 (RFC 9562, section 5.4).
fn to_uuid(value: u128) -> Uuid {
    let bits = ((value >> 74) << 80)
        | (0x4 << 76)
        | (((value >> 62) & 0xfff) << 64)
        | (0b10 << 62)
        | (value & ((1 << 62) - 1));
    Uuid::from_u128(bits)
}

/// The 122 free bits of a UUID v4; `None` for another version or variant.
fn from_uuid(uuid: &Uuid) -> Option<u128> {
    let bits = uuid.as_u128();
    let is_v4 = (bits >> 76) & 0xf == 0x4 && (bits >> 62) & 0b11 == 0b10;
    is_v4
        .then_some(((bits >> 80) << 74) | (((bits >> 64) & 0xfff) << 62) | (bits & ((1 << 62) - 1)))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const VALUE_MASK: u128 = (1 << 122) - 1;

    fn permutation() -> Permutation {
        Permutation::new(&[7; KEY_LEN])
    }

    #[test]
    fn the_permutation_round_trips_and_never_repeats() {
        let permutation = permutation();
        let mut seen = HashSet::new();
        let samples: std::collections::BTreeSet<u128> = (0..20_000u128)
            .chain((15..122).map(|shift| 1u128 << shift))
            .chain([u128::from(u64::MAX), VALUE_MASK, VALUE_MASK - 1])
            .collect();
        for value in samples {
            let permuted = permutation.forward(value);
            assert!(permuted <= VALUE_MASK, "{value} left the 122 bits");
            assert_eq!(permutation.backward(permuted), value);
            assert!(seen.insert(permuted), "{value} collided");
        }
    }

    #[test]
    fn ids_are_uuids_v4_that_decode_to_their_122_bits() {
        let permutation = permutation();
        for number in 0..2_000u128 {
            let value = permutation.forward(number);
            let uuid = to_uuid(value);
            assert_eq!(uuid.get_version(), Some(uuid::Version::Random));
            assert_eq!(uuid.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(from_uuid(&uuid), Some(value));
        }
        for value in [0, VALUE_MASK, 0x2aa_aaaa_aaaa_aaaa_aaaa_aaaa_aaaa_aaaa] {
            assert_eq!(from_uuid(&to_uuid(value)), Some(value));
        }
        // Version 1, and a v4 with the Microsoft variant, are none of ours.
        assert_eq!(
            from_uuid(&Uuid::parse_str("6ba7b810-9dad-11d1-80b4-00c04fd430c8").unwrap()),
            None
        );
        assert_eq!(
            from_uuid(&Uuid::parse_str("6ba7b810-9dad-41d1-c0b4-00c04fd430c8").unwrap()),
            None
        );
    }

    /// Pinned, so that ids of stores already written keep decoding: a change to the
    /// permutation or the layout would make their entries unfindable by id.
    #[test]
    fn ids_are_as_recorded() {
        let permutation = permutation();
        let ids: Vec<String> = [1u128, 2, 1 << 40]
            .into_iter()
            .map(|number| to_uuid(permutation.forward(number)).to_string())
            .collect();
        // Also computed with Python's `cryptography` and `uuid` from the description above.
        assert_eq!(
            ids,
            [
                "de1511f4-7694-472e-b8ba-b313950fc0b7",
                "eaff89f7-e8a6-4e62-9ee9-5ea0f7347e18",
                "fb38dc6f-bdaf-42c6-ab46-24bc719d100a",
            ]
        );
    }

    #[test]
    fn a_lookup_takes_only_numbers_the_counter_reached() {
        let ids = DocumentIds {
            permutation: permutation(),
            next: AtomicU64::new(5),
        };
        let (number, id) = ids.assign();
        assert_eq!(number, 5);
        assert_eq!(ids.number(&id), Some(5));
        let unassigned = to_uuid(ids.permutation.forward(6)).to_string();
        assert_eq!(ids.number(&unassigned), None);
        for other in [
            "",
            "not-a-uuid",
            "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
            &Uuid::new_v4().to_string(),
        ] {
            assert_eq!(ids.number(other), None, "{other}");
        }
    }
}
