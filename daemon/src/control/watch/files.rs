//! The config file and the certificate, key, CA and CRL files it names: a change asks for a
//! reload.
//!
//! The reader (`edgegw-kernel-events`, files) watches each file through its directory and every
//! directory on its symlink chain, so a rotation by atomic rename, by editing in place, by
//! certbot's `live/` links (re-pointed into `archive/`) or by Kubernetes' `..data` swap is seen
//! as a change of the path; it debounces (quiet for `debounce`, at most 500 ms), so the several
//! renames of one rotation are one batch. Each batch asks for one reload. After an inotify
//! overflow the reader rescans; the end of that resync asks for a reload too (what changed
//! during the overflow may be among the events dropped), so a rotation during an overflow still
//! ends with the new certificate.

use std::path::PathBuf;
use std::time::Duration;

use edgegw_kernel_events::files::{FileEvent, FileOptions};
use edgegw_kernel_events::{EventKind, KernelEvents, Source};
use tokio::task::JoinHandle;

use super::{lock, Feed, WatchHandle};
use crate::config::{CertificateSource, Config, ConfigSource};

/// The files a reload reads: the config file (unless built in) and every certificate, key, CA
/// and CRL it names, sorted, each once.
pub(super) fn paths(config: &Config, source: &ConfigSource) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let ConfigSource::File(file) = source {
        paths.push(file.clone());
    }
    for listener in &config.listeners {
        for certificate in &listener.certificates {
            if let CertificateSource::Files { cert, key } = &certificate.source {
                paths.push(cert.clone());
                paths.push(key.clone());
            }
        }
        if let Some(auth) = &listener.client_auth {
            paths.push(auth.ca.clone());
            paths.extend(auth.crls.iter().cloned());
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

/// Starts watching `paths`.
pub(super) fn spawn(
    paths: Vec<PathBuf>,
    debounce: Duration,
    handle: WatchHandle,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = watch(&paths, debounce, &handle).await {
            log::error!("certificate and config files are not watched any more: {e}");
            lock(&handle.status).files.error = Some(e.to_string());
        }
    })
}

async fn watch(
    paths: &[PathBuf],
    debounce: Duration,
    handle: &WatchHandle,
) -> edgegw_kernel_events::Result<()> {
    let options = FileOptions {
        debounce,
        max_delay: debounce.max(Duration::from_millis(500)),
        ..FileOptions::default()
    };
    let mut builder = KernelEvents::builder().file_options(options);
    for path in paths {
        builder = builder.watch_file(path);
    }
    let mut events = builder.build().await?;
    {
        let mut status = lock(&handle.status);
        status.files.error = None;
        status.files.active = true;
    }
    log::info!(
        "watching {} files for changes (the config, its certificates, keys, CAs and CRLs)",
        paths.len()
    );
    loop {
        // One debounced batch comes out together: everything ready now is one change.
        let first = events.next().await?;
        let mut changed = Vec::new();
        let mut resynced = false;
        for event in std::iter::once(first).chain(std::iter::from_fn(|| events.try_next())) {
            match event.kind {
                EventKind::File(FileEvent::Entry { path, .. }) => changed.push(path),
                EventKind::ResyncDone {
                    source: Source::Files,
                } => resynced = true,
                EventKind::File(FileEvent::Degraded { path, reason }) => log::warn!(
                    "cannot watch {} ({reason}): it is polled instead",
                    path.display()
                ),
                EventKind::Resync { reason, .. } => {
                    log::info!(
                        "certificate and config file watches lost events ({reason:?}): rescanning"
                    )
                }
                _ => {}
            }
        }
        // During a resync the rest of its difference is still to come: wait for its end.
        if events.is_resyncing() || (changed.is_empty() && !resynced) {
            continue;
        }
        if resynced {
            changed.clear();
        }
        if !handle.inject(Feed::FilesChanged { paths: changed }) {
            return Ok(());
        }
    }
}
