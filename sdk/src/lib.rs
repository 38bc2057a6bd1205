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
//! Jobs reach the outside world only through the host: [`log`] today; checkpoints,
//! child jobs, Redis and HTTP are added to the same world as the runtime grows.
#![deny(missing_docs)]

// Lets the generated bindings name this crate the same way from inside and out.
extern crate self as stoker_sdk;

mod error;
pub mod log;

pub use error::{Error, Result};

use serde::{Serialize, de::DeserializeOwned};

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
    pub use bindings::stoker::job::types::{JobError, Outcome};
}

/// Runs one attempt: decodes `args`, calls `job`, encodes its result. Used by
/// [`export_job!`]; a job author never calls it.
#[doc(hidden)]
pub fn run_job<A, T, F>(
    args: String,
    snapshot: Option<Vec<u8>>,
    job: F,
) -> core::result::Result<__private::Outcome, __private::JobError>
where
    A: DeserializeOwned,
    T: Serialize,
    F: FnOnce(A) -> Result<T>,
{
    // Snapshots arrive once the runtime supports checkpoints; a job built with this
    // version of the SDK never checkpoints, so it has nothing to resume from.
    let _ = snapshot;
    let args: A = serde_json::from_str(&args).map_err(|e| __private::JobError {
        message: format!("args do not match the job's argument type: {e}"),
        retryable: false,
    })?;
    let output = job(args).map_err(Error::into_wit)?;
    let json = serde_json::to_string(&output).map_err(|e| __private::JobError {
        message: format!("the job's result could not be encoded as JSON: {e}"),
        retryable: false,
    })?;
    Ok(__private::Outcome::Done(json))
}

/// Exports a job function as the component's `run`.
///
/// The function takes one argument, deserialized from the job's JSON args, and
/// returns [`Result<T>`](crate::Result) where `T` is serialized as the job's result.
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
