//! Resumable jobs: checkpoints, the host's request to stop, and iteration.
//!
//! A job function that takes a [`Job`] as its second argument can checkpoint
//! its state. A resumed attempt (after a deploy, a restart, a crash, or a yield)
//! starts with the last committed state, so at most the work since the last
//! checkpoint is done again, and nothing the job committed (its state, its
//! child jobs) is committed twice.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use stoker_sdk::{Job, Result};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Sum {
//!     next: u64,
//!     total: u64,
//! }
//!
//! fn sum(limit: u64, job: &mut Job<Sum>) -> Result<u64> {
//!     let mut state = job.resumed().unwrap_or_default();
//!     while state.next < limit {
//!         state.total += state.next;
//!         state.next += 1;
//!         if state.next % 1000 == 0 {
//!             job.set_progress(state.next, Some(limit));
//!             job.checkpoint(&state)?; // stops here, committed, when the host asks
//!         }
//!     }
//!     Ok(state.total)
//! }
//!
//! stoker_sdk::export_job!(sum);
//! ```

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::__private::bindings::stoker::job::checkpoint as host;
use crate::{Error, Result};

/// The snapshot format this SDK writes and reads: a 4-byte tag, `STK` and a
/// version byte, then JSON (`{"done":..,"total":..,"state":..}`).
const FORMAT: [u8; 4] = *b"STK\x01";

/// How often [`Job::iterate`] checkpoints unless told otherwise.
pub const DEFAULT_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// Why the host asks a job to stop at a yield point.
///
/// ```no_run
/// # fn f(job: &mut stoker_sdk::Job<()>) {
/// if let Some(reason) = job.should_yield() {
///     stoker_sdk::log::info(&format!("asked to stop: {reason:?}"));
/// }
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The worker is shutting down (a deploy, a restart).
    Shutdown,
    /// The attempt used its class's time slice; other jobs get a turn.
    SliceOver,
    /// The attempt is close to its CPU or wall-clock cap, or its class's
    /// quiet hours began.
    Limit,
    /// The job's queue was paused.
    QueuePaused,
}

