//! Where rill's files live: a local directory, or object storage (S3 and
//! S3-compatible stores, Google Cloud Storage, Azure Blob Storage) named
//! by a URL such as `s3://bucket/prefix`. See docs/storage.md.
//!
//! Paths stay `PathBuf`s through the rest of rill: a root given as a URL
//! keeps its text (`s3://bucket/prefix/group` is a valid `Path`), and the
//! few places that do I/O ask [`is_url`] and come here. Files bound for a
//! store are written to a local staging directory first (Parquet needs a
//! seekable file) and go up whole, so an object appears complete or not at
//! all; above [`MULTIPART_BYTES`] as a multipart upload, completed only
//! after its last part.
//!
//! The stores are built from the environment (`AWS_*`, `GOOGLE_*`,
//! `AZURE_*`, as each store's own tools read them), once per bucket, and
//! every call runs on one small runtime of this module's own, so the
//! synchronous callers (the daemon's worker thread, replay) block on it
//! without needing a runtime of their own. No error or log line carries a
//! credential: messages name the URL only.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

/// Files above this size go up as multipart uploads (completed at the end).
pub const MULTIPART_BYTES: u64 = 32 << 20;

/// The URL schemes rill knows, and the store each names.
pub const SCHEMES: &[(&str, &str)] = &[
    ("s3", "Amazon S3 or an S3-compatible store"),
    ("s3a", "Amazon S3 or an S3-compatible store"),
    ("gs", "Google Cloud Storage"),
    ("az", "Azure Blob Storage"),
    ("abfs", "Azure Data Lake Storage"),
    ("abfss", "Azure Data Lake Storage"),
];

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(
        "{url}: unknown object store {scheme:?}: expected one of s3, s3a, gs, az, abfs, abfss"
    )]
    UnknownScheme { url: String, scheme: String },
    #[error("{url}: expected <scheme>://<bucket>/<path>")]
    BadUrl { url: String },
    #[error("{url}: cannot configure the object store: {message}")]
    Config { url: String, message: String },
    #[error("{what} {url}: {source}")]
    Store {
        what: &'static str,
        url: String,
        source: object_store::Error,
    },
    #[error("{what} {path}: {source}")]
    Local {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The store's answer to a conditional write that did not happen: the
/// object changed since the version the writer last saw (or exists, for a
/// create).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict;

/// The version of an object, as a conditional write names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Version {
    pub e_tag: Option<String>,
    pub version: Option<String>,
}

/// Whether `p` names object storage (`<scheme>://...`) rather than a local path.
pub fn is_url(p: &Path) -> bool {
    p.to_str().is_some_and(|s| scheme_of(s).is_some())
}

fn scheme_of(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once("://")?;
    let ok = !scheme.is_empty()
        && scheme.as_bytes()[0].is_ascii_alphabetic()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    ok.then_some(scheme)
}

/// Checks a URL's form and scheme without any I/O (pipeline validation).
pub fn check_url(url: &str) -> Result<(), StorageError> {
    split(url).map(|_| ())
}

/// `scheme://authority/key` into (scheme, `scheme://authority`, key).
fn split(url: &str) -> Result<(&str, &str, &str), StorageError> {
    let scheme = scheme_of(url).ok_or_else(|| StorageError::BadUrl { url: url.into() })?;
    if !SCHEMES.iter().any(|(s, _)| *s == scheme) {
        return Err(StorageError::UnknownScheme {
            url: url.into(),
            scheme: scheme.into(),
        });
    }
    let rest = &url[scheme.len() + 3..];
    let (authority, key) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(StorageError::BadUrl { url: url.into() });
    }
    let root_len = scheme.len() + 3 + authority.len();
    Ok((scheme, &url[..root_len], key.trim_matches('/')))
}

/// The URL of `rel` under `root` (either may end in `/`).
pub fn join(root: &str, rel: &str) -> String {
    format!(
        "{}/{}",
        root.trim_end_matches('/'),
        rel.trim_start_matches('/')
    )
}

type Stores = Mutex<HashMap<String, Arc<dyn ObjectStore>>>;

