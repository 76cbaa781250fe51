//! The HTTP server under `rill serve` and the daemon's port: TLS, bearer
//! API keys, and limits that keep slow or oversized clients from holding
//! the server.
//!
//! - **Keys.** `--api-key-file` lists keys, one per line (`#` starts a
//!   comment), each either the key itself or `sha256:<hex>` of it. Only
//!   SHA-256 hashes are kept in memory; a request's `Authorization: Bearer`
//!   key is hashed and compared with every stored hash in constant time.
//!   [`OPEN_PATHS`] (`/healthz`, `/readyz`, `/metrics`) need no key.
//! - **Binding.** Serving a non-loopback address without keys is refused
//!   unless `--insecure-no-auth` is given ([`check_bind`]).
//! - **Limits.** Request headers are read within [`Limits::header_timeout`]
//!   and may hold [`Limits::max_header_bytes`]; a whole request (its body
//!   included) is answered within [`Limits::request_timeout`] or gets 408;
//!   a TLS handshake has [`Limits::header_timeout`] too; at most
//!   [`Limits::max_connections`] connections are served at once.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Paths served without a key: probes and the scraper.
pub const OPEN_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The API keys a server accepts, as SHA-256 hashes.
pub struct ApiKeys {
    hashes: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.hashes.len())
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl ApiKeys {
    /// Keys from a file (see the module documentation). Errors name the
    /// file and line, never a key.
    pub fn load(path: &Path) -> anyhow::Result<ApiKeys> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--api-key-file {}: {e}", path.display()))?;
        ApiKeys::parse(&text).map_err(|(line, msg)| {
            anyhow::anyhow!("--api-key-file {}:{line}: {msg}", path.display())
        })
    }

    /// Keys from the text of a key file; on error the line and what is wrong.
    pub fn parse(text: &str) -> Result<ApiKeys, (usize, String)> {
        let mut hashes = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Some(hex) = line.strip_prefix("sha256:") {
                let bytes = decode_hex(hex).filter(|b| b.len() == 32).ok_or((
                    i + 1,
                    "expected sha256: and 64 hexadecimal digits".to_string(),
                ))?;
                hashes.push(bytes.try_into().expect("32 bytes"));
            } else {
                if line.len() < 16 || line.chars().any(char::is_whitespace) {
                    return Err((
                        i + 1,
                        "a key is at least 16 characters without spaces".to_string(),
                    ));
                }
                hashes.push(sha256(line.as_bytes()));
            }
        }
        if hashes.is_empty() {
            return Err((1, "the file holds no key".to_string()));
        }
        Ok(ApiKeys { hashes })
    }

    /// Whether `key` is one of the keys; the time taken does not depend on
    /// which stored key it matches or how much of one it shares.
    pub fn accepts(&self, key: &str) -> bool {
        let h = sha256(key.as_bytes());
        let mut ok = subtle::Choice::from(0);
        for stored in &self.hashes {
            ok |= stored.ct_eq(&h);
        }
        ok.into()
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What a server refuses and how long it waits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// How a port is served.
#[derive(Clone, Default)]
pub struct HttpOptions {
    pub keys: Option<Arc<ApiKeys>>,
    pub tls: Option<tokio_native_tls::TlsAcceptor>,
    pub limits: Limits,
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOptions")
            .field("keys", &self.keys)
            .field("tls", &self.tls.is_some())
            .field("limits", &self.limits)
            .finish()
    }
}

