//! KubeVirt hook sidecar for emu-sriov: attaches the VFs a virt-launcher pod was given to its
//! libvirt domain as `vfio-user-pci` devices (design kubernetes.md §5).
//!
//! KubeVirt and libvirt only know VFIO host devices (a PCI address, an IOMMU group); an
//! emulated VF is a vfio-user socket. virt-launcher lets hook sidecars rewrite the domain before
//! it is defined (`OnDefineDomain`): this crate adds a shared memfd memory backing and one
//! `-device vfio-user-pci` per VF through `<qemu:commandline>`, leaving the rest untouched.
//!
//! Layers: [`alloc`] and [`plan`] (which VF for which request, pure), [`domain`] (the XML edit,
//! pure), [`hook`] (the two together), [`service`] (KubeVirt's gRPC `Info` and `Callbacks`
//! v1alpha3/v1alpha2), [`server`] (the unix socket in `/var/run/kubevirt-hooks`).

pub mod alloc;
pub mod api;
pub mod domain;
pub mod hook;
pub mod plan;
pub mod server;
pub mod service;

pub use hook::{on_define_domain, HookConfig, HookError, SocketCheck};
