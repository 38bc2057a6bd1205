//! The JSON job format (a public contract: any Redis client may enqueue) and the
//! vocabulary of a job's life: states and error kinds.
//!
//! A job is one JSON object, pushed with `LPUSH` onto its queue's pending list
//! (`stoker:{q:QUEUE}:pending`, see [`crate::queue::keys`]):
//!
//! ```json
//! {"id": "0f3c9a2b71d04e5e8a61c2d9", "class": "hello", "args": {"name": "Ada"}}
//! ```
//!
//! | field | required | meaning |
//! |---|---|---|
//! | `id` | yes | unique job id: 1-64 characters of letters, digits, `-`, `_` |
//! | `class` | yes | the job class, as deployed |
//! | `args` | no | any JSON value, passed to the job (default `null`) |
//! | `retry_count` | no | failed attempts so far (set by the runtime on retries) |
//! | `digest` | no | module digest the job is pinned to (set by the runtime) |
//! | `token` | no | which of the runtime's own pushes of the job this copy is (set by the runtime when it re-queues a job: the attempt that re-queued it) |
//!
//! Unknown fields are kept as they are. A payload that is not JSON, lacks `id` or
//! `class`, or has an invalid id goes to the dead set with kind `bad_payload`.
//!
//! # One id, one job
//! An id names one job of its queue, for as long as the job's record lasts
//! (done: 24 h, dead: 180 days). A payload whose id already has a record is
//! run only if it is the copy the runtime itself queued: the record is
//! `queued` and the payload's `token` is the record's (both absent for a
//! job that has not run yet). Any other copy (the id of a job that is done,
//! dead or collapsed, or one that is queued elsewhere, scheduled, retrying or
//! running; a stale copy of an earlier attempt) is a duplicate: the fetch
//! leaves the job's record untouched and the payload goes to the dead set,
//! kind `duplicate_id`, under an id of its own, `dup-RANDOM-ID` (ID cut to
//! 47 characters; its record's `duplicate_of` names the job), keeping the
//! payload as pushed. Two copies of a job that has not run yet (no token)
//! are told apart by order: the first fetched runs, the other is the
//! duplicate. Ids are per queue: the same id in two queues names two jobs.

use serde::{Deserialize, Serialize};

/// The largest result a job may return (JSON bytes). A larger one fails the
/// job (`job_error`, not retried) and is never copied out of guest memory.
pub const MAX_RESULT_BYTES: usize = 1 << 20;

/// A job as it travels through queues.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// Unique job id.
    pub id: String,
    /// Job class.
    pub class: String,
    /// Which of the runtime's pushes of the job this copy is: the attempt
    /// after which it was re-queued (0, left out: the first push). A copy
    /// whose token is not its record's is a duplicate (see the module docs).
    /// Written right after `class`, so the fetch reads it without decoding
    /// the payload.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub token: u32,
    /// Arguments for the job, any JSON.
    #[serde(default)]
    pub args: serde_json::Value,
    /// Failed attempts so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retry_count: u32,
    /// The module digest the job runs on once pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Fields this version does not know, carried unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Payload {
    /// A new job with a fresh id.
    pub fn new(class: &str, args: serde_json::Value) -> Payload {
        Payload {
            id: new_id(),
            class: class.to_owned(),
            args,
            retry_count: 0,
            digest: None,
            token: 0,
            extra: Default::default(),
        }
    }

    /// Decodes and checks a payload taken from a queue.
    pub fn decode(raw: &[u8]) -> Result<Payload, String> {
        let payload: Payload = serde_json::from_slice(raw).map_err(|e| {
            format!("payload is not a job (JSON object with `id` and `class`): {e}")
        })?;
        check_id(&payload.id)?;
        check_name("class", &payload.class)?;
        Ok(payload)
    }

    /// The payload as queued.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a payload is always encodable")
    }
}

