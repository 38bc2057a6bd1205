//! `hello`: arguments in, result out.
//!
//! Build, deploy and run (from the repository root, Redis on 127.0.0.1:6379):
//!
//! ```text
//! cargo build -p hello --profile guest --target wasm32-wasip2
//! cargo run --release -p stoker -- deploy examples/stoker.toml
//! cargo run --release -p stoker -- enqueue hello '{"name":"Ada"}'    # prints the job id
//! cargo run --release -p stoker -- worker &
//! cargo run --release -p stoker -- wait <id>                         # {"message":"Hello, Ada!"}
//! ```
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Args {
    name: String,
}

#[derive(Serialize)]
struct Greeting {
    message: String,
}

fn hello(args: Args) -> stoker_sdk::Result<Greeting> {
    stoker_sdk::log::info(&format!("greeting {}", args.name));
    Ok(Greeting {
        message: format!("Hello, {}!", args.name),
    })
}

stoker_sdk::export_job!(hello);
