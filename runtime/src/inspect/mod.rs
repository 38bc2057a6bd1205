//! Looking at jobs, queues and workers: `stoker job`, `stoker status`,
//! `stoker wait`, and the dashboard's pages over the same records.
//!
//! - [`record`]: a job's record and its typed view ([`JobRecord`],
//!   [`find_job`]), and the `stoker job --json` document.
//! - [`render`]: the record for people, and [`bytes`].
//! - [`status`](mod@status): `stoker status`, gathered ([`status()`]) and rendered.
//! - [`watch`](mod@watch): waiting for a job to end ([`wait`], [`watch()`]) and the
//!   progress line shown meanwhile ([`Follow`]).

pub mod record;
pub mod render;
pub mod status;
pub mod watch;

pub use record::{JobRecord, find_job};
pub use status::{DestinationStatus, QueueStatus, ScheduleStatus, Status, WorkerStatus, status};
pub use watch::{Follow, Waited, progress_bar, wait, watch};
