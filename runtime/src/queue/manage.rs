//! Managing jobs where they wait: retry now and delete, on a job of a
//! queue's scheduled, retry or dead set (the dashboard's actions).
//!
//! Each is one Lua script touching one queue's keys (one hash slot), like the
//! rest of the runtime: a job moved by an action is never in two places, and an
//! action on a job that has moved meanwhile (a worker fetched it, the scheduler
//! promoted it) does nothing and says so.

use serde_json::Value;

use super::Conn;
use super::keys::QueueKeys;

/// A list of one queue's jobs that an operator looks through and acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Set {
    /// Waiting to run (the pending list), in the order they will be fetched.
    Pending,
    /// Due later, soonest first.
    Scheduled,
    /// Waiting for their next attempt, soonest first.
    Retry,
    /// Dead, most recent first.
    Dead,
}

impl Set {
    /// Every set, in the order the queue page shows them.
    pub const ALL: [Set; 4] = [Set::Pending, Set::Scheduled, Set::Retry, Set::Dead];

    /// Its name in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Set::Pending => "pending",
            Set::Scheduled => "scheduled",
            Set::Retry => "retry",
            Set::Dead => "dead",
        }
    }

    /// Parses a name from a URL.
    pub fn parse(s: &str) -> Option<Set> {
        Set::ALL.into_iter().find(|set| set.as_str() == s)
    }

    /// Whether its jobs can be retried now or deleted.
    pub fn has_actions(self) -> bool {
        self != Set::Pending
    }
}

/// What an action did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acted {
    /// Done.
    Done,
    /// The job was no longer in that set (it ran, was promoted, or another
    /// action took it): nothing changed.
    Gone,
    /// Refused, for the reason given: nothing changed.
    Refused(String),
}

/// The id named by a set's member (a dead job's id, else a payload).
fn member_id(set: Set, member: &str) -> String {
    if set == Set::Dead {
        return member.to_owned();
    }
    serde_json::from_str::<Value>(member)
        .ok()
        .and_then(|p| p["id"].as_str().map(str::to_owned))
        .filter(|id| crate::job::check_id(id).is_ok())
        .unwrap_or_default()
}

/// The queue's keys, the set's key and the job's id that an action on
/// `member` of `set` works on; none for the pending list (no actions).
fn locate(queue: &str, set: Set, member: &str) -> Option<(QueueKeys, String, String)> {
    let q = QueueKeys::new(queue);
    let key = set_key(&q, set)?;
    Some((q, key, member_id(set, member)))
}

fn set_key(q: &QueueKeys, set: Set) -> Option<String> {
    match set {
        Set::Pending => None,
        Set::Scheduled => Some(q.scheduled()),
        Set::Retry => Some(q.retry()),
        Set::Dead => Some(q.dead()),
    }
}

/// Retry now: moves the job `member` of `set` (a scheduled or retrying job's
/// payload, a dead job's id) to be fetched next from its queue's pending list,
/// waking the workers idle on that queue, in one step
/// (`commands/retry_now.lua`).
pub async fn retry_now(
    conn: &mut Conn,
    queue: &str,
    set: Set,
    member: &str,
) -> redis::RedisResult<Acted> {
    let Some((q, key, id)) = locate(queue, set, member) else {
        return Ok(Acted::Gone);
    };
    let moved: redis::Value = crate::commands::SCRIPTS
        .retry_now
        .key(key)
        .key(q.pending())
        .key(q.job(&id))
        .key(q.snapshot(&id))
        .arg(member)
        .arg(if set == Set::Dead { "dead" } else { "payload" })
        .invoke_async(conn)
        .await?;
    Ok(match moved {
        redis::Value::Int(1) => Acted::Done,
        redis::Value::Array(why) => {
            let of = match why.get(1) {
                Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                _ => String::new(),
            };
            Acted::Refused(format!(
                "not retried: this entry is a duplicate of job `{of}` (its payload reuses that \
                 job's id, so it would be refused again); push it again with a fresh id to run \
                 it as a new job, or delete the entry"
            ))
        }
        _ => Acted::Gone,
    })
}

/// Deletes the job `member` of `set`: it leaves its set, and its record,
/// snapshot and any unique key it holds go with it (`commands/delete.lua`).
pub async fn delete(
    conn: &mut Conn,
    queue: &str,
    set: Set,
    member: &str,
) -> redis::RedisResult<Acted> {
    let Some((q, key, id)) = locate(queue, set, member) else {
        return Ok(Acted::Gone);
    };
    let deleted: i64 = crate::commands::SCRIPTS
        .delete
        .key(key)
        .key(q.job(&id))
        .key(q.snapshot(&id))
        .arg(member)
        .arg(&id)
        .invoke_async(conn)
        .await?;
    Ok(if deleted == 1 {
        Acted::Done
    } else {
        Acted::Gone
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_name_their_jobs() {
        assert_eq!(member_id(Set::Dead, "abc"), "abc");
        assert_eq!(
            member_id(Set::Retry, r#"{"id":"j1","class":"x","args":null}"#),
            "j1"
        );
        // A payload naming a key-breaking id names no record.
        assert_eq!(member_id(Set::Retry, r#"{"id":"a:b","class":"x"}"#), "");
        assert_eq!(member_id(Set::Scheduled, "not json"), "");
        assert_eq!(Set::parse("dead"), Some(Set::Dead));
        assert_eq!(Set::parse("nope"), None);
    }
}