/// Checks a job id: it becomes part of a Redis key.
pub fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "job id `{}` must be 1-64 letters, digits, `-` or `_`",
            truncate(id, 80)
        ))
    }
}

/// A fresh job id: 96 random bits, hex.
pub fn new_id() -> String {
    let bytes: [u8; 12] = rand::random();
    hex::encode(bytes)
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting in its queue.
    Queued,
    /// Waiting for its time (`--in` / `--at`).
    Scheduled,
    /// Taken by a worker.
    Running,
    /// Failed; waiting for its next attempt.
    Retrying,
    /// Finished; its result is recorded.
    Done,
    /// Failed for good; in the dead set.
    Dead,
    /// Never started: superseded by a newer job of its collapse key.
    Collapsed,
}

impl State {
    /// The name used in records and output.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Scheduled => "scheduled",
            State::Running => "running",
            State::Retrying => "retrying",
            State::Done => "done",
            State::Dead => "dead",
            State::Collapsed => "collapsed",
        }
    }

    /// Parses a recorded state.
    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "queued" => State::Queued,
            "scheduled" => State::Scheduled,
            "running" => State::Running,
            "retrying" => State::Retrying,
            "done" => State::Done,
            "dead" => State::Dead,
            "collapsed" => State::Collapsed,
            _ => return None,
        })
    }
}

/// Why an attempt failed. The names are stable: scripts and alerts match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The attempt used up its CPU time or fuel.
    CpuLimit,
    /// The attempt tried to grow memory (or tables) past its cap.
    MemoryLimit,
    /// The attempt ran past its wall-clock timeout.
    Deadline,
    /// The guest overflowed its wasm stack.
    StackOverflow,
    /// Any other trap: a guest panic, `unreachable`, a bad memory access.
    Trap,
    /// The job returned an error.
    JobError,
    /// The payload is not a valid job.
    BadPayload,
    /// The job's class, or its module, is not deployed.
    ModuleMissing,
    /// A checkpoint's state was over the class's `retained` cap.
    SnapshotLimit,
    /// The snapshot to resume from cannot be read (damaged, an unknown format
    /// version, or state the job cannot decode).
    BadSnapshot,
    /// The job was running on workers that died, again and again, without
    /// reaching a checkpoint.
    Poison,
    /// The payload's id names another job (done, dead, or live elsewhere):
    /// it was not run, and that job's record was left as it was.
    DuplicateId,
    /// The job yielded again and again without committing a checkpoint
    /// (see [`crate::worker::stall`]).
    NoProgress,
}

impl ErrorKind {
    /// Every kind, in declaration order (`ALL[kind as usize] == kind`).
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::CpuLimit,
        ErrorKind::MemoryLimit,
        ErrorKind::Deadline,
        ErrorKind::StackOverflow,
        ErrorKind::Trap,
        ErrorKind::JobError,
        ErrorKind::BadPayload,
        ErrorKind::ModuleMissing,
        ErrorKind::SnapshotLimit,
        ErrorKind::BadSnapshot,
        ErrorKind::Poison,
        ErrorKind::DuplicateId,
        ErrorKind::NoProgress,
    ];

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::CpuLimit => "cpu_limit",
            ErrorKind::MemoryLimit => "memory_limit",
            ErrorKind::Deadline => "deadline",
            ErrorKind::StackOverflow => "stack_overflow",
            ErrorKind::Trap => "trap",
            ErrorKind::JobError => "job_error",
            ErrorKind::BadPayload => "bad_payload",
            ErrorKind::ModuleMissing => "module_missing",
            ErrorKind::SnapshotLimit => "snapshot_limit",
            ErrorKind::BadSnapshot => "bad_snapshot",
            ErrorKind::Poison => "poison",
            ErrorKind::DuplicateId => "duplicate_id",
            ErrorKind::NoProgress => "no_progress",
        }
    }
}

