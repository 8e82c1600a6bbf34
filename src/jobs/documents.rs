//! Where job documents live: [`DocumentStore`] writes a job's documents once when the job is
//! created and reads them back by location when a page runs, on whichever replica claims it.
//! One interface over the `object_store` crate:
//! - `file:///PATH` (default `<data-dir>/documents`): files on a local or shared disk; each is
//!   fsynced before the job is acknowledged (`object_store` renames into place but does not
//!   sync);
//! - `s3://BUCKET/PREFIX`: an S3-compatible bucket, configured by the standard `AWS_*`
//!   variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//!   `AWS_ALLOW_HTTP`); many replicas share it.
//!
//! **Tenants own their documents.** The store's keys are laid out by tenant:
//! - `uploads/<tenant>/<job>/<i>.bin`: what the server writes for a job (multipart, JSON base64,
//!   streamed bodies). Nobody can name these in a reference, not even their own tenant: a
//!   reference is read in place and never copied, so a reference into an upload area would
//!   outlive or reach into another job's documents.
//! - `tenants/<tenant>/…`: where a tenant's own pipeline (or the operator) puts documents that
//!   jobs then name by URL ([`DocumentStore::reference`]). A caller can only name keys under its
//!   own tenant's prefix.
//!
//! A reference anywhere else (another tenant's prefix, an upload area, outside the store, a
//! path with `..`) gets exactly the answer of one that does not exist, before the store is
//! asked anything, so a reference is no oracle for what exists; no error names the store's
//! base or a local path. `<tenant>` is the tenant name (`_` for the anonymous caller of a server
//! without keys); tenant names are `A-Z a-z 0-9 _ . -` and never only dots
//! ([`crate::auth::check_name`]).
//!
//! Locations stored with jobs are URLs (`file:///…/uploads/T/JOB/0.bin`,
//! `s3://BUCKET/PREFIX/…`), so jobs written before this layout (`…/JOB/0.bin`) still read;
//! bare absolute paths written by the first release are read as files. Uploads are streamed
//! to the store in parts while they are hashed ([`DocumentStore::upload`]), so the HTTP layer
//! never holds a whole job document; `--max-document-bytes` bounds each.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Bytes per part of a streamed upload (S3's minimum part size is 5 MiB).
const PART_BYTES: usize = 8 << 20;

/// Where the server writes job documents, by tenant (never a reference's target).
const UPLOADS: &str = "uploads";
/// Where each tenant's own documents live, the only place a reference may name.
const TENANTS: &str = "tenants";

/// A tenant's directory name: the tenant itself (names are path-safe and never only dots),
/// `_` for the anonymous caller.
fn tenant_dir(tenant: &str) -> &str {
    if tenant.is_empty() || tenant.bytes().all(|b| b == b'.') {
        "_"
    } else {
        tenant
    }
}

/// A stored document: its location, size and SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub location: String,
    pub bytes: u64,
    pub sha256: String,
}

pub struct DocumentStore {
    store: Arc<dyn ObjectStore>,
    /// `file:///root` or `s3://bucket/prefix`, without a trailing slash.
    base: String,
    /// The key prefix inside the store.
    prefix: ObjectPath,
    /// The local root, for `file://` (fsync after writes).
    local_root: Option<PathBuf>,
    max_bytes: u64,
}

