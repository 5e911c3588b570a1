//! Owner ids: which strings can name a connector in a create's `{"owners": [...]}`.
//!
//! An owner is compared byte for byte with the client id of each caller, and a process's owners
//! never change, so an owner that no connector can ever have locks that partner out for good.
//! What a client id can be:
//! - in development mode, `SKI:keyid:AKI` of the caller's certificate, each key identifier in
//!   uppercase colon-separated hex (`D2:70:1A:keyid:CB:8C:0E`), as IDS DAPS registrations write it;
//! - with a DAPS, the DAT's `sub`: the DAPS's client id of the connector, which is that same
//!   `SKI:keyid:AKI` for the DAPS of the IDS ecosystem (Omejdn, the testbed's), or whatever id
//!   another DAPS gives.
//!
//! So a valid owner id is 1 to 256 characters of printable ASCII without blanks (which every DAPS
//! client id seen is), and one that contains `:keyid:` must be exactly that form: two non-empty
//! lists of two-digit uppercase hex bytes around `:keyid:`. That catches what typing or pasting
//! an id gets wrong: lowercase or truncated hex, a connector IRI (`urn:connector:D2:…`) in place
//! of the client id, blanks and line breaks from a copy. An id a DAPS issues outside this rule
//! can still create and own its processes; it cannot be named as a co-owner.

/// The longest owner id: `SKI:keyid:AKI` of 64-byte key identifiers is 389 characters, but
/// key identifiers are SHA-1 (20 bytes, 125 characters) in practice.
pub(crate) const MAX_OWNER_ID_LENGTH: usize = 256;

const KEYID: &str = ":keyid:";

/// Why a string cannot be an owner id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OwnerIdError {
    #[error("it is empty")]
    Empty,
    #[error("it is longer than {MAX_OWNER_ID_LENGTH} characters")]
    TooLong,
    #[error("it contains {0:?}; connector ids are printable ASCII without blanks")]
    Character(char),
    #[error(
        "an SKI:keyid:AKI id is uppercase hex bytes separated by colons, e.g. D2:70:1A:keyid:CB:8C:0E"
    )]
    KeyIdForm,
}

/// Whether `id` can be the client id of a connector (see the module documentation).
pub(crate) fn check_owner_id(id: &str) -> Result<(), OwnerIdError> {
    if id.is_empty() {
        return Err(OwnerIdError::Empty);
    }
    if let Some(bad) = id.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(OwnerIdError::Character(bad));
    }
    if id.len() > MAX_OWNER_ID_LENGTH {
        return Err(OwnerIdError::TooLong);
    }
    let lowercase = id.to_ascii_lowercase();
    if let Some(at) = lowercase.find(KEYID) {
        let (ski, aki) = (&id[..at], &id[at + KEYID.len()..]);
        let well_formed = id[at..].starts_with(KEYID) && is_hex_bytes(ski) && is_hex_bytes(aki);
        if !well_formed {
            return Err(OwnerIdError::KeyIdForm);
        }
    }
    Ok(())
}

/// `AB:CD:01`: one or more two-digit uppercase hex bytes separated by colons.
fn is_hex_bytes(text: &str) -> bool {
    text.split(':').all(|byte| {
        byte.len() == 2
            && byte
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_accepted() {
        for id in [
            // Development mode and the IDS DAPS: SKI:keyid:AKI.
            "D2:70:1A:2A:keyid:CB:8C:0E:E8",
            "69:F5:9D:B0:DD:A6:9D:30:5F:58:AA:2D:20:4D:B2:39:F0:54:FC:3B:keyid:4F:66:7D:BD:08:EE:C6:4A:D1:96:D8:7C:6C:A2:32:8A:EC:A6:AD:49",
            "AA:keyid:BB",
            // Other DAPS client ids, and the ids tests and operators use.
            "urn:a",
            "owner-17",
            "x",
            "connector-b",
            "3f2a9c1e-8b7d-4e6f-a5c4-1d2e3f4a5b6c",
            "https://connector.example/",
            "{\"$ne\":null}",
        ] {
            assert_eq!(check_owner_id(id), Ok(()), "{id}");
        }
        assert_eq!(check_owner_id(&"x".repeat(MAX_OWNER_ID_LENGTH)), Ok(()));
    }

    #[test]
    fn what_no_connector_can_be_is_refused() {
        let cases = [
            ("", OwnerIdError::Empty),
            ("D2:70 ", OwnerIdError::Character(' ')),
            ("D2:70:keyid:CB:8C\n", OwnerIdError::Character('\n')),
            ("a\tb", OwnerIdError::Character('\t')),
            ("müller", OwnerIdError::Character('ü')),
            ("d2:70:keyid:cb:8c", OwnerIdError::KeyIdForm),
            ("D2:70:KEYID:CB:8C", OwnerIdError::KeyIdForm),
            ("D2:7:keyid:CB:8C", OwnerIdError::KeyIdForm),
            ("D2:70:keyid:", OwnerIdError::KeyIdForm),
            (":keyid:CB:8C", OwnerIdError::KeyIdForm),
            ("D2:70:keyid:CB::8C", OwnerIdError::KeyIdForm),
            ("D2:70:keyid:CB:8C:keyid:01", OwnerIdError::KeyIdForm),
            ("urn:connector:D2:70:keyid:CB:8C", OwnerIdError::KeyIdForm),
            ("D2-70:keyid:CB:8C", OwnerIdError::KeyIdForm),
        ];
        for (id, error) in cases {
            assert_eq!(check_owner_id(id), Err(error), "{id:?}");
        }
        assert_eq!(
            check_owner_id(&"x".repeat(MAX_OWNER_ID_LENGTH + 1)),
            Err(OwnerIdError::TooLong)
        );
    }
}
