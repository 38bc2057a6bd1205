//! The job payload decoder (what fetch hands the processor) and the record
//! fields the runtime reads back (`usage`, `failures`, `progress`, ...).
//!
//! Checks: decoding never panics; a payload it accepts has a valid id and
//! class and survives encode/decode unchanged; a refusal says why; reading
//! a record whatever its fields hold never panics.
#![no_main]

use std::collections::HashMap;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use stoker::inspect::{Follow, JobRecord, progress_bar};
use stoker::job::{FailedAttempt, Measured, Payload, State, check_id};

/// Record fields the runtime reads.
const FIELDS: &[&str] = &[
    "id",
    "class",
    "state",
    "args",
    "result",
    "error_kind",
    "error_message",
    "backtrace",
    "log",
    "batch",
    "parent",
    "worker",
    "digest",
    "progress",
    "usage",
    "failures",
    "collapsed_by",
    "deferred_by",
    "parked_by",
    "attempts",
    "checkpointed_at",
    "deferred",
    "due_at",
    "enqueued_at",
    "finished_at",
    "parked",
    "recovered",
    "resumed",
    "retry_count",
    "seq",
    "snapshot_bytes",
    "started_at",
    "state_bytes",
];

#[derive(Arbitrary, Debug)]
enum Value {
    Text(String),
    Number(u64),
    Progress(u64, Option<u64>),
    Usage(u64, u64, u64, u64, Option<u64>),
    Failures(Vec<(u64, String, String)>),
}

impl Value {
    fn text(self) -> String {
        match self {
            Value::Text(t) => t,
            Value::Number(n) => n.to_string(),
            Value::Progress(d, Some(t)) => format!("{d}/{t}"),
            Value::Progress(d, None) => d.to_string(),
            Value::Usage(fuel, cpu_us, peak, run_us, queued_us) => Measured {
                fuel,
                cpu_us,
                peak,
                run_us,
                queued_us,
                ..Measured::default()
            }
            .encode(),
            Value::Failures(f) => serde_json::Value::Array(
                f.into_iter()
                    .map(|(n, kind, message)| {
                        serde_json::json!({"attempt": n, "at_ms": n as f64 * 1.5,
                            "kind": kind, "message": message, "usage": "{}"})
                    })
                    .collect(),
            )
            .to_string(),
        }
    }
}

fn payload(data: &[u8]) {
    match Payload::decode(data) {
        Ok(p) => {
            check_id(&p.id).expect("an accepted payload has a valid id");
            stoker::config::check_name("class", &p.class)
                .expect("an accepted payload has a valid class");
            let again = Payload::decode(p.encode().as_bytes())
                .expect("an accepted payload decodes again once encoded");
            assert_eq!(again, p, "a payload changed through encode/decode");
        }
        Err(reason) => assert!(!reason.trim().is_empty(), "a refusal says why"),
    }
}

fn record(data: &[u8]) -> arbitrary::Result<()> {
    let mut u = Unstructured::new(data);
    let mut fields = HashMap::new();
    for _ in 0..u.int_in_range(0..=12)? {
        let name = *u.choose(FIELDS)?;
        fields.insert(name.to_owned(), Value::arbitrary(&mut u)?.text());
    }
    let r = JobRecord {
        queue: String::arbitrary(&mut u)?,
        fields,
    };
    let _ = (r.state(), r.measured(), r.failures(), r.progress());
    let _ = r.to_json();
    let _ = r.render();
    let _ = Follow::default().line("job", Some(&r));
    let (done, total, width) = <(u64, u64, u8)>::arbitrary(&mut u)?;
    let bar = progress_bar(done, total, width as usize);
    assert_eq!(bar.len(), width as usize + 2);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    payload(data);
    let text = String::from_utf8_lossy(data);
    let _ = FailedAttempt::decode_all(&text);
    let _ = State::parse(&text);
    if let Some(m) = Measured::decode(&text) {
        assert_eq!(Measured::decode(&m.encode()), Some(m));
    }
    let _ = record(data);
});