/// What an attempt used, as kept in a record's `usage` field (compact JSON).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measured {
    /// Fuel consumed.
    pub fuel: u64,
    /// CPU time, µs.
    pub cpu_us: u64,
    /// Peak linear memory, bytes.
    pub peak: u64,
    /// Instantiate + run wall-clock time, µs.
    pub run_us: u64,
    /// HTTP requests made (refused ones included).
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub http: u64,
    /// HTTP requests the policy refused.
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub http_refused: u64,
    /// Redis operations.
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub redis: u64,
    /// Time HTTP calls waited for destination limiters, µs.
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub wait_us: u64,
    /// Child jobs its commits enqueued.
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub enq: u64,
    /// Time the job waited in its queue before the attempt, µs (absent:
    /// unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_us: Option<u64>,
}

fn is_zero64(n: &u64) -> bool {
    *n == 0
}

impl Measured {
    /// The field's value.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("always encodable")
    }

    /// Reads the field's value.
    pub fn decode(text: &str) -> Option<Measured> {
        serde_json::from_str(text).ok()
    }
}

/// One failed attempt, as kept in a record's `failures` field: a JSON array,
/// newest last, to which settling appends an entry for every attempt that
/// goes to a retry or the dead set (`commands/settle.lua`; how many are kept
/// and how long their texts may be: [`crate::queue::settle::FAILURES_KEPT`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FailedAttempt {
    /// The attempt's number (the record's `attempts` then; 0 for a payload
    /// that was not a job).
    pub attempt: u64,
    /// When it was settled, ms since the epoch (Redis time).
    pub at_ms: u64,
    /// Its error kind (see [`ErrorKind`]).
    pub kind: String,
    /// Its error message.
    pub message: String,
    /// Its guest backtrace (empty: none).
    pub backtrace: String,
    /// What it used (the `usage` the worker recorded), if readable.
    pub measured: Option<Measured>,
}

impl FailedAttempt {
    /// Reads a `failures` field. The record is not trusted: a value that is
    /// not a JSON array reads as no failures, and an entry that is not an
    /// object is skipped.
    pub fn decode_all(text: &str) -> Vec<FailedAttempt> {
        use serde_json::Value;
        let Ok(Value::Array(entries)) = serde_json::from_str(text) else {
            return Vec::new();
        };
        let read = |e: &Value| {
            let e = e.as_object()?;
            // Redis's JSON library writes whole numbers as integers up to
            // 14 digits, and in exponent notation past that.
            let num = |f: &str| {
                let v = e.get(f);
                v.and_then(Value::as_u64)
                    .or_else(|| v.and_then(Value::as_f64).map(|n| n.max(0.0) as u64))
                    .unwrap_or(0)
            };
            let text = |f: &str| e.get(f).and_then(Value::as_str).unwrap_or("").to_owned();
            Some(FailedAttempt {
                attempt: num("attempt"),
                at_ms: num("at_ms"),
                kind: text("kind"),
                message: text("message"),
                backtrace: text("backtrace"),
                measured: e
                    .get("usage")
                    .and_then(Value::as_str)
                    .and_then(Measured::decode),
            })
        };
        entries.iter().filter_map(read).collect()
    }
}

/// Shortens text for messages, on a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `text` cut to at most `max` bytes, on a character boundary, ending with a
/// note of how many bytes were cut (`… [N bytes cut]`); as it is when it fits.
/// Only what is kept is copied. Every text a record keeps is bounded this way
/// (see [`crate::queue::settle`] for the caps).
pub fn bounded(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(bounded_of(text, max, text.len()))
}

/// As [`bounded`], in place: `text` is cut (and its spare capacity given
/// back) rather than copied.
pub fn bound_in_place(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let total = text.len();
    let keep = truncate(text, max.saturating_sub(36)).len();
    text.truncate(keep);
    text.push_str(&format!("… [{} bytes cut]", total - keep));
    text.shrink_to_fit();
}

