//! Shape checks: what a component asks of the host, read with `wasmparser`
//! before anything is compiled.
//!
//! Deploy and workers run [`check_component`] on every module before compiling
//! it: a module whose memories or tables cannot fit its class's caps or the
//! workers' pool is refused with the numbers, and a module shaped to make the
//! compiler run away (tens of thousands of locals, huge bodies, deep nesting)
//! is refused in milliseconds instead of compiling for minutes. The check is
//! linear in the module's size and allocates little, so it is safe on any
//! input (it is what the deploy-validation fuzz target drives).
//!
//! Every limit below is meant to be far above what the SDK's guests use (a
//! Rust wasip2 job is one main module plus a few wit-component shims, one
//! memory of about 1 MiB, a table or two, a few hundred functions, ~100 KiB of
//! code); the shipped examples all deploy under them (the integration tests
//! deploy every one).

use std::fmt;

use wasmparser::{ComponentAlias, ComponentExternalKind, ComponentOuterAliasKind, Operator};
use wasmparser::{ComponentTypeRef, Encoding, Instance, Parser, Payload, TypeRef};

use super::limits::MAX_TABLE_ELEMENTS;

/// Core modules one component may define (nested components included).
pub const MAX_CORE_MODULES: usize = 32;
/// Core instances one component may create (its pool slot holds this many).
pub const MAX_CORE_INSTANCES: u32 = 16;
/// Linear memories one core module may define (the pool's per-module limit).
pub const MAX_MEMORIES_PER_MODULE: u32 = 1;
/// Linear memories one component instance may hold.
pub const MAX_MEMORIES: u32 = 2;
/// Tables one core module may define (the pool's per-module limit).
pub const MAX_TABLES_PER_MODULE: u32 = 1;
/// Tables one component instance may hold.
pub const MAX_TABLES: u32 = 16;
/// Functions (imported and defined) of one core module: bounds the instance's
/// context, which the pool holds in 1 MiB.
pub const MAX_FUNCTIONS: u32 = 20_000;
/// Globals of one core module.
pub const MAX_GLOBALS: u32 = 1_000;
/// Types of one core module.
pub const MAX_TYPES: u32 = 20_000;
/// Locals (parameters excluded) of one function: compile time grows with
/// locals times body size.
pub const MAX_LOCALS_PER_FUNCTION: u32 = 5_000;
/// Locals of all the functions of one core module.
pub const MAX_TOTAL_LOCALS: u64 = 500_000;
/// Bytes of one function body.
pub const MAX_FUNCTION_BYTES: usize = 1 << 20;
/// Bytes of code (all function bodies) in one component.
pub const MAX_CODE_BYTES: usize = 16 << 20;
/// Nested blocks (`block`, `loop`, `if`, `try`) in one function.
pub const MAX_BLOCK_DEPTH: u32 = 1_000;
/// Components nested in one another.
pub const MAX_COMPONENT_DEPTH: u32 = 4;

/// The memory caps a module is checked against.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// The class's `memory`: all of a job's linear memory together.
    pub class_memory_bytes: u64,
    /// The size of one memory slot of the workers' pool (their `--max-memory`).
    pub pool_memory_bytes: u64,
}

/// What a component asks for when it is instantiated, as read before compiling.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Core modules defined.
    pub modules: usize,
    /// Core instances created by instantiating a module.
    pub core_instances: u32,
    /// Linear memories defined by the instantiated modules.
    pub memories: u32,
    /// Tables defined by the instantiated modules.
    pub tables: u32,
    /// Linear memory all instantiated memories start with, bytes.
    pub initial_memory_bytes: u64,
    /// The largest initial size of one memory, bytes.
    pub largest_memory_bytes: u64,
    /// Elements all instantiated tables start with.
    pub initial_table_elements: u64,
    /// Functions, over all modules.
    pub functions: u64,
    /// Bytes of code, over all modules.
    pub code_bytes: usize,
    /// The most locals of one function.
    pub max_locals: u32,
    /// The largest function body, bytes.
    pub max_function_bytes: usize,
    /// The deepest block nesting of one function.
    pub max_block_depth: u32,
}