fn stores() -> &'static Stores {
    static S: OnceLock<Stores> = OnceLock::new();
    S.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Sets up the store of `root` (`scheme://bucket`) with explicit options
/// on top of the environment, e.g. `[("endpoint", "http://127.0.0.1:8333"),
/// ("allow_http", "true")]`: the keys of each store's builder
/// (`object_store`'s `AmazonS3ConfigKey`, `GoogleConfigKey`,
/// `AzureConfigKey`). For embedders and tests that cannot set the
/// process's environment; replaces a store built before.
pub fn configure(root: &str, options: &[(&str, &str)]) -> Result<(), StorageError> {
    let (scheme, root, _) = split(root)?;
    let bad = |message: String| StorageError::Config {
        url: root.into(),
        message,
    };
    let bucket = &root[scheme.len() + 3..];
    let store: Arc<dyn ObjectStore> = match scheme {
        "s3" | "s3a" => {
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            for (k, v) in options {
                b = b.with_config(k.parse().map_err(|e| bad(format!("{e}")))?, *v);
            }
            Arc::new(b.build().map_err(|e| bad(e.to_string()))?)
        }
        "gs" => {
            let mut b =
                object_store::gcp::GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
            for (k, v) in options {
                b = b.with_config(k.parse().map_err(|e| bad(format!("{e}")))?, *v);
            }
            Arc::new(b.build().map_err(|e| bad(e.to_string()))?)
        }
        _ => {
            let mut b = object_store::azure::MicrosoftAzureBuilder::from_env().with_url(root);
            for (k, v) in options {
                b = b.with_config(k.parse().map_err(|e| bad(format!("{e}")))?, *v);
            }
            Arc::new(b.build().map_err(|e| bad(e.to_string()))?)
        }
    };
    stores()
        .lock()
        .expect("store map poisoned: a store builder panicked")
        .insert(root.to_string(), store);
    Ok(())
}

/// The store of `url`'s bucket (built once) and the object's key.
fn open(url: &str) -> Result<(Arc<dyn ObjectStore>, ObjPath), StorageError> {
    let (scheme, root, key) = split(url)?;
    let key = ObjPath::parse(key).map_err(|e| StorageError::Config {
        url: url.into(),
        message: e.to_string(),
    })?;
    let mut map = stores()
        .lock()
        .expect("store map poisoned: a store builder panicked");
    if let Some(s) = map.get(root) {
        return Ok((s.clone(), key));
    }
    let bucket = &root[scheme.len() + 3..];
    let built: object_store::Result<Arc<dyn ObjectStore>> = match scheme {
        "s3" | "s3a" => object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
        "gs" => object_store::gcp::GoogleCloudStorageBuilder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
        _ => object_store::azure::MicrosoftAzureBuilder::from_env()
            .with_url(root)
            .build()
            .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
    };
    let store = built.map_err(|e| StorageError::Config {
        url: root.into(),
        message: e.to_string(),
    })?;
    map.insert(root.to_string(), store.clone());
    Ok((store, key))
}

/// Runs `f` on this module's runtime and waits for it: callable from any
/// thread, inside a tokio runtime or not.
fn block<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rill-storage")
            .enable_all()
            .build()
            .expect("a runtime for object storage: the machine can start threads")
    });
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv()
        .expect("storage call ended without an answer: its task panicked")
}

fn store_err(what: &'static str, url: &str) -> impl FnOnce(object_store::Error) -> StorageError {
    let url = url.to_string();
    move |source| StorageError::Store { what, url, source }
}

