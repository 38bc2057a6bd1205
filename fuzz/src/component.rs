//! Job components generated from fuzz input: a wasm-smith core module with the
//! core signature of the `stoker:job` world's `run` (and, as the input picks,
//! imports of the world's host functions), wrapped into a component by
//! `wit-component` with the world's metadata.

use arbitrary::{Result, Unstructured};
use wasm_encoder::{
    CodeSection, EntityType, ExportKind, ExportSection, Function, FunctionSection, ImportSection,
    Instruction, MemorySection, MemoryType, Module, TypeSection, ValType,
};
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::Resolve;

/// The job world, as the SDK builds against it.
pub const JOB_WIT: &str = include_str!("../../sdk/wit/job.wit");

/// A world that is not the job's: a component of it must be refused.
const OTHER_WIT: &str =
    "package fuzz:other;\nworld other {\n  export run: func(args: string) -> string;\n}\n";

/// Host functions of the job world a generated module may import, with their
/// lowered core signatures (canonical ABI: a return pointer is the last
/// parameter when the results do not flatten to one value).
const HOST_IMPORTS: &[(&str, &str, &[ValType], &[ValType])] = {
    use ValType::{I32, I64};
    &[
        ("stoker:job/log@0.2.0", "log", &[I32, I32, I32], &[]),
        ("stoker:job/checkpoint@0.2.0", "should-yield", &[I32], &[]),
        (
            "stoker:job/checkpoint@0.2.0",
            "save",
            &[I32, I32, I32, I64, I32, I64, I32],
            &[],
        ),
        (
            "stoker:job/enqueue@0.2.0",
            "enqueue",
            &[I32, I32, I32, I32, I32],
            &[],
        ),
        ("stoker:job/redis@0.2.0", "exists", &[I32, I32, I32], &[]),
        ("stoker:job/redis@0.2.0", "get", &[I32, I32, I32], &[]),
    ]
};

/// What a fuzz input turned into.
#[derive(Debug)]
pub enum Generated {
    /// A core module (no component): deploy must refuse it.
    Core(Vec<u8>),
    /// A component of the job world.
    Job(Vec<u8>),
    /// A component of another world: deploy must refuse it.
    Other(Vec<u8>),
}

/// The required exports of a job's core module: `run`, `cabi_realloc`,
/// `memory` (of `min_pages`, optionally capped at `max_pages`) and, when
/// `post_return`, `cabi_post_run`.
fn exports_module(min_pages: u64, max_pages: Option<u64>, post_return: bool, job: bool) -> Vec<u8> {
    use ValType::I32;
    let mut types = TypeSection::new();
    let mut funcs = FunctionSection::new();
    let mut code = CodeSection::new();
    let mut exports = ExportSection::new();
    let mut sigs: Vec<(&str, Vec<ValType>, Vec<ValType>)> = Vec::new();
    if job {
        sigs.push(("run", vec![I32; 5], vec![I32]));
    } else {
        sigs.push(("run", vec![I32; 2], vec![I32]));
    }
    sigs.push(("cabi_realloc", vec![I32; 4], vec![I32]));
    if post_return {
        sigs.push(("cabi_post_run", vec![I32], vec![]));
    }
    for (i, (name, params, results)) in sigs.iter().enumerate() {
        types
            .ty()
            .function(params.iter().copied(), results.iter().copied());
        funcs.function(i as u32);
        let mut f = Function::new([]);
        f.instruction(&Instruction::Unreachable);
        f.instruction(&Instruction::End);
        code.function(&f);
        exports.export(name, ExportKind::Func, i as u32);
    }
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: min_pages,
        maximum: max_pages,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    exports.export("memory", ExportKind::Memory, 0);
    let mut m = Module::new();
    m.section(&types)
        .section(&funcs)
        .section(&memories)
        .section(&exports)
        .section(&code);
    m.finish()
}

