//! The process id: the one name every clearing-house message is about.
//!
//! A [`Pid`] can only be made by [`Pid::parse`], so a handler or a store call that holds one
//! never has to ask again whether it is well formed: 1 to [`MAX_PID_LEN`] characters (fewer if
//! `limits.max_pid_length` says so) of `A-Z a-z 0-9 . _ : ~ -`, and not the reserved
//! `default`. The character set keeps a pid safe in a URL path, a file name and a MongoDB key
//! alike, so every store and every front door can use it as sent.

use std::fmt;

use super::rejection::{bad_parameter, ExceededLimit, Rejection};

/// The longest pid the protocol allows; `limits.max_pid_length` may lower it.
pub(crate) const MAX_PID_LEN: usize = 255;
/// The reference clearing house used this name for its own bookkeeping.
const RESERVED_PID: &str = "default";

/// A well-formed process id.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pid(String);

/// Why a text is not a pid. The messages name `ch-ids-pid`, the parameter a client sends it in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PidError {
    #[error("ch-ids-pid must be 1 to {max_len} characters of A-Z a-z 0-9 . _ : ~ - (limits.max_pid_length)")]
    Malformed { max_len: usize },
    #[error("ch-ids-pid \"default\" is reserved")]
    Reserved,
}

impl From<PidError> for Rejection {
    fn from(error: PidError) -> Self {
        let rejection = bad_parameter(error.to_string());
        match error {
            PidError::Malformed { max_len } => rejection.exceeding(ExceededLimit {
                setting: "limits.max_pid_length",
                value: max_len as u64,
                resets_at_ms: None,
            }),
            PidError::Reserved => rejection,
        }
    }
}

impl Pid {
    /// `text` as a pid of at most `max_len` characters (`limits.max_pid_length`; anything above
    /// [`MAX_PID_LEN`] counts as that).
    pub(crate) fn parse(text: &str, max_len: usize) -> Result<Pid, PidError> {
        let max_len = max_len.min(MAX_PID_LEN);
        let well_formed = (1..=max_len).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:~-".contains(&b));
        if !well_formed {
            return Err(PidError::Malformed { max_len });
        }
        if text == RESERVED_PID {
            return Err(PidError::Reserved);
        }
        Ok(Pid(text.to_owned()))
    }

    /// The process id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Quoted, as a `&str` is: rejection messages show pids this way.
impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RejectionReason;

    fn parse(text: &str) -> Result<Pid, PidError> {
        Pid::parse(text, MAX_PID_LEN)
    }

    #[test]
    fn every_allowed_character_and_the_longest_pid_are_accepted() {
        for good in ["AZaz09._:~-", "p-1", "Default", "urn:process:1", "a", "~"] {
            assert_eq!(
                parse(good).map(|pid| pid.as_str().to_owned()),
                Ok(good.into())
            );
        }
        let longest = "p".repeat(MAX_PID_LEN);
        assert_eq!(parse(&longest).unwrap().as_str(), longest);
    }

    #[test]
    fn bad_length_and_characters_are_malformed() {
        let too_long = "p".repeat(MAX_PID_LEN + 1);
        for bad in [
            "", &too_long, "a b", "a/b", "ä", "a#b", "a%2F", " p", "p\n", "a\0b",
        ] {
            assert_eq!(
                parse(bad),
                Err(PidError::Malformed { max_len: 255 }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn default_is_reserved_in_exactly_that_spelling() {
        assert_eq!(parse("default"), Err(PidError::Reserved));
        assert!(parse("DEFAULT").is_ok());
        assert!(parse("default-1").is_ok());
    }

    #[test]
    fn the_configured_length_lowers_the_limit_but_never_raises_it() {
        assert!(Pid::parse("12345678", 8).is_ok());
        assert_eq!(
            Pid::parse("123456789", 8),
            Err(PidError::Malformed { max_len: 8 })
        );
        let longer = "p".repeat(MAX_PID_LEN + 1);
        assert_eq!(
            Pid::parse(&longer, 10_000),
            Err(PidError::Malformed { max_len: 255 })
        );
    }

    #[test]
    fn refusals_are_bad_parameters_naming_the_parameter_and_the_setting() {
        let malformed = Rejection::from(PidError::Malformed { max_len: 8 });
        assert_eq!(malformed.reason, RejectionReason::BadParameters);
        assert_eq!(malformed.status, 400);
        assert_eq!(
            malformed.message,
            "ch-ids-pid must be 1 to 8 characters of A-Z a-z 0-9 . _ : ~ - (limits.max_pid_length)"
        );
        assert_eq!(
            malformed.limit.map(|limit| (limit.setting, limit.value)),
            Some(("limits.max_pid_length", 8))
        );
        let reserved = Rejection::from(PidError::Reserved);
        assert_eq!(reserved.reason, RejectionReason::BadParameters);
        assert_eq!(reserved.message, "ch-ids-pid \"default\" is reserved");
        assert_eq!(reserved.limit, None);
    }

    #[test]
    fn a_pid_shows_as_the_text_it_holds() {
        let pid = parse("p-1").unwrap();
        assert_eq!(format!("{pid:?}"), "\"p-1\"");
        assert_eq!(pid.to_string(), "p-1");
    }
}
