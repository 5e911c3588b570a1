//! `serve` as an unprivileged user against a data directory that user cannot write, as in a
//! container whose volume Docker created root-owned: the message must name the path and give the
//! operating system's reason, or the operator cannot tell a permission problem from anything else.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::process::Command;

use crate::support::cli::*;

/// `nobody` on Debian.
const UNPRIVILEGED: &str = "65534";

#[test]
fn a_data_dir_the_user_cannot_write_is_named_with_the_os_reason() {
    // /proc/self belongs to the effective user of the process looking at it.
    let euid = std::fs::metadata("/proc/self").unwrap().uid();
    if euid != 0 {
        eprintln!(
            "skipped: switching to an unprivileged user needs root, and this runs as uid {euid}"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut setpriv = Command::new("setpriv");
    setpriv
        .args([
            &format!("--reuid={UNPRIVILEGED}"),
            &format!("--regid={UNPRIVILEGED}"),
            "--clear-groups",
            BIN,
            "serve",
            "--data-dir",
        ])
        .arg(&data)
        .args(["--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"])
        .current_dir(dir.path());
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("CH_")) {
        setpriv.env_remove(name);
    }
    let output = setpriv.output().unwrap();
    let stderr = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let clients = data.join("dev-pki/clients");
    for needle in [
        "server.data_dir",
        &clients.display().to_string(),
        "Permission denied",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
    assert_eq!(
        stderr.matches("Permission denied").count(),
        1,
        "the reason is given once: {stderr}"
    );
}