fn store_err(e: object_store::Error) -> Error {
    Error::Store(format!("document store: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `bytes`, lower-case hex (what [`Stored::sha256`] holds).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

impl DocumentStore {
    /// The store a URL names (`file:///PATH` or `s3://BUCKET/PREFIX`); documents over
    /// `max_bytes` are refused.
    pub fn open(url: &str, max_bytes: u64) -> Result<Self> {
        let url = url.trim_end_matches('/');
        if let Some(path) = url.strip_prefix("file://") {
            let root = PathBuf::from(path);
            if !root.is_absolute() {
                return Err(Error::InvalidOption(format!(
                    "--object-store-url file:// needs an absolute path, got {path:?}"
                )));
            }
            std::fs::create_dir_all(&root).map_err(|e| Error::Io {
                path: root.display().to_string(),
                source: e,
            })?;
            let fs =
                object_store::local::LocalFileSystem::new_with_prefix(&root).map_err(store_err)?;
            return Ok(Self {
                store: Arc::new(fs),
                base: format!("file://{}", root.display()),
                prefix: ObjectPath::default(),
                local_root: Some(root),
                max_bytes,
            });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::InvalidOption(
                    "--object-store-url s3://BUCKET/PREFIX needs a bucket".into(),
                ));
            }
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(store_err)?;
            return Ok(Self {
                store: Arc::new(s3),
                base: url.to_string(),
                prefix: ObjectPath::from(prefix),
                local_root: None,
                max_bytes,
            });
        }
        Err(Error::InvalidOption(format!(
            "--object-store-url must be file:///PATH or s3://BUCKET/PREFIX, got {url:?}"
        )))
    }

    /// The store's own URL (`file:///root` or `s3://bucket/prefix`).
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn key(&self, name: &str) -> ObjectPath {
        self.prefix
            .parts()
            .chain(ObjectPath::from(name).parts())
            .collect()
    }

    /// The key of document `index` of `job` of `tenant`.
    fn upload_key(&self, tenant: &str, job_id: &str, index: usize) -> ObjectPath {
        self.key(&format!(
            "{UPLOADS}/{}/{job_id}/{index}.bin",
            tenant_dir(tenant)
        ))
    }

    fn location_of(&self, key: &ObjectPath) -> String {
        let rel = key
            .as_ref()
            .strip_prefix(self.prefix.as_ref())
            .unwrap_or(key.as_ref())
            .trim_start_matches('/');
        format!("{}/{rel}", self.base)
    }

    /// The key of a location in this store, or None when it is elsewhere.
    fn key_of(&self, location: &str) -> Option<ObjectPath> {
        let rel = location.strip_prefix(&self.base)?.strip_prefix('/')?;
        if rel.is_empty()
            || rel
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return None;
        }
        Some(self.key(rel))
    }

    /// Streams `body` to `uploads/<tenant>/<job>/<index>.bin` in parts while hashing it. Over
    /// `max_bytes` the upload is aborted and [`Error::PayloadTooLarge`] returned.
    pub async fn upload<S, E>(
        &self,
        tenant: &str,
        job_id: &str,
        index: usize,
        mut body: S,
    ) -> Result<Stored>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let key = self.upload_key(tenant, job_id, index);
        let upload = self.store.put_multipart(&key).await.map_err(store_err)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let mut hash = Sha256::new();
        let mut total = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(Error::BadRequest(format!("reading the upload: {e}")));
                }
            };
            total += chunk.len() as u64;
            if total > self.max_bytes {
                let _ = writer.abort().await;
                return Err(Error::PayloadTooLarge {
                    limit: self.max_bytes as usize,
                });
            }
            hash.update(&chunk);
            writer.wait_for_capacity(4).await.map_err(store_err)?;
            writer.put(chunk);
        }
        if total == 0 {
            let _ = writer.abort().await;
            return Err(Error::EmptyInput);
        }
        writer.finish().await.map_err(store_err)?;
        self.sync(&key).await?;
        Ok(Stored {
            location: self.location_of(&key),
            bytes: total,
            sha256: hex(&hash.finalize()),
        })
    }

    /// Stores bytes already in memory (multipart and JSON bodies, bounded by the body limit).
    pub async fn put(
        &self,
        tenant: &str,
        job_id: &str,
        index: usize,
        bytes: Bytes,
    ) -> Result<Stored> {
        if bytes.len() as u64 > self.max_bytes {
            return Err(Error::PayloadTooLarge {
                limit: self.max_bytes as usize,
            });
        }
        let key = self.upload_key(tenant, job_id, index);
        let sha256 = sha256_hex(&bytes);
        let n = bytes.len() as u64;
        self.store
            .put(&key, bytes.into())
            .await
            .map_err(store_err)?;
        self.sync(&key).await?;
        Ok(Stored {
            location: self.location_of(&key),
            bytes: n,
            sha256,
        })
    }

    /// A document of `tenant`'s, named by its URL: it must lie under `tenants/<tenant>/` of
    /// this store, exist and fit `max_bytes`. Anything else is the one answer "does not exist"
    /// (see the module docs). Only its metadata is read: the caller reads it once
    /// ([`DocumentStore::get`], after reserving its size) and hashes what it read, so the
    /// returned `sha256` is empty.
    pub async fn reference(&self, tenant: &str, url: &str) -> Result<Stored> {
        let missing = || {
            Error::InvalidOption(format!(
                "document url {url:?} does not exist (a job may name documents under \
                 {TENANTS}/<your tenant>/ of this server's object store)"
            ))
        };
        let own = ObjectPath::from(format!("{TENANTS}/{}", tenant_dir(tenant)));
        let key = self
            .key_of(url)
            .filter(|k| k.prefix_matches(&self.key(own.as_ref())))
            .filter(|k| k.parts().count() > self.prefix.parts().count() + 2)
            .ok_or_else(missing)?;
        let meta = self.store.head(&key).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => missing(),
            other => store_err(other),
        })?;
        if meta.size as u64 > self.max_bytes {
            return Err(Error::PayloadTooLarge {
                limit: self.max_bytes as usize,
            });
        }
        Ok(Stored {
            location: self.location_of(&key),
            bytes: meta.size as u64,
            sha256: String::new(),
        })
    }

    /// The bytes at a location.
    pub async fn get(&self, location: &str) -> Result<Vec<u8>> {
        if location.starts_with('/') {
            // A first-release row: a bare path.
            let path = PathBuf::from(location);
            return tokio::task::spawn_blocking(move || {
                std::fs::read(&path).map_err(|e| Error::Io {
                    path: path.display().to_string(),
                    source: e,
                })
            })
            .await
            .map_err(|e| Error::Runtime(format!("read task: {e}")))?;
        }
        let key = self.key_of(location).ok_or_else(|| {
            Error::Store(format!(
                "document {location:?} is not in this server's object store"
            ))
        })?;
        let got = self.store.get(&key).await.map_err(store_err)?;
        // `Vec::from` takes the buffer over without a copy when the store read into a `Vec`.
        Ok(Vec::from(got.bytes().await.map_err(store_err)?))
    }

    /// Deletes the documents at these locations (a swept or rolled-back job's); missing ones
    /// and locations elsewhere are ignored.
    pub async fn delete(&self, locations: Vec<String>) {
        for l in locations {
            if l.starts_with('/') {
                let _ = tokio::fs::remove_file(&l).await;
                if let Some(dir) = std::path::Path::new(&l).parent() {
                    let _ = tokio::fs::remove_dir(dir).await;
                }
                continue;
            }
            if let Some(key) = self.key_of(&l) {
                let _ = self.store.delete(&key).await;
                // A job's directory goes with its last document (object stores have no
                // directories; local disks do).
                if let Some(dir) = self
                    .local_root
                    .as_ref()
                    .and_then(|r| r.join(key.as_ref()).parent().map(|d| d.to_path_buf()))
                {
                    let _ = tokio::fs::remove_dir(dir).await;
                }
            }
        }
    }

    /// Free bytes on the disk of a `file://` store (None for S3, which has no floor).
    pub fn free_bytes(&self) -> Option<u64> {
        let root = self.local_root.as_ref()?;
        let path = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).ok()?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is a NUL-terminated string and `st` a valid out-parameter.
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
        (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
    }

    /// fsyncs a file just written under the local root, and every directory from its own up to
    /// the root: a job's directory (and its tenant's) may be new, and a new directory's entry
    /// lives in its parent, so syncing only the file's own directory could lose the file in a
    /// crash after the job was acknowledged.
    async fn sync(&self, key: &ObjectPath) -> Result<()> {
        let Some(root) = self.local_root.clone() else {
            return Ok(());
        };
        let path = root.join(key.as_ref());
        tokio::task::spawn_blocking(move || {
            let io = |e| Error::Io {
                path: path.display().to_string(),
                source: e,
            };
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io)?;
            for dir in path.ancestors().skip(1) {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io)?;
                if dir == root {
                    break;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Runtime(format!("sync task: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_round_trip_references_and_refusals() {
        let dir = std::env::temp_dir().join(format!("ocr-docs-{}", uuid::Uuid::new_v4()));
        let s = DocumentStore::open(&format!("file://{}", dir.display()), 10).unwrap();
        let a = s
            .put("acme", "j", 0, Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert_eq!(
            a.location,
            format!("file://{}/uploads/acme/j/0.bin", dir.display())
        );
        assert_eq!(s.get(&a.location).await.unwrap(), b"hello");
        let chunks = futures_util::stream::iter(vec![
            Ok::<_, std::io::Error>(Bytes::from_static(b"hel")),
            Ok(Bytes::from_static(b"lo")),
        ]);
        let b = s.upload("acme", "j", 1, chunks).await.unwrap();
        assert_eq!((b.bytes, b.sha256.clone()), (5, a.sha256.clone()));
        let big =
            futures_util::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 11]))]);
        assert!(matches!(
            s.upload("acme", "j", 2, big).await,
            Err(Error::PayloadTooLarge { .. })
        ));
        // A tenant's own area: referenced in place.
        let own = dir.join("tenants/acme/in/doc.png");
        std::fs::create_dir_all(own.parent().unwrap()).unwrap();
        std::fs::write(&own, b"hello").unwrap();
        std::fs::create_dir_all(dir.join("tenants/globex")).unwrap();
        std::fs::write(dir.join("tenants/globex/doc.png"), b"hello").unwrap();
        let own_url = format!("file://{}", own.display());
        let r = s.reference("acme", &own_url).await.unwrap();
        assert_eq!((r.location.as_str(), r.bytes), (own_url.as_str(), 5));
        assert_eq!(sha256_hex(&s.get(&r.location).await.unwrap()), a.sha256);
        // Everything else, existing or not, gets the answer of a missing document, which names
        // no path of the server's.
        let base = format!("file://{}", dir.display());
        for (tenant, bad) in [
            ("globex", own_url.clone()),
            ("acme", a.location.clone()),
            ("acme", format!("{base}/tenants/globex/doc.png")),
            ("acme", format!("{base}/tenants/acme")),
            (
                "acme",
                format!("{base}/tenants/acme/in/../../globex/doc.png"),
            ),
            ("acme", format!("{base}/tenants/acme/missing.png")),
            ("acme", "s3://other/j/0.bin".to_string()),
            ("acme", format!("{base}/../etc/passwd")),
            ("acme", "file:///etc/passwd".to_string()),
            ("", format!("{base}/tenants/acme/in/doc.png")),
        ] {
            let e = s.reference(tenant, &bad).await.unwrap_err();
            let text = e.to_string().replace(&bad, "URL");
            assert_eq!(
                (e.code(), text.as_str()),
                (
                    "invalid_option",
                    "invalid option: document url \"URL\" does not exist (a job may name \
                     documents under tenants/<your tenant>/ of this server's object store)"
                ),
                "{tenant} {bad}"
            );
        }
        s.delete(vec![a.location.clone()]).await;
        assert!(s.get(&a.location).await.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
