//! The pipeline file as written by operators (serde, `version: 1`).
//!
//! Every struct refuses unknown fields, and every field's `///` comment is its
//! user documentation. Values that need checking beyond their YAML type
//! (durations, names, expressions) keep their source location through
//! [`Spanned`] so that `validate()` can point at them.

use serde::Deserialize;
use serde_saphyr::Spanned;

/// A whole pipeline file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// The pipeline's version, a positive integer: raise it with every
    /// breaking change (a removed or renamed feature, a changed aggregate,
    /// window or key); `rill validate --against` checks this.
    pub version: Spanned<u32>,
    /// The feature group's name: letters, digits and `_`, unique across pipelines.
    pub name: Spanned<String>,
    /// What the features describe, for the registry.
    #[serde(default)]
    pub description: Option<String>,
    /// Who answers for the pipeline (an address or a handle).
    #[serde(default)]
    pub owner: Option<String>,
    /// The owning team.
    #[serde(default)]
    pub team: Option<String>,
    /// Free-form tags for search.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Where events come from and how to read them.
    pub source: SourceSpec,
    /// Watermark settings; defaults to no out-of-orderness allowance.
    #[serde(default)]
    pub watermark: Option<WatermarkSpec>,
    /// The window and its allowed lateness.
    pub window: WindowSpec,
    /// When panes fire besides the on-time pane; omitted: on-time panes only.
    #[serde(default)]
    pub trigger: Option<TriggerSpec>,
    /// `discarding`, `accumulating` (default) or `accumulating_and_retracting`.
    #[serde(default)]
    pub accumulation: Option<Spanned<String>>,
    /// The features computed per key and window.
    pub features: Spanned<Vec<FeatureSpec>>,
    /// Where results go.
    #[serde(default)]
    pub sinks: Option<SinksSpec>,
    /// The freshness promise: the watermark may lag the wall clock by at most this.
    #[serde(default)]
    pub freshness_sla: Option<Spanned<String>>,
}

/// Source of events.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A Kafka topic read through a consumer group.
    #[serde(default)]
    pub kafka: Option<KafkaSpec>,
    /// Encoding of each record; only `json` (one object per record) exists.
    #[serde(default)]
    pub format: Option<Spanned<String>>,
    /// The entity key: one field name or a list of them.
    pub key: Spanned<OneOrMany>,
    /// The type of each key field, `string` (the default) or `int`: one
    /// type per feature group, so every file of the group has one schema.
    /// A key value of another type is bad input (`bad_key`).
    #[serde(default)]
    pub key_types: Option<Spanned<std::collections::BTreeMap<String, Spanned<String>>>>,
    /// Where the event time is read from.
    pub event_time: EventTimeSpec,
}

/// One string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Kafka consumer settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSpec {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: Spanned<String>,
    /// The topic to consume.
    pub topic: Spanned<String>,
    /// Consumer group id; one group per pipeline.
    pub group_id: Spanned<String>,
    /// Where a group without committed offsets starts: `earliest` (default),
    /// `latest`, or `{ timestamp: <RFC 3339> }`.
    #[serde(default)]
    pub start: Option<Spanned<serde_json::Value>>,
    /// TLS and SASL towards the brokers (default: plaintext).
    #[serde(default)]
    pub security: Option<Spanned<KafkaSecuritySpec>>,
    /// Extra librdkafka properties passed as they are (values whose names
    /// say password, secret, token or key are shown as `***`).
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

/// How the consumer authenticates to the brokers and protects the link.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSecuritySpec {
    /// `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default)]
    pub protocol: Option<Spanned<String>>,
    /// PEM file of the certificate authorities that sign the brokers'
    /// certificates (default: the system's trust store).
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
    /// PEM client certificate for mutual TLS (with `key_file`).
    #[serde(default)]
    pub cert_file: Option<Spanned<String>>,
    /// PEM private key of the client certificate.
    #[serde(default)]
    pub key_file: Option<Spanned<String>>,
    /// Password of an encrypted `key_file`.
    #[serde(default)]
    pub key_password: Option<Spanned<String>>,
    /// A file holding the password of an encrypted `key_file`.
    #[serde(default)]
    pub key_password_file: Option<Spanned<String>>,
    /// Whether the broker's certificate must name the host connected to
    /// (default true).
    #[serde(default)]
    pub verify_hostname: Option<bool>,
    /// SASL login (with `sasl_plaintext` or `sasl_ssl`).
    #[serde(default)]
    pub sasl: Option<SaslSpec>,
}

