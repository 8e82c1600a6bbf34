//! The OCR use case, beside [`crate::jobs`]: what a caller's request asks of the models, in one
//! place the HTTP handlers call (extract, call, map) and the CLI shares.
//!
//! [`OcrService`] owns:
//! - **recognize** (`POST /v1/ocr`): the options checked against the profile they name, the
//!   document opened and its selected pages reserved from the memory budget and decoded
//!   ([`crate::document::Document::decode_reserved`], the one reserve-then-decode, also what the
//!   job runner and [`document`] call), the pages scheduled in the interactive class with the
//!   request's deadline, fields extracted, and a two-pass request's follow-up job created;
//! - **respond-async** (`Prefer: respond-async, wait=N`): the same work as an interactive job,
//!   answered when it finishes within `wait`, else left running;
//! - **job specs** ([`OcrService::job_spec`], the stored options by [`job_options`]): a job's
//!   options validated as `/v1/ocr` validates its own and pinned to the profile and model set
//!   that will run it (`POST /v1/jobs`, the hybrid and the follow-up).
//!
//! [`document`] OCRs a whole document on an in-process scheduler (`ocr-server ocr`, the golden
//! tests), one page at a time through the same scheduler path. The scheduler only batches.

pub mod document;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::api::RequestOptions;
use crate::api::jobs::JobRequestOptions;
use crate::auth::{Caller, Scope};
use crate::document::{Document, select_pages};
use crate::engine::{ModelKind, OcrOptions};
use crate::error::{Error, Result};
use crate::extract::Extraction;
use crate::jobs::model::{FirstPass, JobClass, JobOptions, JobRecord, JobState};
use crate::jobs::service::{JobService, JobSpec, Source, Upload};
use crate::overrides::Overrides;
use crate::pipeline::Page;
use crate::pipeline::decode::DecodeLimits;
use crate::scheduler::{Class, Profiles, Scheduler, Timings};

/// The follow-up job of a two-pass request.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FollowupLink {
    pub job: String,
    pub location: String,
}

/// A document's pages OCRed now: what the response is made of.
pub struct Recognized {
    /// The model set that read them.
    pub kind: ModelKind,
    pub doc: Arc<Document>,
    /// The source page index of each page.
    pub selected: Vec<usize>,
    /// One per selected page, in order; a page that could not be decoded is a failed page.
    pub pages: Vec<Page>,
    pub timings: Timings,
    pub extractions: Vec<Extraction>,
    pub followup: Option<FollowupLink>,
    /// The scheduler's id of the request.
    pub request_id: u64,
}

/// What `Prefer: respond-async` got within its wait.
pub enum AsyncAnswer {
    /// The job finished in time: its pages, as `recognize` would answer them.
    Done { job: JobRecord, pages: Recognized },
    /// Still running (or failed): the job to poll.
    Pending(JobRecord),
}

/// The synchronous OCR use case (see the module docs).
pub struct OcrService {
    profiles: Arc<Profiles>,
    jobs: Option<Arc<JobService>>,
    decode: DecodeLimits,
    sync_max_pages: usize,
    /// Requests decoding at once (each holds its decoded pages until they are admitted).
    decode_permits: Semaphore,
}

impl OcrService {
    pub fn new(
        profiles: Arc<Profiles>,
        jobs: Option<Arc<JobService>>,
        decode: DecodeLimits,
        sync_max_pages: usize,
        decode_concurrency: usize,
    ) -> Self {
        Self {
            profiles,
            jobs,
            decode,
            sync_max_pages,
            decode_permits: Semaphore::new(decode_concurrency.max(1)),
        }
    }

    pub fn profiles(&self) -> &Arc<Profiles> {
        &self.profiles
    }

    /// Requests decoding at once: handlers that decode outside [`Self::recognize`] (the review
    /// desk's page image) take a permit here too.
    pub fn decode_permits(&self) -> &Semaphore {
        &self.decode_permits
    }

    fn jobs(&self) -> Result<&Arc<JobService>> {
        self.jobs.as_ref().ok_or(Error::JobsDisabled)
    }

