//! Configuration of the `surge` binary: defaults → TOML file → `SURGE_*` environment →
//! command-line flags, validated once at start-up with messages that name the key.
//!
//! Environment variables map to keys by lower-casing and splitting on `__`:
//! `SURGE_LISTEN` → `listen`, `SURGE_CATALOG__CACHE__MAX_BYTES` → `catalog.cache.max_bytes`.
//! A value is read as a TOML literal where the key holds a number or boolean, and as a
//! string otherwise. Unknown `SURGE_*` variables are reported and ignored (other tools
//! share the prefix, e.g. `SURGE_TEST_POSTGRES_URL`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use surge_catalog::CatalogConfig;
use surge_checkout::CheckoutConfig;
use surge_edge::EdgeConfig;
use surge_store::StoreOptions;
use toml::{Table, Value};

/// Everything the binary can be told.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (`host:port`; port 0 picks a free one). Default `0.0.0.0:8080`.
    pub listen: String,
    /// Directory of the embedded stores and generated secrets. Default `./surge-data`.
    pub data_dir: PathBuf,
    /// Store URL: `sqlite://PATH` or `postgres://…`. Empty (default): `sqlite://<data_dir>/catalog.db`.
    pub store: String,
    /// Identity store URL (accounts, sessions, keys). Empty (default): with an embedded
    /// store `sqlite://<data_dir>/identity.db`, otherwise the same URL as `store`.
    pub identity_store: String,
    /// Checkout's orders store URL (orders, saga log, idempotency keys). Empty
    /// (default): with an embedded store `sqlite://<data_dir>/orders.db`, otherwise the
    /// same URL as `store` (give each service its own database or schema in production).
    pub orders_store: String,
    /// Checkout's inventory store URL (stock, holds). Empty (default): like
    /// `orders_store`, with `inventory.db`.
    pub inventory_store: String,
    /// Checkout's payments store URL (authorizations, captures, refunds). Empty
    /// (default): like `orders_store`, with `payments.db`.
    pub payments_store: String,
    /// A second, internal address where the roles running in this process answer
    /// directly, without the edge (`host:port`; for benchmarks and debugging; never
    /// expose it). Empty (default): none.
    pub internal_listen: String,
    /// Admin bearer token of the command API. Empty (default): read from
    /// `<data_dir>/admin-token`, generated there at first start.
    pub admin_token: String,
    /// Logging.
    pub log: LogConfig,
    /// Connection tuning of the store.
    pub store_options: StoreOptions,
    /// The catalog role.
    pub catalog: CatalogConfig,
    /// The edge role (the public door).
    pub edge: EdgeConfig,
    /// The checkout role (orders, inventory, payments and the saga).
    pub checkout: CheckoutConfig,
}

/// Log output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `pretty` (default) or `json`.
    pub format: String,
    /// A `tracing` filter, e.g. `info` (default) or `surge_catalog=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "pretty".into(),
            level: "info".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:8080".into(),
            data_dir: PathBuf::from("./surge-data"),
            store: String::new(),
            identity_store: String::new(),
            orders_store: String::new(),
            inventory_store: String::new(),
            payments_store: String::new(),
            internal_listen: String::new(),
            admin_token: String::new(),
            log: LogConfig::default(),
            store_options: StoreOptions::default(),
            catalog: CatalogConfig::default(),
            edge: EdgeConfig::default(),
            checkout: CheckoutConfig::default(),
        }
    }
}

/// Values given on the command line (highest precedence), as `key.path = value`.
pub type Overrides = Vec<(&'static str, Value)>;

/// What loading produced: the config and notes about ignored input.
#[derive(Debug)]
pub struct Loaded {
    /// The effective configuration.
    pub config: Config,
    /// Ignored environment variables, to log once logging is up.
    pub warnings: Vec<String>,
}

/// Builds the effective configuration.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    cli: Overrides,
) -> Result<Loaded, String> {
    let defaults = Table::try_from(Config::default()).map_err(|e| format!("defaults: {e}"))?;
    let mut table = defaults.clone();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        let from_file: Table =
            toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))?;
        merge(&mut table, from_file);
    }
    let mut warnings = Vec::new();
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("SURGE_"))
        .collect();
    env.sort();
    for (name, raw) in env {
        let path: Vec<String> = name["SURGE_".len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        match lookup(&defaults, &path) {
            Some(Value::Table(_)) | None => {
                warnings.push(format!("ignoring {name}: no such setting"))
            }
            Some(default) => {
                let value = typed(default, &raw);
                set(&mut table, &path, value);
            }
        }
    }
    for (key, value) in cli {
        let path: Vec<String> = key.split('.').map(str::to_owned).collect();
        set(&mut table, &path, value);
    }
    let config: Config = table
        .try_into()
        .map_err(|e: toml::de::Error| format!("invalid configuration: {e}"))?;
    config.validate()?;
    Ok(Loaded { config, warnings })
}

fn merge(into: &mut Table, from: Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Table(a)), Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

fn lookup<'a>(table: &'a Table, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let v = table.get(first)?;
    if rest.is_empty() {
        return Some(v);
    }
    match v {
        Value::Table(t) => lookup(t, rest),
        _ => None,
    }
}

fn set(table: &mut Table, path: &[String], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return;
    }
    let entry = table
        .entry(first.clone())
        .or_insert_with(|| Value::Table(Table::new()));
    if let Value::Table(t) = entry {
        set(t, rest, value);
    }
}

/// Reads an environment value with the type of the default it overrides.
fn typed(default: &Value, raw: &str) -> Value {
    match default {
        Value::String(_) => Value::String(raw.to_owned()),
        _ => toml::from_str::<Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| Value::String(raw.to_owned())),
    }
}

