//! Generated kubelet API types (from the vendored `proto/`, compiled by `build.rs`).
//! Exported so that tests can play the kubelet's side with the same types.

/// `k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1`: `Registration` and `DevicePlugin`.
pub mod v1beta1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("v1beta1");
}

/// `k8s.io/kubelet/pkg/apis/podresources/v1`: `PodResourcesLister`.
pub mod podresources {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("v1");
}

/// `Version` in `deviceplugin/v1beta1/constants.go`.
pub const VERSION: &str = "v1beta1";
/// Legal `Device.health` values.
pub const HEALTHY: &str = "Healthy";
/// Legal `Device.health` values.
pub const UNHEALTHY: &str = "Unhealthy";
/// The kubelet's registration socket inside the device-plugin dir.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