impl HttpOptions {
    /// From the command line's files: keys, and a PEM certificate chain
    /// with its PKCS #8 key for TLS.
    pub fn load(
        api_key_file: Option<&Path>,
        tls_cert: Option<&Path>,
        tls_key: Option<&Path>,
    ) -> anyhow::Result<HttpOptions> {
        let keys = api_key_file.map(ApiKeys::load).transpose()?.map(Arc::new);
        let tls = match (tls_cert, tls_key) {
            (None, None) => None,
            (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        Ok(HttpOptions {
            keys,
            tls,
            limits: Limits::default(),
        })
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_native_tls::TlsAcceptor> {
    let c =
        std::fs::read(cert).map_err(|e| anyhow::anyhow!("--tls-cert {}: {e}", cert.display()))?;
    let k = std::fs::read(key).map_err(|e| anyhow::anyhow!("--tls-key {}: {e}", key.display()))?;
    let id = tokio_native_tls::native_tls::Identity::from_pkcs8(&c, &k).map_err(|e| {
        anyhow::anyhow!(
            "--tls-cert {} / --tls-key {}: {e} (expected PEM, the key in PKCS #8)",
            cert.display(),
            key.display()
        )
    })?;
    let acceptor = tokio_native_tls::native_tls::TlsAcceptor::builder(id)
        .min_protocol_version(Some(tokio_native_tls::native_tls::Protocol::Tlsv12))
        .build()?;
    Ok(tokio_native_tls::TlsAcceptor::from(acceptor))
}

/// Refuses to serve a non-loopback address without keys, unless the
/// operator said so.
pub fn check_bind(addr: SocketAddr, keys: bool, insecure_no_auth: bool) -> anyhow::Result<()> {
    if addr.ip().is_loopback() || keys || insecure_no_auth {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve {addr} without API keys: anyone who reaches it could read every \
         feature and the registry. Give --api-key-file FILE, bind 127.0.0.1, or pass \
         --insecure-no-auth to serve it open"
    )
}

/// `app` behind the keys (when there are any) and the request time limit.
pub fn protect(app: Router, opts: &HttpOptions) -> Router {
    let keys = opts.keys.clone();
    let timeout = opts.limits.request_timeout;
    let app = match keys {
        Some(keys) => app.layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let keys = keys.clone();
                async move { authorize(&keys, req, next).await }
            },
        )),
        None => app,
    };
    app.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| async move {
            match tokio::time::timeout(timeout, next.run(req)).await {
                Ok(r) => r,
                Err(_) => error(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!("request not answered within {}s", timeout.as_secs()),
                ),
            }
        },
    ))
}

async fn authorize(keys: &ApiKeys, req: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match presented {
        Some(k) if keys.accepts(k) => next.run(req).await,
        Some(_) => unauthorized("the API key is not valid"),
        None => unauthorized("an API key is needed: send Authorization: Bearer <key>"),
    }
}

fn unauthorized(msg: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, msg);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"rill\""),
    );
    r
}

fn error(status: StatusCode, msg: &str) -> Response {
    let body = serde_json::json!({ "error": msg }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Serves `app` on `listener` until `shutdown`, then lets open requests
/// finish (connections are closed after their current request).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    opts: HttpOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let app = protect(app, &opts);
    let limits = opts.limits;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("never closed"),
            _ = shutdown.cancelled() => break,
        };
        let (tcp, _peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = opts.tls.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let service = hyper_util::service::TowerToHyperService::new(app);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192));
            match tls {
                Some(acceptor) => {
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    drive(conn, stop).await;
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(tcp), service);
                    drive(conn, stop).await;
                }
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(limits.request_timeout, tracker.wait()).await;
    Ok(())
}

async fn drive<I, S>(conn: hyper::server::conn::http1::Connection<I, S>, stop: CancellationToken)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Send,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    <S::ResBody as hyper::body::Body>::Data: Send,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_hashed_and_checked() {
        let hashed = sha256(b"second-key-0123456789");
        let hex: String = hashed.iter().map(|b| format!("{b:02x}")).collect();
        let keys = ApiKeys::parse(&format!(
            "# team keys\nfirst-key-0123456789\n\nsha256:{hex}  # rotated in\n"
        ))
        .expect("a valid key file");
        assert!(keys.accepts("first-key-0123456789"));
        assert!(keys.accepts("second-key-0123456789"));
        assert!(!keys.accepts("first-key-012345678"));
        assert!(!keys.accepts(""));
        assert_eq!(format!("{keys:?}"), "ApiKeys(2 keys)");
        assert_eq!(ApiKeys::parse("short\n").err().expect("too short").0, 1);
        assert_eq!(
            ApiKeys::parse("\n\nsha256:abc\n")
                .err()
                .expect("bad hash")
                .0,
            3
        );
        assert!(ApiKeys::parse("# none\n").is_err());
    }

    #[test]
    fn open_addresses_need_keys_or_an_explicit_choice() {
        let lo: SocketAddr = "127.0.0.1:8080".parse().expect("address");
        let any: SocketAddr = "0.0.0.0:8080".parse().expect("address");
        let v6: SocketAddr = "[::1]:8080".parse().expect("address");
        assert!(check_bind(lo, false, false).is_ok());
        assert!(check_bind(v6, false, false).is_ok());
        let e = check_bind(any, false, false).unwrap_err().to_string();
        assert!(
            e.contains("--api-key-file") && e.contains("--insecure-no-auth"),
            "{e}"
        );
        assert!(check_bind(any, true, false).is_ok());
        assert!(check_bind(any, false, true).is_ok());
    }
}