/// Uploads a local file to `url`: one request, or a multipart upload
/// completed after its last part. The object appears whole or not at all.
pub fn put_file(local: &Path, url: &str) -> Result<(), StorageError> {
    let (store, key) = open(url)?;
    let data = std::fs::read(local).map_err(|source| StorageError::Local {
        what: "failed to read",
        path: local.to_path_buf(),
        source,
    })?;
    block(async move {
        if (data.len() as u64) <= MULTIPART_BYTES {
            store.put(&key, PutPayload::from(data)).await?;
            return Ok(());
        }
        let mut up = store.put_multipart(&key).await?;
        let data = Bytes::from(data);
        let part = 16 << 20;
        let mut parts = Vec::new();
        for start in (0..data.len()).step_by(part) {
            let end = (start + part).min(data.len());
            parts.push(up.put_part(PutPayload::from(data.slice(start..end))));
        }
        let sent: object_store::Result<()> = async {
            for p in parts {
                p.await?;
            }
            Ok(())
        }
        .await;
        match sent {
            Ok(()) => up.complete().await.map(|_| ()),
            Err(e) => {
                let _ = up.abort().await;
                Err(e)
            }
        }
    })
    .map_err(store_err("failed to upload to", url))
}

/// Writes `body` to `url` (overwriting).
pub fn put(url: &str, body: Vec<u8>) -> Result<(), StorageError> {
    let (store, key) = open(url)?;
    block(async move { store.put(&key, PutPayload::from(body)).await.map(|_| ()) })
        .map_err(store_err("failed to write", url))
}

/// Writes `body` to `url` only if the object is still at `expected`
/// (`None`: only if there is no object yet). Returns the new version, or
/// [`Conflict`] when the store refused the write.
pub fn put_if(
    url: &str,
    body: Vec<u8>,
    expected: Option<&Version>,
) -> Result<Result<Version, Conflict>, StorageError> {
    let (store, key) = open(url)?;
    let mode = match expected {
        Some(v) => PutMode::Update(UpdateVersion {
            e_tag: v.e_tag.clone(),
            version: v.version.clone(),
        }),
        None => PutMode::Create,
    };
    let r = block(async move {
        store
            .put_opts(
                &key,
                PutPayload::from(body),
                PutOptions {
                    mode,
                    ..Default::default()
                },
            )
            .await
    });
    match r {
        Ok(p) => Ok(Ok(Version {
            e_tag: p.e_tag,
            version: p.version,
        })),
        Err(object_store::Error::Precondition { .. })
        | Err(object_store::Error::AlreadyExists { .. }) => Ok(Err(Conflict)),
        Err(e) => Err(store_err("failed to write", url)(e)),
    }
}

