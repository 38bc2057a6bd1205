//! In headless Chromium (`tests/browser/dashboard.mjs`, screenshots in
//! `target/dashboard-screenshots`): the overview loads, a dead job is retried
//! and runs, a `<script>` in args is inert, a batch is listed and opened.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use super::{Dash, TOKEN, create_batch};
use crate::support::{TestEnv, target_dir, workspace_dir};

/// The browser test. Needs Node.js, `npm ci` in `tests/browser` and Debian's
/// `chromium` (`./test.sh` sets them up).
#[test]
fn dashboard_in_a_browser() {
    let browser_dir = workspace_dir().join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing: `apt-get install -y chromium` (./test.sh does)"
    );
    assert!(
        browser_dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: `npm ci --prefix tests/browser` (./test.sh does)"
    );
    let env = TestEnv::new();
    env.deploy("[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\n");
    let _worker = env.spawn_worker(&["--concurrency", "2"]);
    // A job of a class not deployed yet dies at once (module_missing); once
    // the class is deployed, a retry runs it.
    let dead = env.enqueue("later", r#"{"name":"Ada"}"#, &[]);
    let hostile = env.enqueue(
        "hello",
        &json!({"name": "<script>alert(1)</script><img src=x onerror=\"window.__stokerXss=1\">"})
            .to_string(),
        &[],
    );
    env.wait_settled(
        "default",
        &[dead.clone(), hostile.clone()],
        Duration::from_secs(60),
    );
    assert_eq!(env.record("default", &dead)["state"], "dead");
    env.deploy(
        "[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\n\
         [classes.later]\nmodule = \"$GUESTS/hello.wasm\"\n",
    );
    let batch = create_batch(
        &env,
        "batch.jsonl",
        &[
            json!({"class": "hello", "args": {"name": "Ann"}}),
            json!({"class": "hello", "args": {"name": "Ben"}}),
        ],
        &[
            "--description",
            "<img src=x onerror=\"window.__stokerXss=2\"> weekly export",
        ],
    );
    let dash = Dash::start(&env);
    let shots = target_dir().join("dashboard-screenshots");
    // Only this run's screenshots (a failed run leaves failure.png).
    let _ = std::fs::remove_dir_all(&shots);
    let out = Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .env("DASHBOARD_URL", format!("http://127.0.0.1:{}", dash.port))
        .env("DASHBOARD_TOKEN", TOKEN)
        .env("DEAD_ID", &dead)
        .env("XSS_ID", &hostile)
        .env("BATCH_ID", &batch)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("running node (install Node.js)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok - the retried job ran"), "{stdout}");
    assert_eq!(env.record("default", &dead)["state"], "done");
    assert!(shots.join("4-retried-job.png").exists());
    assert!(shots.join("9-batch.png").exists());
}
