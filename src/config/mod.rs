//! Pipeline files: YAML text -> [`spec::PipelineSpec`] (serde) -> `validate()`
//! -> [`Pipeline`], the checked form the engine runs.
//!
//! `${NAME}` in a plain (unquoted) scalar is replaced by the environment
//! variable `NAME` after the YAML is parsed, inside that one scalar, so a
//! value cannot add YAML structure; a quoted `"${NAME}"` stays as written.
//! The parser runs under a budget (size, depth, aliases, nodes), so a
//! hostile file is refused quickly. Validation reads only the files a
//! pipeline names as secrets (`*_file:`) or TLS material, and looks at the
//! sink directories. Every refusal names the file, line and column of the
//! offending node and what was expected there ([`ConfigError`]); none shows
//! a secret's value.

pub mod expr;
pub mod secret;
pub mod spec;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_saphyr::{Location, Spanned};

use crate::time::{format_duration, parse_duration, Micros, TimeFormat, MICROS_PER_HOUR};
use expr::Expr;
pub use secret::Secret;
use spec::*;

/// A refused pipeline file: `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

/// The window kind of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling {
        size: Micros,
        offset: Micros,
    },
    /// Windows of `size` starting every `slide` (`size` a whole multiple of
    /// `slide`), kept as `slide`-long tiles.
    Hopping {
        size: Micros,
        slide: Micros,
        offset: Micros,
    },
    Session {
        gap: Micros,
    },
}

/// The type of a key field (one per feature group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    String,
    Int,
}

impl KeyType {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::String => "string",
            KeyType::Int => "int",
        }
    }
}

/// Which panes fire after the on-time pane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateTrigger {
    EveryEvent,
    Every(Micros),
    None,
}

/// How successive panes of one window relate (SPEC 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accumulation {
    Discarding,
    Accumulating,
    AccumulatingAndRetracting,
}

impl Accumulation {
    pub fn as_str(self) -> &'static str {
        match self {
            Accumulation::Discarding => "discarding",
            Accumulation::Accumulating => "accumulating",
            Accumulation::AccumulatingAndRetracting => "accumulating_and_retracting",
        }
    }
}

pub use crate::aggregate::{AggKind, AggParams, OutputKind};

/// Output type of a feature column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    Int,
    Float,
    Bool,
    String,
    /// first/last without a declared type: taken from the values.
    Inferred,
    /// collect_set: a list of strings.
    StringList,
}

/// A checked feature.
#[derive(Debug, Clone)]
pub struct Feature {
    pub name: String,
    pub kind: FeatureKind,
    pub value_type: ValueType,
    pub description: Option<String>,
    pub default: Option<serde_json::Value>,
}

impl Feature {
    /// The type of the values the feature takes (the Parquet column's type):
    /// counts are integers, first/last have their declared type, every
    /// other aggregate and every derived feature is a float.
    pub fn output_type(&self) -> ValueType {
        match &self.kind {
            FeatureKind::Agg { agg, .. } => match agg.def().output {
                OutputKind::Int => ValueType::Int,
                OutputKind::Float => ValueType::Float,
                OutputKind::Scalar => self.value_type,
                OutputKind::StrList => ValueType::StringList,
            },
            FeatureKind::SetCut(_) => ValueType::Bool,
            FeatureKind::Derived(_) => ValueType::Float,
        }
    }
}

#[derive(Debug, Clone)]
pub enum FeatureKind {
    Agg {
        agg: AggKind,
        field: Option<String>,
        filter: Option<Expr>,
        params: AggParams,
    },
    Derived(Expr),
    /// True when the `collect_set` feature at this index kept only its
    /// `max` smallest values (named `<set>_cut`, added after it).
    SetCut(usize),
}

/// A request-time feature (`on_read:`): evaluated when read, never stored.
#[derive(Debug, Clone)]
pub struct OnReadFeature {
    pub name: String,
    pub expr: Expr,
    pub description: Option<String>,
}

/// Names an `on_read:` expression may use besides the group's features.
pub const ON_READ_NAMES: [&str; 3] = ["now", "window_start", "window_end"];

/// Names a derived feature may use besides the group's features.
pub const WINDOW_NAMES: [&str; 2] = ["window_start", "window_end"];

/// Where the event time comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTimeSource {
    Field { name: String, format: TimeFormat },
    KafkaTimestamp,
}

#[derive(Debug, Clone)]
pub struct KafkaSource {
    pub brokers: String,
    pub topic: String,
    pub group_id: String,
    pub start: StartPolicy,
    pub security: KafkaSecurity,
    /// Extra librdkafka properties, in name order.
    pub properties: Vec<(String, String)>,
}

/// Where a consumer group without committed offsets starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPolicy {
    Earliest,
    Latest,
    /// The first offset at or after this time (µs since the epoch).
    Timestamp(Micros),
}

/// `security.protocol` of the Kafka client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KafkaProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl KafkaProtocol {
    /// librdkafka's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaProtocol::Plaintext => "plaintext",
            KafkaProtocol::Ssl => "ssl",
            KafkaProtocol::SaslPlaintext => "sasl_plaintext",
            KafkaProtocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, KafkaProtocol::Ssl | KafkaProtocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, KafkaProtocol::SaslPlaintext | KafkaProtocol::SaslSsl)
    }
}

/// TLS and SASL settings of the Kafka client (secrets never print).
#[derive(Debug, Clone)]
pub struct KafkaSecurity {
    pub protocol: KafkaProtocol,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub key_password: Option<Secret>,
    pub verify_hostname: bool,
    pub sasl: Option<SaslLogin>,
}

impl Default for KafkaSecurity {
    /// Plaintext, no login; hostnames verified once TLS is on.
    fn default() -> KafkaSecurity {
        KafkaSecurity {
            protocol: KafkaProtocol::Plaintext,
            ca_file: None,
            cert_file: None,
            key_file: None,
            key_password: None,
            verify_hostname: true,
            sasl: None,
        }
    }
}

/// A SASL login.
#[derive(Debug, Clone)]
pub struct SaslLogin {
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `GSSAPI`.
    pub mechanism: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub kerberos_service_name: Option<String>,
    pub kerberos_principal: Option<String>,
    pub kerberos_keytab: Option<PathBuf>,
}

