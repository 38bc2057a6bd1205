//! The walk over a component's sections, nested modules and components
//! included: counts what each core module defines, refuses at the first
//! section past a limit, and reads every function body for its locals, size
//! and nesting.

use wasmparser::{ComponentAlias, ComponentExternalKind, ComponentOuterAliasKind, Operator};
use wasmparser::{ComponentTypeRef, Encoding, Instance, Parser, Payload, TypeRef};

use super::refusal::{check_instance_totals, check_memory, refused, too_big};
use super::{
    Caps, MAX_BLOCK_DEPTH, MAX_CODE_BYTES, MAX_COMPONENT_DEPTH, MAX_CORE_INSTANCES,
    MAX_CORE_MODULES, MAX_FUNCTION_BYTES, MAX_FUNCTIONS, MAX_GLOBALS, MAX_LOCALS_PER_FUNCTION,
    MAX_MEMORIES_PER_MODULE, MAX_TABLES_PER_MODULE, MAX_TOTAL_LOCALS, MAX_TYPES, Shape, ShapeError,
};
use crate::sandbox::limits::MAX_TABLE_ELEMENTS;

/// What one core module defines, as read so far.
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

/// Where the walk is: in a component (its core modules by index into the
/// walk's list; `None` for one imported or aliased, whose shape is unknown),
/// or in the core module at that index.
enum Frame {
    Component { modules: Vec<Option<usize>> },
    Module(usize),
}

/// Checks the shape of component `wasm` against `caps` and the fixed limits
/// (the `MAX_` constants of `sandbox::shape`), without compiling it. Pure and
/// linear in `wasm.len()`: this is the function to fuzz for "components
/// pushed through deploy validation".
pub fn check_component(wasm: &[u8], caps: &Caps) -> Result<Shape, ShapeError> {
    crate::sandbox::engine::check_header(wasm).map_err(refused)?;
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
