//! Configuration, in layers: built-in defaults → `leadline.toml` (or `--config`) →
//! `LEADLINE_*` environment variables → command-line flags. A misspelled key in the file is an
//! error naming the key; a misspelled `LEADLINE_*` variable is reported with the closest name.

use crate::domain::email::DEFAULT_PERSONAL_DOMAINS;
use crate::domain::lead::NormalizeRules;
use crate::domain::phone::parse_region;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use toml::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Every setting. `leadline.example.toml` lists each with its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port the HTTP server listens on.
    pub listen: String,
    /// Directory holding the database (created if missing).
    pub data_dir: PathBuf,
    /// Directory of Rhai plugins (optional).
    pub plugins_dir: PathBuf,
    /// The server's address as people reach it, the base of the unsubscribe, open and click
    /// links in email (e.g. https://leads.example.com). Empty: http://<listen>.
    pub public_url: String,
    pub log_format: LogFormat,
    /// Region used to read phone numbers written without a country code (ISO 3166, e.g. CN).
    pub default_region: String,
    /// Email domains flagged as free/personal mail.
    pub personal_email_domains: Vec<String>,
    pub http: HttpConfig,
    pub auth: AuthConfig,
    pub store: StoreConfig,
    pub capture: CaptureConfig,
    pub plugins: PluginsConfig,
    pub sla: SlaConfig,
    pub email: EmailConfig,
    pub webhooks: WebhooksConfig,
    pub search: SearchConfig,
}

/// Full-text search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Matches a search counts (with its facets) at most. Past it the total is a lower bound
    /// (`total_exact: false`) and the ranking prunes instead of visiting every match, which
    /// keeps a common word as fast as a rare one.
    pub count_limit: u64,
    /// Seconds the indexer waits with nothing to index before it merges the index's small
    /// segments (after a bulk load, all of them) into one, so a query visits fewer of them.
    pub compact_after_idle_secs: u64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            count_limit: 1_000,
            compact_after_idle_secs: 10,
        }
    }
}

