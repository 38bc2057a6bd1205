//! WebAssembly no toolchain would emit, generated with `wasm-encoder` for the
//! tests that hand one to deploy or to a worker: components of one core
//! module, a job component lifted by hand, compile bombs, a component over
//! the size limit and one importing what no host provides.

use wasm_encoder::{
    CanonicalOption, CodeSection, Component, ComponentBuilder, ComponentExportKind,
    ComponentTypeRef, ComponentValType, ExportKind, ExportSection, Function, FunctionSection,
    GlobalSection, GlobalType, HeapType, InstanceSection, Instruction, MemorySection, MemoryType,
    Module, ModuleArg, ModuleSection, PrimitiveValType, RefType, TableSection, TableType,
    TypeSection, ValType,
};

/// A component of one core module, instantiated once.
fn component(module: &Module) -> Vec<u8> {
    let mut c = Component::new();
    c.section(&ModuleSection(module));
    let mut instances = InstanceSection::new();
    instances.instantiate(0, Vec::<(&str, ModuleArg)>::new());
    c.section(&instances);
    c.finish()
}

/// A component whose memory starts at `pages` wasm pages (64 KiB each).
pub fn initial_memory(pages: u64) -> Vec<u8> {
    let mut m = Module::new();
    let mut memories = MemorySection::new();
    memories.memory(memory_type(pages));
    m.section(&memories);
    component(&m)
}

/// A compile bomb: `functions` functions of `locals` i32 locals, each
/// body setting every local (about 7 bytes a local).
pub fn locals(functions: u32, locals: u32) -> Vec<u8> {
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
        for l in 0..locals {
            f.instruction(&Instruction::I32Const(l as i32));
            f.instruction(&Instruction::LocalSet(l));
        }
        f.instruction(&Instruction::End);
        code.function(&f);
    }
    m.section(&code);
    component(&m)
}

/// A core module: one memory of `pages` pages (exported), and `tables`
/// elements of one funcref table, nothing else.
pub fn core_module_bytes(pages: u64, table: u64) -> Vec<u8> {
    let mut m = Module::new();
    if table > 0 {
        let mut t = TableSection::new();
        t.table(table_type(table));
        m.section(&t);
    }
    let mut mem = MemorySection::new();
    mem.memory(memory_type(pages));
    m.section(&mem);
    let mut ex = ExportSection::new();
    ex.export("memory", ExportKind::Memory, 0);
    m.section(&ex);
    m.finish()
}

fn table_type(minimum: u64) -> TableType {
    TableType {
        element_type: RefType::FUNCREF,
        table64: false,
        minimum,
        maximum: None,
        shared: false,
    }
}

fn memory_type(pages: u64) -> MemoryType {
    MemoryType {
        minimum: pages,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    }
}