/// Why a module was refused: one sentence with the numbers and what to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeError {
    /// Whether the module is well formed but needs more memory or table
    /// space than its class or the pool gives (`memory_limit` when met at run
    /// time), as opposed to malformed or shaped beyond the compile bounds.
    pub too_big_to_run: bool,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ShapeError {}

fn too_big(message: String) -> ShapeError {
    ShapeError {
        too_big_to_run: true,
        message,
    }
}

fn refused(message: String) -> ShapeError {
    ShapeError {
        too_big_to_run: false,
        message,
    }
}

/// A size in MiB for messages (`4096 MiB`, `0.06 MiB`).
pub fn mib(bytes: u64) -> String {
    if bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
    }
}

#[derive(Default, Clone)]
struct ModuleShape {
    imported_memories: u32,
    imported_functions: u32,
    defined_functions: u32,
    memories: Vec<u64>,
    tables: Vec<u64>,
    bodies: usize,
    locals: u64,
}

enum Frame {
    Component { modules: Vec<Option<usize>> },
    Module(usize),
}

/// Checks the shape of component `wasm` against `caps` and the fixed limits
/// above, without compiling it. Pure and linear in `wasm.len()`: this is the
/// function to fuzz for "components pushed through deploy validation".
pub fn check_component(wasm: &[u8], caps: &Caps) -> Result<Shape, ShapeError> {
    super::engine::check_header(wasm).map_err(refused)?;
    let malformed = |e: wasmparser::BinaryReaderError| {
        refused(format!(
            "the component is malformed: {} (at byte {})",
            e.message(),
            e.offset()
        ))
    };
    let mut modules: Vec<ModuleShape> = Vec::new();
    let mut stack = vec![Frame::Component {
        modules: Vec::new(),
    }];
    let mut shape = Shape::default();
    let mut root_done = false;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(malformed)?;
        if root_done {
            return Err(refused("the component has bytes after its end".into()));
        }
        let current = match stack.last() {
            Some(Frame::Module(i)) => Some(*i),
            _ => None,
        };
        match payload {
            Payload::Version { encoding, .. } => {
                let in_module = current.is_some();
                if in_module != (encoding == Encoding::Module) {
                    return Err(refused(
                        "the component is malformed: a section of the wrong kind".into(),
                    ));
                }
            }
            Payload::ModuleSection { .. } => {
                if modules.len() >= MAX_CORE_MODULES {
                    return Err(refused(format!(
                        "the component defines more than {MAX_CORE_MODULES} core modules"
                    )));
                }
                let index = modules.len();
                modules.push(ModuleShape::default());
                if let Some(Frame::Component { modules }) = stack.last_mut() {
                    modules.push(Some(index));
                }
                stack.push(Frame::Module(index));
            }
            Payload::ComponentSection { .. } => {
                let depth = stack.len() as u32;
                if depth >= MAX_COMPONENT_DEPTH {
                    return Err(refused(format!(
                        "the component nests components more than {MAX_COMPONENT_DEPTH} deep"
                    )));
                }
                stack.push(Frame::Component {
                    modules: Vec::new(),
                });
            }
            Payload::End(_) => {
                stack.pop();
                root_done = stack.is_empty();
            }
            Payload::ComponentImportSection(reader) => {
                for import in reader {
                    if let ComponentTypeRef::Module(_) = import.map_err(malformed)?.ty {
                        push_unknown_module(&mut stack);
                    }
                }
            }
            Payload::ComponentAliasSection(reader) => {
                for alias in reader {
                    let is_module = match alias.map_err(malformed)? {
                        ComponentAlias::InstanceExport { kind, .. } => {
                            kind == ComponentExternalKind::Module
                        }
                        ComponentAlias::Outer { kind, .. } => {
                            kind == ComponentOuterAliasKind::CoreModule
                        }
                        ComponentAlias::CoreInstanceExport { .. } => false,
                    };
                    if is_module {
                        push_unknown_module(&mut stack);
                    }
                }
            }
            Payload::InstanceSection(reader) => {
                for instance in reader {
                    let Instance::Instantiate { module_index, .. } = instance.map_err(malformed)?
                    else {
                        continue;
                    };
                    shape.core_instances += 1;
                    if shape.core_instances > MAX_CORE_INSTANCES {
                        return Err(too_big(format!(
                            "the component creates more than {MAX_CORE_INSTANCES} core instances; \
                             a worker's pool holds {MAX_CORE_INSTANCES} per job"
                        )));
                    }
                    let defined = match stack.last() {
                        Some(Frame::Component { modules }) => {
                            modules.get(module_index as usize).copied().flatten()
                        }
                        _ => None,
                    };
                    if let Some(mi) = defined {
                        let m = &modules[mi];
                        shape.memories += m.memories.len() as u32;
                        shape.tables += m.tables.len() as u32;
                        for (i, &bytes) in m.memories.iter().enumerate() {
                            shape.initial_memory_bytes =
                                shape.initial_memory_bytes.saturating_add(bytes);
                            let index = m.imported_memories as usize + i;
                            check_memory(bytes, index, mi as u32, &shape, caps)?;
                        }
                        for &elements in &m.tables {
                            shape.initial_table_elements =
                                shape.initial_table_elements.saturating_add(elements);
                        }
                        check_instance_totals(&shape)?;
                    }
                }
            }
            Payload::TypeSection(reader) => {
                if reader.count() > MAX_TYPES {
                    return Err(refused(format!(
                        "a core module declares {} types; the limit is {MAX_TYPES}",
                        reader.count()
                    )));
                }
            }
            Payload::ImportSection(reader) => {
                let Some(m) = current else { continue };
                for import in reader.into_imports() {
                    match import.map_err(malformed)?.ty {
                        TypeRef::Memory(_) => modules[m].imported_memories += 1,
                        TypeRef::Func(_) | TypeRef::FuncExact(_) => {
                            modules[m].imported_functions += 1
                        }
                        _ => {}
                    }
                }
                check_functions(&modules[m])?;
            }
            Payload::FunctionSection(reader) => {
                let Some(m) = current else { continue };
                modules[m].defined_functions = reader.count();
                shape.functions += u64::from(reader.count());
                check_functions(&modules[m])?;
            }
            Payload::GlobalSection(reader) => {
                if reader.count() > MAX_GLOBALS {
                    return Err(refused(format!(
                        "a core module defines {} globals; the limit is {MAX_GLOBALS}",
                        reader.count()
                    )));
                }
            }
            Payload::MemorySection(reader) => {
                let Some(m) = current else { continue };
                if reader.count() > MAX_MEMORIES_PER_MODULE {
                    return Err(too_big(format!(
                        "a core module defines {} memories; a worker's pool holds \
                         {MAX_MEMORIES_PER_MODULE} per module",
                        reader.count()
                    )));
                }
                for memory in reader {
                    let memory = memory.map_err(malformed)?;
                    if memory.shared {
                        return Err(refused(
                            "the component defines a shared memory; jobs cannot use threads".into(),
                        ));
                    }
                    let page = 1u64 << memory.page_size_log2.unwrap_or(16).min(16);
                    let bytes = memory.initial.saturating_mul(page);
                    modules[m].memories.push(bytes);
                    let index =
                        modules[m].imported_memories as usize + modules[m].memories.len() - 1;
                    if bytes > caps.pool_memory_bytes {
                        // Reported at once: no instance of this module can exist.
                        check_memory(bytes, index, m as u32, &shape, caps)?;
                    }
                }
            }
            Payload::TableSection(reader) => {
                let Some(m) = current else { continue };
                if reader.count() > MAX_TABLES_PER_MODULE {
                    return Err(too_big(format!(
                        "a core module defines {} tables; a worker's pool holds \
                         {MAX_TABLES_PER_MODULE} per module",
                        reader.count()
                    )));
                }
                for table in reader {
                    let table = table.map_err(malformed)?;
                    let initial = table.ty.initial;
                    if initial > MAX_TABLE_ELEMENTS as u64 {
                        return Err(too_big(format!(
                            "its table {} starts with {initial} elements; the limit is \
                             {MAX_TABLE_ELEMENTS} elements",
                            modules[m].tables.len()
                        )));
                    }
                    modules[m].tables.push(initial);
                }
            }
            Payload::ElementSection(reader) => {
                let mut items = 0u64;
                for element in reader {
                    items += u64::from(match element.map_err(malformed)?.items {
                        wasmparser::ElementItems::Functions(f) => f.count(),
                        wasmparser::ElementItems::Expressions(_, e) => e.count(),
                    });
                }
                if items > MAX_TABLE_ELEMENTS as u64 {
                    return Err(too_big(format!(
                        "a core module's element segments hold {items} elements; the limit is \
                         {MAX_TABLE_ELEMENTS} elements"
                    )));
                }
            }
            Payload::CodeSectionStart { size, .. } => {
                shape.code_bytes = shape.code_bytes.saturating_add(size as usize);
                if shape.code_bytes > MAX_CODE_BYTES {
                    return Err(refused(format!(
                        "the component holds {} bytes of code; the limit is {MAX_CODE_BYTES} bytes",
                        shape.code_bytes
                    )));
                }
            }
            Payload::CodeSectionEntry(body) => {
                let Some(m) = current else { continue };
                let function = modules[m].imported_functions as usize;
                check_body(&body, function, &mut modules[m], &mut shape).map_err(|e| match e {
                    BodyError::Malformed(e) => malformed(e),
                    BodyError::Refused(m) => refused(m),
                })?;
            }
            _ => {}
        }
    }
    shape.modules = modules.len();
    Ok(shape)
}