    /// Checks a request's options before any work: the profile, the overrides against its
    /// model set, and the two-pass options (`followup` names a served profile on a server with
    /// jobs, its job is valid, the caller may create jobs; the job's own options come only
    /// with it). Returns the scheduler and the pipeline options to run.
    pub fn check(
        &self,
        caller: &Caller,
        options: &RequestOptions,
        respond_async: bool,
    ) -> Result<(Arc<Scheduler>, OcrOptions)> {
        let sched = self
            .profiles
            .get(options.overrides.profile.as_deref())?
            .clone();
        let opts = options
            .overrides
            .checked(sched.kind(), sched.base_options())?;
        let own = &options.route;
        let Some(profile) = &own.followup else {
            if own.review_threshold.is_some() || own.webhook_url.is_some() || own.tag.is_some() {
                return Err(Error::InvalidOption(
                    "`review_threshold`, `webhook_url` and `tag` go with `followup`".into(),
                ));
            }
            return Ok((sched, opts));
        };
        self.jobs()?;
        if respond_async {
            return Err(Error::InvalidOption(
                "`followup` answers synchronously: drop `Prefer: respond-async` (or `followup`)"
                    .into(),
            ));
        }
        // The follow-up is a job: creating one needs the scope `POST /v1/jobs` needs.
        if !caller.has(Scope::Jobs) {
            return Err(Error::Forbidden { scope: "jobs" });
        }
        if let Some(t) = own.review_threshold
            && !(0.0..=1.0).contains(&t)
        {
            return Err(Error::InvalidOption(format!(
                "review_threshold must be in 0..=1, got {t}"
            )));
        }
        self.job_spec(&options.followup_options(profile), JobClass::Bulk)?;
        Ok((sched, opts))
    }

    /// OCR now: `upload`'s selected pages (at most the sync limit) reserved and decoded, then
    /// run in the interactive class by `deadline`; fields extracted; a two-pass request's
    /// follow-up job created over the same upload. `sched` and `opts` come from
    /// [`Self::check`].
    pub async fn recognize(
        &self,
        caller: &Caller,
        upload: bytes::Bytes,
        options: &RequestOptions,
        (sched, opts): (Arc<Scheduler>, OcrOptions),
        deadline: Instant,
    ) -> Result<Recognized> {
        // A two-pass request keeps the upload (a reference, not a copy) for its follow-up job.
        let kept = options.route.followup.is_some().then(|| upload.clone());
        let (doc, selected, decoded, _reservation) = {
            let _permit = self
                .decode_permits
                .acquire()
                .await
                .map_err(|_| Error::ShuttingDown)?;
            let limits = self.decode.clone();
            let sync_max = self.sync_max_pages;
            let spec = options.overrides.pages.clone();
            let caller = caller.clone();
            tokio::task::spawn_blocking(move || -> Result<_> {
                let doc = Document::open(Arc::new(upload.to_vec()), &limits)?;
                let selected = select_pages(spec.as_deref(), doc.page_count(), limits.max_pages)?;
                if selected.len() > sync_max {
                    return Err(Error::TooManyPagesForSync {
                        pages: selected.len(),
                        limit: sync_max,
                    });
                }
                caller.take_pages(selected.len())?;
                // The worst case of every page is reserved before any is decoded, and held
                // until the answer is built; a page over a limit fails alone.
                let (decoded, reservation) = doc.decode_reserved(&selected)?;
                Ok((doc, selected, decoded, reservation))
            })
            .await
            .map_err(|e| Error::Runtime(format!("decode task: {e}")))??
        };
        // Pages that failed to decode stay in place as failed pages; when every page failed,
        // the request fails with the first page's error.
        let mut failed: Vec<Option<Error>> = Vec::with_capacity(decoded.len());
        let mut images = Vec::with_capacity(decoded.len());
        for d in decoded {
            match d {
                Ok(img) => {
                    images.push(img);
                    failed.push(None);
                }
                Err(e) => failed.push(Some(e)),
            }
        }
        if images.is_empty() {
            return Err(failed
                .into_iter()
                .flatten()
                .next()
                .unwrap_or(Error::EmptyInput));
        }
        let ticket = sched.submit(images, opts, Class::Interactive, Some(deadline))?;
        let request_id = ticket.id;
        let started = ticket.started.clone();
        let outcome = match tokio::time::timeout_at(deadline.into(), ticket.rx).await {
            // None of its pages reached a model: the server was too busy to start it (429), not
            // too slow to finish it (504).
            Err(_) if !started.load(Ordering::Acquire) => return Err(sched.overloaded()),
            Err(_) => return Err(Error::DeadlineExceeded),
            Ok(Err(_)) => return Err(Error::ShuttingDown),
            Ok(Ok(r)) => r?,
        };
        let mut done = outcome.pages.into_iter();
        let pages: Vec<Page> = failed
            .iter()
            .map(|f| match f {
                Some(e) => Page::failed(e),
                None => done.next().unwrap_or_default(),
            })
            .collect();
        let extractions = extract(&options.overrides, &pages);
        // The two-pass hybrid: the same stored upload, the follow-up profile, the bulk class.
        let followup = match (&options.route.followup, kept) {
            (Some(profile), Some(bytes)) => {
                let first = FirstPass {
                    profile: options
                        .overrides
                        .profile
                        .clone()
                        .unwrap_or_else(|| self.profiles.default_name().to_string()),
                    extractions: extractions.clone(),
                };
                Some(
                    self.followup(caller, bytes, options, profile, first)
                        .await?,
                )
            }
            _ => None,
        };
        Ok(Recognized {
            kind: sched.kind(),
            doc: Arc::new(doc),
            selected,
            pages,
            timings: outcome.timings,
            extractions,
            followup,
            request_id,
        })
    }

