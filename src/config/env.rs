//! Environment overrides: `CH_<SECTION>_<KEY>` sets `<section>.<key>`, e.g. `CH_SERVER_LISTEN`
//! sets `server.listen` and `CH_STORE_MONGODB_URI` sets `store.mongodb.uri`: upper case, dots
//! become underscores. `CH_CONFIG` names the file and is not a setting.
//!
//! Only a variable that names a section (`CH_SERVER_…`, `CH_STORE_…`) is taken for a setting, and
//! one of those that names no setting is an error, because a typo would otherwise be ignored in
//! silence. Any other `CH_` variable belongs to someone else and is ignored: Kubernetes injects
//! `CH_PORT`, `CH_SERVICE_HOST`, … for a Service named `ch`, and the test suite passes
//! `CH_TEST_MONGODB_URI` to every process it starts.

use super::ConfigError;

const PREFIX: &str = "CH_";
/// Read by the command line for `--config`.
const CONFIG_FILE_VARIABLE: &str = "CH_CONFIG";

/// Applies the variables that name settings; returns the names of the `CH_` variables it ignored
/// because they name no section.
pub(super) fn apply(
    table: &mut toml::Table,
    schema: &toml::Table,
    vars: impl Iterator<Item = (String, String)>,
) -> Result<Vec<String>, ConfigError> {
    let mut ignored = Vec::new();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if name == CONFIG_FILE_VARIABLE {
            continue;
        }
        let rest = rest.to_ascii_lowercase();
        if !names_a_section(schema, &rest) {
            ignored.push(name);
            continue;
        }
        let path =
            resolve(schema, &rest).ok_or_else(|| ConfigError::setting(&name, "no such setting"))?;
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        super::set(table, schema, &path, &value).map_err(|reason| {
            ConfigError::setting(format!("{name} ({})", path.join(".")), reason)
        })?;
    }
    Ok(ignored)
}

/// Whether `name` (lower case, the prefix removed) starts with a section of the configuration.
fn names_a_section(schema: &toml::Table, name: &str) -> bool {
    schema.iter().any(|(section, value)| {
        value.is_table()
            && name
                .strip_prefix(section.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
    })
}

/// Finds the setting `name` (lower case, underscores) spells, walking down the tables of
/// `schema`; keys themselves may contain underscores, sections may not be guessed.
fn resolve(schema: &toml::Table, name: &str) -> Option<Vec<String>> {
    if let Some(value) = schema.get(name) {
        return (!value.is_table()).then(|| vec![name.to_owned()]);
    }
    schema.iter().find_map(|(key, value)| {
        let sub = value.as_table()?;
        let rest = name.strip_prefix(key.as_str())?.strip_prefix('_')?;
        let mut path = resolve(sub, rest)?;
        path.insert(0, key.clone());
        Some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn schema() -> toml::Table {
        toml::Table::try_from(Config::default()).unwrap()
    }

    fn applied(vars: &[(&str, &str)]) -> Result<toml::Table, ConfigError> {
        let mut table = toml::Table::new();
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        apply(&mut table, &schema(), vars).map(|_| table)
    }

    #[test]
    fn variables_map_to_nested_settings_typed_like_their_defaults() {
        let table = applied(&[
            ("CH_SERVER_LISTEN", "127.0.0.1:1"),
            ("CH_SERVER_MAX_CONNECTIONS", "7"),
            ("CH_STORE_MONGODB_URI", "mongodb://db"),
            ("CH_IDSCP2_SUPPORTED_RA", "[\"Dummy2\"]"),
            ("CH_SERVER_CONNECTOR_ID", "123"),
            ("PATH", "/bin"),
            ("CH_CONFIG", "elsewhere.toml"),
        ])
        .unwrap();
        assert_eq!(table["server"]["listen"].as_str(), Some("127.0.0.1:1"));
        assert_eq!(table["server"]["max_connections"].as_integer(), Some(7));
        assert_eq!(table["server"]["connector_id"].as_str(), Some("123"));
        assert_eq!(
            table["store"]["mongodb"]["uri"].as_str(),
            Some("mongodb://db")
        );
        assert_eq!(
            table["idscp2"]["supported_ra"].as_array().map(Vec::len),
            Some(1)
        );
        assert_eq!(table.len(), 3, "{table:?}");
    }

    #[test]
    fn variables_that_name_no_section_are_ignored_and_reported() {
        let vars = [
            ("CH_PORT", "tcp://10.0.0.1:29292"),
            ("CH_SERVICE_HOST", "10.0.0.1"),
            ("CH_TEST_MONGODB_URI", "mongodb://127.0.0.1:1"),
            ("CH_SERVERS", "x"),
            ("CH_SERVER_LISTEN", "127.0.0.1:1"),
        ];
        let mut table = toml::Table::new();
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let ignored = apply(&mut table, &schema(), vars).unwrap();
        assert_eq!(
            ignored,
            [
                "CH_PORT",
                "CH_SERVICE_HOST",
                "CH_TEST_MONGODB_URI",
                "CH_SERVERS"
            ]
        );
        assert_eq!(table["server"]["listen"].as_str(), Some("127.0.0.1:1"));
        assert_eq!(table.len(), 1, "{table:?}");
    }

    #[test]
    fn unknown_variables_and_bad_values_name_the_variable() {
        let err = applied(&[("CH_SERVER_LISTN", "x")]).unwrap_err();
        assert!(err.to_string().starts_with("CH_SERVER_LISTN"), "{err}");
        let err = applied(&[("CH_STORE_MONGODB", "x")]).unwrap_err();
        assert!(err.to_string().starts_with("CH_STORE_MONGODB"), "{err}");
        let err = applied(&[("CH_STORE", "x")]).unwrap_err();
        assert!(err.to_string().starts_with("CH_STORE"), "{err}");
        let err = applied(&[("CH_SERVER_MAX_CONNECTIONS", "many")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("CH_SERVER_MAX_CONNECTIONS (server.max_connections)"),
            "{err}"
        );
    }
}
