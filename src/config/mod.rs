//! The clearing house's configuration: a TOML file, then `CH_...` environment variables, then
//! command-line flags, each overriding the one before.
//!
//! All three sources are merged into one TOML table before anything is deserialized, so a value
//! is checked the same way wherever it came from, and every error names the setting
//! (`dat.mode`, `CH_DAT_MODE`) instead of a line in a file the operator may not have written.
//! TOML has no null, so a setting that is "not set" is an empty string; its documented default
//! (usually a file of the development PKI inside `server.data_dir`) then applies.
//!
//! - [`env`]: the `CH_...` mapping.
//! - `settings`: the settings and their defaults; `config/clearinghouse.toml` documents them.
//! - `http`: the `[http]` section, the IDS-Multipart door.

mod env;
mod http;
mod settings;

use std::path::{Path, PathBuf};

pub(crate) use settings::{
    or_default, Config, DatMode, EncryptionSwitch, LogConfig, LogFormat, MongoConfig, StoreBackend,
};
pub use settings::{LimitsConfig, QuotaOverride, QuotasConfig};

/// The file read when `--config` / `CH_CONFIG` names none, if it exists.
pub(crate) const DEFAULT_CONFIG_FILE: &str = "config/clearinghouse.toml";

/// A configuration that cannot be used. Every variant names the setting (or file) at fault.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("configuration file {}: {reason}", path.display())]
    File { path: PathBuf, reason: String },
    #[error("{setting}: {reason}")]
    Setting { setting: String, reason: String },
}

impl ConfigError {
    pub(crate) fn setting(setting: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        ConfigError::Setting {
            setting: setting.into(),
            reason: reason.to_string(),
        }
    }
}

/// A configuration as loaded, with what loading it passed over.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) config: Config,
    /// `CH_` variables that name no section of the configuration, so were ignored.
    pub(crate) ignored_variables: Vec<String>,
}

impl Loaded {
    /// One debug line naming the ignored variables, for when logging is set up.
    pub(crate) fn log_ignored(&self) {
        if !self.ignored_variables.is_empty() {
            tracing::debug!(
                variables = ?self.ignored_variables,
                "ignored CH_ variables that name no section of the configuration"
            );
        }
    }
}

/// Loads the configuration: `file` (or [`DEFAULT_CONFIG_FILE`] when it exists), the process
/// environment, then `overrides` (dotted setting names and values as typed on a command line).
pub(crate) fn load(
    file: Option<&Path>,
    overrides: &[(&str, String)],
) -> Result<Loaded, ConfigError> {
    let file = file.or_else(|| {
        let default = Path::new(DEFAULT_CONFIG_FILE);
        default.exists().then_some(default)
    });
    let mut table = match file {
        Some(path) => read_file(path)?,
        None => toml::Table::new(),
    };
    let schema = schema()?;
    let ignored_variables = env::apply(&mut table, &schema, std::env::vars())?;
    for (setting, value) in overrides {
        let path: Vec<&str> = setting.split('.').collect();
        set(&mut table, &schema, &path, value)
            .map_err(|reason| ConfigError::setting(*setting, reason))?;
    }
    let config: Config =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let setting = e.path().to_string();
            let reason = e.into_inner().message().to_owned();
            // The environment and flags only reach settings that exist, so an unknown key can
            // only come from the file.
            match file {
                Some(path) if reason.starts_with("unknown field") => {
                    ConfigError::setting(setting, format!("{reason} (in {})", path.display()))
                }
                _ => ConfigError::setting(setting, reason),
            }
        })?;
    config.validate()?;
    Ok(Loaded {
        config,
        ignored_variables,
    })
}

fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let file_error = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    text.parse::<toml::Table>()
        .map_err(|e| file_error(e.to_string()))
}

/// The defaults as a TOML table: which settings exist, and of what type.
fn schema() -> Result<toml::Table, ConfigError> {
    toml::Table::try_from(Config::default())
        .map_err(|e| ConfigError::setting("(defaults)", e.to_string()))
}

/// Sets `path` in `table` to `raw`, typed like the default at that path: a string setting takes
/// the text as it is; any other is parsed as a TOML value (`100`, `true`, `["Dummy2"]`).
fn set(
    table: &mut toml::Table,
    schema: &toml::Table,
    path: &[&str],
    raw: &str,
) -> Result<(), String> {
    let (last, sections) = path.split_last().ok_or("empty setting name")?;
    let mut target = table;
    let mut expected = schema;
    for section in sections {
        expected = match expected.get(*section) {
            Some(toml::Value::Table(sub)) => sub,
            _ => return Err("no such setting".into()),
        };
        let entry = target
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        target = match entry {
            toml::Value::Table(sub) => sub,
            _ => return Err(format!("{section} must be a table")),
        };
    }
    let value = match expected.get(*last) {
        None | Some(toml::Value::Table(_)) => return Err("no such setting".into()),
        Some(toml::Value::String(_)) => toml::Value::String(raw.to_owned()),
        Some(_) => parse_value(raw)?,
    };
    target.insert(last.to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> Result<toml::Value, String> {
    let document: toml::Table = format!("value = {raw}")
        .parse()
        .map_err(|_| format!("{raw:?} is not a valid value"))?;
    document
        .get("value")
        .cloned()
        .ok_or_else(|| format!("{raw:?} is not a valid value"))
}