/// How to reach a Redis server: its URL and what the URL cannot carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisEndpoint {
    /// As written; it may hold a password, so print [`Self::display`].
    pub url: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// TLS files (`rediss://` only).
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl RedisEndpoint {
    /// An endpoint given by its URL alone (a command-line override).
    pub fn from_url(url: impl Into<String>) -> RedisEndpoint {
        RedisEndpoint {
            url: url.into(),
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
        }
    }

    /// The URL with its password replaced by `***`, for logs and documents.
    pub fn display(&self) -> String {
        redact_url(&self.url)
    }

    /// The seed nodes' URLs when this is a Redis Cluster
    /// (`redis+cluster://` or `rediss+cluster://`).
    pub fn cluster_nodes(&self) -> Option<Result<Vec<String>, String>> {
        cluster_nodes(&self.url)
    }
}

/// A URL without its password (`scheme://user:***@host`).
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct RedisSink {
    pub endpoint: RedisEndpoint,
    pub ttl: Option<Micros>,
    pub key_prefix: String,
    /// Values older than this are served as `expired` (falls back to `ttl`).
    pub max_age: Option<Micros>,
}

/// Columns of an offline row besides keys and features (SPEC 6); no
/// feature may take these names.
pub const PANE_COLUMNS: [&str; 8] = [
    "window_start",
    "window_end",
    "pane_index",
    "timing",
    "is_final",
    "retraction",
    "emitted_at",
    "watermark",
];

/// A checked pipeline, ready to run.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub version: u32,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub team: Option<String>,
    pub tags: Vec<String>,
    pub kafka: Option<KafkaSource>,
    pub key_fields: Vec<String>,
    /// One type per key field.
    pub key_types: Vec<KeyType>,
    pub event_time: EventTimeSource,
    pub max_out_of_orderness: Micros,
    pub idle_timeout: Option<Micros>,
    pub idle_advance: bool,
    pub max_future: Micros,
    pub window: WindowKind,
    pub allowed_lateness: Micros,
    pub early_every: Option<Micros>,
    pub late: LateTrigger,
    pub accumulation: Accumulation,
    pub features: Vec<Feature>,
    /// Request-time features, in file order.
    pub on_read: Vec<OnReadFeature>,
    pub redis: Option<RedisSink>,
    pub parquet_path: Option<PathBuf>,
    /// Page compression of the offline files.
    pub parquet_compression: ParquetCompression,
    pub dead_letter_path: Option<PathBuf>,
    pub dead_letter_topic: Option<String>,
    pub freshness_sla: Option<Micros>,
    /// The file it was read from, when it came from one.
    pub source_file: Option<PathBuf>,
    /// Line and column of the `name:` value in its file.
    pub name_position: (u64, u64),
}

/// Page compression of the offline Parquet files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ParquetCompression {
    /// LZ4_RAW: on rill's columns about the ratio of Snappy at about half
    /// its compression time.
    #[default]
    Lz4,
    Snappy,
    /// Zstandard level 1.
    Zstd,
    None,
}

impl Pipeline {
    /// Reads and validates a pipeline file.
    pub fn from_file(path: &Path) -> Result<Pipeline, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message: format!("cannot read file: {e}"),
        })?;
        let mut p = Pipeline::from_yaml(&text, &path.display().to_string())?;
        p.source_file = Some(path.to_path_buf());
        Ok(p)
    }

    /// Parses and validates pipeline YAML; `file` names it in errors.
    /// `${NAME}` takes the process environment.
    pub fn from_yaml(text: &str, file: &str) -> Result<Pipeline, ConfigError> {
        Pipeline::from_yaml_with_env(text, file, std::env::vars().collect())
    }

    /// As [`Pipeline::from_yaml`], with `${NAME}` taken from `env`.
    pub fn from_yaml_with_env(
        text: &str,
        file: &str,
        env: HashMap<String, String>,
    ) -> Result<Pipeline, ConfigError> {
        if text.len() > MAX_FILE_BYTES {
            return Err(ConfigError {
                file: file.to_string(),
                line: 1,
                column: 1,
                message: format!(
                    "file is {} bytes; a pipeline file is at most {MAX_FILE_BYTES}",
                    text.len()
                ),
            });
        }
        let spec: PipelineSpec = serde_saphyr::from_str_with_options(text, yaml_options(env))
            .map_err(|e| yaml_error(file, text, &e))?;
        validate(spec, file)
    }

    /// Short description of the window for summaries and the registry.
    pub fn window_text(&self) -> String {
        match self.window {
            WindowKind::Tumbling { size, offset: 0 } => {
                format!("tumbling {}", format_duration(size))
            }
            WindowKind::Tumbling { size, offset } => {
                format!(
                    "tumbling {} offset {}",
                    format_duration(size),
                    format_duration(offset)
                )
            }
            WindowKind::Hopping {
                size,
                slide,
                offset,
            } => {
                let mut t = format!(
                    "hopping {} every {}",
                    format_duration(size),
                    format_duration(slide)
                );
                if offset != 0 {
                    t.push_str(&format!(" offset {}", format_duration(offset)));
                }
                t
            }
            WindowKind::Session { gap } => format!("session gap {}", format_duration(gap)),
        }
    }
}

/// The largest pipeline file read.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Parser limits: far above any real pipeline, far below what makes a
/// hostile file (deep nesting, alias bombs) expensive.
fn yaml_options(env: HashMap<String, String>) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = 32;
    budget.max_nodes = 50_000;
    budget.max_events = 200_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_recorded_anchor_events = 20_000;
    budget.max_recorded_anchor_bytes = 1 << 20;
    budget.max_total_scalar_bytes = 4 << 20;
    budget.max_documents = 1;
    budget.max_merge_keys = 1_000;
    budget.max_property_expansion_depth = 1;
    let mut o = serde_saphyr::Options::default().with_properties(env);
    o.budget = Some(budget);
    o
}

fn yaml_error(file: &str, text: &str, e: &serde_saphyr::Error) -> ConfigError {
    let (line, column) = match e.location() {
        Some(l) => (l.line(), l.column()),
        None => (0, 0),
    };
    let (line, column) = if line == 0 {
        // An empty document has no node to point at: report its start.
        (1, 1)
    } else {
        (line, column)
    };
    let _ = text;
    ConfigError {
        file: file.to_string(),
        line,
        column,
        message: clean_yaml_message(&e.to_string()),
    }
}