/// Outgoing email over SMTP. Without `smtp_host` nothing is sent: messages wait in the
/// outbox, marked unsent, until a server with SMTP configured starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// SMTP server host name. Empty: do not send.
    pub smtp_host: String,
    pub smtp_port: u16,
    /// `starttls` (upgrade a plain connection, usually port 587), `tls` (TLS from the start,
    /// usually 465) or `none` (plain text: only for a relay on the same machine).
    pub security: String,
    /// SMTP login; empty: no authentication.
    pub username: String,
    pub password: String,
    /// A file holding the password (a mounted secret); read at start, wins over `password`.
    pub password_file: PathBuf,
    /// The sender, e.g. `Acme Sales <sales@acme.cn>`.
    pub from: String,
    /// How long one SMTP exchange may take, in seconds.
    pub timeout_secs: u64,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            smtp_host: String::new(),
            smtp_port: 587,
            security: "starttls".into(),
            username: String::new(),
            password: String::new(),
            password_file: PathBuf::new(),
            from: "Leadline <leadline@localhost>".into(),
            timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// How long one delivery attempt may take (connect, send, answer), in seconds.
    pub timeout_secs: u64,
    /// Allow destinations on loopback, private, link-local, unique-local, CGNAT and other
    /// non-public addresses (off: such URLs are refused, and checked again at each attempt).
    pub allow_private_destinations: bool,
    /// Delivery attempts in flight at once, across all webhooks.
    pub max_concurrency: u64,
    /// The wait after a first failed attempt, in seconds; it doubles after each further one…
    pub retry_base_secs: u64,
    /// …up to this many seconds.
    pub retry_max_delay_secs: u64,
    /// A delivery still failing this many hours after its first attempt is dead-lettered.
    pub retry_for_hours: u64,
    /// Delivered and dead deliveries are kept in the delivery log this many days.
    pub retention_days: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            timeout_secs: 10,
            allow_private_destinations: false,
            max_concurrency: 64,
            retry_base_secs: 10,
            retry_max_delay_secs: 3600,
            retry_for_hours: 24,
            retention_days: 30,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaConfig {
    /// Working hours by team name; SLA clocks of that team's reps count only working time.
    /// `[sla.business_hours.default]` applies to teams without their own. None: 24/7.
    pub business_hours: BTreeMap<String, BusinessHoursConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessHoursConfig {
    /// Working weekdays: mon, tue, wed, thu, fri, sat, sun.
    pub days: Vec<String>,
    /// Opening and closing time, local, HH:MM.
    pub open: String,
    pub close: String,
    /// IANA time zone, e.g. Asia/Shanghai.
    pub timezone: String,
    /// Local dates off work, YYYY-MM-DD.
    #[serde(default)]
    pub holidays: Vec<String>,
}

impl BusinessHoursConfig {
    fn parse(&self) -> Result<crate::domain::hours::BusinessHours, String> {
        crate::domain::hours::BusinessHours::parse(
            &self.days,
            &self.open,
            &self.close,
            &self.timezone,
            &self.holidays,
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Wall-clock limit of one hook call, in milliseconds.
    pub timeout_ms: u64,
    /// Most Rhai operations one hook call may run.
    pub max_operations: u64,
    /// Deepest function-call nesting in a hook.
    pub max_call_levels: u64,
    /// Deepest expression nesting in a script.
    pub max_expr_depth: u64,
    /// Longest string a script may build, in bytes.
    pub max_string_bytes: u64,
    /// Most items in an array a script builds.
    pub max_array_len: u64,
    /// Most entries in a map a script builds.
    pub max_map_len: u64,
    /// Reload scripts when a file in the plugins directory changes.
    pub watch: bool,
    /// Each script's own settings: `[plugins.config.scoring]` reaches `scoring.rhai` as `config`.
    pub config: BTreeMap<String, toml::Table>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        let l = crate::script::Limits::default();
        PluginsConfig {
            timeout_ms: l.timeout.as_millis() as u64,
            max_operations: l.max_operations,
            max_call_levels: l.max_call_levels as u64,
            max_expr_depth: l.max_expr_depth as u64,
            max_string_bytes: l.max_string_bytes as u64,
            max_array_len: l.max_array_len as u64,
            max_map_len: l.max_map_len as u64,
            watch: true,
            config: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: u64,
    /// A request still unanswered after this many seconds gets 503.
    pub request_timeout_secs: u64,
    /// Largest `limit` a list accepts.
    pub max_page_size: u64,
    /// Largest body `POST /v1/leads/import` streams in, in bytes.
    pub max_import_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How long a token from `POST /v1/auth/login` lasts.
    pub session_ttl_hours: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Most writes grouped into one durable transaction.
    pub max_batch: u64,
    /// Most index entries one list page may examine before it returns early with a cursor.
    pub list_scan_budget: u64,
    /// The database page cache, in MiB (the server's main memory use).
    pub cache_mib: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// UTM/referrer → channel rules, first match wins: `field=a|b [& field=…] -> channel`, where
    /// field is source, medium or referrer (the referrer's host), `*` is a wildcard and `none`
    /// matches an absent value. Replaces the whole built-in table.
    pub channel_rules: Vec<String>,
    /// Form submissions accepted per client IP per minute (all forms together).
    pub form_submits_per_ip_per_minute: u32,
    /// Submissions accepted per form per minute (all clients together).
    pub form_submits_per_form_per_minute: u32,
    /// Tracker page views accepted per client IP per minute.
    pub page_views_per_ip_per_minute: u32,
    /// A hosted form submitted sooner than this after the page was rendered is treated as a bot.
    pub min_fill_secs: u64,
    /// The same submission to the same form within this many seconds makes no second lead.
    pub double_submit_secs: u64,
    /// Peer addresses (your reverse proxy) whose `X-Forwarded-For` names the real client.
    pub trusted_proxies: Vec<String>,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            channel_rules: crate::domain::channel::DEFAULT_CHANNEL_RULES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            form_submits_per_ip_per_minute: 10,
            form_submits_per_form_per_minute: 600,
            page_views_per_ip_per_minute: 600,
            min_fill_secs: 2,
            double_submit_secs: 60,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir: "./data".into(),
            plugins_dir: "./plugins".into(),
            public_url: String::new(),
            log_format: LogFormat::Pretty,
            default_region: "CN".into(),
            personal_email_domains: DEFAULT_PERSONAL_DOMAINS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            http: HttpConfig::default(),
            auth: AuthConfig::default(),
            store: StoreConfig::default(),
            search: SearchConfig::default(),
            capture: CaptureConfig::default(),
            plugins: PluginsConfig::default(),
            sla: SlaConfig::default(),
            email: EmailConfig::default(),
            webhooks: WebhooksConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            max_page_size: 500,
            max_import_bytes: 4 * 1024 * 1024 * 1024,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            session_ttl_hours: 24 * 7,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_batch: 1024,
            list_scan_budget: 20_000,
            cache_mib: 256,
        }
    }
}

/// Values given on the command line; `None` leaves the lower layers alone.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub plugins_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("invalid setting `{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// Environment variables read outside the config table.
/// (`LEADLINE_ADMIN_TOKEN` is the shell variable `serve` suggests for the first admin token.)
const OTHER_ENV: &[&str] = &["LEADLINE_CONFIG", "LEADLINE_LOG", "LEADLINE_ADMIN_TOKEN"];

/// The outcome of loading: the config and what the operator should be told.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
    pub file: Option<PathBuf>,
}

impl Config {
    /// Loads every layer. `env` is passed in (not read here) so tests can give their own.
    pub fn load(
        overrides: &Overrides,
        env: &BTreeMap<String, String>,
    ) -> Result<Loaded, ConfigError> {
        let mut warnings = Vec::new();
        let defaults = Value::try_from(Config::default()).map_err(|e| ConfigError::Invalid {
            key: "<defaults>".into(),
            message: e.to_string(),
        })?;
        let mut merged = defaults.clone();

        let explicit = overrides
            .config
            .clone()
            .or_else(|| env.get("LEADLINE_CONFIG").map(PathBuf::from));
        let file = match explicit {
            Some(p) => Some(p),
            None => Some(PathBuf::from("leadline.toml")).filter(|p| p.exists()),
        };
        if let Some(path) = &file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let table: Value = toml::from_str(&text).map_err(|e| ConfigError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
            // Deserializing the file alone names a misspelled key precisely.
            Config::deserialize(table.clone()).map_err(|e| ConfigError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
            merge(&mut merged, table);
        }

        let mut leaves = BTreeMap::new();
        collect_leaves(&defaults, "", &mut leaves);
        for (var, raw) in env {
            let Some(rest) = var.strip_prefix("LEADLINE_") else {
                continue;
            };
            if OTHER_ENV.contains(&var.as_str()) {
                continue;
            }
            let key = rest.to_lowercase();
            let Some((path, default)) = leaves.iter().find(|(p, _)| p.replace('.', "_") == key)
            else {
                let others: Vec<String> = OTHER_ENV
                    .iter()
                    .map(|v| v.trim_start_matches("LEADLINE_").to_lowercase())
                    .collect();
                let hint = closest(&key, leaves.keys().chain(others.iter()))
                    .map(|k| {
                        format!(
                            " (did you mean LEADLINE_{}?)",
                            k.replace('.', "_").to_uppercase()
                        )
                    })
                    .unwrap_or_default();
                warnings.push(format!(
                    "unknown environment variable {var} is ignored{hint}"
                ));
                continue;
            };
            let value = parse_env(raw, default).map_err(|message| ConfigError::Env {
                var: var.clone(),
                message,
            })?;
            set_path(&mut merged, path, value);
            // Checked one variable at a time, so a bad value is reported under its own name.
            Config::deserialize(merged.clone()).map_err(|e| ConfigError::Env {
                var: var.clone(),
                message: e.to_string(),
            })?;
        }

        let mut config = Config::deserialize(merged).map_err(|e| ConfigError::Invalid {
            key: "<merged>".into(),
            message: e.to_string(),
        })?;
        if let Some(v) = &overrides.listen {
            config.listen = v.clone();
        }
        if let Some(v) = &overrides.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = &overrides.plugins_dir {
            config.plugins_dir = v.clone();
        }
        if let Some(v) = overrides.log_format {
            config.log_format = v;
        }
        config.validate()?;
        Ok(Loaded {
            config,
            warnings,
            file,
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        self.listen_addr()?;
        if !self.public_url.is_empty() {
            let ok = url::Url::parse(&self.public_url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !ok {
                return Err(invalid(
                    "public_url",
                    format!("`{}` is not an http(s) URL", self.public_url),
                ));
            }
        }
        if !matches!(self.email.security.as_str(), "starttls" | "tls" | "none") {
            return Err(invalid(
                "email.security",
                format!("`{}`: use starttls, tls or none", self.email.security),
            ));
        }
        if !self.email.smtp_host.is_empty() {
            self.email
                .from
                .parse::<lettre::message::Mailbox>()
                .map_err(|e| invalid("email.from", format!("`{}`: {e}", self.email.from)))?;
        }
        parse_region(&self.default_region).map_err(|m| invalid("default_region", m))?;
        if self.http.max_body_bytes < 1024 {
            return Err(invalid(
                "http.max_body_bytes",
                "must be at least 1024".into(),
            ));
        }
        if self.http.request_timeout_secs == 0 {
            return Err(invalid(
                "http.request_timeout_secs",
                "must be at least 1".into(),
            ));
        }
        if self.http.max_page_size == 0 {
            return Err(invalid("http.max_page_size", "must be at least 1".into()));
        }
        if self.search.compact_after_idle_secs == 0 {
            // The indexer checks again every idle period while a merge runs.
            return Err(invalid(
                "search.compact_after_idle_secs",
                "must be at least 1".into(),
            ));
        }
        if self.search.count_limit == 0 {
            return Err(invalid("search.count_limit", "must be at least 1".into()));
        }
        if self.store.max_batch == 0 || self.store.list_scan_budget == 0 {
            return Err(invalid(
                "store",
                "max_batch and list_scan_budget must be at least 1".into(),
            ));
        }
        crate::domain::channel::parse_rules(&self.capture.channel_rules)
            .map_err(|m| invalid("capture.channel_rules", m))?;
        for p in &self.capture.trusted_proxies {
            p.trim().parse::<std::net::IpAddr>().map_err(|_| {
                invalid(
                    "capture.trusted_proxies",
                    format!("`{p}` is not an IP address"),
                )
            })?;
        }
        for (team, hours) in &self.sla.business_hours {
            hours
                .parse()
                .map_err(|m| invalid(&format!("sla.business_hours.{team}"), m))?;
        }
        // In Rhai a limit of 0 means "no limit"; every hook call must have one.
        let p = &self.plugins;
        for (key, value) in [
            ("plugins.timeout_ms", p.timeout_ms),
            ("plugins.max_operations", p.max_operations),
            ("plugins.max_call_levels", p.max_call_levels),
            ("plugins.max_expr_depth", p.max_expr_depth),
            ("plugins.max_string_bytes", p.max_string_bytes),
            ("plugins.max_array_len", p.max_array_len),
            ("plugins.max_map_len", p.max_map_len),
        ] {
            if value == 0 {
                return Err(invalid(
                    key,
                    "must be at least 1: every plugin call runs under a limit".into(),
                ));
            }
        }
        use crate::script::engine::{MAX_CALL_LEVELS, MAX_EXPR_DEPTH};
        for (key, value, most) in [
            (
                "plugins.max_call_levels",
                p.max_call_levels,
                MAX_CALL_LEVELS,
            ),
            ("plugins.max_expr_depth", p.max_expr_depth, MAX_EXPR_DEPTH),
        ] {
            if value > most as u64 {
                return Err(invalid(
                    key,
                    format!(
                        "must be at most {most}: deeper, a script could overflow the stack of the thread running it, which stops the server"
                    ),
                ));
            }
        }
        let w = &self.webhooks;
        for (key, value) in [
            ("webhooks.timeout_secs", w.timeout_secs),
            ("webhooks.max_concurrency", w.max_concurrency),
            ("webhooks.retry_base_secs", w.retry_base_secs),
            ("webhooks.retry_max_delay_secs", w.retry_max_delay_secs),
            ("webhooks.retry_for_hours", w.retry_for_hours),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        Ok(())
    }

    /// `public_url`, or the listen address when it is not set.
    pub fn public_base_url(&self) -> String {
        if self.public_url.is_empty() {
            format!("http://{}", self.listen)
        } else {
            self.public_url.trim_end_matches('/').to_owned()
        }
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| ConfigError::Invalid {
            key: "listen".into(),
            message: format!("`{}` is not an address such as 127.0.0.1:8080", self.listen),
        })
    }

    /// What the plugin runtime needs from the configuration.
    pub fn plugin_settings(&self) -> crate::script::PluginSettings {
        let p = &self.plugins;
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        crate::script::PluginSettings {
            dir: self.plugins_dir.clone(),
            limits: crate::script::Limits {
                timeout: std::time::Duration::from_millis(p.timeout_ms.max(1)),
                max_operations: p.max_operations,
                max_call_levels: size(p.max_call_levels),
                max_expr_depth: size(p.max_expr_depth),
                max_string_bytes: size(p.max_string_bytes),
                max_array_len: size(p.max_array_len),
                max_map_len: size(p.max_map_len),
            },
            config: p
                .config
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
                    )
                })
                .collect(),
            // validate() parsed each; one that somehow fails counts 24/7 rather than stopping.
            public_url: self.public_base_url(),
            business_hours: self
                .sla
                .business_hours
                .iter()
                .filter_map(|(team, h)| h.parse().ok().map(|h| (team.clone(), h)))
                .collect(),
        }
    }

    pub fn normalize_rules(&self) -> NormalizeRules {
        NormalizeRules {
            // validate() checked the region; CN is the documented default if it somehow fails.
            default_region: parse_region(&self.default_region)
                .unwrap_or(phonenumber::country::Id::CN),
            personal_domains: self
                .personal_email_domains
                .iter()
                .map(|d| d.trim().to_lowercase())
                .collect(),
            // validate() parsed the table; an empty table (no channel derived) is the fallback.
            channels: crate::domain::channel::parse_rules(&self.capture.channel_rules)
                .unwrap_or_default(),
        }
    }
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Table(b), Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn collect_leaves(v: &Value, path: &str, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Table(t) => {
            for (k, child) in t {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                collect_leaves(child, &p, out);
            }
        }
        leaf => {
            out.insert(path.to_owned(), leaf.clone());
        }
    }
}

fn set_path(root: &mut Value, path: &str, value: Value) {
    let mut cur = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let Value::Table(t) = cur else { return };
        if i == parts.len() - 1 {
            t.insert((*part).to_owned(), value);
            return;
        }
        cur = t
            .entry((*part).to_owned())
            .or_insert_with(|| Value::Table(Default::default()));
    }
}

fn parse_env(raw: &str, like: &Value) -> Result<Value, String> {
    match like {
        Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(Value::Integer)
            .map_err(|_| format!("`{raw}` is not a whole number")),
        Value::Boolean(_) => match raw.trim().to_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Value::Boolean(true)),
            "0" | "false" | "no" | "off" => Ok(Value::Boolean(false)),
            _ => Err(format!("`{raw}` is not true or false")),
        },
        Value::Array(_) => Ok(Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        )),
        _ => Ok(Value::String(raw.to_owned())),
    }
}

