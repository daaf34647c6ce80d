//! Device wiring: creates the PF models, carves the VFs, serves their vfio-user sockets,
//! starts the dataplane and the control socket, and runs until told to stop.
//!
//! STUB in this branch; the real wiring replaces this file. What `run` is expected to do:
//! create `config.run_dir`, start [`crate::control::ControlServer`] at
//! [`crate::naming::control_socket_path`] with a status function, bind each VF at
//! [`crate::config::AgentConfig::vf_socket_path`], then call [`crate::banner::print_ready`].

use anyhow::anyhow;

use emu_sriov_agent::config::AgentConfig;

/// Runs the node until shutdown.
pub fn run(config: AgentConfig) -> anyhow::Result<()> {
    tracing::debug!(?config, "would start the node");
    Err(anyhow!("device wiring is not implemented in this branch"))
}
