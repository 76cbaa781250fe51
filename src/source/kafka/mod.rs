//! Kafka: the client settings every rill client of a pipeline's brokers
//! shares (the daemon's consumer, its dead-letter producer, `rill gen`),
//! security included. The consumer loop itself is `daemon::worker`.

use rdkafka::ClientConfig;

use crate::config::{KafkaProtocol, KafkaSource};

/// A librdkafka configuration for `brokers` (the pipeline's, or a
/// command-line override) with the pipeline's TLS and SASL settings and
/// its extra `properties:` (applied last, so they can override anything).
pub fn client_config(k: &KafkaSource, brokers: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers);
    let sec = &k.security;
    if sec.protocol != KafkaProtocol::Plaintext {
        cfg.set("security.protocol", sec.protocol.as_str());
    }
    if sec.protocol.uses_tls() {
        if let Some(f) = &sec.ca_file {
            cfg.set("ssl.ca.location", f.display().to_string());
        }
        if let Some(f) = &sec.cert_file {
            cfg.set("ssl.certificate.location", f.display().to_string());
        }
        if let Some(f) = &sec.key_file {
            cfg.set("ssl.key.location", f.display().to_string());
        }
        if let Some(p) = &sec.key_password {
            cfg.set("ssl.key.password", p.expose());
        }
        cfg.set(
            "ssl.endpoint.identification.algorithm",
            if sec.verify_hostname { "https" } else { "none" },
        );
    }
    if let Some(s) = &sec.sasl {
        cfg.set("sasl.mechanism", &s.mechanism);
        if let Some(u) = &s.username {
            cfg.set("sasl.username", u);
        }
        if let Some(p) = &s.password {
            cfg.set("sasl.password", p.expose());
        }
        if let Some(n) = &s.kerberos_service_name {
            cfg.set("sasl.kerberos.service.name", n);
        }
        if let Some(n) = &s.kerberos_principal {
            cfg.set("sasl.kerberos.principal", n);
        }
        if let Some(f) = &s.kerberos_keytab {
            cfg.set("sasl.kerberos.keytab", f.display().to_string());
        }
    }
    for (name, value) in &k.properties {
        cfg.set(name, value);
    }
    cfg
}

/// The client settings as `name = value` lines with every secret shown as
/// `***` (for `rill validate --explain` style output and tests).
pub fn describe(cfg: &ClientConfig) -> Vec<String> {
    let mut lines: Vec<String> = cfg
        .config_map()
        .iter()
        .map(|(k, v)| {
            if crate::config::secret::is_secret_property(k) {
                format!("{k} = ***")
            } else {
                format!("{k} = {v}")
            }
        })
        .collect();
    lines.sort();
    lines
}