/// The host functions a module may import (the input picks which).
fn imports_module(pick: u8) -> Option<Vec<u8>> {
    let chosen: Vec<_> = HOST_IMPORTS
        .iter()
        .enumerate()
        .filter(|(i, _)| pick & (1 << i) != 0)
        .map(|(_, f)| f)
        .collect();
    if chosen.is_empty() {
        return None;
    }
    let mut types = TypeSection::new();
    let mut imports = ImportSection::new();
    for (i, (module, name, params, results)) in chosen.iter().enumerate() {
        types
            .ty()
            .function(params.iter().copied(), results.iter().copied());
        imports.import(module, name, EntityType::Function(i as u32));
    }
    let mut m = Module::new();
    m.section(&types).section(&imports);
    Some(m.finish())
}

/// wasm-smith settings for modules wasmtime (as the runtime configures it)
/// and wit-component accept: no proposals outside what a job may use.
fn config(u: &mut Unstructured<'_>) -> Result<wasm_smith::Config> {
    let mut c = wasm_smith::Config::default();
    c.max_memories = 1;
    c.max_tables = u.int_in_range(0..=2)?;
    c.max_memory32_bytes = 2 << 20;
    c.max_table_elements = 2_000;
    c.max_funcs = 20;
    c.max_instructions = 200;
    c.max_data_segments = 5;
    c.max_element_segments = 5;
    c.max_globals = 10;
    c.max_imports = 10;
    c.max_exports = 0;
    c.memory64_enabled = false;
    c.threads_enabled = false;
    c.shared_everything_threads_enabled = false;
    c.gc_enabled = false;
    c.exceptions_enabled = false;
    c.custom_page_sizes_enabled = false;
    c.wide_arithmetic_enabled = false;
    c.tail_call_enabled = u.arbitrary()?;
    c.simd_enabled = u.arbitrary()?;
    c.relaxed_simd_enabled = false;
    c.reference_types_enabled = u.arbitrary()?;
    c.allow_start_export = u.arbitrary()?;
    c.canonicalize_nans = false;
    Ok(c)
}

/// Turns fuzz input into a module or a component.
pub fn generate(u: &mut Unstructured<'_>) -> Result<Generated> {
    let mode: u8 = u.int_in_range(0..=15)?;
    let mut c = config(u)?;
    if mode == 0 {
        // Any core module.
        let m = wasm_smith::Module::new(c, u)?;
        return Ok(Generated::Core(m.to_bytes()));
    }
    let job = mode != 1;
    // Mostly within the 1 MiB (16 pages) the fuzz sandbox allows, sometimes
    // over it.
    let min_pages = u.int_in_range(0..=20)?;
    let max_pages = match u.int_in_range(0..=3)? {
        0 => Some(u.int_in_range(min_pages..=min_pages + 20)?),
        _ => None,
    };
    let post_return = u.arbitrary()?;
    c.exports = Some(exports_module(min_pages, max_pages, post_return, job));
    if job {
        c.available_imports = imports_module(u.arbitrary()?);
    }
    if c.available_imports.is_none() {
        // Otherwise wasm-smith invents imports no world has.
        c.max_imports = 0;
    }
    let mut core = wasm_smith::Module::new(c, u)?.to_bytes();
    let (wit, world) = if job {
        (JOB_WIT, "job")
    } else {
        (OTHER_WIT, "other")
    };
    let mut resolve = Resolve::default();
    let pkg = resolve
        .push_str("world.wit", wit)
        .expect("the world's WIT parses");
    let world = resolve
        .select_world(&[pkg], Some(world))
        .expect("the world exists");
    wit_component::embed_component_metadata(
        &mut core,
        &resolve,
        world,
        StringEncoding::UTF8,
        false,
    )
    .expect("metadata embeds");
    let component = ComponentEncoder::default()
        .validate(true)
        .module(&core)
        .and_then(|e| e.encode())
        .map_err(|_| arbitrary::Error::IncorrectFormat)?;
    Ok(if job {
        Generated::Job(component)
    } else {
        Generated::Other(component)
    })
}
