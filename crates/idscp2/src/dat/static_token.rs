//! A DAT an operator puts into a file, for data spaces where tokens are obtained out of band.
//!
//! The file is read at start, so a missing file stops start-up, and read again whenever its
//! modification time changes, so that the operator can rotate the token without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::{DatError, DatIssuer};

/// Serves the DAT in a file an operator keeps current, read again whenever the file changes.
pub struct StaticIssuer {
    path: PathBuf,
    current: Mutex<Snapshot>,
}

#[derive(Clone)]
struct Snapshot {
    token: Bytes,
    /// `None` where the platform has no modification times: then every call reads the file.
    modified: Option<SystemTime>,
}

impl StaticIssuer {
    /// An issuer of the token in `path`; the file must exist and hold a token now.
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, DatError> {
        let path = path.into();
        let modified = std::fs::metadata(&path)
            .map_err(|source| token_file_error(&path, source))?
            .modified()
            .ok();
        let content = std::fs::read(&path).map_err(|source| token_file_error(&path, source))?;
        let token = trimmed(&path, &content)?;
        Ok(Self {
            path,
            current: Mutex::new(Snapshot { token, modified }),
        })
    }

    async fn current(&self) -> Result<Bytes, DatError> {
        // The time is taken before the content: a write in between then shows up as a newer time on
        // the next call instead of being missed.
        let modified = tokio::fs::metadata(&self.path)
            .await
            .map_err(|source| token_file_error(&self.path, source))?
            .modified()
            .ok();
        let snapshot = self.snapshot();
        if modified.is_some() && modified == snapshot.modified {
            return Ok(snapshot.token);
        }
        let content = tokio::fs::read(&self.path)
            .await
            .map_err(|source| token_file_error(&self.path, source))?;
        // An empty read is most likely a rotation caught half-way; the time is not recorded, so the
        // next call reads the file again.
        let token = trimmed(&self.path, &content)?;
        if token != snapshot.token {
            tracing::info!(path = %self.path.display(), "DAT file changed, using the new token");
        }
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Snapshot {
            token: token.clone(),
            modified,
        };
        Ok(token)
    }

    fn snapshot(&self) -> Snapshot {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl DatIssuer for StaticIssuer {
    fn token(&self) -> BoxFuture<'_, Result<Bytes, DatError>> {
        Box::pin(self.current())
    }
}

fn trimmed(path: &Path, content: &[u8]) -> Result<Bytes, DatError> {
    let token = content.trim_ascii();
    if token.is_empty() {
        return Err(DatError::EmptyTokenFile {
            path: path.to_owned(),
        });
    }
    Ok(Bytes::copy_from_slice(token))
}

fn token_file_error(path: &Path, source: std::io::Error) -> DatError {
    DatError::TokenFile {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn set_modified(path: &Path, time: SystemTime) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(time)
            .unwrap();
    }

    #[tokio::test]
    async fn serves_the_trimmed_file_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dat.jwt");
        std::fs::write(&path, "  header.payload.signature\n").unwrap();
        let issuer = StaticIssuer::new(&path).unwrap();
        assert_eq!(
            issuer.token().await.unwrap(),
            Bytes::from_static(b"header.payload.signature")
        );
    }

    #[tokio::test]
    async fn rereads_the_file_when_its_modification_time_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dat.jwt");
        let first = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        std::fs::write(&path, "old").unwrap();
        set_modified(&path, first);
        let issuer = StaticIssuer::new(&path).unwrap();

        // Same time, new content: proves the file is not read again on every call.
        std::fs::write(&path, "sneaky").unwrap();
        set_modified(&path, first);
        assert_eq!(issuer.token().await.unwrap(), Bytes::from_static(b"old"));

        std::fs::write(&path, "new\n").unwrap();
        set_modified(&path, first + Duration::from_secs(60));
        assert_eq!(issuer.token().await.unwrap(), Bytes::from_static(b"new"));
    }

    #[tokio::test]
    async fn a_half_written_rotation_is_an_error_and_read_again_next_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dat.jwt");
        let first = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        std::fs::write(&path, "old").unwrap();
        set_modified(&path, first);
        let issuer = StaticIssuer::new(&path).unwrap();

        std::fs::write(&path, "").unwrap();
        set_modified(&path, first + Duration::from_secs(1));
        let err = issuer.token().await.unwrap_err();
        assert!(matches!(err, DatError::EmptyTokenFile { .. }), "{err}");

        std::fs::write(&path, "new").unwrap();
        set_modified(&path, first + Duration::from_secs(1));
        assert_eq!(issuer.token().await.unwrap(), Bytes::from_static(b"new"));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing-dat.jwt");
        let err = StaticIssuer::new(&missing).err().unwrap();
        assert!(matches!(err, DatError::TokenFile { .. }));
        assert!(err.to_string().contains("missing-dat.jwt"), "{err}");

        let empty = dir.path().join("empty-dat.jwt");
        std::fs::write(&empty, " \n").unwrap();
        let err = StaticIssuer::new(&empty).err().unwrap();
        assert!(err.to_string().contains("empty-dat.jwt"), "{err}");
    }
}
