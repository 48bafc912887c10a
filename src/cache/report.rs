//! Health out: every interval, one report to each Meridian in the config, in a
//! task of its own so serving never waits for it. A Meridian that cannot be
//! reached or refuses is logged and simply gets the next report.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::http::{HeaderValue, Method, Request, header};
use http_body_util::Full;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::config::MeridianPush;
use super::proxy::Node;

/// Longest one push may take, whatever the interval.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Pushes reports until `stopped` turns true; counts accepted ones in `accepted`.
pub async fn push_loop(
    node: Arc<Node>,
    push: MeridianPush,
    accepted: watch::Sender<u64>,
    mut stopped: watch::Receiver<bool>,
) {
    // A restart starts `seq` over, so the epoch (start time) must rise with it.
    let epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut ticks = tokio::time::interval(push.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timeout = PUSH_TIMEOUT.min(push.interval.max(Duration::from_secs(1)));
    let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {}", push.token)) else {
        tracing::error!("the Meridian token cannot be sent in a header; no health pushes");
        return;
    };
    for seq in 1u64.. {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        let body = Bytes::from(report(&node, &push, seq, epoch).to_string());
        let mut pushes = JoinSet::new();
        for url in &push.health_urls {
            let mut request = Request::new(Full::new(body.clone()));
            *request.method_mut() = Method::POST;
            *request.uri_mut() = url.clone();
            let headers = request.headers_mut();
            headers.insert(header::AUTHORIZATION, bearer.clone());
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let client = node.client().clone();
            let url = url.clone();
            pushes.spawn(async move {
                match tokio::time::timeout(timeout, client.request(request)).await {
                    Ok(Ok(response)) if response.status().is_success() => true,
                    Ok(Ok(response)) => {
                        tracing::warn!(%url, status = %response.status(), "health report refused");
                        false
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%url, error = %e, "health report not delivered");
                        false
                    }
                    Err(_) => {
                        tracing::warn!(%url, "health report timed out");
                        false
                    }
                }
            });
        }
        while let Some(done) = pushes.join_next().await {
            if done.unwrap_or(false) {
                accepted.send_modify(|n| *n += 1);
            }
        }
    }
}

/// This interval's report: load is the most requests in flight at once since the
/// last report, over capacity.
fn report(node: &Node, push: &MeridianPush, seq: u64, epoch: u64) -> serde_json::Value {
    let now = node.in_flight.load(Ordering::Relaxed);
    let peak = node.peak_in_flight.swap(now, Ordering::Relaxed).max(now);
    let load = (peak as f64 / push.capacity as f64).clamp(0.0, 1.0);
    json!({
        "pop": node.config.pop,
        "seq": seq,
        "epoch": epoch,
        "healthy": true,
        "load": load,
    })
}
