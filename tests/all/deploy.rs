//! Deploy: `stoker deploy` stores the example classes content-addressed, and
//! refuses, with a message naming the class (or the manifest line), a file that is
//! not Wasm, a core module, a component that imports what the host does not
//! provide, a component that is not a job, an oversized module, a missing one,
//! and invalid config;
//! a refused deploy stores nothing, not even its valid classes.

use std::collections::HashMap;
use std::fs;

use stoker::config::Manifest;

use crate::support::TestEnv;
use crate::wasmgen;

#[test]
fn example_classes_deploy_content_addressed() {
    let env = TestEnv::new();
    // `examples/stoker.toml` as shipped, its module paths made absolute.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/stoker.toml");
    let text = fs::read_to_string(path).expect("examples/stoker.toml");
    let guests = crate::support::guests_dir().display().to_string();
    let text = text.replace("../target/wasm32-wasip2/guest", &guests);
    let manifest = Manifest::parse(&text).expect("examples/stoker.toml parses");
    for class in ["hello", "fib", "memory-hog", "spin-forever"] {
        assert!(manifest.classes.contains_key(class), "no class `{class}`");
    }
    let out = env.deploy(&text);

    let classes: HashMap<String, String> =
        env.query(redis::cmd("HGETALL").arg("stoker:{stoker}:classes"));
    let mut names: Vec<&String> = classes.keys().collect();
    names.sort();
    assert_eq!(names, manifest.classes.keys().collect::<Vec<_>>());
    for (name, spec) in &manifest.classes {
        let class: serde_json::Value = serde_json::from_str(&classes[name]).expect("class JSON");
        let wasm = fs::read(&spec.module).expect("guest");
        let digest = stoker::registry::digest(&wasm);
        assert_eq!(class["digest"], digest.as_str(), "{name}: {class}");
        assert_eq!(class["queue"], spec.queue.as_str(), "{name}: {class}");
        let limits = serde_json::to_value(spec.limits().expect("limits")).unwrap();
        assert_eq!(class["limits"], limits, "{name}: {class}");
        let stored: Vec<u8> =
            env.query(redis::cmd("GET").arg(format!("stoker:{{stoker}}:module:{digest}")));
        assert!(
            stored == wasm,
            "{name}: the stored module differs from the file"
        );
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name} in:\n{out}"));
        assert!(line.contains(&format!("sha256:{digest}")), "{line}");
    }
    let fib: serde_json::Value = serde_json::from_str(&classes["fib"]).unwrap();
    assert_eq!(fib["limits"]["cpu_ms"], 200, "{fib}");
    assert_eq!(fib["retry"], 0, "{fib}");

    // Deploying again stores no new module and changes nothing.
    let again = env.deploy(&text);
    assert!(!again.contains("new module"), "{again}");
    let after: HashMap<String, String> =
        env.query(redis::cmd("HGETALL").arg("stoker:{stoker}:classes"));
    assert_eq!(after, classes);
}

#[test]
fn module_paths_are_relative_to_the_manifest() {
    let env = TestEnv::new();
    let hello = crate::support::guests_dir().join("hello.wasm");
    fs::create_dir(env.dir().join("guests")).expect("mkdir");
    fs::copy(&hello, env.dir().join("guests/hello.wasm")).expect("copying hello.wasm");
    env.deploy("[classes.hello]\nmodule = \"guests/hello.wasm\"\nqueue = \"mail\"\n");
    let class: String = env.query(
        redis::cmd("HGET")
            .arg("stoker:{stoker}:classes")
            .arg("hello"),
    );
    let class: serde_json::Value = serde_json::from_str(&class).expect("class JSON");
    let digest = stoker::registry::digest(&fs::read(&hello).expect("hello.wasm"));
    assert_eq!(class["digest"], digest.as_str(), "{class}");
    assert_eq!(class["queue"], "mail", "{class}");
    let queues: Vec<String> = env.query(redis::cmd("SMEMBERS").arg("stoker:{stoker}:queues"));
    assert_eq!(queues, ["mail"]);
}

