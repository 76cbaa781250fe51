//! Secrets in pipeline files: passwords and keys given inline (usually as
//! `${NAME}`, an environment variable substituted into the parsed scalar)
//! or as `<field>_file:`, a path to a mounted secret file.
//!
//! A [`Secret`] never prints its value: `Debug` and `Display` show `***`,
//! so a secret cannot reach a log line, an error or a registry document by
//! accident. Code that must hand the value to a client calls
//! [`Secret::expose`].

use std::fmt;

/// A password or key that is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the client that needs it and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Reads a secret file: its whole content without one trailing line end
/// (how `kubectl create secret --from-file` and editors leave them).
pub fn read_secret_file(path: &str) -> std::io::Result<Secret> {
    let mut s = std::fs::read_to_string(path)?;
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(Secret(s))
}

/// Whether a client property (librdkafka's `properties:`) holds a secret by
/// its name; such values are shown as `***`.
pub fn is_secret_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "key.pem",
        "keystore",
        "credential",
        "jaas",
    ]
    .iter()
    .any(|w| n.contains(w))
        || n.ends_with(".key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_prints_as_stars() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn secret_properties_are_known_by_name() {
        for p in [
            "sasl.password",
            "ssl.key.password",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
            "ssl.keystore.password",
        ] {
            assert!(is_secret_property(p), "{p}");
        }
        for p in [
            "fetch.min.bytes",
            "ssl.ca.location",
            "sasl.username",
            "client.id",
        ] {
            assert!(!is_secret_property(p), "{p}");
        }
    }
}
