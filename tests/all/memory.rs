//! Memory caps on a wide node: with `--concurrency` high enough that 4 GiB
//! reservations per memory no longer fit the pool's address budget, each
//! memory reserves only the node's `--max-memory` (and wasmtime checks bounds
//! explicitly). A class cap below it, equal to it, or above it (clamped to
//! it) still stops a job allocating past it with `memory_limit`, while jobs
//! within it finish.

use serde_json::Value;

use crate::support::{SETTLE, TestEnv};

/// Job slots whose 4 GiB reservations would pass the pool's budget
/// (`FULL_RESERVATION_BUDGET`, 32 TiB: about 4,000 slots).
const WIDE: &str = "5000";

#[test]
fn memory_caps_hold_when_reservations_are_sized_to_the_node() {
    let env = TestEnv::new();
    env.deploy(
        r#"
[classes.below]
module = "$GUESTS/memory_hog.wasm"
memory = "16MiB"
retry = 0

[classes.equal]
module = "$GUESTS/memory_hog.wasm"
memory = "32MiB"
retry = 0

[classes.above]
module = "$GUESTS/memory_hog.wasm"
memory = "64MiB"
retry = 0
"#,
    );
    let jobs = [
        ("below", 8, true),
        ("below", 24, false),
        ("equal", 24, true),
        ("equal", 40, false),
        ("above", 24, true),
        ("above", 40, false),
    ];
    let ids: Vec<String> = jobs
        .iter()
        .map(|(class, mb, _)| env.enqueue(class, &format!(r#"{{"mb":{mb}}}"#), &[]))
        .collect();
    let mut worker = env.spawn_worker(&["--concurrency", WIDE, "--max-memory", "32MiB"]);
    env.wait_settled("default", &ids, SETTLE);
    worker.assert_alive();

    // The sized layout is the one running: 5,004 slots of two memories at
    // 4 GiB would be about 40 TiB of address space; at 32 MiB (and a 32 MiB
    // guard), under 1 TiB.
    let status = std::fs::read_to_string(format!("/proc/{}/status", worker.pid())).unwrap();
    let vm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmSize");
    assert!(
        vm_kib < 4 << 30,
        "address space {vm_kib} KiB: not the sized layout"
    );

    for ((class, mb, fits), id) in jobs.iter().zip(&ids) {
        let d = env.job_json(id);
        let cap: u64 = match *class {
            "below" => 16 << 20,
            _ => 32 << 20,
        };
        let peak = d["peak_memory_bytes"].as_u64().expect("peak_memory_bytes");
        assert!(peak <= cap, "{class} {mb} MiB: peak above the cap: {d}");
        if *fits {
            assert_eq!(d["state"], "done", "{class} {mb} MiB: {d}");
            assert_eq!(d["result"], Value::from(mb << 20), "{class} {mb} MiB: {d}");
        } else {
            assert_eq!(d["state"], "dead", "{class} {mb} MiB: {d}");
            assert_eq!(d["error"]["kind"], "memory_limit", "{class} {mb} MiB: {d}");
            assert!(peak >= cap / 2, "{class} {mb} MiB: did not allocate: {d}");
        }
    }
}
