//! # stoker-sdk: write Stoker jobs in Rust
//!
//! A job is a function from typed arguments to a typed result. The SDK decodes the
//! arguments (JSON, with serde), calls the function, encodes the result, and turns
//! an [`Error`] into a failure the runtime retries or sends to the dead set. One
//! macro, [`export_job!`], makes the function the component's `run` export.
//!
//! Build a job as a `cdylib` for `wasm32-wasip2`; the output is a component of the
//! `stoker:job` world (see `wit/job.wit`), ready for `stoker deploy`.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Args {
//!     name: String,
//! }
//!
//! #[derive(Serialize)]
//! struct Greeting {
//!     message: String,
//! }
//!
//! fn hello(args: Args) -> stoker_sdk::Result<Greeting> {
//!     stoker_sdk::log::info(&format!("greeting {}", args.name));
//!     Ok(Greeting { message: format!("Hello, {}!", args.name) })
//! }
//!
//! stoker_sdk::export_job!(hello);
//! ```
//!
//! A job that also takes a [`Job`] is resumable: it checkpoints its state, is
//! resumed from the last checkpoint after a deploy, a restart or a crash, and
//! stops cleanly when the host asks ([`Job::checkpoint`], [`Job::iterate`]).
//! Child jobs ([`enqueue`]) and [`batch`]es of them are committed with the
//! next checkpoint or with the result, once.
//!
//! Jobs reach the outside world only through the host: [`log`], checkpoints,
//! child jobs, [`redis`] (writes staged into checkpoints by default) and
//! [`http`] (standard `wasi:http`, through the runtime's policy point).
#![deny(missing_docs)]

// Lets the generated bindings name this crate the same way from inside and out.
extern crate self as stoker_sdk;

pub mod batch;
mod error;
pub mod http;
mod job;
pub mod log;
pub mod redis;

pub use error::{Error, Result};
pub use job::{DEFAULT_CHECKPOINT_EVERY, Job, StopReason, enqueue, enqueue_in};

#[doc(hidden)]
pub mod __private {
    //! Used by [`export_job!`](crate::export_job); not part of the public API.
    pub use wit_bindgen;

    #[allow(missing_docs)]
    pub mod bindings {
        wit_bindgen::generate!({
            world: "job",
            path: "wit",
            pub_export_macro: true,
            export_macro_name: "__export_job_world",
            default_bindings_module: "::stoker_sdk::__private::bindings",
            runtime_path: "::stoker_sdk::__private::wit_bindgen::rt",
        });
    }

    pub use super::run_job;
    pub use bindings::Guest;
    pub use bindings::stoker::job::types::{ErrorKind, JobError, Outcome};
}

/// Runs one attempt: decodes `args` (and the snapshot of a resumable job),
/// calls `job`, encodes its result. Used by [`export_job!`]; a job author never
/// calls it.
#[doc(hidden)]
pub fn run_job<M, F: job::JobFn<M>>(
    args: String,
    snapshot: Option<Vec<u8>>,
    job: F,
) -> core::result::Result<__private::Outcome, __private::JobError> {
    job.call(args, snapshot)
}

/// Exports a job function as the component's `run`.
///
/// The function takes one argument, deserialized from the job's JSON args, and
/// returns [`Result<T>`](crate::Result) where `T` is serialized as the job's result.
/// A resumable job takes a second argument, `&mut Job<S>` (see [`Job`]).
/// Use it once per crate.
///
/// ```no_run
/// fn add(args: (i64, i64)) -> stoker_sdk::Result<i64> {
///     Ok(args.0 + args.1)
/// }
/// stoker_sdk::export_job!(add);
/// ```
#[macro_export]
macro_rules! export_job {
    ($job:path) => {
        #[doc(hidden)]
        struct __StokerJob;

        impl $crate::__private::Guest for __StokerJob {
            fn run(
                args: ::std::string::String,
                snapshot: ::std::option::Option<::std::vec::Vec<u8>>,
            ) -> ::std::result::Result<$crate::__private::Outcome, $crate::__private::JobError>
            {
                $crate::__private::run_job(args, snapshot, $job)
            }
        }

        $crate::__private::bindings::__export_job_world!(__StokerJob with_types_in $crate::__private::bindings);
    };
}
