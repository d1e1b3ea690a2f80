//! The lead lifecycle as operations: create (with dedupe), update, erase, activities, users,
//! auth and the change feed. Each write runs as one job on the store's writer, so what it
//! decides (merged or created, 412, 409) is decided from the transaction it commits in.

mod activities;
mod auth;
mod capture;
mod changes;
mod forms;
mod import;
mod leads;
mod mailer;
pub(crate) mod nurture;
mod pools;
mod reports;
mod scheduler;
mod scoring;
mod sequences;
mod tasks;
mod users;
mod work;

mod delivery;
mod events;
mod webhooks;
pub use delivery::{AttemptOutcome, Sender, run_delivery};
pub use events::LiveEvent;
pub use webhooks::WebhookSettings;

pub use activities::{ActivityCreated, TimelinePage};
pub use auth::{LoginOutcome, hash_token, new_token};
pub use capture::{Capture, DuplicateGroup, DuplicatesPage, Via, api_capture, derive_channel};
pub use changes::{ChangesPage, past_newest};
pub use forms::FillTime;
pub use import::{ImportError, ImportOptions, ImportSummary, Rejection};
pub use leads::{BatchItem, CreateOutcome, LeadExport, ListParams};
pub use mailer::{Mailer, run_mailer};
pub use pools::{SlaView, Target};
pub use scheduler::run_scheduler;
pub use scoring::{RescoreExample, RescoreReport, ScoreHistoryView, ScoreView, run_score_reviews};
pub use sequences::{EnrollmentChange, Tracked};
pub use tasks::{TaskChanges, TaskFilter, TaskPage, is_overdue, task_position};

use crate::clock::Clock;
use crate::domain::FieldError;
use crate::domain::lead::NormalizeRules;
use crate::domain::time::Millis;
use crate::store::{IdempotentResponse, Store, StoreError, Tx};
use std::sync::Arc;
use uuid::Uuid;

/// Why an operation did not happen. Each maps to one HTTP status at the edge.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Unknown, or not visible to the caller (the two are indistinguishable on purpose).
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    Conflict(String),
    #[error("the resource has changed (current version {current})")]
    PreconditionFailed { current: u64 },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyMismatch,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceError {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ServiceError::Invalid(vec![FieldError::new(field, message)])
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// What an `If-Match` header asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    None,
    /// `If-Match: *`: the resource must exist.
    Any,
    /// One of these versions.
    Versions(Vec<u64>),
}

impl Precondition {
    pub fn check(&self, current: u64) -> ServiceResult<()> {
        match self {
            Precondition::Versions(v) if !v.contains(&current) => {
                Err(ServiceError::PreconditionFailed { current })
            }
            _ => Ok(()),
        }
    }
}

/// An `Idempotency-Key` and the fingerprint of the request that carried it.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: [u8; 32],
}

/// The result of an idempotent create: done now, or the stored answer to an earlier try.
#[derive(Debug)]
pub enum Written<T> {
    Fresh(T),
    Replayed(IdempotentResponse),
}

/// Renders an outcome into the response a retry will get; supplied by the HTTP layer.
pub type Render<O> = Box<dyn FnOnce(&O, Millis) -> (IdempotentResponse, Vec<Uuid>) + Send>;

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub session_ttl_ms: i64,
    pub list_scan_budget: usize,
}

/// The application: store, clock and rules. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    store: Store,
    clock: Arc<dyn Clock>,
    rules: Arc<NormalizeRules>,
    cfg: Arc<ServiceConfig>,
    principals: Arc<auth::PrincipalCache>,
    /// The key that signs hosted-form render times, read from the store on first use.
    form_secret: Arc<std::sync::OnceLock<Vec<u8>>>,
    /// The Rhai hooks (or their built-in rules) every capture and score goes through.
    plugins: crate::script::Plugins,
    /// Webhook delivery settings, the delivery worker's wake-up, live-event shutdown.
    hooks: Arc<webhooks::Hooks>,
    /// Held while an applied rescore runs: a second one is refused rather than counting (and
    /// writing) the same changes again.
    rescoring: Arc<tokio::sync::Mutex<()>>,
}

impl Service {
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        rules: NormalizeRules,
        cfg: ServiceConfig,
    ) -> Self {
        Service {
            store,
            clock,
            rules: Arc::new(rules),
            cfg: Arc::new(cfg),
            principals: Arc::default(),
            form_secret: Arc::default(),
            plugins: crate::script::Plugins::builtin(),
            hooks: Arc::default(),
            rescoring: Arc::default(),
        }
    }

    /// Uses these plugins instead of the built-in rules.
    pub fn with_plugins(mut self, plugins: crate::script::Plugins) -> Self {
        self.plugins = plugins;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn rules(&self) -> &NormalizeRules {
        &self.rules
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// Runs `apply` on the writer, honouring an `Idempotency-Key`: a retry with the same key
    /// and request gets the first answer, with another request a 422; both are decided in the
    /// transaction, so two concurrent retries cannot both create.
    pub(crate) async fn write_idempotent<O, F>(
        &self,
        caller: Uuid,
        idem: Option<(Idempotency, Render<O>)>,
        apply: F,
    ) -> ServiceResult<Written<O>>
    where
        O: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<ServiceResult<O>, StoreError> + Send + 'static,
    {
        self.store
            .write(move |tx| {
                if let Some((idem, _)) = &idem
                    && let Some(prev) = tx.idempotent_response(caller, &idem.key)?
                {
                    return Ok(if prev.fingerprint == idem.fingerprint {
                        Ok(Written::Replayed(prev))
                    } else {
                        Err(ServiceError::IdempotencyMismatch)
                    });
                }
                let outcome = match apply(tx)? {
                    Ok(o) => o,
                    Err(e) => return Ok(Err(e)),
                };
                if let Some((idem, render)) = idem {
                    let (mut response, leads) = render(&outcome, tx.now);
                    response.fingerprint = idem.fingerprint.to_vec();
                    tx.put_idempotent_response(caller, &idem.key, &response, &leads)?;
                }
                Ok(Ok(Written::Fresh(outcome)))
            })
            .await?
    }
}