/// The known key nearest to a misspelling (by edit distance), if any is near.
fn closest<'a>(wrong: &str, known: impl Iterator<Item = &'a String>) -> Option<String> {
    known
        .map(|k| (edit_distance(wrong, &k.replace('.', "_")), k))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.clone())
}

pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn defaults_need_nothing() {
        let l = Config::load(&Overrides::default(), &env(&[])).unwrap();
        assert_eq!(l.config.listen, "127.0.0.1:8080");
        assert_eq!(l.config.data_dir, PathBuf::from("./data"));
        assert!(l.warnings.is_empty());
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leadline.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\ndefault_region = \"US\"\n[http]\nmax_body_bytes = 2048\n",
        )
        .unwrap();
        let o = Overrides {
            config: Some(path),
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        };
        let l = Config::load(
            &o,
            &env(&[
                ("LEADLINE_LISTEN", "127.0.0.1:9100"),
                ("LEADLINE_HTTP_REQUEST_TIMEOUT_SECS", "5"),
            ]),
        )
        .unwrap();
        assert_eq!(l.config.listen, "127.0.0.1:9100");
        assert_eq!(l.config.default_region, "US");
        assert_eq!(l.config.http.max_body_bytes, 2048);
        assert_eq!(l.config.http.request_timeout_secs, 5);
        assert_eq!(l.config.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn misspelled_file_key_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "lisen = \"127.0.0.1:1\"\n").unwrap();
        let o = Overrides {
            config: Some(path),
            ..Default::default()
        };
        let err = Config::load(&o, &env(&[])).unwrap_err().to_string();
        assert!(err.contains("lisen"), "{err}");
    }

    #[test]
    fn misspelled_env_var_is_reported_with_a_hint() {
        let l = Config::load(&Overrides::default(), &env(&[("LEADLINE_LISTNE", "x")])).unwrap();
        assert_eq!(l.warnings.len(), 1);
        assert!(
            l.warnings[0].contains("LEADLINE_LISTEN"),
            "{}",
            l.warnings[0]
        );
        // Variables read outside the table are known, and near misses of them hinted.
        let l = Config::load(
            &Overrides::default(),
            &env(&[("LEADLINE_ADMIN_TOKEN", "ll_x"), ("LEADLINE_LOGG", "debug")]),
        )
        .unwrap();
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert!(
            l.warnings[0].contains("did you mean LEADLINE_LOG?"),
            "{:?}",
            l.warnings
        );
    }

    #[test]
    fn a_bad_env_value_names_its_variable() {
        for (var, value) in [
            ("LEADLINE_LOG_FORMAT", "xml"),
            ("LEADLINE_HTTP_MAX_BODY_BYTES", "-5"),
        ] {
            let err = Config::load(&Overrides::default(), &env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(var), "{err}");
        }
    }

    #[test]
    fn bad_values_are_errors() {
        let err = Config::load(
            &Overrides::default(),
            &env(&[("LEADLINE_SEARCH_COMPACT_AFTER_IDLE_SECS", "0")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("search.compact_after_idle_secs"), "{err}");
        for (var, key) in [
            (
                "LEADLINE_PLUGINS_MAX_CALL_LEVELS",
                "plugins.max_call_levels",
            ),
            ("LEADLINE_PLUGINS_MAX_EXPR_DEPTH", "plugins.max_expr_depth"),
        ] {
            let err = Config::load(&Overrides::default(), &env(&[(var, "700")]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key) && err.contains("at most 128"), "{err}");
            assert!(Config::load(&Overrides::default(), &env(&[(var, "128")])).is_ok());
        }
        assert!(
            Config::load(
                &Overrides::default(),
                &env(&[("LEADLINE_HTTP_MAX_BODY_BYTES", "lots")])
            )
            .is_err()
        );
        assert!(
            Config::load(
                &Overrides::default(),
                &env(&[("LEADLINE_DEFAULT_REGION", "XX1")])
            )
            .is_err()
        );
        let o = Overrides {
            listen: Some("nowhere".into()),
            ..Default::default()
        };
        assert!(Config::load(&o, &env(&[])).is_err());
    }

    #[test]
    fn example_file_lists_every_key_with_its_default() {
        let text = include_str!("../leadline.example.toml");
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest
                        .split_once(" = ")
                        .is_some_and(|(k, _)| !k.contains(' ')) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let table: Value = toml::from_str(&uncommented).unwrap();
        let mut example = BTreeMap::new();
        collect_leaves(&table, "", &mut example);
        let mut defaults = BTreeMap::new();
        collect_leaves(
            &Value::try_from(Config::default()).unwrap(),
            "",
            &mut defaults,
        );
        assert_eq!(example, defaults);
    }

    #[test]
    fn env_lists_are_comma_separated() {
        let l = Config::load(
            &Overrides::default(),
            &env(&[("LEADLINE_PERSONAL_EMAIL_DOMAINS", "a.com, b.com")]),
        )
        .unwrap();
        assert_eq!(l.config.personal_email_domains, vec!["a.com", "b.com"]);
    }
}
