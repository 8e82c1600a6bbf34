//! The server's lifecycle, `ocr-server serve`, in order:
//! 1. opens the job store (`sqlite://<data-dir>/jobs.db` or `--database-url`);
//! 2. `secure_startup`: stores the bootstrap key, if one is given, and refuses an exposed
//!    address with no key ([`crate::auth::check_exposure`]), before any model is loaded;
//! 3. measures this machine's clock against the store's ([`crate::jobs::clock`]);
//! 4. starts the model profiles ([`Profiles`]: one scheduler per profile, whose workers load
//!    and warm their models), opens the document store, builds the job runner, the job service
//!    and the API on one memory budget, and binds the listener;
//! 5. starts the runner, the clock's re-measurement (`clock::sync_forever`) and
//!    `sweep_forever` (once a minute, deletes expired jobs and their documents, unless the clock
//!    check refuses it); a warm-up that fails or takes over 600 s stops the server with its error;
//! 6. on SIGINT/SIGTERM stops admitting and claiming, finishes the admitted requests, gives the
//!    running job pages back to the queue and joins the workers.

use std::sync::Arc;
use std::time::Duration;

use super::ServeArgs;
use crate::api::Api;
use crate::error::{Error, Result};
use crate::jobs::documents::DocumentStore;
use crate::jobs::now_ms;
use crate::jobs::runner::{Runner, RunnerConfig};
use crate::jobs::service::{JobService, ServiceConfig};
use crate::jobs::store::JobStore;
use crate::jobs::webhook::{WebhookConfig, parse_secret};
use crate::scheduler::Profiles;

/// Runs the server until SIGINT/SIGTERM, then shuts down gracefully: stop admitting, let every
/// admitted request finish, join the workers.
pub fn run_serve(args: &ServeArgs) -> Result<()> {
    // The store first: whether this server may start at all (keys, exposure) is decided before
    // any model is loaded.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ocr-http")
        .build()
        .map_err(|e| Error::Runtime(format!("starting the async runtime: {e}")))?;
    let database_url = args.database_url.as_ref().map_or_else(
        || format!("sqlite://{}", args.data_dir.join("jobs.db").display()),
        |s| s.0.clone(),
    );
    if database_url.starts_with("sqlite://") {
        std::fs::create_dir_all(&args.data_dir).map_err(|e| Error::Io {
            path: args.data_dir.display().to_string(),
            source: e,
        })?;
    }
    let store: Arc<dyn JobStore> = rt.block_on(crate::jobs::store::open(&database_url))?;
    rt.block_on(secure_startup(args, store.as_ref()))?;
    // The store's clock before anything is leased or swept (see jobs::clock).
    let max_skew = Duration::from_millis(args.max_clock_skew_ms);
    match rt.block_on(crate::jobs::clock::sync(store.as_ref(), max_skew)) {
        crate::jobs::clock::Sync::Measured { offset_ms, .. } => {
            tracing::info!(
                offset_ms,
                "measured this machine's clock against the store's"
            );
        }
        crate::jobs::clock::Sync::Local | crate::jobs::clock::Sync::Failed => {}
    }
    let specs = args.profile_specs()?;
    let core_slots = specs.first().and_then(|s| s.cfg.core_slots);
    for s in &specs {
        tracing::info!(profile = %s.name, model = s.factory.kind().name(),
                       det = ?s.cfg.base.det_resize, "serving profile");
    }
    let profiles = Arc::new(Profiles::start(specs, core_slots)?);
    let object_store_url = match &args.object_store_url {
        Some(u) => u.clone(),
        None => {
            let dir = args.data_dir.join("documents");
            std::fs::create_dir_all(&dir).map_err(|e| Error::Io {
                path: dir.display().to_string(),
                source: e,
            })?;
            let abs = dir.canonicalize().map_err(|e| Error::Io {
                path: dir.display().to_string(),
                source: e,
            })?;
            format!("file://{}", abs.display())
        }
    };
    let documents = Arc::new(DocumentStore::open(
        &object_store_url,
        args.max_document_bytes.max(1),
    )?);
    let mut webhooks = WebhookConfig::new(
        args.webhook_secrets
            .iter()
            .map(|s| parse_secret(&s.0))
            .collect::<Result<Vec<_>>>()?,
        args.webhook_allow.clone(),
    );
    webhooks.max_attempts = args.webhook_max_attempts.max(1);
    // One API configuration, so the sync API, the job service and the runner share one memory
    // budget.
    let api_cfg = args.api_config();
    let runner = Runner::with_profiles(
        store.clone(),
        profiles.clone(),
        documents.clone(),
        RunnerConfig {
            max_in_flight: args.job_concurrency.max(1),
            interactive_in_flight: args.interactive_job_concurrency.max(1),
            max_attempts: args.job_max_attempts.max(1),
            lease: Duration::from_millis(args.job_lease_ms.max(300)),
            decode: api_cfg.decode.clone(),
            webhooks,
            metric_tags: args.metrics_tags.clone(),
            page_timeout: Duration::from_secs(args.job_page_timeout_s.max(1)),
            ..RunnerConfig::default()
        },
    );
    let jobs = JobService::new(
        runner.clone(),
        ServiceConfig {
            decode: api_cfg.decode.clone(),
            idempotency_ttl: Duration::from_secs(args.idempotency_ttl_s.max(1)),
            max_queued_pages: args.max_queued_pages,
            min_free_disk_bytes: args.min_free_disk_mb << 20,
            max_documents_per_job: args.max_documents_per_job,
            max_concurrent_creations: args.max_concurrent_creations,
            tenant_max_jobs: args.tenant_max_jobs,
            tenant_max_stored_bytes: args.tenant_max_stored_mb << 20,
            page_gauges_every: Duration::from_secs(5),
        },
    );
    let auth = crate::auth::Auth::new(args.auth, Some(store.clone()), args.metrics_open);
    let api = Api::with_profiles(profiles.clone(), api_cfg, Some(jobs), auth);
    let http = crate::api::serve::HttpLimits {
        max_connections: args.max_connections.max(1),
        header_timeout: Duration::from_millis(args.header_timeout_ms.max(1)),
        body_timeout: Duration::from_millis(args.body_timeout_ms.max(1)),
        body_min_rate: args.body_min_rate,
        ..Default::default()
    };
    let addr = format!("{}:{}", args.host, args.port);
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| Error::Io {
                path: addr.clone(),
                source: e,
            })?;
        let bound = listener
            .local_addr()
            .map_or_else(|_| addr.clone(), |a| a.to_string());
        tracing::info!(addr = %bound, model = args.pipeline.model.name(),
                       profiles = %profiles.names().join(","), "listening");
        eprintln!(
            "ocr-server: listening on http://{bound} (model {}; profiles {})",
            args.pipeline.model.name(),
            profiles.names().join(", ")
        );
        runner.start();
        tokio::spawn(crate::jobs::clock::sync_forever(store.clone(), max_skew));
        tokio::spawn(sweep_forever(
            store.clone(),
            documents.clone(),
            Duration::from_secs(args.retention_s),
            Duration::from_secs(args.review_retention_s.max(args.retention_s)),
        ));
        let warm = profiles.clone();
        let (fail_tx, fail_rx) = tokio::sync::oneshot::channel::<Error>();
        tokio::task::spawn_blocking(move || match warm.wait_ready(Duration::from_secs(600)) {
            Ok(()) => {
                tracing::info!("models loaded and warmed: ready");
                eprintln!("ocr-server: ready");
            }
            Err(e) => {
                let _ = fail_tx.send(e);
            }
        });
        let stop_api = api.clone();
        let stop_runner = runner.clone();
        let startup_error = Arc::new(std::sync::Mutex::new(None));
        let startup_error2 = startup_error.clone();
        crate::api::serve::serve(listener, api.router(), http, async move {
            tokio::select! {
                _ = shutdown_signal() => {
                    eprintln!("ocr-server: shutting down: finishing admitted requests");
                }
                Ok(e) = fail_rx => {
                    *startup_error2.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            }
            stop_api.begin_shutdown();
            stop_runner.stop_claiming();
        })
        .await
        .map_err(|e| Error::Io {
            path: addr.clone(),
            source: e,
        })?;
        runner.shutdown().await;
        if let Some(e) = startup_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return Err(e);
        }
        Ok::<(), Error>(())
    })?;
    profiles.shutdown();
    eprintln!("ocr-server: stopped");
    Ok(())
}

