//! enqueue.lua: queued, scheduled, refused as a duplicate, run twice.

use stoker::commands::SCRIPTS;
use stoker::queue::keys::QueueKeys;

use super::{enqueue, hash, job, list, run, wakes, zset};
use crate::support::TestEnv;

#[test]
fn enqueue_queues_schedules_and_refuses_duplicates() {
    let env = TestEnv::new();
    // A wake-up channel is one for every database of a server: a queue no
    // other test uses, so that no other test's wake-up is taken for ours.
    let name = format!("wake-{}", std::process::id());
    let q = QueueKeys::new(&name);
    assert!(wakes(&env, &name, || {
        let (state, _) = enqueue(&env, &q, "a", "0").unwrap();
        assert_eq!(state, "queued");
    }));
    assert_eq!(list(&env, &q.pending()), [job("a")]);
    let rec = hash(&env, &q.job("a"));
    assert_eq!(rec["state"], "queued");
    assert_eq!(rec["attempts"], "0");
    assert_eq!(rec["class"], "noop");
    // A second push onto a list that is not empty wakes no one.
    assert!(!wakes(&env, &name, || {
        enqueue(&env, &q, "b", "0").unwrap();
    }));

    let (state, due) = enqueue(&env, &q, "later", "60000").unwrap();
    assert_eq!(state, "scheduled");
    assert!(due as u64 > env.redis_now_ms());
    assert_eq!(zset(&env, &q.scheduled()), [job("later")]);

    let e = enqueue(&env, &q, "a", "0").unwrap_err();
    assert!(e.to_string().contains("DUPLICATE"), "{e}");
    assert_eq!(list(&env, &q.pending()).len(), 2, "nothing written");

    // A unique key held by another job: refused with its holder.
    let unique = format!("stoker:{{q:{name}}}:unique:k");
    let unique = unique.as_str();
    let (p, rec) = (job("u2"), q.job("u2"));
    let args = [
        p.as_str(),
        "u2",
        "noop",
        name.as_str(),
        "null",
        "0",
        "0",
        "",
        "60000",
        "start",
    ];
    let keys = [q.pending(), q.scheduled(), rec];
    let keys: [&str; 4] = [&keys[0], &keys[1], &keys[2], unique];
    let _: () = env.query(redis::cmd("SET").arg(unique).arg("u1"));
    let (what, by): (String, String) = run(&env, &SCRIPTS.enqueue, &keys, &args).unwrap();
    assert_eq!((what.as_str(), by.as_str()), ("duplicate", "u1"));
    assert!(hash(&env, &q.job("u2")).is_empty());
}

#[test]
fn an_enqueue_run_twice_answers_as_the_first_and_queues_once() {
    // On Cluster, redis-rs sends a request again when its connection drops
    // before the reply: the second run of one enqueue must not fail it as a
    // duplicate of itself, nor queue the job twice.
    let env = TestEnv::new();
    let q = QueueKeys::new("default");
    let send = |id: &str, delay: &str, nonce: &str| {
        let p = job(id);
        run::<(String, i64)>(
            &env,
            &SCRIPTS.enqueue,
            &[&q.pending(), &q.scheduled(), &q.job(id)],
            &[&p, id, "noop", &q.name, "null", delay, "0", nonce],
        )
    };
    for (id, delay, state) in [("now", "0", "queued"), ("later", "60000", "scheduled")] {
        let first = send(id, delay, "n1").unwrap();
        assert_eq!(first.0, state);
        assert_eq!(
            send(id, delay, "n1").unwrap(),
            first,
            "{id}: the second run"
        );
        // Another request with the same id is refused.
        let e = send(id, delay, "n2").unwrap_err();
        assert!(e.to_string().contains("DUPLICATE"), "{e}");
    }
    assert_eq!(list(&env, &q.pending()), [job("now")]);
    assert_eq!(zset(&env, &q.scheduled()), [job("later")]);
}
