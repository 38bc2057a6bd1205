//! Host-side bindings of the `stoker:job` world (`sdk/wit/`, the one copy).

wasmtime::component::bindgen!({
    world: "job",
    path: "../sdk/wit",
    exports: { default: async },
});
