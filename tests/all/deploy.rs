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
