//! Imports whose arguments are read in place, so the host copies no more of
//! what a guest passes than the bound the argument is checked against.
//!
//! The generated bindings lift every `string` and `list<u8>` argument into a
//! host `String` / `Vec<u8>` before the host function runs: a guest passing
//! 100 MiB would cost the worker 100 MiB (outside the job's memory cap) before
//! any check. These imports are linked instead over
//! [`WasmStr`] / [`WasmList`], the argument still in guest memory; each is
//! checked against its bound first and copied only when it fits (a log line:
//! only the part that fits). The WIT world is unchanged.
//!
//! | import | bound, checked before the copy |
//! |---|---|
//! | `stoker:job/log.log` | the log's remaining room (the class's `log` cap) |
//! | `wasi:io/streams` `output-stream.write` | the stream's `check-write` permit (stdout/stderr: 64 KiB) |
//! | `wasi:io/streams` `output-stream.blocking-write-and-flush` | 4096 bytes (WASI's own limit) |
//! | `stoker:job/checkpoint.save` | the class's `retained` cap |
//! | `stoker:job/enqueue`, `stoker:job/batch` | [`MAX_ARGS_BYTES`] per args, [`MAX_NAME_BYTES`] per class or batch id |
//! | `stoker:job/redis` `write`, `stage` | the staged bytes left for the next commit ([`super::bounded_redis`]) |
//!
//! A guest built with a UTF-16 string encoding has its strings transcoded
//! by wasmtime when read, a copy bounded by the guest's memory (its cap).

use std::future::Future;

use bytes::Bytes;
use wasmtime::component::{ComponentType, Lift, Linker, Resource, WasmList, WasmStr};
use wasmtime::{StoreContextMut, bail};
use wasmtime_wasi::p2::DynOutputStream;
use wasmtime_wasi::p2::bindings::io::streams::{Host as _, StreamError as WitStreamError};

use super::state::JobState;
use crate::host::checkpoint::CheckpointCtx;
use crate::host::enqueue::{EnqueueCtx, MAX_CHILD_BYTES};
use crate::queue::commit::CommitError;
use crate::wit::stoker::job::{batch, checkpoint, enqueue, log};

/// The longest args a child job or a batch callback may have, bytes of JSON
/// (also bounded, with the other children, by [`MAX_CHILD_BYTES`] a commit).
pub const MAX_ARGS_BYTES: usize = MAX_CHILD_BYTES;
/// The longest class name or batch id a guest may pass, bytes (names are at
/// most 64 characters; longer ones are refused unread).
pub const MAX_NAME_BYTES: usize = 128;
/// WASI's cap on one `blocking-write-and-flush`.
const BLOCKING_WRITE_MAX: usize = 4096;
/// The `wasi:io` version wasmtime-wasi defines (guests importing any 0.2.x
/// are linked to it).
const WASI_IO_STREAMS: &str = "wasi:io/streams@0.2.12";

/// The value of a bounded read, or the refusal the guest gets (`Err` of the
/// import's `result`), nothing copied.
macro_rules! refused {
    ($read:expr) => {
        match $read {
            Ok(v) => v,
            Err(reason) => return Ok((Err(reason),)),
        }
    };
}

/// Replaces the generated linking of the imports above (linked first by
/// [`super::state::link`]) with bounded ones.
pub fn link(linker: &mut Linker<JobState>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    let result = link_all(linker);
    linker.allow_shadowing(false);
    result.map_err(|e| anyhow::anyhow!("linking bounded imports: {}", crate::render::error(&e)))
}

