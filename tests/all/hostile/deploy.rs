//! Hostile modules handed to deploy: each is refused with the reason, quickly,
//! with nothing stored, while the running worker keeps serving its neighbour
//! queue.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use stoker::queue::keys::{self, QueueKeys};

use super::check::check_neighbour;
use super::{SETTLE, enabled, write_module};
use crate::support::{TestEnv, payload, poll_until};
use crate::wasmgen::{
    compile_bomb, core_module_bytes, importing_component, job_component, oversized_component,
};

/// The longest a refused deploy may take.
const DEPLOY_TIME: Duration = Duration::from_secs(20);

/// A hostile module handed to deploy, with what deploy must say.
struct DeployCase {
    name: &'static str,
    /// The module's bytes (`None`: `module` names a path as it is).
    module: fn() -> Option<Vec<u8>>,
    /// The module path when `module` gives no bytes.
    path: &'static str,
    /// The class's keys besides `module`.
    caps: &'static str,
    /// Another class deployed in the same manifest, if any.
    other: &'static str,
    /// What stderr must contain.
    fragment: &'static str,
}

/// A class with a 4 GiB cap next to the one under test.
const BIG_CLASS: &str = "\n[classes.h-big]\nmodule = \"$GUESTS/noop.wasm\"\nmemory = \"4GiB\"\n";

/// The deploy cases: each manifest is refused, with the reason.
const DEPLOY_CASES: &[DeployCase] = &[
    DeployCase {
        name: "too_big",
        module: || Some(oversized_component()),
        path: "",
        caps: "",
        other: "",
        fragment: "the limit is",
    },
    DeployCase {
        name: "core_module",
        module: || Some(core_module_bytes(1, 0)),
        path: "",
        caps: "",
        other: "",
        fragment: "core WebAssembly module",
    },
    DeployCase {
        name: "random_bytes",
        module: || {
            Some(
                (0..4096u32)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect(),
            )
        },
        path: "",
        caps: "",
        other: "",
        fragment: "not a WebAssembly file",
    },
    DeployCase {
        name: "garbage_component",
        module: || {
            let mut b = b"\0asm\x0d\0\x01\0".to_vec();
            b.extend((0..4096u32).map(|i| (i.wrapping_mul(40_503) >> 7) as u8));
            Some(b)
        },
        path: "",
        caps: "",
        other: "",
        fragment: "malformed",
    },
    DeployCase {
        name: "unknown_import",
        module: || Some(importing_component()),
        path: "",
        caps: "",
        other: "",
        fragment: "imports something this host does not provide",
    },
    DeployCase {
        name: "memory_over_cap",
        module: || Some(job_component(0, 2048)),
        path: "",
        caps: "memory = \"64MiB\"\n",
        other: "",
        fragment: "memory",
    },
    DeployCase {
        name: "memory_over_cap_big_neighbour",
        module: || Some(job_component(0, 2048)),
        path: "",
        caps: "memory = \"64MiB\"\n",
        other: BIG_CLASS,
        fragment: "memory",
    },
    DeployCase {
        name: "compile_bomb",
        module: || Some(compile_bomb()),
        path: "",
        caps: "",
        other: "",
        fragment: "function 0",
    },
    DeployCase {
        name: "dev_zero",
        module: || None,
        path: "/dev/zero",
        caps: "",
        other: "",
        fragment: "/dev/zero",
    },
];

#[test]
fn hostile_modules_are_refused_at_deploy() {
    let env = TestEnv::new();
    env.deploy("[classes.neighbour]\nmodule = \"$GUESTS/hello.wasm\"\nqueue = \"neighbour\"\n");
    let mut worker = env.spawn_worker(&["--concurrency", "2", "-q", "neighbour"]);
    let mut problems = Vec::new();
    for c in enabled(DEPLOY_CASES, |c| c.name) {
        let path = match (c.module)() {
            Some(bytes) => {
                let name = format!("{}.wasm", c.name);
                write_module(&env, &name, &bytes);
                env.dir().join(name).display().to_string()
            }
            None => c.path.to_owned(),
        };
        let class = format!("h-{}", c.name.replace('_', "-"));
        let manifest = format!(
            "[classes.{class}]\nmodule = \"{path}\"\n{}{}",
            c.caps, c.other
        );
        let t0 = env.redis_now_ms();
        let id = format!("n-{}", c.name);
        env.lpush(
            &QueueKeys::new("neighbour").pending(),
            &[payload(&id, "neighbour", json!({ "name": id }))],
        );
        let (ok, stderr, took) = deploy_bounded(&env, &manifest);
        if ok {
            problems.push(format!("`{}`: deploy accepted it", c.name));
        } else if let Err(p) = check_deploy_message(&stderr, c.fragment) {
            problems.push(format!(
                "`{}`: {p}\n    stderr: {}",
                c.name,
                crate_cut(&stderr, 600)
            ));
        }
        if took > DEPLOY_TIME {
            problems.push(format!(
                "`{}`: deploy took {took:?} (bound {DEPLOY_TIME:?})",
                c.name
            ));
        }
        let stored: Option<String> = env.query(redis::cmd("HGET").arg(keys::classes()).arg(&class));
        if stored.is_some() && !ok {
            problems.push(format!(
                "`{}`: a refused deploy stored class `{class}`",
                c.name
            ));
        }
        let served = env.wait_settled("neighbour", &[id], SETTLE);
        if let Err(p) = check_neighbour(&served[0], t0) {
            problems.push(format!("`{}`: neighbour: {p}", c.name));
        }
        worker.assert_alive();
        let verdict = if ok { "accepted" } else { "refused" };
        eprintln!("hostile: deploy case `{}` {verdict} in {took:?}", c.name);
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Runs `stoker deploy` on `manifest`, killed past twice [`DEPLOY_TIME`]:
/// whether it succeeded, its stderr, how long it took.
fn deploy_bounded(env: &TestEnv, manifest: &str) -> (bool, String, Duration) {
    let file = env.dir().join("hostile.toml");
    let text = manifest.replace(
        "$GUESTS",
        &crate::support::guests_dir().display().to_string(),
    );
    std::fs::write(&file, text).expect("writing the manifest");
    let err_file = env.dir().join("deploy.stderr");
    let mut child = env
        .command()
        .arg("deploy")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_file).expect("stderr file"))
        .spawn()
        .expect("running stoker deploy");
    let started = Instant::now();
    let mut status = None;
    poll_until(2 * DEPLOY_TIME, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    let took = started.elapsed();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = std::fs::read_to_string(&err_file).unwrap_or_default();
    (status.is_some_and(|s| s.success()), stderr, took)
}

/// A refused deploy says why (`fragment`), briefly, without a backtrace.
fn check_deploy_message(stderr: &str, fragment: &str) -> Result<(), String> {
    if !stderr.contains(fragment) {
        return Err(format!("stderr does not say `{fragment}`"));
    }
    if stderr.len() > 4096 {
        return Err(format!("stderr is {} bytes", stderr.len()));
    }
    let lower = stderr.to_ascii_lowercase();
    for leak in [
        "backtrace",
        "/.cargo/",
        "runtime/src/",
        "/rustc/",
        "panicked",
    ] {
        if lower.contains(leak) {
            return Err(format!("stderr contains `{leak}`"));
        }
    }
    Ok(())
}

fn crate_cut(s: &str, max: usize) -> &str {
    stoker::job::truncate(s, max)
}