/// The YAML library's message without its own location suffix or snippet.
fn clean_yaml_message(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // Drop the library's own "line N column M: " prefix: ours comes first.
    let rest = match first.strip_prefix("line ") {
        Some(r) => r.split_once(": ").map_or(first, |(_, m)| m),
        None => first,
    };
    let rest = rest.replace("invalid u32", "expected a non-negative integer");
    // The library says "missing property `NAME`"; the variable's value is
    // never in the message (it has none, or the library redacts it).
    let rest = match rest.split_once("missing property `") {
        Some((before, after)) => {
            match after.split_once('`') {
                Some((name, tail)) => {
                    format!("{before}environment variable {name} is not set (used as ${{{name}}}){tail}")
                }
                None => rest.clone(),
            }
        }
        None => rest,
    };
    rest.trim_end_matches('.').to_string()
}

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, at: &Location, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            line: at.line().max(1),
            column: at.column().max(1),
            message: message.into(),
        }
    }

    fn duration(&self, s: &Spanned<String>, what: &str) -> Result<Micros, ConfigError> {
        parse_duration(&s.value).map_err(|e| self.err(&s.referenced, format!("{what}: {e}")))
    }

    /// A secret given inline or as a file (not both); the file is read now.
    /// Errors name the field and the file, never the value.
    fn secret(
        &self,
        value: Option<Spanned<String>>,
        file: Option<Spanned<String>>,
        what: &str,
    ) -> Result<Option<Secret>, ConfigError> {
        match (value, file) {
            (Some(_), Some(f)) => Err(self.err(
                &f.referenced,
                format!("give {what} or {what}_file, not both"),
            )),
            (Some(v), None) => Ok(Some(Secret::new(v.value))),
            (None, Some(f)) => secret::read_secret_file(&f.value).map(Some).map_err(|e| {
                self.err(
                    &f.referenced,
                    format!("cannot read {what}_file {:?}: {e}", f.value),
                )
            }),
            (None, None) => Ok(None),
        }
    }

    /// A file that must exist and be readable (TLS certificates, keytabs).
    fn readable_file(&self, f: &Spanned<String>, what: &str) -> Result<PathBuf, ConfigError> {
        match std::fs::File::open(&f.value) {
            Ok(_) => Ok(PathBuf::from(&f.value)),
            Err(e) => Err(self.err(
                &f.referenced,
                format!("cannot read {what} {:?}: {e}", f.value),
            )),
        }
    }

    /// The CA, certificate and key files of a TLS client: each readable,
    /// the certificate and key together, and none at all when `not_tls`
    /// says why TLS is off.
    #[allow(clippy::type_complexity)]
    fn tls_files(
        &self,
        ca: &Option<Spanned<String>>,
        cert: &Option<Spanned<String>>,
        key: &Option<Spanned<String>>,
        not_tls: Option<String>,
    ) -> Result<(Option<PathBuf>, Option<PathBuf>, Option<PathBuf>), ConfigError> {
        if let (Some(why), Some(f)) = (&not_tls, [ca, cert, key].into_iter().flatten().next()) {
            return Err(self.err(&f.referenced, why.clone()));
        }
        match (cert, key) {
            (Some(c), None) => return Err(self.err(&c.referenced, "cert_file needs key_file")),
            (None, Some(k)) => return Err(self.err(&k.referenced, "key_file needs cert_file")),
            _ => {}
        }
        let read = |f: &Option<Spanned<String>>, what: &str| {
            f.as_ref().map(|f| self.readable_file(f, what)).transpose()
        };
        Ok((
            read(ca, "ca_file")?,
            read(cert, "cert_file")?,
            read(key, "key_file")?,
        ))
    }

    /// A directory rill creates when missing; refused when it names a file.
    fn dir_path(&self, p: &Spanned<String>, what: &str) -> Result<PathBuf, ConfigError> {
        if p.value.trim().is_empty() {
            return Err(self.err(&p.referenced, format!("{what}: expected a directory")));
        }
        let path = PathBuf::from(&p.value);
        if crate::storage::is_url(&path) || p.value.contains("://") {
            // Object storage (docs/storage.md): the form and scheme are
            // checked here, the bucket when rill first writes.
            return match crate::storage::check_url(p.value.trim_end_matches('/')) {
                Ok(()) => Ok(path),
                Err(e) => Err(self.err(&p.referenced, format!("{what}: {e}"))),
            };
        }
        if path.exists() && !path.is_dir() {
            return Err(self.err(
                &p.referenced,
                format!("{what} {:?} exists and is not a directory", p.value),
            ));
        }
        Ok(path)
    }

    /// A Kafka topic name: 1 to 249 of letters, digits, `.`, `_` and `-`.
    fn topic_name(&self, t: &Spanned<String>, what: &str) -> Result<(), ConfigError> {
        let v = &t.value;
        let ok = !v.is_empty()
            && v.len() <= 249
            && v != "."
            && v != ".."
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(())
        } else {
            Err(self.err(
                &t.referenced,
                format!("{what} {v:?}: expected 1 to 249 letters, digits, '.', '_' or '-'"),
            ))
        }
    }

    fn positive_duration(&self, s: &Spanned<String>, what: &str) -> Result<Micros, ConfigError> {
        let d = self.duration(s, what)?;
        if d <= 0 {
            return Err(self.err(
                &s.referenced,
                format!(
                    "{what}: expected a duration above zero, found {:?}",
                    s.value
                ),
            ));
        }
        Ok(d)
    }
}

