//! Wake-ups: an idle worker hears at once that a job landed in an empty queue.
//!
//! Every Stoker script that pushes onto a queue's pending list (enqueue,
//! promotion of due jobs, child jobs and batches, requeues, recovery)
//! publishes an empty message on the queue's channel,
//! `stoker:{q:QUEUE}:wake`, when that push made the list non-empty. Each
//! worker listens on its queues' channels with a connection of its own, and
//! a message ends the manager's idle sleep at once.
//!
//! Pub/sub delivers at most once, so it only shortens a wait: a message lost
//! while the listener reconnects, or a job pushed with a plain `LPUSH` by
//! another client, is found at the manager's next poll (at most
//! `--idle-poll` later), as without wake-ups. Only the first job into an
//! empty list is announced, so a busy queue publishes almost nothing.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, watch};

/// Longest pause between attempts to (re)subscribe.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Listens on `channels` at `redis_url` until `stop` turns `true`, and
/// notifies `wake` at each message, and after each (re)subscription (a
/// message may have been missed meanwhile).
pub async fn listen(
    redis_url: String,
    channels: Vec<String>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pause = Duration::from_millis(100);
    loop {
        let subscribed = async {
            let client = redis::Client::open(redis_url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            for channel in &channels {
                pubsub.subscribe(channel).await?;
            }
            redis::RedisResult::Ok(pubsub)
        };
        let outcome = tokio::select! {
            r = subscribed => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        match outcome {
            Ok(pubsub) => {
                pause = Duration::from_millis(100);
                wake.notify_one();
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        m = messages.next() => match m {
                            Some(_) => wake.notify_one(),
                            None => break,
                        },
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
                tracing::debug!("wake-up subscription closed; resubscribing");
            }
            Err(e) => {
                tracing::debug!(error = %e, retry_in = ?pause, "cannot subscribe to wake-ups; polling meanwhile");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
}
