//! Generated KubeVirt hook API (from `proto/`, compiled by `build.rs`). Exported so that tests
//! can play virt-launcher's side with the same types.

/// `kubevirt.hooks.info`: `Info`.
pub mod info {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("kubevirt.hooks.info");
}

/// `kubevirt.hooks.v1alpha2`: `Callbacks` without `Shutdown`.
pub mod v1alpha2 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("kubevirt.hooks.v1alpha2");
}

/// `kubevirt.hooks.v1alpha3`: `Callbacks`.
pub mod v1alpha3 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("kubevirt.hooks.v1alpha3");
}

/// Hook point names (`pkg/hooks/info/info.go`).
pub const ON_DEFINE_DOMAIN: &str = "OnDefineDomain";
/// Hook point names (`pkg/hooks/info/info.go`).
pub const SHUTDOWN: &str = "Shutdown";
/// Callbacks versions this sidecar serves, newest first (virt-launcher picks the newest it knows).
pub const VERSIONS: [&str; 2] = ["v1alpha3", "v1alpha2"];