/// Before the listener opens: stores the bootstrap key, if one is given, then refuses an
/// exposed address with no key to require ([`crate::auth::check_exposure`]).
async fn secure_startup(args: &ServeArgs, store: &dyn JobStore) -> Result<()> {
    let from_file = match &args.bootstrap_key_file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: e,
        })?),
        None => None,
    };
    if let Some(key) = from_file.or_else(|| args.bootstrap_key.as_ref().map(|s| s.0.clone()))
        && let Some(name) = crate::auth::bootstrap_key(store, &key, now_ms()).await?
    {
        tracing::info!(key = %name, "stored the bootstrap key (admin scope)");
        eprintln!("ocr-server: stored the bootstrap key as {name:?} (admin scope)");
    }
    let counts = store.key_counts().await?;
    crate::auth::check_exposure(args.auth, &args.host, counts)?;
    if args.auth != crate::auth::AuthMode::Off && counts.total > 0 && counts.active == 0 {
        tracing::error!(
            "every API key is revoked: the server is locked (every request gets 401) until a \
             key is created with `ocr-server keys create`"
        );
    }
    if args.auth == crate::auth::AuthMode::Off && !crate::auth::is_loopback_host(&args.host) {
        tracing::warn!(host = %args.host, "--auth off on a non-loopback address: anyone who \
                       reaches the port may read and change every job");
    }
    Ok(())
}

/// Deletes finished jobs older than `retention`, with their documents, once a minute, and
/// `needs_review` jobs untouched for `review_retention` (longer: they wait for a reviewer, but
/// a tenant that parks every job in review must not grow the store for ever).
async fn sweep_forever(
    store: Arc<dyn JobStore>,
    documents: Arc<DocumentStore>,
    retention: Duration,
    review_retention: Duration,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        if !crate::jobs::clock::sweep_allowed() {
            metrics::counter!("ocr_sweeps_refused_total").increment(1);
            tracing::warn!(
                offset_ms = crate::jobs::clock::offset_ms(),
                "refused to sweep: this machine's clock disagrees with the store's (or the \
                 store's could not be read); nothing is deleted until they agree"
            );
            continue;
        }
        let now = now_ms();
        let cutoff = now - retention.as_millis() as i64;
        let review_cutoff = now - review_retention.as_millis() as i64;
        // In batches, each its own short transaction: the queue's writes get the store
        // between them however many jobs expired at once.
        loop {
            match store.sweep(cutoff, review_cutoff, SWEEP_BATCH).await {
                Ok((jobs, locations)) => {
                    if jobs > 0 {
                        tracing::info!(jobs, documents = locations.len(), "swept expired jobs");
                        metrics::counter!("ocr_jobs_swept_total").increment(jobs as u64);
                        documents.delete(locations).await;
                    }
                    if jobs < SWEEP_BATCH {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, "sweep failed");
                    break;
                }
            }
        }
    }
}

/// Jobs deleted per sweep transaction.
const SWEEP_BATCH: usize = 100;

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