impl StopReason {
    fn from_host(r: host::StopReason) -> StopReason {
        match r {
            host::StopReason::Shutdown => StopReason::Shutdown,
            host::StopReason::SliceOver => StopReason::SliceOver,
            host::StopReason::Limit => StopReason::Limit,
            host::StopReason::QueuePaused => StopReason::QueuePaused,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            StopReason::Shutdown => "shutdown",
            StopReason::SliceOver => "slice over",
            StopReason::Limit => "near a limit",
            StopReason::QueuePaused => "queue paused",
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a, S> {
    done: u64,
    total: Option<u64>,
    state: &'a S,
}

#[derive(Deserialize)]
struct Resumed<S> {
    done: u64,
    total: Option<u64>,
    state: S,
}

/// A resumable job's handle on its state: the state it resumed from, and
/// checkpoints. `S` is the state, any serde type.
///
/// ```no_run
/// fn job(_: (), job: &mut stoker_sdk::Job<u32>) -> stoker_sdk::Result<()> {
///     let step = job.resumed().unwrap_or(0);
///     job.checkpoint(&(step + 1))?;
///     Ok(())
/// }
/// stoker_sdk::export_job!(job);
/// ```
pub struct Job<S> {
    resumed: Option<S>,
    was_resumed: bool,
    done: u64,
    total: Option<u64>,
    every: Duration,
    last_save: Instant,
}

impl<S: Serialize + DeserializeOwned> Job<S> {
    fn new(snapshot: Option<Vec<u8>>) -> Result<Job<S>> {
        let mut job = Job {
            resumed: None,
            was_resumed: false,
            done: 0,
            total: None,
            every: DEFAULT_CHECKPOINT_EVERY,
            last_save: Instant::now(),
        };
        if let Some(bytes) = snapshot {
            let r: Resumed<S> = decode(&bytes)?;
            job.resumed = Some(r.state);
            job.was_resumed = true;
            job.done = r.done;
            job.total = r.total;
        }
        Ok(job)
    }

    /// Takes the state this attempt resumed from; `None` on a fresh start (and
    /// on a second call).
    ///
    /// ```no_run
    /// # fn f(job: &mut stoker_sdk::Job<u64>) {
    /// let next = job.resumed().unwrap_or(0);
    /// # }
    /// ```
    pub fn resumed(&mut self) -> Option<S> {
        self.resumed.take()
    }

    /// Whether this attempt started from a checkpoint.
    ///
    /// ```no_run
    /// # fn f(job: &stoker_sdk::Job<u64>) {
    /// if job.is_resumed() {
    ///     stoker_sdk::log::info("resuming");
    /// }
    /// # }
    /// ```
    pub fn is_resumed(&self) -> bool {
        self.was_resumed
    }

    /// Records how far the job is; saved with the next checkpoint and shown by
    /// `stoker job`.
    ///
    /// ```no_run
    /// # fn f(job: &mut stoker_sdk::Job<u64>) {
    /// job.set_progress(500, Some(1000));
    /// # }
    /// ```
    pub fn set_progress(&mut self, done: u64, total: Option<u64>) {
        self.done = done;
        self.total = total;
    }

    /// Sets how often [`Job::iterate`] checkpoints (default one second); zero
    /// checkpoints after every item. It also checkpoints whenever the host asks
    /// the job to stop.
    ///
    /// ```no_run
    /// # fn f(job: &mut stoker_sdk::Job<u64>) {
    /// job.checkpoint_every(std::time::Duration::from_millis(200));
    /// # }
    /// ```
    pub fn checkpoint_every(&mut self, every: Duration) {
        self.every = every;
    }

    /// Commits `state`, with the child jobs enqueued since the last checkpoint,
    /// in one step. Returns an error that is [`Error::is_yield`] when the host
    /// asks the job to stop: return it (`?` does), and the job is resumed later
    /// from this state without using up a retry.
    ///
    /// ```no_run
    /// # fn f(job: &mut stoker_sdk::Job<u64>) -> stoker_sdk::Result<()> {
    /// job.checkpoint(&42)?;
    /// # Ok(()) }
    /// ```
    pub fn checkpoint(&mut self, state: &S) -> Result<()> {
        let envelope = Envelope {
            done: self.done,
            total: self.total,
            state,
        };
        let mut bytes = FORMAT.to_vec();
        serde_json::to_writer(&mut bytes, &envelope)
            .map_err(|e| Error::permanent(format!("the job's state cannot be encoded: {e}")))?;
        let progress = (self.done > 0 || self.total.is_some()).then_some(host::Progress {
            done: self.done,
            total: self.total,
        });
        let stop = host::save(&bytes, progress);
        self.last_save = Instant::now();
        match stop {
            Some(reason) => Err(Error::yielded(StopReason::from_host(reason).as_str())),
            None => Ok(()),
        }
    }

    /// Whether the host asks the job to stop now. Commits nothing: checkpoint,
    /// then return the checkpoint's error.
    ///
    /// ```no_run
    /// # fn f(job: &mut stoker_sdk::Job<u64>, state: u64) -> stoker_sdk::Result<()> {
    /// if job.should_yield().is_some() {
    ///     job.checkpoint(&state)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn should_yield(&self) -> Option<StopReason> {
        host::should_yield().map(StopReason::from_host)
    }

    /// Sets the number of items in all, for progress (`done/total`); with
    /// [`Job::iterate`], which counts the items done.
    ///
    /// ```no_run
    /// # fn f(job: &mut stoker_sdk::Job<u64>) {
    /// job.set_total(100_000);
    /// # }
    /// ```
    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
    }

    /// Iterates with a cursor, in the spirit of Shopify's job-iteration. The
    /// state `S` holds the cursor (and whatever the job accumulates): it starts
    /// as the resumed state, or `start` on a fresh start. `items` gets the state
    /// and returns the items still to do; `each` processes one item and moves
    /// the cursor in the state past it. The state is checkpointed every
    /// [`Job::checkpoint_every`] and whenever the host asks the job to stop (then
    /// the attempt ends, committed, and resumes later after the last item
    /// processed). Returns the final state; progress counts items across
    /// attempts.
    ///
    /// ```no_run
    /// use serde::{Deserialize, Serialize};
    /// use stoker_sdk::{Job, Result};
    ///
    /// #[derive(Default, Serialize, Deserialize)]
    /// struct Cursor {
    ///     next: u64,
    ///     sum: u64,
    /// }
    ///
    /// fn sum(total: u64, job: &mut Job<Cursor>) -> Result<u64> {
    ///     job.set_total(total);
    ///     let end = job.iterate(
    ///         Cursor::default(),
    ///         |c| c.next..total,
    ///         |c, i| {
    ///             c.sum += i;
    ///             c.next = i + 1;
    ///             Ok(())
    ///         },
    ///     )?;
    ///     Ok(end.sum)
    /// }
    /// stoker_sdk::export_job!(sum);
    /// ```
    pub fn iterate<T, I>(
        &mut self,
        start: S,
        items: impl FnOnce(&S) -> I,
        mut each: impl FnMut(&mut S, T) -> Result<()>,
    ) -> Result<S>
    where
        I: IntoIterator<Item = T>,
    {
        let mut state = self.resumed.take().unwrap_or(start);
        self.last_save = Instant::now();
        let mut items = items(&state).into_iter().peekable();
        while let Some(item) = items.next() {
            each(&mut state, item)?;
            self.done += 1;
            // After the last item there is nothing to save or stop for: the
            // result commits the rest.
            let more = items.peek().is_some();
            if more && (self.last_save.elapsed() >= self.every || host::should_yield().is_some()) {
                self.checkpoint(&state)?;
            }
        }
        Ok(state)
    }
}

fn decode<S: DeserializeOwned>(bytes: &[u8]) -> Result<Resumed<S>> {
    let Some(body) = bytes.strip_prefix(&FORMAT[..3]) else {
        return Err(Error::bad_snapshot(
            "the snapshot was not written by the Stoker SDK (no `STK` tag)",
        ));
    };
    let (&version, json) = body.split_first().unwrap_or((&0, &[]));
    if version != FORMAT[3] {
        return Err(Error::bad_snapshot(format!(
            "snapshot format version {version} is not readable by this SDK (it reads version {})",
            FORMAT[3]
        )));
    }
    serde_json::from_slice(json).map_err(|e| {
        Error::bad_snapshot(format!(
            "the snapshot does not decode as this job's state (did the state type change?): {e}"
        ))
    })
}

/// Stages a child job of `class` with `args`: committed with the next
/// checkpoint, or with this job's result; never before, never twice. Returns
/// the child's id, derived from this job's id and the child's place among the
/// children of its checkpoint, so a step repeated after a crash stages the same
/// ids.
///
/// ```no_run
/// let id = stoker_sdk::enqueue("send-email", &serde_json::json!({"to": "ada@example.com"}))?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn enqueue<A: Serialize + ?Sized>(class: &str, args: &A) -> Result<String> {
    let json = serde_json::to_string(args)
        .map_err(|e| Error::permanent(format!("child job args cannot be encoded: {e}")))?;
    crate::__private::bindings::stoker::job::enqueue::enqueue(class, &json).map_err(Error::new)
}