/// A SASL login.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslSpec {
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `GSSAPI` (Kerberos,
    /// when rill is built with the `gssapi` feature).
    pub mechanism: Spanned<String>,
    /// The user (PLAIN and SCRAM).
    #[serde(default)]
    pub username: Option<Spanned<String>>,
    /// A file holding the user.
    #[serde(default)]
    pub username_file: Option<Spanned<String>>,
    /// The password (PLAIN and SCRAM); write `${NAME}` to take it from the
    /// environment.
    #[serde(default)]
    pub password: Option<Spanned<String>>,
    /// A file holding the password (a mounted secret).
    #[serde(default)]
    pub password_file: Option<Spanned<String>>,
    /// Kerberos service name of the brokers (GSSAPI, default `kafka`).
    #[serde(default)]
    pub kerberos_service_name: Option<String>,
    /// Kerberos principal of the client (GSSAPI).
    #[serde(default)]
    pub kerberos_principal: Option<String>,
    /// Keytab file of the client principal (GSSAPI).
    #[serde(default)]
    pub kerberos_keytab: Option<Spanned<String>>,
}

/// Where the event time is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTimeSpec {
    /// The field holding the event time.
    #[serde(default)]
    pub field: Option<Spanned<String>>,
    /// `rfc3339` (default), `epoch_millis`, `epoch_seconds` or `epoch_micros`.
    #[serde(default)]
    pub format: Option<Spanned<String>>,
    /// Use the Kafka message timestamp instead of a field.
    #[serde(default)]
    pub kafka_timestamp: Option<bool>,
}

/// Watermark settings (SPEC 2).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkSpec {
    /// How far behind the greatest event time of a partition its watermark trails.
    #[serde(default)]
    pub max_out_of_orderness: Option<Spanned<String>>,
    /// A partition at the end of its log and silent this long stops holding the watermark back.
    #[serde(default)]
    pub idle_timeout: Option<Spanned<String>>,
    /// With every partition idle, let the watermark follow processing time.
    #[serde(default)]
    pub idle_advance: Option<bool>,
    /// Event times further than this ahead of the wall clock are bad input (default 1h).
    #[serde(default)]
    pub max_future: Option<Spanned<String>>,
}

/// The window: exactly one of `tumbling` or `session`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Fixed, epoch-aligned windows.
    #[serde(default)]
    pub tumbling: Option<Spanned<TumblingSpec>>,
    /// Per-key activity sessions closed by a gap.
    #[serde(default)]
    pub session: Option<Spanned<SessionSpec>>,
    /// Overlapping windows of `size` starting every `slide`, kept as
    /// `slide`-long tiles per key.
    #[serde(default)]
    pub hopping: Option<Spanned<HoppingSpec>>,
    /// How long after completion a window still takes late events (default 0).
    #[serde(default)]
    pub allowed_lateness: Option<Spanned<String>>,
}

/// Tumbling window settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TumblingSpec {
    /// Window length, e.g. `5m`.
    pub size: Spanned<String>,
    /// Shift of the window grid from the epoch (default 0).
    #[serde(default)]
    pub offset: Option<Spanned<String>>,
}

/// Hopping (sliding) window settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoppingSpec {
    /// Window length, e.g. `30d`: a whole multiple of `slide`.
    pub size: Spanned<String>,
    /// Time between window starts, e.g. `1h`: the length of a tile.
    pub slide: Spanned<String>,
    /// Shift of the window grid from the epoch (default 0).
    #[serde(default)]
    pub offset: Option<Spanned<String>>,
}

/// Session window settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSpec {
    /// Inactivity that closes a session, e.g. `30m`.
    pub gap: Spanned<String>,
}

/// Triggers besides the on-time pane.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// Early panes while the window is open: `{ every: 1m }` of processing time.
    #[serde(default)]
    pub early: Option<EverySpec>,
    /// Late panes: `every_event`, `none`, or `{ every: 1m }`.
    #[serde(default)]
    pub late: Option<Spanned<LateSpec>>,
}

/// A processing-time period.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EverySpec {
    /// The period, e.g. `1m`.
    pub every: Spanned<String>,
}

/// The late trigger as written.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum LateSpec {
    Word(String),
    Every(EverySpec),
}