/// A feature name: ASCII letters, digits and `_`, not starting with a
/// digit, at most [`MAX_NAME_LEN`] long (a Parquet column, a Redis hash
/// field, a JSON key and a name in expressions, all as it is).
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= MAX_NAME_LEN
        && matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A group name: an identifier that starts with a letter (names starting
/// with `_` are rill's own directories, such as `_dead_letter`).
fn is_group_name(s: &str) -> bool {
    is_identifier(s) && s.starts_with(|c: char| c.is_ascii_alphabetic())
}

/// Checks a parsed pipeline and turns it into a [`Pipeline`].
pub fn validate(spec: PipelineSpec, file: &str) -> Result<Pipeline, ConfigError> {
    let cx = Ctx { file };
    if spec.version.value == 0 {
        return Err(cx.err(
            &spec.version.referenced,
            "version: expected a positive integer (the pipeline's version, starting at 1)",
        ));
    }
    let name = spec.name.value.clone();
    if !is_group_name(&name) {
        return Err(cx.err(
            &spec.name.referenced,
            format!(
                "invalid name {name:?}: expected 1 to {MAX_NAME_LEN} letters, digits and '_', starting with a letter"
            ),
        ));
    }

    // Source.
    let src = spec.source;
    if let Some(f) = &src.format {
        if f.value != "json" {
            return Err(cx.err(
                &f.referenced,
                format!("unknown format {:?}: expected json", f.value),
            ));
        }
    }
    let key_loc = src.key.referenced;
    let key_fields = src.key.value.into_vec();
    if key_fields.is_empty() {
        return Err(cx.err(&key_loc, "expected at least one key field"));
    }
    let mut seen = HashSet::new();
    for k in &key_fields {
        if k.is_empty() {
            return Err(cx.err(&key_loc, "expected a non-empty key field name"));
        }
        if !seen.insert(k) {
            return Err(cx.err(&key_loc, format!("key field {k:?} is named twice")));
        }
    }
    let mut key_types = vec![KeyType::String; key_fields.len()];
    if let Some(kt) = &src.key_types {
        for (name, t) in &kt.value {
            let Some(i) = key_fields.iter().position(|k| k == name) else {
                return Err(cx.err(
                    &t.referenced,
                    format!("key_types names {name:?}, which is not a key field"),
                ));
            };
            key_types[i] = match t.value.as_str() {
                "string" => KeyType::String,
                "int" => KeyType::Int,
                other => {
                    return Err(cx.err(
                        &t.referenced,
                        format!("unknown key type {other:?}: expected string or int"),
                    ))
                }
            };
        }
    }
    let et = src.event_time;
    let event_time = if et.kafka_timestamp == Some(true) {
        if let Some(f) = &et.field {
            return Err(cx.err(
                &f.referenced,
                "expected either event_time.field or kafka_timestamp: true, not both",
            ));
        }
        EventTimeSource::KafkaTimestamp
    } else {
        let format = match &et.format {
            None => TimeFormat::Rfc3339,
            Some(f) => match f.value.as_str() {
                "rfc3339" => TimeFormat::Rfc3339,
                "epoch_millis" => TimeFormat::EpochMillis,
                "epoch_seconds" => TimeFormat::EpochSeconds,
                "epoch_micros" => TimeFormat::EpochMicros,
                other => {
                    return Err(cx.err(
                        &f.referenced,
                        format!("unknown time format {other:?}: expected rfc3339, epoch_millis, epoch_seconds or epoch_micros"),
                    ))
                }
            },
        };
        match et.field {
            Some(f) if !f.value.is_empty() => EventTimeSource::Field {
                name: f.value,
                format,
            },
            Some(f) => return Err(cx.err(&f.referenced, "expected a field name")),
            None => {
                return Err(ConfigError {
                    file: file.to_string(),
                    line: key_loc.line(),
                    column: 1,
                    message: "source.event_time: expected `field:` or `kafka_timestamp: true`"
                        .into(),
                })
            }
        }
    };
    let kafka = match src.kafka {
        Some(k) => Some(kafka_source(&cx, k)?),
        None => None,
    };

    // Watermark.
    let (mut ooo, mut idle_timeout, mut idle_advance, mut max_future) =
        (0, None, false, MICROS_PER_HOUR);
    if let Some(w) = &spec.watermark {
        if let Some(d) = &w.max_out_of_orderness {
            ooo = cx.duration(d, "max_out_of_orderness")?;
        }
        if let Some(d) = &w.idle_timeout {
            idle_timeout = Some(cx.positive_duration(d, "idle_timeout")?);
        }
        idle_advance = w.idle_advance.unwrap_or(false);
        if let Some(d) = &w.max_future {
            max_future = cx.duration(d, "max_future")?;
        }
    }

    // Window.
    let win = spec.window;
    let kinds = [
        win.tumbling.as_ref().map(|t| t.referenced),
        win.hopping.as_ref().map(|t| t.referenced),
        win.session.as_ref().map(|t| t.referenced),
    ];
    if let Some(second) = kinds.iter().flatten().nth(1) {
        return Err(cx.err(
            second,
            "expected one window kind (tumbling, hopping or session), found several",
        ));
    }
    let window = match (&win.tumbling, &win.session) {
        _ if win.hopping.is_some() => {
            let h = &win.hopping.as_ref().expect("checked").value;
            let size = cx.positive_duration(&h.size, "hopping size")?;
            let slide = cx.positive_duration(&h.slide, "hopping slide")?;
            if size % slide != 0 {
                return Err(cx.err(
                    &h.size.referenced,
                    format!(
                        "hopping size {} is not a whole multiple of slide {}",
                        h.size.value, h.slide.value
                    ),
                ));
            }
            let offset = match &h.offset {
                Some(o) => cx.duration(o, "hopping offset")?,
                None => 0,
            };
            WindowKind::Hopping {
                size,
                slide,
                offset: offset.rem_euclid(slide),
            }
        }
        (Some(t), None) => {
            let size = cx.positive_duration(&t.value.size, "tumbling size")?;
            let offset = match &t.value.offset {
                Some(o) => cx.duration(o, "tumbling offset")?,
                None => 0,
            };
            WindowKind::Tumbling {
                size,
                offset: offset.rem_euclid(size),
            }
        }
        (None, Some(s)) => WindowKind::Session {
            gap: cx.positive_duration(&s.value.gap, "session gap")?,
        },
        (Some(_), Some(_)) => unreachable!("refused above: one window kind"),
        (None, None) => {
            let at = win.allowed_lateness.as_ref().map(|a| a.referenced);
            let msg = "window: expected `tumbling:`, `hopping:` or `session:`";
            return Err(match at {
                Some(at) => cx.err(&at, msg),
                None => cx.err(&spec.name.referenced, msg),
            });
        }
    };
    let allowed_lateness = match &win.allowed_lateness {
        Some(a) => cx.duration(a, "allowed_lateness")?,
        None => 0,
    };

    // Trigger.
    let (mut early_every, mut late) = (None, LateTrigger::None);
    if let Some(t) = spec.trigger {
        if let Some(e) = &t.early {
            early_every = Some(cx.positive_duration(&e.every, "early trigger period")?);
        }
        if let Some(l) = &t.late {
            late = match &l.value {
                LateSpec::Word(w) if w == "every_event" => LateTrigger::EveryEvent,
                LateSpec::Word(w) if w == "none" => LateTrigger::None,
                LateSpec::Word(w) => {
                    return Err(cx.err(&l.referenced, format!("unknown late trigger {w:?}: expected every_event, none or {{ every: <duration> }}")))
                }
                LateSpec::Every(e) => LateTrigger::Every(cx.positive_duration(&e.every, "late trigger period")?),
            };
        }
    }
    let accumulation = match &spec.accumulation {
        None => Accumulation::Accumulating,
        Some(a) => match a.value.as_str() {
            "discarding" => Accumulation::Discarding,
            "accumulating" => Accumulation::Accumulating,
            "accumulating_and_retracting" => Accumulation::AccumulatingAndRetracting,
            other => {
                return Err(cx.err(
                    &a.referenced,
                    format!("unknown accumulation {other:?}: expected discarding, accumulating or accumulating_and_retracting"),
                ))
            }
        },
    };

    // Features.
    let features_loc = spec.features.referenced;
    if spec.features.value.is_empty() {
        return Err(cx.err(&features_loc, "expected at least one feature"));
    }
    let reserved: HashSet<&str> = PANE_COLUMNS.into_iter().chain(["now"]).collect();
    let mut names: HashMap<String, Location> = HashMap::new();
    let mut claim = |name: &str, at: &Location, what: &str| -> Result<(), ConfigError> {
        if let Some(first) = names.get(name) {
            return Err(cx.err(
                at,
                format!(
                    "duplicate feature name {name:?}{what} (first defined at line {})",
                    first.line()
                ),
            ));
        }
        names.insert(name.to_string(), *at);
        Ok(())
    };
    for f in &spec.features.value {
        let n = &f.name;
        if !is_identifier(&n.value) {
            return Err(cx.err(
                &n.referenced,
                format!(
                    "invalid feature name {:?}: expected up to {MAX_NAME_LEN} letters, digits and '_', not starting with a digit",
                    n.value
                ),
            ));
        }
        if reserved.contains(n.value.as_str()) || key_fields.contains(&n.value) {
            return Err(cx.err(
                &n.referenced,
                format!("feature name {:?} is taken by an output column", n.value),
            ));
        }
        claim(&n.value, &n.referenced, "")?;
        if f.agg.as_ref().is_some_and(|a| a.value == "collect_set") {
            claim(
                &format!("{}_cut", n.value),
                &n.referenced,
                " (the flag of a collect_set)",
            )?;
        }
    }
    let stored: HashSet<String> = spec
        .features
        .value
        .iter()
        .filter(|f| f.on_read.is_none())
        .flat_map(|f| {
            let mut v = vec![f.name.value.clone()];
            if f.agg.as_ref().is_some_and(|a| a.value == "collect_set") {
                v.push(format!("{}_cut", f.name.value));
            }
            v
        })
        .collect();
    let mut features = Vec::with_capacity(spec.features.value.len());
    let mut on_read = Vec::new();
    for f in spec.features.value {
        let value_type = match &f.value_type {
            None => ValueType::Inferred,
            Some(t) => match t.value.as_str() {
                "string" => ValueType::String,
                "float" => ValueType::Float,
                "int" => ValueType::Int,
                "bool" => ValueType::Bool,
                other => {
                    return Err(cx.err(
                        &t.referenced,
                        format!("unknown type {other:?}: expected string, float, int or bool"),
                    ))
                }
            },
        };
        let forms = [
            f.agg.as_ref().map(|x| x.referenced),
            f.expr.as_ref().map(|x| x.referenced),
            f.on_read.as_ref().map(|x| x.referenced),
        ];
        if let Some(second) = forms.iter().flatten().nth(1) {
            return Err(cx.err(second, "expected one of agg, expr or on_read, not several"));
        }
        let params_given = [
            f.q.as_ref().map(|x| ("q", x.referenced)),
            f.exact_up_to
                .as_ref()
                .map(|x| ("exact_up_to", x.referenced)),
            f.max.as_ref().map(|x| ("max", x.referenced)),
        ];
        let kind = match (&f.agg, &f.expr, &f.on_read) {
            (None, None, None) => {
                return Err(cx.err(
                    &f.name.referenced,
                    format!(
                        "feature {:?}: expected `agg:`, `expr:` or `on_read:`",
                        f.name.value
                    ),
                ))
            }
            (Some(a), _, _) => {
                let Some(agg) = AggKind::parse(&a.value) else {
                    return Err(cx.err(
                        &a.referenced,
                        format!(
                            "unknown aggregate {:?}: expected one of {}",
                            a.value,
                            AggKind::names()
                        ),
                    ));
                };
                let field = f.field.as_ref().map(|s| s.value.clone());
                if field.is_none() && agg.def().needs_field {
                    return Err(cx.err(
                        &a.referenced,
                        format!("aggregate {} needs `field:`", agg.name()),
                    ));
                }
                if let Some(fl) = &f.field {
                    if fl.value.is_empty() {
                        return Err(cx.err(&fl.referenced, "expected a field name"));
                    }
                }
                let filter = match &f.filter {
                    Some(w) => Some(parse_expr(&cx, w)?),
                    None => None,
                };
                if value_type != ValueType::Inferred
                    && !matches!(agg, AggKind::First | AggKind::Last)
                {
                    let t = f.value_type.as_ref().expect("checked above");
                    return Err(cx.err(&t.referenced, "`type:` applies only to first and last"));
                }
                let mut params = AggParams::default();
                let wants = match agg {
                    AggKind::Quantile => Some("q"),
                    AggKind::CountDistinct => Some("exact_up_to"),
                    AggKind::CollectSet => Some("max"),
                    _ => None,
                };
                for (name, at) in params_given.iter().flatten() {
                    if Some(*name) != wants {
                        return Err(cx.err(
                            at,
                            format!("`{name}:` does not apply to aggregate {}", agg.name()),
                        ));
                    }
                }
                match agg {
                    AggKind::Quantile => {
                        let Some(q) = &f.q else {
                            return Err(cx.err(
                                &a.referenced,
                                "aggregate quantile needs `q:` (e.g. 0.5 for the median)",
                            ));
                        };
                        if !(0.0..=1.0).contains(&q.value) {
                            return Err(cx.err(
                                &q.referenced,
                                format!("q: expected a number from 0 to 1, found {}", q.value),
                            ));
                        }
                        params.q = q.value;
                    }
                    AggKind::CountDistinct => {
                        if let Some(e) = &f.exact_up_to {
                            params.exact_up_to = e.value;
                        }
                    }
                    AggKind::CollectSet => {
                        if let Some(m) = &f.max {
                            if m.value == 0 {
                                return Err(cx.err(
                                    &m.referenced,
                                    "max: expected a positive number of values",
                                ));
                            }
                            params.max = m.value;
                        }
                    }
                    _ => {}
                }
                FeatureKind::Agg {
                    agg,
                    field,
                    filter,
                    params,
                }
            }
            (None, expr, read) => {
                let (e, what) = match (expr, read) {
                    (Some(e), _) => (e, "expr"),
                    (None, Some(e)) => (e, "on_read"),
                    (None, None) => unreachable!("refused above"),
                };
                if let Some(fl) = &f.field {
                    return Err(cx.err(&fl.referenced, format!("{what} takes no `field:`")));
                }
                if let Some(w) = &f.filter {
                    return Err(cx.err(&w.referenced, format!("{what} takes no `where:`")));
                }
                if let Some((name, at)) = params_given.iter().flatten().next() {
                    return Err(cx.err(at, format!("`{name}:` applies to aggregates only")));
                }
                let ex = parse_expr(&cx, e)?;
                let extra: &[&str] = if what == "expr" {
                    &WINDOW_NAMES
                } else {
                    &ON_READ_NAMES
                };
                for id in ex.idents() {
                    if !stored.contains(id) && !extra.contains(&id) {
                        let hint = if names.contains_key(id) {
                            " (an on_read feature is computed when read, and cannot be used here)"
                        } else {
                            ""
                        };
                        return Err(cx.err(
                            &e.referenced,
                            format!("{what} refers to unknown feature {id:?}{hint}"),
                        ));
                    }
                }
                if what == "on_read" {
                    on_read.push(OnReadFeature {
                        name: f.name.value,
                        expr: ex,
                        description: f.description,
                    });
                    continue;
                }
                FeatureKind::Derived(ex)
            }
        };
        let is_set = matches!(
            kind,
            FeatureKind::Agg {
                agg: AggKind::CollectSet,
                ..
            }
        );
        features.push(Feature {
            name: f.name.value.clone(),
            kind,
            value_type,
            description: f.description,
            default: f.default,
        });
        if is_set {
            features.push(Feature {
                name: format!("{}_cut", f.name.value),
                kind: FeatureKind::SetCut(features.len() - 1),
                value_type: ValueType::Bool,
                description: Some(format!(
                    "true when {} holds only its smallest values (its `max` was reached)",
                    f.name.value
                )),
                default: None,
            });
        }
    }
    check_derived_cycles(&cx, &features, &features_loc)?;

    // Sinks.
    let (mut redis, mut parquet_path, mut dead_letter_path, mut dead_letter_topic) =
        (None, None, None, None);
    let mut parquet_compression = ParquetCompression::default();
    if let Some(s) = spec.sinks {
        if let Some(o) = s.online {
            let ttl = match &o.redis.value.ttl {
                Some(t) => Some(cx.positive_duration(t, "redis ttl")?),
                None => None,
            };
            let max_age = match &o.redis.value.max_age {
                Some(t) => Some(cx.positive_duration(t, "redis max_age")?),
                None => None,
            };
            let key_prefix = match &o.redis.value.key_prefix {
                Some(k) => {
                    if !is_safe_token(&k.value) {
                        return Err(cx.err(
                            &k.referenced,
                            format!("invalid key_prefix {:?}: expected 1 to {MAX_NAME_LEN} letters, digits, '_' or '-'", k.value),
                        ));
                    }
                    k.value.clone()
                }
                None => "rill".into(),
            };
            redis = Some(RedisSink {
                endpoint: redis_endpoint(&cx, o.redis)?,
                ttl,
                key_prefix,
                max_age,
            });
        }
        if let Some(o) = s.offline {
            parquet_path = Some(cx.dir_path(&o.parquet.path, "parquet path")?);
            if let Some(c) = &o.parquet.compression {
                parquet_compression = match c.value.as_str() {
                    "lz4" => ParquetCompression::Lz4,
                    "snappy" => ParquetCompression::Snappy,
                    "zstd" => ParquetCompression::Zstd,
                    "none" => ParquetCompression::None,
                    other => {
                        return Err(cx.err(
                            &c.referenced,
                            format!(
                                "unknown parquet compression {other:?}: expected lz4, snappy, zstd or none"
                            ),
                        ))
                    }
                };
            }
        }
        if let Some(d) = s.dead_letter {
            if let Some(p) = &d.path {
                dead_letter_path = Some(cx.dir_path(p, "dead_letter path")?);
            }
            if let Some(t) = d.topic {
                cx.topic_name(&t, "dead_letter topic")?;
                dead_letter_topic = Some(t.value);
            }
        }
    }
    let freshness_sla = match &spec.freshness_sla {
        Some(s) => Some(cx.positive_duration(s, "freshness_sla")?),
        None => None,
    };

    Ok(Pipeline {
        name,
        version: spec.version.value,
        description: spec.description,
        owner: spec.owner,
        team: spec.team,
        tags: spec.tags,
        kafka,
        key_fields,
        key_types,
        event_time,
        max_out_of_orderness: ooo,
        idle_timeout,
        idle_advance,
        max_future,
        window,
        allowed_lateness,
        early_every,
        late,
        accumulation,
        features,
        on_read,
        redis,
        parquet_path,
        parquet_compression,
        dead_letter_path,
        dead_letter_topic,
        freshness_sla,
        source_file: None,
        name_position: (spec.name.referenced.line(), spec.name.referenced.column()),
    })
}

/// Names of groups, features and key prefixes are at most this long.
pub const MAX_NAME_LEN: usize = 64;

/// Letters, digits, `_` and `-`, 1 to [`MAX_NAME_LEN`] characters: safe in
/// a file path, a Redis key and a URL path segment as it is.
fn is_safe_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn kafka_source(cx: &Ctx<'_>, k: KafkaSpec) -> Result<KafkaSource, ConfigError> {
    check_brokers(&k.brokers.value).map_err(|e| cx.err(&k.brokers.referenced, e))?;
    cx.topic_name(&k.topic, "topic")?;
    if k.group_id.value.trim().is_empty() {
        return Err(cx.err(
            &k.group_id.referenced,
            "group_id: expected a consumer group id",
        ));
    }
    let start = match &k.start {
        None => StartPolicy::Earliest,
        Some(v) => parse_start(&v.value).map_err(|e| cx.err(&v.referenced, e))?,
    };
    let security = match k.security {
        Some(sec) => kafka_security(cx, sec.value, sec.referenced)?,
        None => KafkaSecurity::default(),
    };
    Ok(KafkaSource {
        brokers: k.brokers.value,
        topic: k.topic.value,
        group_id: k.group_id.value,
        start,
        security,
        properties: k.properties.into_iter().collect(),
    })
}

/// `earliest`, `latest` or `{ timestamp: <RFC 3339> }`.
fn parse_start(v: &serde_json::Value) -> Result<StartPolicy, String> {
    const EXPECTED: &str = "expected earliest, latest or { timestamp: <RFC 3339 time> }";
    match v {
        serde_json::Value::String(s) if s == "earliest" => Ok(StartPolicy::Earliest),
        serde_json::Value::String(s) if s == "latest" => Ok(StartPolicy::Latest),
        serde_json::Value::Object(o) if o.len() == 1 && o.contains_key("timestamp") => {
            match o.get("timestamp") {
                Some(serde_json::Value::String(t)) => crate::time::parse_rfc3339(t)
                    .map(StartPolicy::Timestamp)
                    .map_err(|e| format!("start timestamp {t:?}: {e}")),
                _ => Err(format!("start timestamp: {EXPECTED}")),
            }
        }
        serde_json::Value::String(s) => Err(format!("unknown start policy {s:?}: {EXPECTED}")),
        _ => Err(format!("unknown start policy: {EXPECTED}")),
    }
}

/// `host:port[,host:port...]`, each optionally `proto://host:port`.
pub fn check_brokers(list: &str) -> Result<(), String> {
    if list.trim().is_empty() {
        return Err("brokers: expected host:port[,host:port...]".into());
    }
    for b in list.split(',') {
        let b = b.trim();
        let hostport = b.split_once("://").map_or(b, |(_, r)| r);
        let Some((host, port)) = hostport.rsplit_once(':') else {
            return Err(format!("broker {b:?}: expected host:port"));
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(format!(
                "broker {b:?}: expected a host name or address before the port"
            ));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => {
                return Err(format!(
                    "broker {b:?}: port {port:?} is not a number from 1 to 65535"
                ))
            }
        }
    }
    Ok(())
}

fn kafka_security(
    cx: &Ctx<'_>,
    sec: KafkaSecuritySpec,
    sec_at: Location,
) -> Result<KafkaSecurity, ConfigError> {
    let protocol = match &sec.protocol {
        None => KafkaProtocol::Plaintext,
        Some(p) => match p.value.to_ascii_lowercase().as_str() {
            "plaintext" => KafkaProtocol::Plaintext,
            "ssl" => KafkaProtocol::Ssl,
            "sasl_plaintext" => KafkaProtocol::SaslPlaintext,
            "sasl_ssl" => KafkaProtocol::SaslSsl,
            other => {
                return Err(cx.err(
                    &p.referenced,
                    format!("unknown security protocol {other:?}: expected plaintext, ssl, sasl_plaintext or sasl_ssl"),
                ))
            }
        },
    };
    let at = sec.protocol.as_ref().map(|p| p.referenced);
    let not_tls = (!protocol.uses_tls()).then(|| {
        format!(
            "TLS files need protocol ssl or sasl_ssl, not {}",
            protocol.as_str()
        )
    });
    let (ca_file, cert_file, key_file) =
        cx.tls_files(&sec.ca_file, &sec.cert_file, &sec.key_file, not_tls)?;
    let key_password = cx.secret(sec.key_password, sec.key_password_file, "key_password")?;
    let sasl = match sec.sasl {
        None => {
            if protocol.uses_sasl() {
                let loc = at.unwrap_or(sec_at);
                return Err(cx.err(
                    &loc,
                    format!("protocol {} needs a sasl: login", protocol.as_str()),
                ));
            }
            None
        }
        Some(sasl) => {
            if !protocol.uses_sasl() {
                return Err(cx.err(
                    &sasl.mechanism.referenced,
                    format!(
                        "a sasl: login needs protocol sasl_ssl or sasl_plaintext, not {}",
                        protocol.as_str()
                    ),
                ));
            }
            let mechanism = sasl.mechanism.value.to_ascii_uppercase();
            let username = cx
                .secret(sasl.username, sasl.username_file, "username")?
                .map(|u| u.expose().to_string());
            let password = cx.secret(sasl.password, sasl.password_file, "password")?;
            match mechanism.as_str() {
                "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512" => {
                    if username.is_none() || password.is_none() {
                        return Err(cx.err(
                            &sasl.mechanism.referenced,
                            format!("sasl mechanism {mechanism} needs username and password (or password_file)"),
                        ));
                    }
                }
                "GSSAPI" => {
                    if !cfg!(feature = "gssapi") {
                        return Err(cx.err(
                            &sasl.mechanism.referenced,
                            "sasl mechanism GSSAPI needs rill built with the gssapi feature (cargo build --features gssapi)",
                        ));
                    }
                }
                other => {
                    return Err(cx.err(
                        &sasl.mechanism.referenced,
                        format!("unknown sasl mechanism {other:?}: expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or GSSAPI"),
                    ))
                }
            }
            let kerberos_keytab = sasl
                .kerberos_keytab
                .as_ref()
                .map(|f| cx.readable_file(f, "kerberos_keytab"))
                .transpose()?;
            Some(SaslLogin {
                mechanism,
                username,
                password,
                kerberos_service_name: sasl.kerberos_service_name,
                kerberos_principal: sasl.kerberos_principal,
                kerberos_keytab,
            })
        }
    };
    Ok(KafkaSecurity {
        protocol,
        ca_file,
        cert_file,
        key_file,
        key_password,
        verify_hostname: sec.verify_hostname.unwrap_or(true),
        sasl,
    })
}

fn redis_endpoint(cx: &Ctx<'_>, spec: Spanned<RedisSpec>) -> Result<RedisEndpoint, ConfigError> {
    let at = spec.referenced;
    let r = spec.value;
    let url = match (r.url, r.cluster) {
        (Some(u), None) => {
            check_redis_url(&u.value).map_err(|e| cx.err(&u.referenced, e))?;
            u.value
        }
        (None, Some(nodes)) => {
            let mut urls = Vec::with_capacity(nodes.value.len());
            for n in &nodes.value {
                check_redis_url(&n.value).map_err(|e| cx.err(&n.referenced, e))?;
                urls.push(n.value.as_str());
            }
            cluster_url(&urls).map_err(|(i, e)| {
                let at = i.map_or(&nodes.referenced, |i| &nodes.value[i].referenced);
                cx.err(at, e)
            })?
        }
        (Some(u), Some(_)) => {
            return Err(cx.err(
                &u.referenced,
                "give either url or cluster, not both",
            ))
        }
        (None, None) => {
            return Err(cx.err(
                &at,
                "redis needs url (one server, or redis+cluster://host:port,host:port) or cluster (a list of seed node URLs)",
            ))
        }
    };
    let tls = url.starts_with("rediss://") || url.starts_with("rediss+cluster://");
    let not_tls = (!tls).then(|| "TLS files need a rediss:// URL".to_string());
    if url.starts_with("rediss+cluster://") {
        if let Some(f) = r.ca_file.as_ref().or(r.cert_file.as_ref()) {
            return Err(cx.err(
                &f.referenced,
                "ca_file and cert_file are not supported with a Redis Cluster: put its CA in the system trust store",
            ));
        }
    }
    let (ca_file, cert_file, key_file) =
        cx.tls_files(&r.ca_file, &r.cert_file, &r.key_file, not_tls)?;
    let password = cx.secret(r.password, r.password_file, "password")?;
    Ok(RedisEndpoint {
        url,
        username: r.username.map(|u| u.value),
        password,
        ca_file,
        cert_file,
        key_file,
    })
}

/// The `redis+cluster://` URL of seed nodes given one URL each: one scheme
/// (`redis` or `rediss`), one user and password, no database index.
/// An error names the node it is about (`Some(index)`) or the whole list.
fn cluster_url(nodes: &[&str]) -> Result<String, (Option<usize>, String)> {
    if nodes.is_empty() {
        return Err((None, "cluster: expected at least one seed node URL".into()));
    }
    let mut scheme = None;
    let mut userinfo = None;
    let mut hosts = Vec::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        let at = Some(i);
        let Some((s, rest)) = n.split_once("://") else {
            return Err((at, format!("cluster: invalid node URL {}", redact_url(n))));
        };
        if !matches!(s, "redis" | "rediss") {
            return Err((
                at,
                format!(
                    "cluster: node URL {} must be redis:// or rediss://",
                    redact_url(n)
                ),
            ));
        }
        let (ui, host) = match rest.rsplit_once('@') {
            Some((ui, h)) => (Some(ui), h),
            None => (None, rest),
        };
        let host = host.trim_end_matches('/');
        if host.contains('/') {
            return Err((
                at,
                format!(
                    "cluster: node URL {}: a Redis Cluster has no database index",
                    redact_url(n)
                ),
            ));
        }
        if *scheme.get_or_insert(s) != s {
            return Err((at, "cluster: every node URL needs the same scheme".into()));
        }
        if *userinfo.get_or_insert(ui) != ui {
            return Err((
                at,
                "cluster: every node URL needs the same user and password".into(),
            ));
        }
        hosts.push(host);
    }
    let ui = userinfo
        .flatten()
        .map_or(String::new(), |u| format!("{u}@"));
    Ok(format!(
        "{}+cluster://{ui}{}",
        scheme.unwrap_or("redis"),
        hosts.join(",")
    ))
}

