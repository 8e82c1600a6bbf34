//! Where job documents live: `DocumentStore` writes a document once when its job is created
//! and reads it back by location when a page runs (on whichever replica claims it).
//!
//! Locations are opaque strings stored with the job. This store keeps documents as files under
//! one directory (`<root>/<job id>/<index>.bin`, written and fsynced before the job is
//! acknowledged).

use std::io::Write;
use std::path::PathBuf;

use crate::error::{Error, Result};

pub struct DocumentStore {
    root: PathBuf,
}

fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        path: path.display().to_string(),
        source: e,
    }
}

impl DocumentStore {
    /// Documents as files under `root` (created if missing).
    pub fn local(root: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&root).map_err(io(&root))?;
        Ok(Self { root })
    }

    /// Stores the documents of a new job durably; their locations, in order.
    pub async fn put_job(&self, job_id: &str, docs: Vec<bytes::Bytes>) -> Result<Vec<String>> {
        let dir = self.root.join(job_id);
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let paths = docs
                .into_iter()
                .enumerate()
                .map(|(i, bytes)| {
                    let path = dir.join(format!("{i}.bin"));
                    let mut f = std::fs::File::create(&path).map_err(io(&path))?;
                    f.write_all(&bytes).map_err(io(&path))?;
                    f.sync_all().map_err(io(&path))?;
                    Ok(path.display().to_string())
                })
                .collect::<Result<Vec<_>>>()?;
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io(&dir))?;
            Ok(paths)
        })
        .await
        .map_err(|e| Error::Runtime(format!("write task: {e}")))?
    }

    /// The bytes at a location.
    pub async fn get(&self, location: &str) -> Result<Vec<u8>> {
        let path = PathBuf::from(location);
        tokio::task::spawn_blocking(move || std::fs::read(&path).map_err(io(&path)))
            .await
            .map_err(|e| Error::Runtime(format!("read task: {e}")))?
    }

    /// Deletes the documents at these locations (a swept or rolled-back job's); missing ones
    /// are ignored.
    pub async fn delete(&self, locations: Vec<String>) {
        let root = self.root.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let dirs: std::collections::BTreeSet<PathBuf> = locations
                .iter()
                .filter_map(|l| std::path::Path::new(l).parent().map(|d| d.to_path_buf()))
                .filter(|d| d.starts_with(&root))
                .collect();
            for d in dirs {
                let _ = std::fs::remove_dir_all(d);
            }
        })
        .await;
    }
}
