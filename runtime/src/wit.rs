//! Host-side bindings of the `stoker:job` world (`sdk/wit/`, the one copy):
//! the contract [`crate::host`] implements and [`crate::sandbox`] links.
//!
//! Imports that talk to Redis are async; those that can end the attempt (a
//! commit refused, a lost lease) are trappable: their error is a trap the
//! sandbox classifies, never something the guest can swallow.

wasmtime::component::bindgen!({
    world: "job",
    path: "../sdk/wit",
    imports: {
        "stoker:job/checkpoint.save": async | trappable,
        "stoker:job/checkpoint.should-yield": trappable,
        "stoker:job/enqueue.enqueue": async | trappable,
        "stoker:job/enqueue.enqueue-in": async | trappable,
        "stoker:job/batch": async | trappable,
        "stoker:job/redis": async | trappable,
    },
    exports: { default: async },
});
