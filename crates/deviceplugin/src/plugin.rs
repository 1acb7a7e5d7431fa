//! What every device plugin's server needs: its ListAndWatch stream.

use std::pin::Pin;

use futures_util::Stream;
use tokio::sync::watch;

use crate::v1beta1::{Device, ListAndWatchResponse};

/// A ListAndWatch answer: the device list, whole, each time it changes.
pub type DeviceStream =
    Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, tonic::Status>> + Send>>;

/// The stream of `devices`' values: the current list at once, then each new one;
/// it ends when the sender is dropped (the agent then takes the plugin for gone).
pub fn list_and_watch(mut devices: watch::Receiver<Vec<Device>>) -> DeviceStream {
    devices.mark_changed();
    Box::pin(futures_util::stream::unfold(devices, |mut rx| async move {
        rx.changed().await.ok()?;
        let devices = rx.borrow_and_update().clone();
        Some((Ok(ListAndWatchResponse { devices }), rx))
    }))
}
