//! How an error reads on one line: the error and each of its causes, separated by `: `.
//!
//! Many errors of this crate and its dependencies already put their source's text into their own
//! message (`cannot connect to …: Connection refused`) while also returning it as their source,
//! so that a plain walk of the chain says everything twice. A cause whose text the line already
//! holds is left out; one that is new (the OS reason behind `cannot access …`) is appended.

use std::error::Error;

/// `error` and the causes that add something, as one line.
pub fn one_line(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let text = current.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = current.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot access /data/dev-pki/clients")]
    struct Access(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot connect to 127.0.0.1:1: {0}")]
    struct Connect(#[source] std::io::Error);

    #[test]
    fn the_os_reason_is_appended_once() {
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let line = one_line(&Access(std::io::Error::from_raw_os_error(13)));
        assert_eq!(
            line,
            "cannot access /data/dev-pki/clients: Permission denied (os error 13)"
        );
        assert!(one_line(&Access(denied)).ends_with(": permission denied"));
        let refused = std::io::Error::from_raw_os_error(111);
        assert_eq!(
            one_line(&Connect(refused)),
            "cannot connect to 127.0.0.1:1: Connection refused (os error 111)"
        );
    }

    #[test]
    fn anyhow_contexts_read_as_one_line() {
        let error = anyhow::Error::new(Connect(std::io::Error::from_raw_os_error(111)))
            .context("cannot talk IDSCP2 to 127.0.0.1:1");
        assert_eq!(
            one_line(error.as_ref()),
            "cannot talk IDSCP2 to 127.0.0.1:1: cannot connect to 127.0.0.1:1: \
             Connection refused (os error 111)"
        );
    }
}
