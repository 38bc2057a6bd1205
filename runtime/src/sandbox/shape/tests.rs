//! The shape checks on components built for the purpose: a builder of small
//! modules (a memory of N pages, N functions of M locals) wrapped in a
//! one-instance component, and the refusals they meet.

use super::*;
use wasm_encoder::{
    CodeSection, Component, Function, FunctionSection, InstanceSection, MemorySection, MemoryType,
    Module, ModuleArg, ModuleSection, TableSection, TableType, TypeSection, ValType,
};

const CAPS: Caps = Caps {
    class_memory_bytes: 64 << 20,
    pool_memory_bytes: 1 << 30,
};

/// A component of one core module, instantiated once.
pub(crate) fn component(module: &Module) -> Vec<u8> {
    let mut c = Component::new();
    c.section(&ModuleSection(module));
    let mut instances = InstanceSection::new();
    instances.instantiate(0, Vec::<(&str, ModuleArg)>::new());
    c.section(&instances);
    c.finish()
}

pub(crate) fn memory_module(pages: u64) -> Module {
    let mut m = Module::new();
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: pages,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    m.section(&memories);
    m
}

/// `functions` functions of `locals` i32 locals each, each body storing
/// into every local once.
pub(crate) fn locals_module(functions: u32, locals: u32, touch: bool) -> Module {
    let mut m = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], []);
    m.section(&types);
    let mut funcs = FunctionSection::new();
    for _ in 0..functions {
        funcs.function(0);
    }
    m.section(&funcs);
    let mut code = CodeSection::new();
    for _ in 0..functions {
        let mut f = Function::new([(locals, ValType::I32)]);
        if touch {
            for l in 0..locals {
                f.instructions().i32_const(l as i32).local_set(l);
            }
        }
        f.instructions().end();
        code.function(&f);
    }
    m.section(&code);
    m
}

#[test]
fn memory_over_the_class_cap_is_refused_with_the_numbers() {
    let wasm = component(&memory_module(65536));
    let err = check_component(&wasm, &CAPS).unwrap_err();
    assert!(err.too_big_to_run, "{err}");
    assert!(
        err.message
            .starts_with("its memory 0 starts at 4096 MiB; the class allows 64 MiB (`memory`)"),
        "{err}"
    );
    // A class above the pool: the pool is what binds.
    let small_pool = Caps {
        class_memory_bytes: 4 << 30,
        pool_memory_bytes: 1 << 30,
    };
    let err = check_component(&wasm, &small_pool).unwrap_err();
    assert_eq!(
        err.message,
        "its memory 0 starts at 4096 MiB; a worker's pool holds 1024 MiB per memory \
         (`--max-memory` of the workers and of `stoker deploy`); shrink the module's \
         initial memory or raise `--max-memory`"
    );
    let fits = check_component(&component(&memory_module(1024)), &CAPS).unwrap();
    assert_eq!(fits.initial_memory_bytes, 64 << 20);
    assert_eq!(fits.core_instances, 1);
}

#[test]
fn tables_and_memories_past_the_pool_are_refused() {
    let mut m = Module::new();
    let mut tables = TableSection::new();
    tables.table(TableType {
        element_type: wasm_encoder::RefType::FUNCREF,
        table64: false,
        minimum: 100_001,
        maximum: None,
        shared: false,
    });
    m.section(&tables);
    let err = check_component(&component(&m), &CAPS).unwrap_err();
    assert!(err.message.contains("100001 elements"), "{err}");
    assert!(err.message.contains("100000"), "{err}");

    let mut m = Module::new();
    let mut memories = MemorySection::new();
    for _ in 0..2 {
        memories.memory(MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
    }
    m.section(&memories);
    let err = check_component(&component(&m), &CAPS).unwrap_err();
    assert!(err.message.contains("defines 2 memories"), "{err}");
}

#[test]
fn compile_bombs_are_refused_before_compiling() {
    let wasm = component(&locals_module(4, 50_000, false));
    let started = std::time::Instant::now();
    let err = check_component(&wasm, &CAPS).unwrap_err();
    assert!(!err.too_big_to_run);
    assert!(
        err.message
            .contains("declares 50000 locals; the limit is 5000"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    assert!(check_component(&component(&locals_module(4, 100, true)), &CAPS).is_ok());
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    let mut wasm = component(&locals_module(2, 10, true));
    for cut in [9, 20, wasm.len() / 2, wasm.len() - 1] {
        let err = check_component(&wasm[..cut], &CAPS).unwrap_err();
        assert!(err.message.contains("malformed"), "{cut}: {err}");
    }
    let n = wasm.len();
    wasm[n - 3] ^= 0xff;
    let _ = check_component(&wasm, &CAPS);
}