fn link_all(linker: &mut Linker<JobState>) -> wasmtime::Result<()> {
    let mut log_i = linker.instance("stoker:job/log@0.2.0")?;
    log_i.func_wrap(
        "log",
        |store: StoreContextMut<'_, JobState>, (level, message): (log::Level, WasmStr)| {
            let log = store.data().log.clone();
            let text = message.to_str(&store)?;
            log.line(level, &text);
            Ok(())
        },
    )?;

    let mut streams = linker.instance(WASI_IO_STREAMS)?;
    streams.func_wrap(
        "[method]output-stream.write",
        |mut store: StoreContextMut<'_, JobState>,
         (stream, bytes): (Resource<DynOutputStream>, WasmList<u8>)| {
            let permit = match store.data_mut().table.get_mut(&stream)?.check_write() {
                Ok(n) => n,
                Err(e) => return Ok((Err(store.data_mut().table.convert_stream_error(e)?),)),
            };
            if bytes.len() > permit {
                bail!(
                    "output-stream.write of {} bytes: more than the {permit} bytes check-write \
                     allows",
                    bytes.len()
                );
            }
            let copy = Bytes::copy_from_slice(bytes.as_le_slice(&store));
            let table = &mut store.data_mut().table;
            let written = table.get_mut(&stream)?.write(copy);
            let written: Result<(), WitStreamError> = match written {
                Ok(()) => Ok(()),
                Err(e) => Err(table.convert_stream_error(e)?),
            };
            Ok((written,))
        },
    )?;
    streams.func_wrap_async(
        "[method]output-stream.blocking-write-and-flush",
        |mut store: StoreContextMut<'_, JobState>,
         (stream, bytes): (Resource<DynOutputStream>, WasmList<u8>)| {
            boxed(async move {
                if bytes.len() > BLOCKING_WRITE_MAX {
                    bail!(
                        "Buffer too large for blocking-write-and-flush (expected at most \
                         {BLOCKING_WRITE_MAX})"
                    );
                }
                let copy = Bytes::copy_from_slice(bytes.as_le_slice(&store));
                let table = &mut store.data_mut().table;
                let written = table.get_mut(&stream)?.blocking_write_and_flush(copy).await;
                let written: Result<(), WitStreamError> = match written {
                    Ok(()) => Ok(()),
                    Err(e) => Err(table.convert_stream_error(e)?),
                };
                Ok((written,))
            })
        },
    )?;

    let mut cp = linker.instance("stoker:job/checkpoint@0.2.0")?;
    cp.func_wrap_async(
        "save",
        |mut store: StoreContextMut<'_, JobState>,
         (state, progress): (WasmList<u8>, Option<checkpoint::Progress>)| {
            boxed(async move {
                let cap = store.data().checkpoint.meter.retained;
                let size = state.len() as u64;
                if size > cap {
                    return Err(CommitError::SnapshotLimit { size, cap }.into());
                }
                let state = state.as_le_slice(&store).to_vec();
                let mut view = store.data_mut().view::<CheckpointCtx>();
                let stop = checkpoint::Host::save(&mut view, state, progress).await?;
                Ok((stop,))
            })
        },
    )?;

    let mut enq = linker.instance("stoker:job/enqueue@0.2.0")?;
    enq.func_wrap_async(
        "enqueue",
        |mut store: StoreContextMut<'_, JobState>, (class, args): (WasmStr, WasmStr)| {
            boxed(async move {
                let class = refused!(name(&store, &class)?);
                let args = refused!(json(&store, &args)?);
                let mut view = store.data_mut().view::<EnqueueCtx>();
                Ok((enqueue::Host::enqueue(&mut view, class, args).await?,))
            })
        },
    )?;
    enq.func_wrap_async(
        "enqueue-in",
        |mut store: StoreContextMut<'_, JobState>,
         (class, args, delay): (WasmStr, WasmStr, u64)| {
            boxed(async move {
                let class = refused!(name(&store, &class)?);
                let args = refused!(json(&store, &args)?);
                let mut view = store.data_mut().view::<EnqueueCtx>();
                Ok((enqueue::Host::enqueue_in(&mut view, class, args, delay).await?,))
            })
        },
    )?;

    let mut b = linker.instance("stoker:job/batch@0.2.0")?;
    b.func_wrap_async(
        "create",
        |mut store: StoreContextMut<'_, JobState>,
         (on_success, on_complete): (Option<RawCallback>, Option<RawCallback>)| {
            boxed(async move {
                let on_success = refused!(callback(&store, on_success.as_ref())?);
                let on_complete = refused!(callback(&store, on_complete.as_ref())?);
                let mut view = store.data_mut().view::<EnqueueCtx>();
                Ok((batch::Host::create(&mut view, on_success, on_complete).await?,))
            })
        },
    )?;
    b.func_wrap_async(
        "add",
        |mut store: StoreContextMut<'_, JobState>,
         (id, class, args): (WasmStr, WasmStr, WasmStr)| {
            boxed(async move {
                let id = refused!(name(&store, &id)?);
                let class = refused!(name(&store, &class)?);
                let args = refused!(json(&store, &args)?);
                let mut view = store.data_mut().view::<EnqueueCtx>();
                Ok((batch::Host::add(&mut view, id, class, args).await?,))
            })
        },
    )?;

    let mut redis = linker.instance("stoker:job/redis@0.2.0")?;
    super::bounded_redis::link(&mut redis)
}

/// `batch.callback`, read in place.
#[derive(ComponentType, Lift)]
#[component(record)]
struct RawCallback {
    class: WasmStr,
    args: WasmStr,
}

fn boxed<'a, T>(
    f: impl Future<Output = wasmtime::Result<T>> + Send + 'a,
) -> Box<dyn Future<Output = wasmtime::Result<T>> + Send + 'a> {
    Box::new(f)
}

/// Reads a string of at most `max` bytes; a longer one is refused unread
/// (`what` names it in the error the guest gets). Invalid UTF-8 traps, as the
/// generated bindings do.
fn bounded_str(
    store: &StoreContextMut<'_, JobState>,
    s: &WasmStr,
    max: usize,
    what: &str,
) -> wasmtime::Result<Result<String, String>> {
    let text = s.to_str(store)?;
    if text.len() > max {
        return Ok(Err(format!(
            "{what} is {} bytes; at most {max} bytes are accepted",
            text.len()
        )));
    }
    Ok(Ok(text.into_owned()))
}

/// A class name or batch id, at most [`MAX_NAME_BYTES`].
fn name(
    store: &StoreContextMut<'_, JobState>,
    s: &WasmStr,
) -> wasmtime::Result<Result<String, String>> {
    bounded_str(store, s, MAX_NAME_BYTES, "a class name or batch id")
}

/// Args (JSON), at most [`MAX_ARGS_BYTES`].
fn json(
    store: &StoreContextMut<'_, JobState>,
    s: &WasmStr,
) -> wasmtime::Result<Result<String, String>> {
    bounded_str(store, s, MAX_ARGS_BYTES, "a job's args")
}

fn callback(
    store: &StoreContextMut<'_, JobState>,
    cb: Option<&RawCallback>,
) -> wasmtime::Result<Result<Option<batch::Callback>, String>> {
    let Some(cb) = cb else { return Ok(Ok(None)) };
    let class = match name(store, &cb.class)? {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let args = match json(store, &cb.args)? {
        Ok(a) => a,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(Some(batch::Callback { class, args })))
}