/// As [`bounded`], for the first part of a longer text whose whole length is
/// `total` bytes (the note counts what was cut of the whole).
pub fn bounded_of(part: &str, max: usize, total: usize) -> String {
    if total <= max && part.len() <= max {
        return part.to_owned();
    }
    // The note's room: "… [" + up to 20 digits + " bytes cut]".
    let room = max.saturating_sub(36);
    let kept = truncate(part, room);
    format!("{kept}… [{} bytes cut]", total - kept.len())
}

/// Queue and class names: what may appear in a Redis key and a metric label.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} name `{name}` must be 1-64 characters of letters, digits, `-`, `_` or `.`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_text_is_cut_on_a_character_with_a_note() {
        assert_eq!(bounded("short", 100), "short");
        let long = "é".repeat(1000);
        let cut = bounded(&long, 101);
        assert!(cut.len() <= 101, "{}", cut.len());
        assert!(cut.starts_with("éé"));
        let kept = cut.split('…').next().unwrap().len();
        assert!(
            cut.ends_with(&format!("[{} bytes cut]", 2000 - kept)),
            "{cut}"
        );
        assert!(bounded_of("abc", 100, 5000).ends_with("[4997 bytes cut]"));
        let mut s = long.clone();
        bound_in_place(&mut s, 101);
        assert_eq!(s, cut);
    }

    #[test]
    fn payload_round_trip_keeps_unknown_fields() {
        let raw = r#"{"id":"abc","class":"hello","args":{"n":1},"trace":"x"}"#;
        let p = Payload::decode(raw.as_bytes()).unwrap();
        assert_eq!(p.args["n"], 1);
        let again = Payload::decode(p.encode().as_bytes()).unwrap();
        assert_eq!(again.extra["trace"], "x");
        assert_eq!(again, p);
    }

    #[test]
    fn the_token_follows_the_class_and_is_left_out_when_zero() {
        // fetch.lua reads the id and the token from the payload's start.
        let mut p = Payload::decode(br#"{"id":"a","class":"c","args":[1]}"#).unwrap();
        assert_eq!(p.encode(), r#"{"id":"a","class":"c","args":[1]}"#);
        p.token = 7;
        p.retry_count = 1;
        assert_eq!(
            p.encode(),
            r#"{"id":"a","class":"c","token":7,"args":[1],"retry_count":1}"#
        );
    }

    #[test]
    fn every_error_kind_is_listed_at_its_index() {
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, i, "{kind:?}");
        }
    }

    #[test]
    fn failures_are_read_whatever_the_record_holds() {
        let text = r#"[{"attempt":1,"at_ms":1767225600123,"kind":"job_error","message":"no",
            "backtrace":"","usage":"{\"fuel\":7,\"cpu_us\":2,\"peak\":65536,\"run_us\":3}"},
            "junk",{"attempt":2,"at_ms":1.7672256001e+12,"kind":"trap","usage":"?"}]"#;
        let failures = FailedAttempt::decode_all(text);
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert_eq!(failures[0].attempt, 1);
        assert_eq!(failures[0].at_ms, 1_767_225_600_123);
        assert_eq!(failures[0].measured.map(|m| m.fuel), Some(7));
        assert_eq!(failures[1].at_ms, 1_767_225_600_100);
        assert_eq!((&failures[1].message[..], failures[1].measured), ("", None));
        for garbage in ["", "not json", "{\"a\":1}", "[1,2]", "null"] {
            assert!(FailedAttempt::decode_all(garbage).is_empty(), "{garbage}");
        }
    }

    #[test]
    fn bad_payloads_are_refused_with_a_reason() {
        let refused = |raw: &[u8]| Payload::decode(raw).unwrap_err();
        assert!(refused(b"not json").contains("not a job"));
        assert!(refused(b"\xff\xfe").contains("not a job"));
        assert!(refused(br#"{"class":"x"}"#).contains("id"));
        assert!(refused(br#"{"id":"a b","class":"x"}"#).contains("job id"));
        assert!(refused(br#"{"id":"a","class":"x:y"}"#).contains("class"));
    }
}