fn push_unknown_module(stack: &mut [Frame]) {
    if let Some(Frame::Component { modules }) = stack.last_mut() {
        modules.push(None);
    }
}

fn check_functions(m: &ModuleShape) -> Result<(), ShapeError> {
    let n = u64::from(m.imported_functions) + u64::from(m.defined_functions);
    if n > u64::from(MAX_FUNCTIONS) {
        return Err(refused(format!(
            "a core module has {n} functions; the limit is {MAX_FUNCTIONS}"
        )));
    }
    Ok(())
}

/// One memory of `bytes` (index `index` of core module `module`) against
/// the pool slot and, with the memories instantiated so far, the class cap.
fn check_memory(
    bytes: u64,
    index: usize,
    module: u32,
    shape: &Shape,
    caps: &Caps,
) -> Result<(), ShapeError> {
    let whose = if module == 0 {
        format!("its memory {index}")
    } else {
        format!("its memory {index} (core module {module})")
    };
    let over_pool = bytes > caps.pool_memory_bytes;
    let over_class = shape.initial_memory_bytes.max(bytes) > caps.class_memory_bytes;
    if !over_pool && !over_class {
        return Ok(());
    }
    let what = if shape.initial_memory_bytes <= bytes {
        format!("{whose} starts at {}", mib(bytes))
    } else {
        format!(
            "its memories start at {} together",
            mib(shape.initial_memory_bytes)
        )
    };
    // The tighter of the two caps is the one to name (the pool when they
    // are equal: a class cap above the pool is clamped to it).
    if caps.class_memory_bytes < caps.pool_memory_bytes {
        return Err(too_big(format!(
            "{what}; the class allows {} (`memory`); raise `memory` in stoker.toml or shrink \
             the module's initial memory",
            mib(caps.class_memory_bytes)
        )));
    }
    Err(too_big(format!(
        "{what}; a worker's pool holds {} per memory (`--max-memory` of the workers and of \
         `stoker deploy`); shrink the module's initial memory or raise `--max-memory`",
        mib(caps.pool_memory_bytes)
    )))
}