/// The seed node URLs of a `redis+cluster://[user:password@]host:port,...`
/// or `rediss+cluster://` URL (`None`: not a cluster URL). A database index
/// is refused: a Redis Cluster has only database 0.
pub fn cluster_nodes(url: &str) -> Option<Result<Vec<String>, String>> {
    let (scheme, rest) = url.split_once("://")?;
    let base = match scheme {
        "redis+cluster" => "redis",
        "rediss+cluster" => "rediss",
        _ => return None,
    };
    let (ui, hosts) = match rest.rsplit_once('@') {
        Some((ui, h)) => (format!("{ui}@"), h),
        None => (String::new(), rest),
    };
    let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
    if let Some((_, db)) = hosts.split_once('/') {
        if db != "0" {
            return Some(Err(format!(
                "invalid Redis URL {}: a Redis Cluster has no database index (only 0)",
                redact_url(url)
            )));
        }
    }
    let hosts = hosts.split('/').next().unwrap_or("");
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|h| format!("{base}://{ui}{h}"))
        .collect();
    if nodes.is_empty() {
        return Some(Err(format!(
            "invalid Redis URL {}: expected redis+cluster://host:port[,host:port...]",
            redact_url(url)
        )));
    }
    Some(Ok(nodes))
}

/// A Redis URL the client accepts: `redis://`, `rediss://` or
/// `redis+unix://`/`unix://`, parsed by the client itself. The message
/// never repeats the URL (it may hold a password).
pub fn check_redis_url(url: &str) -> Result<(), String> {
    use redis::IntoConnectionInfo;
    if let Some(nodes) = cluster_nodes(url) {
        for n in nodes? {
            check_redis_url(&n).map_err(|e| e.replace(&redact_url(&n), &redact_url(url)))?;
        }
        return Ok(());
    }
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !matches!(scheme, Some("redis" | "rediss" | "redis+unix" | "unix")) {
        return Err(format!(
            "invalid Redis URL {}: expected redis://host:port[/db], rediss:// (TLS) or redis+cluster://host:port,host:port",
            redact_url(url)
        ));
    }
    url.into_connection_info().map(|_| ()).map_err(|e| {
        format!(
            "invalid Redis URL {}: {}",
            redact_url(url),
            e.to_string().replace(url, "<url>")
        )
    })
}

