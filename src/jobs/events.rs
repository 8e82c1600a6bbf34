//! A job's audit trail, typed: [`JobEvent`] is every kind of event a job records, written by both
//! stores through one conversion ([`JobEvent::row`]) and read back typed
//! ([`Event::typed`]), so a misspelt kind or field is a compile error, not an empty review desk.
//!
//! A row is stored as its `kind` and its `detail` (a JSON object, the variant's fields), the
//! shape `GET /v1/jobs/{id}/events` returns as stored. The contract suite checks that every kind
//! round-trips on both stores.

use serde::{Deserialize, Serialize};

use super::model::{Correction, DeliveryState, Event, JobClass, JobState, Review};

/// Every event a job records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum JobEvent {
    /// The job was stored: its documents and pages, its class and the key that made it.
    Created {
        documents: usize,
        pages: usize,
        class: JobClass,
        actor: Option<String>,
    },
    /// A key asked for an action on the job (before the action's own events).
    Requested { action: String, actor: String },
    /// The job's state changed; a review that completed the job is kept with it.
    State {
        from: JobState,
        to: JobState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<StateDetail>,
    },
    /// A page's result was stored (by `worker`), with why it waits for review, if it does.
    PageCompleted {
        document: usize,
        page: usize,
        worker: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        review: Option<String>,
    },
    /// A page failed and runs again at `retry_at_ms`.
    PageRetry {
        document: usize,
        page: usize,
        reason: String,
        retry_at_ms: i64,
    },
    /// A page failed for good (dead-lettered). `charged`: the failure was a lost worker's
    /// expired lease while the page ran.
    PageFailed {
        document: usize,
        page: usize,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        charged: Option<bool>,
    },
    /// A lost worker's lease expired; the page is queued again, the attempt `charged` only when
    /// the page had started.
    LeaseExpired {
        document: usize,
        page: usize,
        reason: String,
        charged: bool,
    },
    /// The job was cancelled.
    Cancelled {},
    /// Failed pages were queued again.
    Retry { pages: usize },
    /// A webhook delivery was written to the outbox.
    WebhookQueued { id: String, event: String },
    /// A webhook delivery was attempted.
    WebhookAttempt {
        id: String,
        state: DeliveryState,
        status: Option<u16>,
        error: Option<String>,
    },
}

/// What a `state` event carries beside the two states.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateDetail {
    pub review: Review,
}

impl JobEvent {
    /// Every kind, as stored.
    pub const KINDS: &'static [&'static str] = &[
        "created",
        "requested",
        "state",
        "page_completed",
        "page_retry",
        "page_failed",
        "lease_expired",
        "cancelled",
        "retry",
        "webhook_queued",
        "webhook_attempt",
    ];

    /// The stored row: the kind and the detail object as JSON text.
    pub fn row(&self) -> (String, String) {
        let v = serde_json::to_value(self).expect("a job event serialises");
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        let detail = v
            .get("detail")
            .map_or_else(|| "{}".into(), |d| d.to_string());
        (kind, detail)
    }

    /// The event of a stored row; None for a row this version cannot read (a kind or shape
    /// written by another version).
    pub fn from_row(kind: &str, detail: &serde_json::Value) -> Option<JobEvent> {
        serde_json::from_value(serde_json::json!({"kind": kind, "detail": detail})).ok()
    }

    /// One of each kind, in [`Self::KINDS`] order (the contract suite writes them through both
    /// stores).
    pub fn examples() -> Vec<JobEvent> {
        vec![
            JobEvent::Created {
                documents: 2,
                pages: 3,
                class: JobClass::Bulk,
                actor: Some("k".into()),
            },
            JobEvent::Requested {
                action: "cancel".into(),
                actor: "k".into(),
            },
            JobEvent::State {
                from: JobState::NeedsReview,
                to: JobState::Completed,
                detail: Some(StateDetail {
                    review: Review {
                        approve: false,
                        corrections: vec![Correction {
                            document: 0,
                            page: 1,
                            line: Some(2),
                            text: "x".into(),
                            original: Some("y".into()),
                        }],
                        reviewer: Some("ann".into()),
                    },
                }),
            },
            JobEvent::PageCompleted {
                document: 0,
                page: 0,
                worker: None,
                review: Some("low".into()),
            },
            JobEvent::PageRetry {
                document: 0,
                page: 0,
                reason: "r".into(),
                retry_at_ms: 5,
            },
            JobEvent::PageFailed {
                document: 0,
                page: 0,
                reason: "r".into(),
                charged: None,
            },
            JobEvent::LeaseExpired {
                document: 0,
                page: 0,
                reason: "r".into(),
                charged: false,
            },
            JobEvent::Cancelled {},
            JobEvent::Retry { pages: 4 },
            JobEvent::WebhookQueued {
                id: "msg_1".into(),
                event: "job.completed".into(),
            },
            JobEvent::WebhookAttempt {
                id: "msg_1".into(),
                state: DeliveryState::Failed,
                status: Some(500),
                error: Some("e".into()),
            },
        ]
    }

    /// The review that completed the job, when this event records one.
    pub fn review(&self) -> Option<&Review> {
        match self {
            JobEvent::State {
                detail: Some(d), ..
            } => Some(&d.review),
            _ => None,
        }
    }
}

/// The event of a page's own failure: `page_retry` when it runs again at `retry_at_ms`, else
/// `page_failed`.
pub fn page_failure(
    document: usize,
    page: usize,
    reason: String,
    retry_at_ms: Option<i64>,
) -> JobEvent {
    match retry_at_ms {
        Some(retry_at_ms) => JobEvent::PageRetry {
            document,
            page,
            reason,
            retry_at_ms,
        },
        None => JobEvent::PageFailed {
            document,
            page,
            reason,
            charged: None,
        },
    }
}

impl Event {
    /// The stored event, typed (None for a row another version wrote in a shape this one does
    /// not read).
    pub fn typed(&self) -> Option<JobEvent> {
        JobEvent::from_row(&self.kind, &self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_row() {
        let all = JobEvent::examples();
        let kinds: Vec<String> = all.iter().map(|e| e.row().0).collect();
        assert_eq!(kinds, JobEvent::KINDS);
        for e in all {
            let (kind, detail) = e.row();
            let back = JobEvent::from_row(&kind, &serde_json::from_str(&detail).unwrap());
            assert_eq!(back.as_ref(), Some(&e), "{kind} {detail}");
        }
    }

    /// The rows keep the shape the stores wrote as JSON literals before the events were typed.
    #[test]
    fn rows_keep_their_stored_shape() {
        let e = JobEvent::State {
            from: JobState::Queued,
            to: JobState::Processing,
            detail: None,
        };
        assert_eq!(e.row().1, r#"{"from":"queued","to":"processing"}"#);
        assert_eq!(
            JobEvent::Cancelled {}.row(),
            ("cancelled".into(), "{}".into())
        );
        let e = JobEvent::PageCompleted {
            document: 1,
            page: 2,
            worker: None,
            review: None,
        };
        assert_eq!(e.row().1, r#"{"document":1,"page":2,"worker":null}"#);
        assert_eq!(
            JobEvent::from_row("no_such_kind", &serde_json::json!({})),
            None
        );
    }
}