/// A `stoker:job` component written by hand (no SDK): its `run` grows a
/// funcref table 1,000 elements at a time until it holds `table_target`
/// elements or a growth is refused, then returns the table's size as its
/// result. Its memory starts at `pages` pages (at least 1).
pub fn job_component(table_target: u32, pages: u64) -> Vec<u8> {
    // Core module: memory 0, table 0, a bump allocator, `run`.
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32; 4], [ValType::I32]); // cabi_realloc
    types.ty().function([ValType::I32; 5], [ValType::I32]); // run
    let mut funcs = FunctionSection::new();
    funcs.function(0);
    funcs.function(1);
    let mut tables = TableSection::new();
    tables.table(table_type(1));
    let mut memories = MemorySection::new();
    memories.memory(memory_type(pages.max(1)));
    let mut globals = GlobalSection::new();
    globals.global(
        GlobalType {
            val_type: ValType::I32,
            mutable: true,
            shared: false,
        },
        &wasm_encoder::ConstExpr::i32_const(1024),
    );
    let mut exports = ExportSection::new();
    exports.export("memory", ExportKind::Memory, 0);
    exports.export("cabi_realloc", ExportKind::Func, 0);
    exports.export("run", ExportKind::Func, 1);

    use Instruction as I;
    // cabi_realloc(old, old_size, align, new_size): bump, aligned.
    let mut realloc = Function::new([(1, ValType::I32)]);
    for i in [
        I::GlobalGet(0),
        I::LocalGet(2),
        I::I32Add,
        I::I32Const(1),
        I::I32Sub,
        I::I32Const(0),
        I::LocalGet(2),
        I::I32Sub,
        I::I32And,
        I::LocalTee(4),
        I::LocalGet(3),
        I::I32Add,
        I::GlobalSet(0),
        I::LocalGet(4),
        I::End,
    ] {
        realloc.instruction(&i);
    }
    // run: locals 5 = digit pointer, 6 = number.
    let mut run = Function::new([(2, ValType::I32)]);
    let null = I::RefNull(HeapType::FUNC);
    let body = [
        I::Block(wasm_encoder::BlockType::Empty),
        I::Loop(wasm_encoder::BlockType::Empty),
        I::TableSize(0),
        I::I32Const(table_target as i32),
        I::I32GeU,
        I::BrIf(1),
        null,
        I::I32Const(1000),
        I::TableGrow(0),
        I::I32Const(-1),
        I::I32Eq,
        I::BrIf(1),
        I::Br(0),
        I::End,
        I::End,
        // Decimal digits of table.size, backwards from 96 down.
        I::TableSize(0),
        I::LocalSet(6),
        I::I32Const(96),
        I::LocalSet(5),
        I::Loop(wasm_encoder::BlockType::Empty),
        I::LocalGet(5),
        I::I32Const(1),
        I::I32Sub,
        I::LocalTee(5),
        I::LocalGet(6),
        I::I32Const(10),
        I::I32RemU,
        I::I32Const(48),
        I::I32Add,
        I::I32Store8(wasm_encoder::MemArg {
            offset: 0,
            align: 0,
            memory_index: 0,
        }),
        I::LocalGet(6),
        I::I32Const(10),
        I::I32DivU,
        I::LocalTee(6),
        I::BrIf(0),
        I::End,
        // The return area at 16: ok (0), done (0), string (ptr, len).
        I::I32Const(16),
        I::I32Const(0),
        I::I32Store(mem4(0)),
        I::I32Const(16),
        I::LocalGet(5),
        I::I32Store(mem4(8)),
        I::I32Const(16),
        I::I32Const(96),
        I::LocalGet(5),
        I::I32Sub,
        I::I32Store(mem4(12)),
        I::I32Const(16),
        I::End,
    ];
    for i in &body {
        run.instruction(i);
    }
    let mut code = CodeSection::new();
    code.function(&realloc);
    code.function(&run);
    let mut core = Module::new();
    core.section(&types)
        .section(&funcs)
        .section(&tables)
        .section(&memories)
        .section(&globals)
        .section(&exports)
        .section(&code);

    // The component: instantiate it, lift `run` with the job world's types.
    let mut c = ComponentBuilder::default();
    let module = c.core_module(None, &core);
    let instance = c.core_instantiate(None, module, Vec::<(&str, ModuleArg)>::new());
    let run_core = c.core_alias_export(None, instance, "run", ExportKind::Func);
    let memory = c.core_alias_export(None, instance, "memory", ExportKind::Memory);
    let realloc = c.core_alias_export(None, instance, "cabi_realloc", ExportKind::Func);

    let string = ComponentValType::Primitive(PrimitiveValType::String);
    let (kind, t) = c.type_defined(None);
    t.enum_type(["failed", "bad-snapshot"]);
    let kind = c.export("error-kind", ComponentExportKind::Type, kind, None);
    let (error, t) = c.type_defined(None);
    t.record([
        ("message", string),
        (
            "retryable",
            ComponentValType::Primitive(PrimitiveValType::Bool),
        ),
        ("kind", ComponentValType::Type(kind)),
    ]);
    let error = c.export("job-error", ComponentExportKind::Type, error, None);
    let (outcome, t) = c.type_defined(None);
    t.variant([("done", Some(string)), ("yielded", None)]);
    let outcome = c.export("outcome", ComponentExportKind::Type, outcome, None);
    let (bytes, t) = c.type_defined(None);
    t.list(PrimitiveValType::U8);
    let (snapshot, t) = c.type_defined(None);
    t.option(ComponentValType::Type(bytes));
    let (result, t) = c.type_defined(None);
    t.result(
        Some(ComponentValType::Type(outcome)),
        Some(ComponentValType::Type(error)),
    );
    let (func, mut t) = c.type_function(None);
    t.params([
        ("args", string),
        ("snapshot", ComponentValType::Type(snapshot)),
    ])
    .result(Some(ComponentValType::Type(result)));
    let run = c.lift_func(
        None,
        run_core,
        func,
        [
            CanonicalOption::UTF8,
            CanonicalOption::Memory(memory),
            CanonicalOption::Realloc(realloc),
        ],
    );
    c.export("run", ComponentExportKind::Func, run, None);
    c.finish()
}

fn mem4(offset: u64) -> wasm_encoder::MemArg {
    wasm_encoder::MemArg {
        offset,
        align: 2,
        memory_index: 0,
    }
}

/// A component that imports a function no host provides.
pub fn importing_component() -> Vec<u8> {
    let mut c = ComponentBuilder::default();
    let (func, mut t) = c.type_function(None);
    t.params(Vec::<(&str, ComponentValType)>::new())
        .result(None);
    c.import("escape-hatch", ComponentTypeRef::Func(func));
    c.finish()
}

/// A component over the module size limit: a valid header, then one custom
/// section of 33 MiB.
pub fn oversized_component() -> Vec<u8> {
    let mut c = wasm_encoder::Component::new();
    c.section(&wasm_encoder::CustomSection {
        name: "padding".into(),
        data: vec![0u8; 33 << 20].into(),
    });
    c.finish()
}

/// A compile bomb: four functions of 50,000 locals each, every local used
/// and live to the end, in a component that instantiates them (about 4 MB).
pub fn compile_bomb() -> Vec<u8> {
    const LOCALS: u32 = 50_000;
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I64]);
    let mut funcs = FunctionSection::new();
    let mut code = CodeSection::new();
    let mut exports = ExportSection::new();
    for f in 0..4u32 {
        funcs.function(0);
        let mut body = Function::new([(LOCALS, ValType::I64)]);
        for i in 0..LOCALS {
            for ins in [
                Instruction::LocalGet(i),
                Instruction::LocalGet((i * 7919 + f) % LOCALS),
                Instruction::I64Mul,
                Instruction::LocalGet((i * 104_729 + 3 * f) % LOCALS),
                Instruction::I64Add,
                Instruction::LocalSet((i + 1) % LOCALS),
            ] {
                body.instruction(&ins);
            }
        }
        // Every local stays live to the end.
        body.instruction(&Instruction::LocalGet(0));
        for i in 1..LOCALS {
            body.instruction(&Instruction::LocalGet(i));
            body.instruction(&Instruction::I64Add);
        }
        body.instruction(&Instruction::End);
        code.function(&body);
        exports.export(&format!("f{f}"), ExportKind::Func, f);
    }
    let mut core = Module::new();
    core.section(&types)
        .section(&funcs)
        .section(&exports)
        .section(&code);
    let mut c = ComponentBuilder::default();
    let module = c.core_module(None, &core);
    c.core_instantiate(None, module, Vec::<(&str, ModuleArg)>::new());
    c.finish()
}