    /// `Prefer: respond-async`: the request becomes an interactive job (claimed before any bulk
    /// page); finished within `wait`, its pages are the answer, else the job continues the
    /// same work. The caller needs the `jobs` scope (the job is stored).
    pub async fn respond_async(
        &self,
        caller: &Caller,
        upload: bytes::Bytes,
        options: &RequestOptions,
        key: Option<String>,
        wait: Duration,
    ) -> Result<AsyncAnswer> {
        let svc = self.jobs()?;
        if !caller.has(Scope::Jobs) {
            return Err(Error::Forbidden { scope: "jobs" });
        }
        let mut opts = options.job_options();
        opts.overrides.model = options.overrides.model;
        opts.overrides.profile = options.overrides.profile.clone();
        let doc = Upload {
            name: "document".into(),
            source: Source::Bytes(upload),
        };
        let spec = self.job_spec(&opts, JobClass::Interactive)?;
        let (job, _) = svc
            .create(caller, JobService::new_job_id(), vec![doc], spec, key)
            .await?;
        let job = svc.wait_final(&job.id, wait).await?;
        if !matches!(job.state, JobState::Completed | JobState::NeedsReview) {
            return Ok(AsyncAnswer::Pending(job));
        }
        let (doc, selected, pages) = svc.document_pages(&job, 0).await?;
        let kind = self
            .profiles
            .get(options.overrides.profile.as_deref())?
            .kind();
        let pages = Recognized {
            kind,
            doc,
            selected,
            extractions: extract(&options.overrides, &pages),
            pages,
            timings: Timings::default(),
            followup: None,
            request_id: 0,
        };
        Ok(AsyncAnswer::Done { job, pages })
    }

    /// Creates a two-pass request's follow-up job over the upload the first pass read (stored
    /// once, by the job), remembering the first pass's answer.
    async fn followup(
        &self,
        caller: &Caller,
        upload: bytes::Bytes,
        options: &RequestOptions,
        profile: &str,
        first: FirstPass,
    ) -> Result<FollowupLink> {
        let svc = self.jobs()?;
        let mut spec = self.job_spec(&options.followup_options(profile), JobClass::Bulk)?;
        spec.options.first_pass = Some(first);
        let doc = Upload {
            name: "document".into(),
            source: Source::Bytes(upload),
        };
        let (job, _) = svc
            .create(caller, JobService::new_job_id(), vec![doc], spec, None)
            .await?;
        metrics::counter!("ocr_followup_jobs_total").increment(1);
        Ok(FollowupLink {
            location: format!("/v1/jobs/{}", job.id),
            job: job.id,
        })
    }

    /// The job a request asks for, its OCR options validated exactly as `/v1/ocr` validates
    /// them against the profile it names.
    pub fn job_spec(&self, opts: &JobRequestOptions, class: JobClass) -> Result<JobSpec> {
        let sched = self.profiles.get(opts.overrides.profile.as_deref())?;
        if opts.overrides.classify == Some(true) && !sched.has_classifier() {
            return Err(Error::InvalidOption(
                "orientation classification is not enabled on this server".into(),
            ));
        }
        let profile = opts
            .overrides
            .profile
            .clone()
            .unwrap_or_else(|| self.profiles.default_name().to_string());
        Ok(JobSpec {
            options: job_options(opts, sched.kind(), profile)?,
            class: Some(class),
            tag: opts.route.tag.clone(),
            priority: opts.route.priority.unwrap_or(0),
            review_threshold: opts.route.review_threshold,
            webhook_url: opts.route.webhook_url.clone(),
        })
    }
}

/// The fields `overrides.extract` asks for, from each page.
fn extract(overrides: &Overrides, pages: &[Page]) -> Vec<Extraction> {
    overrides
        .extract
        .map(|e| crate::extract::extract(e, pages))
        .unwrap_or_default()
}

/// The stored options of a job asking for `opts` on `profile`, whose model set is `kind`,
/// validated exactly as `/v1/ocr` validates its own (the job's own fields are the
/// [`JobService`]'s to check).
pub fn job_options(
    opts: &JobRequestOptions,
    kind: ModelKind,
    profile: String,
) -> Result<JobOptions> {
    opts.overrides.check(kind)?;
    Ok(JobOptions {
        overrides: Overrides {
            // Pinned: the job's pages run on this profile's model set on whichever replica
            // serves it, never on another default.
            profile: Some(profile),
            model: Some(kind),
            ..opts.overrides.clone()
        },
        first_pass: None,
        review_sample_rate: opts.route.review_sample_rate,
    })
}
