//! Batches: child jobs tracked together, with callback jobs enqueued once
//! when they have all finished.
//!
//! A batch is staged like a child job ([`crate::enqueue`]): it is created,
//! with every job added to it, by the next checkpoint or with this job's
//! result, in one atomic step; never before, never twice. Jobs join a batch
//! only before that commit (a committed batch is sealed), and a batch that got
//! no jobs is not created.
//!
//! `on_success` is enqueued once every job of the batch is done; `on_complete`
//! once every job is done or dead (also when all are done). The runtime counts
//! finished jobs with sets of ids, so a job that runs twice after a crash
//! counts once, and each callback is enqueued at most once. A callback job
//! takes a [`Summary`] of its own args type.
//!
//! ```no_run
//! use stoker_sdk::batch::{Batch, Callback};
//!
//! fn resize_all(images: Vec<String>, job: &mut stoker_sdk::Job<()>) -> stoker_sdk::Result<String> {
//!     let batch = Batch::create(
//!         Some(Callback::new("gallery-ready", &serde_json::json!({"gallery": 7}))?),
//!         None,
//!     )?;
//!     for image in &images {
//!         batch.enqueue("resize", &serde_json::json!({ "image": image }))?;
//!     }
//!     job.checkpoint(&())?; // the batch and its jobs are committed here
//!     Ok(batch.id().to_owned())
//! }
//! stoker_sdk::export_job!(resize_all);
//! ```

use serde::{Deserialize, Serialize};

use crate::__private::bindings::stoker::job::batch as host;
use crate::{Error, Result};

/// A job to enqueue when a batch finishes: its class and its own args.
///
/// ```no_run
/// let cb = stoker_sdk::batch::Callback::new("notify", &serde_json::json!({"to": "ops"}))?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Callback {
    class: String,
    args: String,
}

impl Callback {
    /// A callback job of `class`; `args` reach it as [`Summary::args`].
    ///
    /// ```no_run
    /// let cb = stoker_sdk::batch::Callback::new("notify", &())?;
    /// # Ok::<(), stoker_sdk::Error>(())
    /// ```
    pub fn new<A: Serialize + ?Sized>(class: &str, args: &A) -> Result<Callback> {
        let args = serde_json::to_string(args)
            .map_err(|e| Error::permanent(format!("callback args cannot be encoded: {e}")))?;
        Ok(Callback {
            class: class.to_owned(),
            args,
        })
    }

    fn into_host(self) -> host::Callback {
        host::Callback {
            class: self.class,
            args: self.args,
        }
    }
}

/// A batch staged by this job (see the [module](self) docs).
///
/// ```no_run
/// let batch = stoker_sdk::batch::Batch::create(None, None)?;
/// stoker_sdk::log::info(&format!("batch {}", batch.id()));
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Batch {
    id: String,
}

impl Batch {
    /// Stages a new batch with its callbacks. Its id is derived from this
    /// job, the checkpoint it commits with and its place among that
    /// checkpoint's batches: a step repeated after a crash stages the same
    /// batch. Fails when a callback's class is not deployed.
    ///
    /// ```no_run
    /// use stoker_sdk::batch::{Batch, Callback};
    /// let batch = Batch::create(None, Some(Callback::new("report", &())?))?;
    /// # Ok::<(), stoker_sdk::Error>(())
    /// ```
    pub fn create(on_success: Option<Callback>, on_complete: Option<Callback>) -> Result<Batch> {
        let id = host::create(
            on_success.map(Callback::into_host).as_ref(),
            on_complete.map(Callback::into_host).as_ref(),
        )
        .map_err(Error::new)?;
        Ok(Batch { id })
    }

    /// The batch's id (`stoker batch status ID`).
    ///
    /// ```no_run
    /// # let batch = stoker_sdk::batch::Batch::create(None, None)?;
    /// let id: &str = batch.id();
    /// # Ok::<(), stoker_sdk::Error>(())
    /// ```
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stages a job of `class` with `args` in this batch, as
    /// [`crate::enqueue`] does; returns its id. Fails once the batch is
    /// committed (sealed).
    ///
    /// ```no_run
    /// # let batch = stoker_sdk::batch::Batch::create(None, None)?;
    /// let id = batch.enqueue("resize", &serde_json::json!({"image": "a.png"}))?;
    /// # Ok::<(), stoker_sdk::Error>(())
    /// ```
    pub fn enqueue<A: Serialize + ?Sized>(&self, class: &str, args: &A) -> Result<String> {
        let json = serde_json::to_string(args)
            .map_err(|e| Error::permanent(format!("child job args cannot be encoded: {e}")))?;
        host::add(&self.id, class, &json).map_err(Error::new)
    }
}

/// What a callback job receives as its args: the batch, what happened, and
/// the callback's own args `A`.
///
/// ```no_run
/// use stoker_sdk::batch::Summary;
///
/// fn gallery_ready(s: Summary<serde_json::Value>) -> stoker_sdk::Result<u64> {
///     stoker_sdk::log::info(&format!("batch {}: {} of {} done", s.batch, s.done, s.total));
///     Ok(s.done)
/// }
/// stoker_sdk::export_job!(gallery_ready);
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary<A = serde_json::Value> {
    /// The batch's id.
    pub batch: String,
    /// `success` (every job done) or `complete` (every job done or dead).
    pub event: String,
    /// Jobs in the batch.
    pub total: u64,
    /// Jobs done when the callback fired.
    pub done: u64,
    /// Jobs dead when the callback fired.
    pub dead: u64,
    /// Up to 100 of the dead jobs' ids, sorted.
    pub dead_ids: Vec<String>,
    /// The callback's own args.
    pub args: A,
}