/// A component that imports one instance, `foo:bar/baz`, exporting one function
/// `f: func()`, and does nothing else; hand-encoded in the component binary
/// format (component-model `Binary.md`). An import of an instance with no
/// exports would not do: there is nothing in it to be missing.
fn component_importing_foo_bar_baz() -> Vec<u8> {
    let mut wasm = vec![
        0x00, 0x61, 0x73, 0x6d, // magic: `\0asm`
        0x0d, 0x00, 0x01, 0x00, // version 0x0d, layer 1: a component
        0x07, 0x0e, // section 7 (types), 14 bytes
        0x01, // one type:
        0x42, 0x02, // an instance type of two declarations:
        0x01, 0x40, 0x00, 0x01, 0x00, //   type 0 = func() (no params, no result)
        0x04, 0x00, 0x01, b'f', 0x01, 0x00, //   export `f`, a func of type 0
        0x0a, 0x10, // section 10 (imports), 16 bytes
        0x01, // one import:
        0x00, 0x0b, // a plain name of 11 bytes,
    ];
    wasm.extend_from_slice(b"foo:bar/baz");
    wasm.extend_from_slice(&[0x05, 0x00]); // an instance of type 0
    wasm
}

#[test]
fn refused_modules_name_the_class_and_store_nothing() {
    let env = TestEnv::new();
    let mut too_big = b"\0asm\x0d\0\x01\0".to_vec();
    too_big.resize(33 << 20, 0);
    let files: [(&str, Vec<u8>); 5] = [
        ("text.wasm", b"this is a text file, not a module\n".to_vec()),
        ("core.wasm", b"\0asm\x01\0\0\0".to_vec()),
        ("foreign.wasm", component_importing_foo_bar_baz()),
        // A valid component with nothing in it: not a job.
        ("empty.wasm", b"\0asm\x0d\0\x01\0".to_vec()),
        ("huge.wasm", too_big),
    ];
    for (name, bytes) in &files {
        fs::write(env.dir().join(name), bytes).expect("writing a module");
    }
    // (module of class `broken`, what the refusal must say)
    let cases = [
        ("$DIR/text.wasm", vec!["not a WebAssembly file"]),
        (
            "$DIR/core.wasm",
            vec!["core WebAssembly module, not a component"],
        ),
        (
            "$DIR/foreign.wasm",
            vec![
                "imports something this host does not provide",
                "foo:bar/baz",
            ],
        ),
        ("$DIR/empty.wasm", vec!["not a stoker:job job"]),
        ("$DIR/huge.wasm", vec!["the limit is 33554432 bytes"]),
        (
            "$DIR/nowhere.wasm",
            vec!["cannot read module", "nowhere.wasm"],
        ),
    ];
    for (module, expected) in cases {
        // A valid class beside the broken one: it must not be stored either.
        let toml = format!(
            "[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\n\n\
             [classes.broken]\nmodule = \"{module}\"\n"
        );
        let out = env.try_deploy(&toml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{module}: deploy succeeded");
        assert!(stderr.contains("class `broken`"), "{module}: {stderr}");
        assert!(!stderr.contains("class `hello`"), "{module}: {stderr}");
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{module}: no `{needle}` in: {stderr}"
            );
        }
        assert_nothing_stored(&env);
    }
}

#[test]
fn invalid_config_names_the_line_and_stores_nothing() {
    let env = TestEnv::new();
    // (manifest, what the refusal must say)
    let cases = [
        (
            "[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\nmemory = \"lots\"\n",
            vec!["line 3", "`lots` is not a size"],
        ),
        (
            "[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\n\ncpu = \"soon\"\n",
            vec!["line 4", "`soon` is not a duration"],
        ),
        (
            "[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\nmemroy = \"1MiB\"\n",
            vec!["line 3", "unknown field `memroy`"],
        ),
        (
            "[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\nmemory = \"8GiB\"\n",
            vec!["class `hello`", "between 64KiB"],
        ),
        (
            "[classes.\"a b\"]\nmodule = \"$GUESTS/hello.wasm\"\n",
            vec!["class name `a b`"],
        ),
        (
            "[classes.hello]\nmodule = \"$GUESTS/hello.wasm\"\nqueue = \"a:b\"\n",
            vec!["class `hello`", "queue name `a:b`"],
        ),
        ("# no classes\n", vec!["declares no `[classes.NAME]`"]),
    ];
    for (toml, expected) in cases {
        let out = env.try_deploy(toml);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "deploy succeeded:\n{toml}");
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "no `{needle}` for:\n{toml}\nin: {stderr}"
            );
        }
        assert_nothing_stored(&env);
    }
}

fn assert_nothing_stored(env: &TestEnv) {
    let stored: Vec<String> = env.query(redis::cmd("KEYS").arg("stoker:*"));
    assert!(stored.is_empty(), "a refused deploy stored {stored:?}");
}