fn parse_expr(cx: &Ctx<'_>, s: &Spanned<String>) -> Result<Expr, ConfigError> {
    expr::parse(&s.value).map_err(|e| {
        cx.err(
            &s.referenced,
            format!("invalid expression {:?}: {e}", s.value),
        )
    })
}

fn check_derived_cycles(
    cx: &Ctx<'_>,
    features: &[Feature],
    loc: &Location,
) -> Result<(), ConfigError> {
    let index: HashMap<&str, usize> = features
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.as_str(), i))
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut state = vec![0u8; features.len()];
    fn visit(
        i: usize,
        features: &[Feature],
        index: &HashMap<&str, usize>,
        state: &mut [u8],
    ) -> Option<String> {
        match state[i] {
            1 => return Some(features[i].name.clone()),
            2 => return None,
            _ => {}
        }
        state[i] = 1;
        if let FeatureKind::Derived(e) = &features[i].kind {
            for id in e.idents() {
                if let Some(&j) = index.get(id) {
                    if let Some(c) = visit(j, features, index, state) {
                        return Some(c);
                    }
                }
            }
        }
        state[i] = 2;
        None
    }
    for i in 0..features.len() {
        if let Some(name) = visit(i, features, &index, &mut state) {
            return Err(cx.err(loc, format!("derived feature {name:?} depends on itself")));
        }
    }
    Ok(())
}

/// Loads every `*.yaml`/`*.yml` file of a directory (sorted by name).
pub fn load_dir(dir: &Path) -> Result<Vec<Pipeline>, ConfigError> {
    let rd = std::fs::read_dir(dir).map_err(|e| ConfigError {
        file: dir.display().to_string(),
        line: 0,
        column: 0,
        message: format!("cannot read directory: {e}"),
    })?;
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")))
        .collect();
    paths.sort();
    paths.iter().map(|p| Pipeline::from_file(p)).collect()
}

/// A pipeline for unit tests: records keyed by `key` (a YAML list), event
/// time in field `ts` as epoch milliseconds, 1-minute tumbling windows, and
/// `features` (YAML list items, one per line).
#[cfg(test)]
pub(crate) fn test_pipeline(key: &str, features: &str) -> Pipeline {
    let yaml = format!(
        "version: 1\nname: t\nsource:\n  key: {key}\n  \
         event_time: {{ field: ts, format: epoch_millis }}\n\
         window: {{ tumbling: {{ size: 1m }} }}\nfeatures:\n{features}"
    );
    Pipeline::from_yaml(&yaml, "t.yaml").expect("valid test pipeline")
}

#[cfg(test)]
mod tests;
