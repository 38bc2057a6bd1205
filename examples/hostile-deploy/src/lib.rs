//! `hostile-deploy`: a job that does what the runtime must contain and name
//! correctly, for the tests of deploy checks and error kinds. Its module starts
//! with about 9 MiB of linear memory (an 8 MiB zeroed static), so a class or a
//! worker pool below that cannot run it.
//!
//! Args: `{"do": "ok"}` returns the static's size; `{"do": "exit", "code": N}`
//! calls `std::process::exit(N)` instead of returning.

use serde::Deserialize;

/// Bytes of the zeroed static that sizes the module's initial memory.
const BIG: usize = 8 << 20;

static mut BALLAST: [u8; BIG] = [0; BIG];

#[derive(Deserialize)]
struct Args {
    #[serde(rename = "do")]
    action: String,
    #[serde(default)]
    code: i32,
}

fn hostile_deploy(args: Args) -> stoker_sdk::Result<usize> {
    // Read through a volatile pointer so the static (and the memory it
    // needs) stays in the module.
    // SAFETY: a read of a byte inside a static that nothing writes.
    let byte = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(BALLAST[BIG - 1])) };
    match args.action.as_str() {
        "exit" => std::process::exit(args.code),
        _ => Ok(BIG + usize::from(byte)),
    }
}

stoker_sdk::export_job!(hostile_deploy);
