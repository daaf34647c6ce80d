//! The agent's YAML configuration (`--config FILE`) as a client or operator could write it:
//! parsing and validation return a config or an error, never panic.
#![no_main]

use emu_sriov_agent::config::{ConfigFile, HostDefaults};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = ConfigFile::from_yaml(text, "fuzz input") else {
        return;
    };
    let host = HostDefaults {
        node_name: Some("node-a".to_owned()),
        run_dir: "/run/emu-sriov".into(),
    };
    if let Ok(cfg) = file.validate_with(&host) {
        // Every accepted config names at least one PF.
        assert!(!cfg.pfs.is_empty());
    }
});
