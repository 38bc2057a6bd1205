//! Where things are: the `stoker` binary and the example guests, brought up
//! to date once per run, and the suite's scratch space under `target/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where things are: the binary, the guests, and this suite's scratch space.
pub(super) struct Paths {
    pub(super) stoker: PathBuf,
    pub(super) guests: PathBuf,
    /// `target/stoker-tests`: temp dirs, DB locks, the shared compile cache.
    pub(super) scratch: PathBuf,
    pub(super) workspace: PathBuf,
}

/// The paths, once the binary and guests are up to date (built once per run).
pub(super) fn paths() -> &'static Paths {
    static PATHS: OnceLock<Paths> = OnceLock::new();
    PATHS.get_or_init(|| {
        // The test binary is target/release/deps/all-HASH; stoker is target/release/stoker.
        let exe = std::env::current_exe().expect("current_exe");
        let release = exe.parent().and_then(Path::parent).expect("target/release");
        let target = release.parent().expect("target");
        let p = Paths {
            stoker: release.join("stoker"),
            guests: target.join("wasm32-wasip2/guest"),
            scratch: target.join("stoker-tests"),
            workspace: Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
        };
        build(&p);
        fs::create_dir_all(&p.scratch).expect("creating target/stoker-tests");
        p
    })
}

/// Brings the worker binary and the guests up to date, so the processes under test
/// run the code `cargo test` just compiled (a no-op build takes a second).
fn build(p: &Paths) {
    let guests = example_packages(&p.workspace);
    let cargo = std::env::var_os("CARGO");
    if let Some(cargo) = cargo.filter(|_| std::env::var_os("STOKER_TEST_NO_BUILD").is_none()) {
        let mut build_guests = vec!["build", "--profile", "guest", "--target", "wasm32-wasip2"];
        for g in &guests {
            build_guests.extend(["-p", g]);
        }
        for args in [
            vec!["build", "--release", "-p", "stoker", "--bin", "stoker"],
            build_guests,
        ] {
            let mut cmd = Command::new(&cargo);
            // Cargo gives this test process its package's variables; passed on,
            // they would rerun build scripts that watch them (ring's) and
            // rebuild the binary that `./test.sh` just built.
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                if [
                    "CARGO_PKG_",
                    "CARGO_MANIFEST_",
                    "CARGO_CRATE_",
                    "CARGO_BIN_",
                    "CARGO_PRIMARY_",
                ]
                .iter()
                .any(|p| name.starts_with(p))
                {
                    cmd.env_remove(name.as_ref());
                }
            }
            let status = cmd
                .args(&args)
                .current_dir(&p.workspace)
                .status()
                .expect("running cargo");
            assert!(status.success(), "`cargo {}` failed", args.join(" "));
        }
    }
    assert!(
        p.stoker.exists(),
        "{} is missing: `cargo build --release -p stoker`",
        p.stoker.display()
    );
    for g in &guests {
        let wasm = p.guests.join(format!("{}.wasm", g.replace('-', "_")));
        assert!(
            wasm.exists(),
            "{} is missing: `cargo build --profile guest --target wasm32-wasip2 -p {g}`",
            wasm.display()
        );
    }
}

/// The package names of `examples/*/Cargo.toml`: the guests.
fn example_packages(workspace: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for dir in fs::read_dir(workspace.join("examples")).expect("examples/") {
        let Ok(toml) = fs::read_to_string(dir.expect("examples/*").path().join("Cargo.toml"))
        else {
            continue;
        };
        let name = toml.lines().find_map(|l| {
            let v = l.strip_prefix("name")?.trim_start().strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_owned())
        });
        names.extend(name);
    }
    names.sort();
    names
}

/// The workspace's `target` directory (test artifacts go under it).
pub fn target_dir() -> &'static Path {
    paths().scratch.parent().expect("target/")
}

/// The workspace's root.
pub fn workspace_dir() -> &'static Path {
    &paths().workspace
}

/// The `stoker` binary the tests run.
pub fn stoker_path() -> &'static Path {
    &paths().stoker
}

/// Where the example guests are built (`target/wasm32-wasip2/guest`).
pub fn guests_dir() -> &'static Path {
    &paths().guests
}
