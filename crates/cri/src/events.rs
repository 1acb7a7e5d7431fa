//! GetContainerEvents: the engine's event stream (the monitors' records, read as
//! they are written) forwarded to a gRPC stream, each event with the statuses the
//! kubelet's evented PLEG reads from it.

use std::sync::Arc;
use std::time::Duration;

use berth_engine::cri as engine;
use berth_engine::events::EventStream;
use k8s_cri::v1 as pb;
use tokio::sync::mpsc;
use tonic::Status;

use crate::convert::{container, sandbox};
use crate::Engine;

/// Starts a thread that sends `events` on until the client goes away.
pub fn forward<E: Engine>(
    engine: Arc<E>,
    mut events: EventStream,
) -> mpsc::Receiver<Result<pb::ContainerEventResponse, Status>> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || loop {
        // Wakes now and then to see whether the client is still there.
        match events.next_event(Some(Duration::from_millis(500))) {
            Ok(Some(ev)) => {
                if tx.blocking_send(Ok(response(&*engine, &ev))).is_err() {
                    return;
                }
            }
            Ok(None) => {
                if tx.is_closed() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(crate::status::of(e)));
                return;
            }
        }
    });
    rx
}

fn response<E: Engine>(e: &E, ev: &engine::ContainerEvent) -> pb::ContainerEventResponse {
    let kind = match ev.kind {
        engine::ContainerEventKind::Created => pb::ContainerEventType::ContainerCreatedEvent,
        engine::ContainerEventKind::Started => pb::ContainerEventType::ContainerStartedEvent,
        engine::ContainerEventKind::Stopped => pb::ContainerEventType::ContainerStoppedEvent,
        engine::ContainerEventKind::Deleted => pb::ContainerEventType::ContainerDeletedEvent,
    };
    // The sandbox and its containers as they are now (a deleted container is no
    // longer among them).
    let sandbox = e.pod_sandbox_status(&ev.sandbox_id).ok();
    let containers = e
        .list_containers(&engine::ContainerFilter {
            sandbox_id: Some(ev.sandbox_id.clone()),
            ..Default::default()
        })
        .unwrap_or_default()
        .iter()
        .filter_map(|c| e.container_status(&c.id).ok())
        .map(|c| container::status(&c))
        .collect();
    pb::ContainerEventResponse {
        container_id: ev.container_id.clone(),
        container_event_type: kind as i32,
        created_at: ev.at,
        pod_sandbox_status: sandbox.as_ref().map(sandbox::status),
        containers_statuses: containers,
    }
}
