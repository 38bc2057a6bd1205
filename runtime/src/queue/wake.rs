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
//!
//! The listener's connection follows the URL's form ([`Target`]): on one
//! server, a pub/sub connection to it; with Sentinel, one to the primary the
//! Sentinels name at each (re)subscription (a demoted primary still hears the
//! messages, which replication carries); on Cluster, sharded pub/sub: the
//! scripts `SPUBLISH` (a message goes only to the nodes of the channel's slot,
//! the queue's, instead of being broadcast to every node) and a RESP3 cluster
//! connection `SSUBSCRIBE`s each channel on its slot's primary. redis-rs
//! resubscribes after a node is lost; when a slot moves (a failover, a
//! resharding) Redis ends the subscriptions to its channels (an `SUNSUBSCRIBE`
//! push nobody asked for), and the listener then subscribes anew from the
//! current slot map.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{Notify, watch};

use super::Target;

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
    let target = match Target::parse(&redis_url) {
        Ok(target) => target,
        Err(e) => {
            tracing::warn!(error = %e, "no wake-ups; polling only");
            return;
        }
    };
    let mut pause = Duration::from_millis(100);
    loop {
        let outcome = tokio::select! {
            r = subscribe(&target, &channels) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        match outcome {
            Ok(mut messages) => {
                pause = Duration::from_millis(100);
                wake.notify_one();
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

/// Subscribes to `channels` on `target`; a stream with an item per message,
/// which ends when the subscription is lost.
async fn subscribe(
    target: &Target,
    channels: &[String],
) -> redis::RedisResult<BoxStream<'static, ()>> {
    let client = match target {
        Target::Single { url, tls } => super::conn::single_client(url, tls.as_ref())?,
        Target::Sentinel {
            sentinels,
            master,
            db,
            auth,
            sentinel_auth,
            tls,
        } => {
            super::conn::sentinel_client(sentinels, master, *db, auth, sentinel_auth, tls.as_ref())?
                .async_get_client()
                .await?
        }
        Target::Cluster { seeds, auth, tls } => {
            return subscribe_cluster(seeds, auth, tls.as_ref(), channels).await;
        }
    };
    let mut pubsub = client.get_async_pubsub().await?;
    for channel in channels {
        pubsub.subscribe(channel).await?;
    }
    Ok(pubsub.into_on_message().map(|_| ()).boxed())
}

/// [`subscribe`] on Cluster: messages arrive as RESP3 pushes.
async fn subscribe_cluster(
    seeds: &[(String, u16)],
    auth: &super::conn::Auth,
    tls: Option<&super::conn::Tls>,
    channels: &[String],
) -> redis::RedisResult<BoxStream<'static, ()>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = super::conn::cluster_builder(seeds, auth, tls)?
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(tx)
        .build()?;
    let mut conn = super::conn::cluster_connection(&client).await?;
    for channel in channels {
        conn.ssubscribe(channel).await?;
    }
    // The connection lives as long as the stream: dropped, it unsubscribes.
    let pushes = futures::stream::unfold((rx, conn), |(mut rx, conn)| async move {
        let push: redis::PushInfo = rx.recv().await?;
        Some((push.kind, (rx, conn)))
    });
    // The server ended a subscription (its slot moved): the stream ends, and
    // the listener subscribes anew.
    let held = pushes
        .take_while(|kind| std::future::ready(!matches!(kind, redis::PushKind::SUnsubscribe)));
    // A (re)subscription may follow missed messages: it wakes too.
    let wakes = held.filter(|kind| {
        std::future::ready(matches!(
            kind,
            redis::PushKind::SMessage | redis::PushKind::SSubscribe
        ))
    });
    Ok(wakes.map(|_| ()).boxed())
}