/// As [`enqueue`], due `delay` after the checkpoint (or result) that commits
/// it, by Redis time, like `stoker enqueue --in`: the child waits in its
/// queue's scheduled set until then. At most a year; finer than a
/// millisecond is rounded down.
///
/// ```no_run
/// use std::time::Duration;
/// let id = stoker_sdk::enqueue_in(
///     "send-reminder",
///     &serde_json::json!({"order": 42}),
///     Duration::from_secs(3600),
/// )?;
/// # Ok::<(), stoker_sdk::Error>(())
/// ```
pub fn enqueue_in<A: Serialize + ?Sized>(
    class: &str,
    args: &A,
    delay: std::time::Duration,
) -> Result<String> {
    let json = serde_json::to_string(args)
        .map_err(|e| Error::permanent(format!("child job args cannot be encoded: {e}")))?;
    let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    crate::__private::bindings::stoker::job::enqueue::enqueue_in(class, &json, ms)
        .map_err(Error::new)
}

/// How [`export_job!`](crate::export_job) calls a job function: implemented
/// for `fn(A) -> Result<T>` and for resumable `fn(A, &mut Job<S>) -> Result<T>`.
#[doc(hidden)]
pub trait JobFn<Marker> {
    fn call(
        self,
        args: String,
        snapshot: Option<Vec<u8>>,
    ) -> core::result::Result<crate::__private::Outcome, crate::__private::JobError>;
}

#[doc(hidden)]
pub struct Plain<A, T>(PhantomData<(A, T)>);

#[doc(hidden)]
pub struct Resumable<A, S, T>(PhantomData<(A, S, T)>);

impl<F, A, T> JobFn<Plain<A, T>> for F
where
    F: FnOnce(A) -> Result<T>,
    A: DeserializeOwned,
    T: Serialize,
{
    fn call(
        self,
        args: String,
        _snapshot: Option<Vec<u8>>,
    ) -> core::result::Result<crate::__private::Outcome, crate::__private::JobError> {
        // A plain job never checkpoints, so it never has a snapshot to resume.
        finish(parse_args(&args).and_then(self))
    }
}

impl<F, A, S, T> JobFn<Resumable<A, S, T>> for F
where
    F: FnOnce(A, &mut Job<S>) -> Result<T>,
    A: DeserializeOwned,
    S: Serialize + DeserializeOwned,
    T: Serialize,
{
    fn call(
        self,
        args: String,
        snapshot: Option<Vec<u8>>,
    ) -> core::result::Result<crate::__private::Outcome, crate::__private::JobError> {
        let run = || {
            let args = parse_args(&args)?;
            let mut job = Job::new(snapshot)?;
            self(args, &mut job)
        };
        finish(run())
    }
}

fn parse_args<A: DeserializeOwned>(args: &str) -> Result<A> {
    serde_json::from_str(args)
        .map_err(|e| Error::permanent(format!("args do not match the job's argument type: {e}")))
}

fn finish<T: Serialize>(
    output: Result<T>,
) -> core::result::Result<crate::__private::Outcome, crate::__private::JobError> {
    use crate::__private::Outcome;
    match output {
        Ok(value) => serde_json::to_string(&value)
            .map(Outcome::Done)
            .map_err(|e| {
                Error::permanent(format!(
                    "the job's result could not be encoded as JSON: {e}"
                ))
                .into_wit()
            }),
        Err(e) if e.kind() == crate::error::Kind::Yield => Ok(Outcome::Yielded),
        Err(e) => Err(e.into_wit()),
    }
}
