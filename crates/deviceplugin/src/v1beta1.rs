//! deviceplugin/v1beta1: how a device plugin registers a resource with the node
//! agent, reports its devices, and prepares them for a container.

use std::collections::HashMap;

/// What a plugin asks the agent to call besides Allocate.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DevicePluginOptions {
    /// PreStartContainer before each container start.
    #[prost(bool, tag = "1")]
    pub pre_start_required: bool,
    /// GetPreferredAllocation is implemented.
    #[prost(bool, tag = "2")]
    pub get_preferred_allocation_available: bool,
}

/// A plugin's registration.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RegisterRequest {
    /// The API version it speaks ([`crate::VERSION`]).
    #[prost(string, tag = "1")]
    pub version: String,
    /// Its socket's name, in the device plugin directory.
    #[prost(string, tag = "2")]
    pub endpoint: String,
    /// The extended resource it serves (`vendor.example/thing`).
    #[prost(string, tag = "3")]
    pub resource_name: String,
    /// What else to call.
    #[prost(message, optional, tag = "4")]
    pub options: Option<DevicePluginOptions>,
}

/// No fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

/// The plugin's devices, whole, each time one changes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListAndWatchResponse {
    /// Every device.
    #[prost(message, repeated, tag = "1")]
    pub devices: Vec<Device>,
}

/// The NUMA nodes a device is close to.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TopologyInfo {
    /// The nodes.
    #[prost(message, repeated, tag = "1")]
    pub nodes: Vec<NumaNode>,
}

/// A NUMA node.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NumaNode {
    /// Its number.
    #[prost(int64, tag = "1")]
    pub id: i64,
}

/// One device.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Device {
    /// The plugin's ID for it.
    #[prost(string, tag = "1")]
    pub id: String,
    /// [`crate::HEALTHY`] or [`crate::UNHEALTHY`].
    #[prost(string, tag = "2")]
    pub health: String,
    /// Its NUMA affinity, if any.
    #[prost(message, optional, tag = "3")]
    pub topology: Option<TopologyInfo>,
}

/// The devices a container is about to start with.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PreStartContainerRequest {
    /// Their IDs.
    #[prost(string, repeated, tag = "1")]
    pub devices_ids: Vec<String>,
}

/// No fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PreStartContainerResponse {}

/// Which devices the plugin would rather hand out, per container.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PreferredAllocationRequest {
    /// One per container.
    #[prost(message, repeated, tag = "1")]
    pub container_requests: Vec<ContainerPreferredAllocationRequest>,
}

/// One container's choice.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerPreferredAllocationRequest {
    /// The devices free to choose from.
    #[prost(string, repeated, tag = "1")]
    pub available_device_ids: Vec<String>,
    /// Devices the choice must include.
    #[prost(string, repeated, tag = "2")]
    pub must_include_device_ids: Vec<String>,
    /// How many.
    #[prost(int32, tag = "3")]
    pub allocation_size: i32,
}

/// The plugin's preferences.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PreferredAllocationResponse {
    /// One per container, in the request's order.
    #[prost(message, repeated, tag = "1")]
    pub container_responses: Vec<ContainerPreferredAllocationResponse>,
}

/// One container's preferred devices.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerPreferredAllocationResponse {
    /// Their IDs.
    #[prost(string, repeated, tag = "1")]
    pub device_ids: Vec<String>,
}

/// The devices chosen for containers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AllocateRequest {
    /// One per container.
    #[prost(message, repeated, tag = "1")]
    pub container_requests: Vec<ContainerAllocateRequest>,
}

/// One container's devices.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerAllocateRequest {
    /// Their IDs.
    #[prost(string, repeated, tag = "1")]
    pub devices_ids: Vec<String>,
}

/// What containers need to use their devices.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AllocateResponse {
    /// One per container, in the request's order.
    #[prost(message, repeated, tag = "1")]
    pub container_responses: Vec<ContainerAllocateResponse>,
}

/// What one container gets: environment, mounts, device nodes, annotations and CDI
/// devices.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ContainerAllocateResponse {
    /// Environment variables.
    #[prost(map = "string, string", tag = "1")]
    pub envs: HashMap<String, String>,
    /// Mounts.
    #[prost(message, repeated, tag = "2")]
    pub mounts: Vec<Mount>,
    /// Device nodes.
    #[prost(message, repeated, tag = "3")]
    pub devices: Vec<DeviceSpec>,
    /// Annotations for the runtime.
    #[prost(map = "string, string", tag = "4")]
    pub annotations: HashMap<String, String>,
    /// Fully qualified CDI device names (`vendor.com/class=name`).
    #[prost(message, repeated, tag = "5")]
    pub cdi_devices: Vec<CdiDevice>,
}

/// A CDI device.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CdiDevice {
    /// Its fully qualified name.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// A bind mount.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mount {
    /// Where in the container.
    #[prost(string, tag = "1")]
    pub container_path: String,
    /// What on the host.
    #[prost(string, tag = "2")]
    pub host_path: String,
    /// Read-only.
    #[prost(bool, tag = "3")]
    pub read_only: bool,
}

/// A device node.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeviceSpec {
    /// Its path in the container.
    #[prost(string, tag = "1")]
    pub container_path: String,
    /// The host's node.
    #[prost(string, tag = "2")]
    pub host_path: String,
    /// cgroup permissions: any of r, w, m.
    #[prost(string, tag = "3")]
    pub permissions: String,
}

include!(concat!(env!("OUT_DIR"), "/v1beta1.Registration.rs"));
include!(concat!(env!("OUT_DIR"), "/v1beta1.DevicePlugin.rs"));
