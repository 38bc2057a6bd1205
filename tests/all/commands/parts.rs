//! The scripts of a commit's parts on Cluster: apply.lua (a part applied
//! once, checked without writing, refused whole) and part_done.lua.

use stoker::commands::SCRIPTS;
use stoker::queue::keys::QueueKeys;

use super::{hash, job, list, run, wakes};
use crate::support::TestEnv;

#[test]
fn apply_applies_a_part_once_checks_without_writing_and_refuses_whole() {
    let env = TestEnv::new();
    let marker = "stoker:{m:1}:applied:default:a:1:0";
    let (counter, h) = ("mileage:total", "mileage:h");
    let q = QueueKeys::new("other");
    let (pending, record) = (q.pending(), q.job("c1"));
    let child = job("c1");
    // A child on queue `other`, then INCRBY mileage:total 5.
    let part = |mode: &'static str| -> Vec<String> {
        let mut a: Vec<String> = [
            mode, "60", "a", "1", "3", "4", "c1", &child, "noop", "other",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(
            [
                "null", "", "0", "0", "1", "0", "0", "0", "1", "INCRBY", "2", "1", "5",
            ]
            .map(String::from),
        );
        a
    };
    let keys = [marker, counter, pending.as_str(), record.as_str()];
    let apply = |mode: &'static str| -> String {
        let args = part(mode);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&env, &SCRIPTS.apply, &keys, &args).unwrap()
    };

    // Checking writes nothing.
    assert_eq!(apply("check"), "ok");
    let exists: i64 = env.query(redis::cmd("EXISTS").arg(marker).arg(counter).arg(&record));
    assert_eq!(exists, 0);

    // Applied once: the write, the child (queued, its parent named), the marker.
    assert!(wakes(&env, "other", || assert_eq!(apply("apply"), "ok")));
    assert_eq!(apply("apply"), "applied");
    let n: i64 = env.query(redis::cmd("GET").arg(counter));
    assert_eq!(n, 5);
    assert_eq!(list(&env, &pending), [child.clone()]);
    let rec = hash(&env, &record);
    assert_eq!(
        (rec["state"].as_str(), rec["parent"].as_str()),
        ("queued", "a")
    );
    let ttl: i64 = env.query(redis::cmd("TTL").arg(marker));
    assert!(ttl > 0 && ttl <= 60, "{ttl}");

    // A part that cannot apply writes nothing of itself.
    let _: () = env.query(redis::cmd("HSET").arg(h).arg("f").arg("v"));
    let other = "stoker:{m:2}:applied:default:a:1:1";
    let args = [
        "apply", "60", "a", "0", "0", "0", "0", "2", "INCRBY", "2", "1", "1", "INCRBY", "3", "1",
        "1",
    ];
    let refused: String = run(&env, &SCRIPTS.apply, &[other, "mileage:n", h], &args).unwrap();
    assert!(
        refused.ends_with("the key holds a hash, not a string"),
        "{refused}"
    );
    let exists: i64 = env.query(redis::cmd("EXISTS").arg(other).arg("mileage:n"));
    assert_eq!(exists, 0);
    let mut extra = args.to_vec();
    extra.push("x");
    let left: String = run(&env, &SCRIPTS.apply, &[other, "mileage:n", h], &extra).unwrap();
    assert_eq!(
        left,
        "bad_write:malformed commit envelope: 1 arguments left over"
    );

    // part_done: an applied part leaves the outbox; a refused one goes to the
    // refused list with its reason; a part already taken is not taken twice.
    let q = QueueKeys::new("default");
    let (outbox, kept) = (q.outbox(), q.refused_parts());
    let _: () = env.query(redis::cmd("RPUSH").arg(&outbox).arg("p1").arg("p2"));
    // The third key is the part's job record (the outbox again for an
    // entry that is not a part): its count of parts waiting goes down.
    let record = q.job("j1");
    let _: () = env.query(redis::cmd("HSET").arg(&record).arg("parts_waiting").arg(2));
    let done = |part: &str, why: &str, record: &str| -> i64 {
        run(
            &env,
            &SCRIPTS.part_done,
            &[&outbox, &kept, record],
            &[part, why, "10"],
        )
        .unwrap()
    };
    let waiting =
        || -> Option<u64> { env.query(redis::cmd("HGET").arg(&record).arg("parts_waiting")) };
    assert_eq!(done("p1", "", &record), 1);
    assert_eq!(waiting(), Some(1));
    assert_eq!(done("p1", "", &record), 0, "taken once");
    assert_eq!(waiting(), Some(1), "counted down once");
    assert_eq!(done("p2", "WRONGTYPE", &record), 1);
    assert_eq!(waiting(), None, "none waits: the field is gone");
    assert!(list(&env, &outbox).is_empty());
    assert_eq!(list(&env, &kept), ["WRONGTYPE\np2"]);
    // Not a part (the outbox as its record), and a record gone: nothing
    // counted, nothing created.
    let _: () = env.query(redis::cmd("RPUSH").arg(&outbox).arg("p3").arg("p4"));
    assert_eq!(done("p3", "", &outbox), 1);
    let _: () = env.query(redis::cmd("DEL").arg(&record));
    assert_eq!(done("p4", "", &record), 1);
    let exists: u64 = env.query(redis::cmd("EXISTS").arg(&record));
    assert_eq!(exists, 0, "a record gone is not created again");
}