/// The object at `url` and its version, or `None` when there is none.
pub fn get(url: &str) -> Result<Option<(Bytes, Version)>, StorageError> {
    let (store, key) = open(url)?;
    let r = block(async move {
        let g = store.get(&key).await?;
        let v = Version {
            e_tag: g.meta.e_tag.clone(),
            version: g.meta.version.clone(),
        };
        Ok::<_, object_store::Error>((g.bytes().await?, v))
    });
    match r {
        Ok(x) => Ok(Some(x)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(store_err("failed to read", url)(e)),
    }
}

/// Whether an object exists at `url`.
pub fn exists(url: &str) -> Result<bool, StorageError> {
    let (store, key) = open(url)?;
    match block(async move { store.head(&key).await }) {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(store_err("failed to look up", url)(e)),
    }
}

/// Copies `from` to `to` inside one store (a server-side copy: the new
/// object appears whole). Returns false when `from` does not exist.
pub fn copy(from: &str, to: &str) -> Result<bool, StorageError> {
    let (store, src) = open(from)?;
    let (_, dest) = open(to)?;
    match block(async move { store.copy(&src, &dest).await }) {
        Ok(()) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(store_err("failed to copy", from)(e)),
    }
}

/// Deletes `url`; an object already gone is no error.
pub fn delete(url: &str) -> Result<(), StorageError> {
    let (store, key) = open(url)?;
    match block(async move { store.delete(&key).await }) {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(store_err("failed to delete", url)(e)),
    }
}

/// Every object under the "directory" `url` (recursively), as paths
/// relative to it, sorted.
pub fn list(url: &str) -> Result<Vec<String>, StorageError> {
    let (store, key) = open(url)?;
    let prefix = key.clone();
    let r = block(async move {
        let p = (!prefix.as_ref().is_empty()).then_some(&prefix);
        store
            .list(p)
            .map_ok(|m| m.location)
            .try_collect::<Vec<_>>()
            .await
    });
    let found = r.map_err(store_err("failed to list", url))?;
    let base = key.as_ref();
    let mut out: Vec<String> = found
        .into_iter()
        .filter_map(|loc| {
            let s = loc.as_ref();
            if base.is_empty() {
                Some(s.to_string())
            } else {
                s.strip_prefix(base)
                    .and_then(|r| r.strip_prefix('/'))
                    .map(str::to_string)
            }
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Copies every object under `url` into the local directory `dir`, at
/// the same relative paths.
pub fn download(url: &str, dir: &Path) -> Result<usize, StorageError> {
    let names = list(url)?;
    for rel in &names {
        let (bytes, _) = match get(&join(url, rel))? {
            Some(x) => x,
            None => continue,
        };
        let path = dir.join(rel);
        let local = |source| StorageError::Local {
            what: "failed to write",
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(local)?;
        }
        std::fs::write(&path, &bytes).map_err(local)?;
    }
    Ok(names.len())
}

/// A local staging directory for files bound for `url`: one per process
/// and URL, under the system's temporary directory.
pub fn staging_dir(url: &str) -> PathBuf {
    let h = xxhash_rust::xxh3::xxh3_64(url.as_bytes());
    std::env::temp_dir()
        .join(format!("rill-staging-{}", std::process::id()))
        .join(format!("{h:016x}"))
}

/// A local directory that stands for a root in object storage: files are
/// written under `local` and go to the same relative path under `url`.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub local: PathBuf,
    pub url: String,
}

impl Mirror {
    /// A mirror for `root` when it is a URL (after checking the URL), or
    /// `None` for a local root.
    pub fn of(root: &Path) -> Result<Option<Mirror>, StorageError> {
        if !is_url(root) {
            return Ok(None);
        }
        let url = root.to_string_lossy().trim_end_matches('/').to_string();
        check_url(&url)?;
        Ok(Some(Mirror {
            local: staging_dir(&url),
            url,
        }))
    }

    /// The URL of a local path under the mirror (`None` outside it).
    pub fn url_of(&self, local: &Path) -> Option<String> {
        let rel = local.strip_prefix(&self.local).ok()?;
        let rel: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
        Some(join(&self.url, &rel.join("/")))
    }

    /// The local path of a relative path (`a/b/c`).
    pub fn local_of(&self, rel: &str) -> PathBuf {
        rel.split('/').fold(self.local.clone(), |p, c| p.join(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_bucket_and_key_and_unknown_schemes_are_refused() {
        assert_eq!(
            split("s3://bucket/a/b/").expect("a valid URL"),
            ("s3", "s3://bucket", "a/b")
        );
        assert_eq!(split("gs://b").expect("a valid URL"), ("gs", "gs://b", ""));
        assert!(matches!(
            split("ftp://host/x"),
            Err(StorageError::UnknownScheme { .. })
        ));
        assert!(matches!(split("s3:///x"), Err(StorageError::BadUrl { .. })));
        assert!(is_url(Path::new("s3://b/x")));
        assert!(!is_url(Path::new("/tmp/x")));
        assert!(!is_url(Path::new("relative/dir")));
        assert_eq!(join("s3://b/p/", "/g/x"), "s3://b/p/g/x");
    }

    #[test]
    fn a_mirror_maps_local_paths_to_urls() {
        let m = Mirror::of(Path::new("s3://bucket/prefix/"))
            .expect("a valid URL")
            .expect("a URL has a mirror");
        let f = m
            .local
            .join("group")
            .join("date=2024-01-01")
            .join("part-x.parquet");
        assert_eq!(
            m.url_of(&f).expect("under the mirror"),
            "s3://bucket/prefix/group/date=2024-01-01/part-x.parquet"
        );
        assert_eq!(m.local_of("group/x"), m.local.join("group").join("x"));
        assert!(Mirror::of(Path::new("/tmp/x"))
            .expect("a local path")
            .is_none());
    }
}