/// `stoker deploy EXTRA... MANIFEST` on `toml` (`$GUESTS`, `$DIR` as in
/// [`TestEnv::try_deploy`]); how long it took.
fn deploy_with(
    env: &TestEnv,
    toml: &str,
    extra: &[&str],
) -> (std::process::Output, std::time::Duration) {
    let text = toml
        .replace(
            "$GUESTS",
            &crate::support::guests_dir().display().to_string(),
        )
        .replace("$DIR", &env.dir().display().to_string());
    let manifest = env.dir().join("stoker.toml");
    fs::write(&manifest, text).expect("writing the manifest");
    let mut args = vec!["deploy"];
    args.extend(extra);
    args.push(manifest.to_str().expect("UTF-8 path"));
    let started = std::time::Instant::now();
    let out = env.stoker(&args);
    (out, started.elapsed())
}

#[test]
fn each_module_is_checked_against_its_own_class_and_the_pool() {
    let env = TestEnv::new();
    fs::write(env.dir().join("big.wasm"), wasmgen::initial_memory(65536)).unwrap();
    // A 4 GiB class beside does not make room for the 64 MiB one.
    let toml = "[classes.roomy]\nmodule = \"$GUESTS/hello.wasm\"\nmemory = \"4GiB\"\n\n\
                [classes.small]\nmodule = \"$DIR/big.wasm\"\nmemory = \"64MiB\"\n";
    for extra in [&[][..], &["--max-memory", "4GiB"][..]] {
        let (out, _) = deploy_with(&env, toml, extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?}: deploy succeeded");
        for needle in [
            "class `small`",
            "big.wasm",
            "its memory 0 starts at 4096 MiB",
            "the class allows 64 MiB (`memory`)",
        ] {
            assert!(
                stderr.contains(needle),
                "{extra:?}: no `{needle}` in: {stderr}"
            );
        }
        assert!(!stderr.contains("class `roomy`"), "{stderr}");
        assert_nothing_stored(&env);
    }
    // In a class of its own cap, it does not fit the workers' pool either.
    let toml = "[classes.huge]\nmodule = \"$DIR/big.wasm\"\nmemory = \"4GiB\"\n";
    let (out, _) = deploy_with(&env, toml, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for needle in [
        "its memory 0 starts at 4096 MiB",
        "pool holds 1024 MiB",
        "--max-memory",
    ] {
        assert!(stderr.contains(needle), "no `{needle}` in: {stderr}");
    }
    assert_nothing_stored(&env);
    // A class cap above the pool is deployed with a warning (clamped at run time).
    let (out, _) = deploy_with(
        &env,
        "[classes.roomy]\nmodule = \"$GUESTS/hello.wasm\"\nmemory = \"4GiB\"\n",
        &["--max-memory", "256MiB"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: class `roomy`: `memory` is 4096 MiB")
            && stderr.contains("256 MiB"),
        "{stderr}"
    );
}

#[test]
fn module_files_are_read_with_a_bound() {
    let env = TestEnv::new();
    // A sparse 1 GiB file: only 32 MiB + 1 byte of it may be read.
    let sparse = env.dir().join("sparse.wasm");
    fs::File::create(&sparse)
        .and_then(|f| f.set_len(1 << 30))
        .expect("a sparse file");
    let fifo = env.dir().join("fifo.wasm");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
    let cases = [
        ("/dev/zero", vec!["/dev/zero", "not a regular file"]),
        ("$DIR/fifo.wasm", vec!["fifo.wasm", "not a regular file"]),
        ("$DIR", vec!["not a regular file"]),
        (
            "$DIR/sparse.wasm",
            vec!["1073741824 bytes", "the limit is 33554432 bytes"],
        ),
    ];
    for (module, expected) in cases {
        let toml = format!("[classes.broken]\nmodule = \"{module}\"\n");
        let (out, took) = deploy_with(&env, &toml, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{module}: deploy succeeded");
        assert!(stderr.contains("class `broken`"), "{module}: {stderr}");
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{module}: no `{needle}` in: {stderr}"
            );
        }
        assert!(took.as_secs() < 10, "{module}: deploy took {took:?}");
        assert_nothing_stored(&env);
    }
}

#[test]
fn compile_bombs_are_refused_quickly_with_the_reason() {
    let env = TestEnv::new();
    fs::write(env.dir().join("locals.wasm"), wasmgen::locals(4, 50_000)).unwrap();
    let (out, took) = deploy_with(&env, "[classes.bomb]\nmodule = \"$DIR/locals.wasm\"\n", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "deploy succeeded");
    for needle in [
        "class `bomb`",
        "function 0 declares 50000 locals",
        "the limit is 5000 locals per function",
    ] {
        assert!(stderr.contains(needle), "no `{needle}` in: {stderr}");
    }
    assert!(took.as_secs() < 5, "deploy took {took:?}");
    assert_nothing_stored(&env);
}