impl Config {
    /// Checks every value; the error names the key and the bad value.
    pub fn validate(&self) -> Result<(), String> {
        self.listen.parse::<std::net::SocketAddr>().map_err(|_| {
            format!(
                "listen must be host:port such as 127.0.0.1:8080, got {:?}",
                self.listen
            )
        })?;
        if !matches!(self.log.format.as_str(), "pretty" | "json") {
            return Err(format!(
                "log.format must be pretty or json, got {:?}",
                self.log.format
            ));
        }
        let known = self.store.starts_with("sqlite:") || self.store.starts_with("postgres");
        if !self.store.is_empty() && !known {
            return Err(format!(
                "store must be sqlite://PATH or postgres://…, got {:?}",
                self.store
            ));
        }
        if !self.internal_listen.is_empty() {
            self.internal_listen
                .parse::<std::net::SocketAddr>()
                .map_err(|_| {
                    format!(
                        "internal_listen must be empty or host:port, got {:?}",
                        self.internal_listen
                    )
                })?;
        }
        for (key, url) in [
            ("identity_store", &self.identity_store),
            ("orders_store", &self.orders_store),
            ("inventory_store", &self.inventory_store),
            ("payments_store", &self.payments_store),
        ] {
            if !url.is_empty() && !url.starts_with("sqlite:") && !url.starts_with("postgres") {
                return Err(format!(
                    "{key} must be sqlite://PATH or postgres://…, got {url:?}"
                ));
            }
        }
        self.catalog.validate()?;
        self.checkout.validate()?;
        self.edge.validate()
    }

    /// The URL of one of checkout's stores: `given`, or its own SQLite file `file` next
    /// to the catalog's, or the catalog's server database.
    fn service_store_url(&self, given: &str, file: &str) -> String {
        if !given.is_empty() {
            given.to_owned()
        } else if self.store.is_empty() || self.store.starts_with("sqlite:") {
            format!("sqlite://{}", self.data_dir.join(file).display())
        } else {
            self.store.clone()
        }
    }

    /// The orders store URL.
    pub fn orders_store_url(&self) -> String {
        self.service_store_url(&self.orders_store, "orders.db")
    }

    /// The inventory store URL.
    pub fn inventory_store_url(&self) -> String {
        self.service_store_url(&self.inventory_store, "inventory.db")
    }

    /// The payments store URL.
    pub fn payments_store_url(&self) -> String {
        self.service_store_url(&self.payments_store, "payments.db")
    }

    /// The identity store URL: its own SQLite file next to the catalog's, or the
    /// catalog's server database.
    pub fn identity_store_url(&self) -> String {
        self.service_store_url(&self.identity_store, "identity.db")
    }

    /// The store URL, defaulting to a SQLite file in the data directory.
    pub fn store_url(&self) -> String {
        if self.store.is_empty() {
            format!("sqlite://{}", self.data_dir.join("catalog.db").display())
        } else {
            self.store.clone()
        }
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn dump(&self) -> String {
        let mut shown = self.clone();
        if !shown.admin_token.is_empty() {
            shown.admin_token = "***".into();
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let l = load(None, env(&[]), vec![]).expect("defaults");
        assert_eq!(l.config, Config::default());
        assert!(l.config.store_url().ends_with("surge-data/catalog.db"));
        assert!(
            l.config
                .identity_store_url()
                .ends_with("surge-data/identity.db")
        );
        assert!(
            l.config.dump().contains("[[edge.routes]]"),
            "the route table is dumped"
        );
    }

    #[test]
    fn precedence_is_file_env_cli() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("surge.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1\"\n[catalog.cache]\nttl_seconds = 30.0\nmax_bytes = 2000000\n",
        )
        .expect("write");
        let l = load(
            Some(&file),
            env(&[
                ("SURGE_LISTEN", "127.0.0.1:2"),
                ("SURGE_CATALOG__CACHE__MAX_BYTES", "3000000"),
                ("SURGE_ADMIN_TOKEN", "12345"),
                ("SURGE_TEST_POSTGRES_URL", "postgres://x"),
                ("PATH", "/bin"),
            ]),
            vec![("listen", Value::String("127.0.0.1:3".into()))],
        )
        .expect("load");
        assert_eq!(l.config.listen, "127.0.0.1:3");
        assert_eq!(l.config.catalog.cache.ttl_seconds, 30.0);
        assert_eq!(l.config.catalog.cache.max_bytes, 3_000_000);
        assert_eq!(
            l.config.admin_token, "12345",
            "a numeric-looking token stays a string"
        );
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert!(!l.config.dump().contains("12345"));
    }

    #[test]
    fn errors_name_the_key() {
        let e = load(
            None,
            env(&[("SURGE_CATALOG__CACHE__TTL_SECONDS", "-1")]),
            vec![],
        )
        .unwrap_err();
        assert!(e.contains("cache.ttl_seconds"), "{e}");
        let e = load(None, env(&[("SURGE_LISTEN", "nowhere")]), vec![]).unwrap_err();
        assert!(e.contains("listen"), "{e}");
        let e = load(
            None,
            env(&[("SURGE_CATALOG__HTTP__MAX_BATCH_IDS", "many")]),
            vec![],
        )
        .unwrap_err();
        assert!(e.contains("max_batch_ids"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[catalog.cache]\nmax_byte = 1\n").expect("write");
        let e = load(Some(&file), env(&[]), vec![]).unwrap_err();
        assert!(e.contains("max_byte"), "{e}");
    }
}