fn check_instance_totals(shape: &Shape) -> Result<(), ShapeError> {
    if shape.memories > MAX_MEMORIES {
        return Err(too_big(format!(
            "the component instantiates {} memories; a worker's pool holds {MAX_MEMORIES} per job",
            shape.memories
        )));
    }
    if shape.tables > MAX_TABLES {
        return Err(too_big(format!(
            "the component instantiates {} tables; a worker's pool holds {MAX_TABLES} per job",
            shape.tables
        )));
    }
    if shape.initial_table_elements > MAX_TABLE_ELEMENTS as u64 {
        return Err(too_big(format!(
            "its tables start with {} elements together; the limit is {MAX_TABLE_ELEMENTS} \
             elements",
            shape.initial_table_elements
        )));
    }
    Ok(())
}

enum BodyError {
    Malformed(wasmparser::BinaryReaderError),
    Refused(String),
}

impl From<wasmparser::BinaryReaderError> for BodyError {
    fn from(e: wasmparser::BinaryReaderError) -> Self {
        BodyError::Malformed(e)
    }
}

/// Locals, size and nesting of one function body.
fn check_body(
    body: &wasmparser::FunctionBody<'_>,
    first_defined: usize,
    module: &mut ModuleShape,
    shape: &mut Shape,
) -> Result<(), BodyError> {
    let index = first_defined + module.bodies;
    module.bodies += 1;
    let bytes = body.range().len();
    if bytes > MAX_FUNCTION_BYTES {
        return Err(BodyError::Refused(format!(
            "function {index} is {bytes} bytes; the limit is {MAX_FUNCTION_BYTES} bytes"
        )));
    }
    shape.max_function_bytes = shape.max_function_bytes.max(bytes);
    let mut locals_reader = body.get_locals_reader()?;
    let mut locals: u64 = 0;
    for _ in 0..locals_reader.get_count() {
        let (count, _) = locals_reader.read()?;
        locals += u64::from(count);
    }
    if locals > u64::from(MAX_LOCALS_PER_FUNCTION) {
        return Err(BodyError::Refused(format!(
            "function {index} declares {locals} locals; the limit is \
             {MAX_LOCALS_PER_FUNCTION} locals per function"
        )));
    }
    shape.max_locals = shape.max_locals.max(locals as u32);
    module.locals += locals;
    if module.locals > MAX_TOTAL_LOCALS {
        return Err(BodyError::Refused(format!(
            "a core module declares {} locals over its functions; the limit is \
             {MAX_TOTAL_LOCALS}",
            module.locals
        )));
    }
    let mut ops = body.get_operators_reader()?;
    let mut depth: u32 = 1;
    while !ops.eof() {
        match ops.read()? {
            Operator::Block { .. }
            | Operator::Loop { .. }
            | Operator::If { .. }
            | Operator::Try { .. }
            | Operator::TryTable { .. } => {
                depth += 1;
                if depth > MAX_BLOCK_DEPTH {
                    return Err(BodyError::Refused(format!(
                        "function {index} nests blocks more than {MAX_BLOCK_DEPTH} deep"
                    )));
                }
                shape.max_block_depth = shape.max_block_depth.max(depth);
            }
            Operator::End => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use wasm_encoder::{
        CodeSection, Component, Function, FunctionSection, InstanceSection, MemorySection,
        MemoryType, Module, ModuleArg, ModuleSection, TableSection, TableType, TypeSection,
        ValType,
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
}
