//! Generates the tonic clients and servers of the device plugin and Pod Resources
//! services from their methods, listed here rather than read from .proto files (the
//! messages are defined in Rust in src/; the k8s-deviceplugin crate is on tonic 0.7).

use tonic_build::manual::{Builder, Method, Service};

fn method(name: &str, route: &str, input: &str, output: &str, streaming: bool) -> Method {
    let m = Method::builder()
        .name(name)
        .route_name(route)
        .input_type(input)
        .output_type(output)
        .codec_path("tonic_prost::ProstCodec");
    if streaming { m.server_streaming() } else { m }.build()
}

fn main() {
    let dp = "crate::v1beta1::";
    let registration = Service::builder()
        .name("Registration")
        .package("v1beta1")
        .comment("The kubelet's: device plugins register their resource with it.")
        .method(method(
            "register",
            "Register",
            &format!("{dp}RegisterRequest"),
            &format!("{dp}Empty"),
            false,
        ))
        .build();
    let plugin = Service::builder()
        .name("DevicePlugin")
        .package("v1beta1")
        .comment("A device plugin's, on its own socket beside the kubelet's.")
        .method(method(
            "get_device_plugin_options",
            "GetDevicePluginOptions",
            &format!("{dp}Empty"),
            &format!("{dp}DevicePluginOptions"),
            false,
        ))
        .method(method(
            "list_and_watch",
            "ListAndWatch",
            &format!("{dp}Empty"),
            &format!("{dp}ListAndWatchResponse"),
            true,
        ))
        .method(method(
            "get_preferred_allocation",
            "GetPreferredAllocation",
            &format!("{dp}PreferredAllocationRequest"),
            &format!("{dp}PreferredAllocationResponse"),
            false,
        ))
        .method(method(
            "allocate",
            "Allocate",
            &format!("{dp}AllocateRequest"),
            &format!("{dp}AllocateResponse"),
            false,
        ))
        .method(method(
            "pre_start_container",
            "PreStartContainer",
            &format!("{dp}PreStartContainerRequest"),
            &format!("{dp}PreStartContainerResponse"),
            false,
        ))
        .build();
    let pr = "crate::podresources::";
    let lister = Service::builder()
        .name("PodResourcesLister")
        .package("v1")
        .comment("The kubelet's Pod Resources API: which pod holds which device.")
        .method(method(
            "list",
            "List",
            &format!("{pr}ListPodResourcesRequest"),
            &format!("{pr}ListPodResourcesResponse"),
            false,
        ))
        .method(method(
            "get_allocatable_resources",
            "GetAllocatableResources",
            &format!("{pr}AllocatableResourcesRequest"),
            &format!("{pr}AllocatableResourcesResponse"),
            false,
        ))
        .method(method(
            "get",
            "Get",
            &format!("{pr}GetPodResourcesRequest"),
            &format!("{pr}GetPodResourcesResponse"),
            false,
        ))
        .build();
    Builder::new().compile(&[registration, plugin, lister]);
}
