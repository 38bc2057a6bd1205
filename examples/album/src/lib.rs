//! `album`: a batch with a callback. The parent (class `album`) makes
//! `albums` batches, one per checkpoint, each of `photos` jobs of class
//! `album-photo` and an `on_success` callback of class `album-done`. Each photo
//! job stages `INCRBY album:photos 1` and adds `ALBUM:PHOTO` to the set
//! `album:seen`; the callback stages `INCRBY album:callbacks 1` and records
//! its summary in the hash `album:summary` (field: the album).
//!
//! A batch, its jobs and the parent's cursor are committed in one step: kill
//! the parent half-way and no batch or photo job is created twice; kill the
//! workers running the photos and each photo is counted once, and each
//! callback runs once (`album:callbacks` equals `albums`).
//!
//! ```text
//! cargo build -p album --profile guest --target wasm32-wasip2
//! stoker deploy examples/stoker.toml
//! stoker enqueue album '{"albums": 3, "photos": 50}'
//! stoker batch status BATCH_ID    # the ids are in the parent's result
//! ```
//!
//! `album-photo` and `album-done` also serve `stoker batch create` (args
//! `{"album": N, "photo": N}` and `{"album": N}`).
use serde::{Deserialize, Serialize};
use stoker_sdk::batch::{Batch, Callback, Summary};
use stoker_sdk::redis::{self, Write};
use stoker_sdk::{Job, Result};

#[derive(Deserialize)]
#[serde(untagged)]
enum Args {
    /// The parent: how many batches of how many photos; optional pacing for
    /// demos and tests (ms per photo staged, ms per photo run).
    Parent {
        albums: u64,
        photos: u64,
        #[serde(default)]
        pause_ms: u64,
        #[serde(default)]
        photo_ms: u64,
    },
    /// A photo job.
    Photo {
        album: u64,
        photo: u64,
        #[serde(default)]
        pause_ms: u64,
    },
    /// The callback (its args are a batch summary).
    Done(Summary<AlbumRef>),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct AlbumRef {
    album: u64,
}

/// The parent's progress: albums committed, and their batches.
#[derive(Default, Serialize, Deserialize)]
struct Made {
    albums: u64,
    batches: Vec<String>,
}

fn album(args: Args, job: &mut Job<Made>) -> Result<serde_json::Value> {
    match args {
        Args::Photo {
            album,
            photo,
            pause_ms,
        } => {
            if pause_ms > 0 {
                std::thread::sleep(std::time::Duration::from_millis(pause_ms));
            }
            redis::stage(Write::incr_by("album:photos", 1))?;
            redis::stage(Write::sadd("album:seen", [format!("{album}:{photo}")]))?;
            Ok(serde_json::json!({ "album": album, "photo": photo }))
        }
        Args::Done(summary) => {
            redis::stage(Write::incr_by("album:callbacks", 1))?;
            let text = serde_json::to_string(&summary)
                .map_err(|e| stoker_sdk::Error::new(e.to_string()))?;
            redis::stage(Write::hset(
                "album:summary",
                &summary.args.album.to_string(),
                text,
            ))?;
            Ok(serde_json::json!({ "batch": summary.batch, "done": summary.done }))
        }
        Args::Parent {
            albums,
            photos,
            pause_ms,
            photo_ms,
        } => {
            let mut made = job.resumed().unwrap_or_default();
            job.set_total(albums);
            while made.albums < albums {
                let a = made.albums;
                let batch = Batch::create(
                    Some(Callback::new("album-done", &AlbumRef { album: a })?),
                    None,
                )?;
                for p in 0..photos {
                    if pause_ms > 0 {
                        std::thread::sleep(std::time::Duration::from_millis(pause_ms));
                    }
                    let args = serde_json::json!({ "album": a, "photo": p, "pause_ms": photo_ms });
                    batch.enqueue("album-photo", &args)?;
                }
                made.albums += 1;
                made.batches.push(batch.id().to_owned());
                job.set_progress(made.albums, Some(albums));
                // The batch, its photo jobs and the cursor, in one commit.
                job.checkpoint(&made)?;
            }
            Ok(serde_json::json!({ "batches": made.batches }))
        }
    }
}

stoker_sdk::export_job!(album);
