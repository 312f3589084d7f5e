//! Certificate rotation without a restart: the files are checked every
//! `server.tls.reload_interval_s`, and a changed pair is re-read and swapped
//! into the [`SniResolver`] as a whole new set. A pair that fails to load
//! (unreadable, not PEM, key not matching) is refused with its error logged
//! and the old certificate keeps serving; it is tried again when either file
//! changes again (as when a deploy writes the certificate, then the key).

use super::resolver::{observe_expiry, CertSet, Entry, SniResolver};
use super::{load, Loaded};
use crate::ops::Metrics;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use sluice_config::CertFiles;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What identifies a file's version: modification time (ns), size and
/// inode (a rename or a Kubernetes secret's symlink swap changes it);
/// `None` while the file cannot be stat'ed.
type FileStamp = Option<(i64, i64, u64, u64)>;

fn stamp(path: &Path) -> FileStamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.mtime(), m.mtime_nsec(), m.len(), m.ino()))
}

/// Both files' stamps.
fn stamps(files: &CertFiles) -> (FileStamp, FileStamp) {
    (stamp(&files.cert_file), stamp(&files.key_file))
}

/// A tracked certificate and the file versions last tried.
struct Watched {
    entry: Entry,
    seen: (FileStamp, FileStamp),
}

/// The background task that re-reads changed certificate files.
pub struct CertReloader {
    resolver: Arc<SniResolver>,
    /// Default first, then the SNI entries (the order [`CertSet`] expects).
    watched: Mutex<Vec<Watched>>,
    interval: Duration,
    metrics: Arc<Metrics>,
}

impl CertReloader {
    pub(super) fn new(
        resolver: Arc<SniResolver>,
        entries: Vec<Entry>,
        interval: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let watched = entries
            .into_iter()
            .map(|entry| Watched {
                seen: stamps(&entry.files),
                entry,
            })
            .collect();
        CertReloader {
            resolver,
            watched: Mutex::new(watched),
            interval,
            metrics,
        }
    }

    /// Re-reads every pair whose files changed since last tried; swaps in
    /// a new set when one loaded. Returns how many were swapped in.
    pub fn check(&self) -> usize {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        let mut reloaded = 0;
        for w in watched.iter_mut() {
            let now = stamps(&w.entry.files);
            if now == w.seen {
                continue;
            }
            w.seen = now;
            let reloads = &self.metrics.edge.tls_reloads;
            match load(&w.entry.files) {
                Ok(Loaded { key, not_after }) => {
                    w.entry.key = key;
                    observe_expiry(&self.metrics, &w.entry.name, not_after);
                    reloads.with_label_values(&["reloaded"]).inc();
                    tracing::info!(certificate = %w.entry.name, not_after, "TLS certificate reloaded");
                    reloaded += 1;
                }
                Err(error) => {
                    reloads.with_label_values(&["refused"]).inc();
                    tracing::error!(
                        certificate = %w.entry.name,
                        error = %error,
                        kind = error.kind(),
                        "TLS certificate not reloaded; the previous one keeps serving"
                    );
                }
            }
        }
        if reloaded > 0 {
            let entries: Vec<&Entry> = watched.iter().map(|w| &w.entry).collect();
            if let Some(set) = CertSet::from_entry_refs(&entries) {
                self.resolver.swap(set);
            }
        }
        reloaded
    }
}

#[async_trait]
impl BackgroundService for CertReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            self.check();
        }
    }
}