/// One feature: an aggregate (`agg`) or a derived expression (`expr`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// Column and field name of the feature.
    pub name: Spanned<String>,
    /// count, sum, mean, std, std_pop, var, min, max, first, last,
    /// count_distinct, quantile, collect_set.
    #[serde(default)]
    pub agg: Option<Spanned<String>>,
    /// `quantile`: which quantile, in [0, 1] (0.5 is the median).
    #[serde(default)]
    pub q: Option<Spanned<f64>>,
    /// `count_distinct`: how many distinct values are counted exactly
    /// before a HyperLogLog sketch takes over (default 1000).
    #[serde(default)]
    pub exact_up_to: Option<Spanned<u32>>,
    /// `collect_set`: how many values are kept (default 100); with more,
    /// the smallest are kept and `<name>_cut` is true.
    #[serde(default)]
    pub max: Option<Spanned<u32>>,
    /// A request-time feature: an expression over the group's features,
    /// `now`, `window_start` and `window_end` (milliseconds), evaluated when
    /// read (online: the request time; in a training set: the entity row's
    /// time), never stored.
    #[serde(default)]
    pub on_read: Option<Spanned<String>>,
    /// The event field aggregated (count without a field counts events).
    #[serde(default)]
    pub field: Option<Spanned<String>>,
    /// A filter over event fields: only matching events feed this feature.
    #[serde(default, rename = "where")]
    pub filter: Option<Spanned<String>>,
    /// A derived feature: arithmetic over other features of the same window
    /// and its `window_start` and `window_end` (milliseconds).
    #[serde(default)]
    pub expr: Option<Spanned<String>>,
    /// Output type of `first`/`last`: string, float, int or bool (default: inferred).
    #[serde(default, rename = "type")]
    pub value_type: Option<Spanned<String>>,
    /// What the feature means, for the registry.
    #[serde(default)]
    pub description: Option<String>,
    /// Value served online when the feature is missing.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
}

/// Output sinks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksSpec {
    /// The online store.
    #[serde(default)]
    pub online: Option<OnlineSpec>,
    /// The offline store.
    #[serde(default)]
    pub offline: Option<OfflineSpec>,
    /// Where bad input goes (default: files beside the offline store).
    #[serde(default)]
    pub dead_letter: Option<DeadLetterSpec>,
}

/// Online store settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineSpec {
    /// A Redis server, or a Redis Cluster.
    pub redis: Spanned<RedisSpec>,
}

/// Redis sink settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSpec {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS;
    /// `redis+cluster://host:port[,host:port...]` (or `rediss+cluster://`)
    /// for a Redis Cluster.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// A Redis Cluster's seed nodes (instead of `url`): `redis://host:port`
    /// or `rediss://host:port` each.
    #[serde(default)]
    pub cluster: Option<Spanned<Vec<Spanned<String>>>>,
    /// ACL user (instead of the URL's).
    #[serde(default)]
    pub username: Option<Spanned<String>>,
    /// Password of the user (instead of the URL's); `${NAME}` takes it from
    /// the environment.
    #[serde(default)]
    pub password: Option<Spanned<String>>,
    /// A file holding the password (a mounted secret).
    #[serde(default)]
    pub password_file: Option<Spanned<String>>,
    /// PEM file of the certificate authorities that sign the server's
    /// certificate (`rediss://` only; default: the system's trust store).
    #[serde(default)]
    pub ca_file: Option<Spanned<String>>,
    /// PEM client certificate for mutual TLS (with `key_file`).
    #[serde(default)]
    pub cert_file: Option<Spanned<String>>,
    /// PEM private key (PKCS #8) of the client certificate.
    #[serde(default)]
    pub key_file: Option<Spanned<String>>,
    /// Time to live of each entity's hash, e.g. `7d`.
    #[serde(default)]
    pub ttl: Option<Spanned<String>>,
    /// Key prefix (default `rill`): letters, digits, `_` and `-`.
    #[serde(default)]
    pub key_prefix: Option<Spanned<String>>,
    /// The read API reports a value older than this as `expired` (default: the ttl).
    #[serde(default)]
    pub max_age: Option<Spanned<String>>,
}

/// Offline store settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineSpec {
    /// Parquet files under a root directory.
    pub parquet: ParquetSpec,
}

/// Parquet sink settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetSpec {
    /// Root directory; files go to `<path>/<name>/date=YYYY-MM-DD/`.
    pub path: Spanned<String>,
    /// Page compression: `lz4` (LZ4_RAW, the default), `snappy`, `zstd` or `none`.
    #[serde(default)]
    pub compression: Option<Spanned<String>>,
}

/// Dead-letter settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSpec {
    /// Directory for dead-letter files.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// Kafka topic for dead letters (daemon only).
    #[serde(default)]
    pub topic: Option<Spanned<String>>,
}
