//! The libvirt-level proof for KubeVirt (issue #15, design kubernetes.md §5.4): two guests whose
//! libvirt domains are what the KubeVirt hook sidecar made of a KubeVirt-shaped domain and VMI,
//! defined and started by a real libvirtd (11.3, Debian trixie) with QEMU 11.1 running as uid
//! 107 like in virt-launcher; each guest's stock igbvf binds its VF over vfio-user and they ping
//! each other through the agent. As in virt-launcher:
//! - the agent hands the sockets to 107:107 (`--socket-owner`, access.rs);
//! - each "compute container" gets the device plugin's own Allocate answer
//!   (`container_response`): its env goes to that guest's hook process, its mounts
//!   (`/var/run/emu-sriov/<id>/`) into libvirtd's root, so the socket path in the domain is
//!   the container path, not the node's;
//! - the hook is driven over its unix socket with KubeVirt's `Info` then v1alpha3
//!   `OnDefineDomain`;
//! - the console is the domain's own `<serial type="unix">` (bridged to the harness).
//!
//! What libvirt made of each domain (`virsh domxml-to-native qemu-argv`) is kept in the run
//! directory and checked for the memfd backend and the vfio-user-pci device.
//!
//! Ignored by default (two TCG guests, libvirtd, ~1–2 min); run as root with --include-ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use emu_device_plugin::response::container_response;
use emu_device_plugin::VfDevice;
use emu_sriov_kubevirt_hook::api::{info, v1alpha3};
use emu_sriov_tests::kubevirt::{hook_bin, HookProc, Libvirtd};
use emu_sriov_tests::scenarios::{pick_vfs, run_and_assert, start_agent_with};
use emu_sriov_tests::{Harness, Topology, VfInfo};

const RESOURCE: &str = "emu.sriov/vf";

fn fixture(name: &str) -> PathBuf {
    emu_sriov_tests::env::workspace_root()
        .join("node-agent/kubevirt-hook/tests/fixtures")
        .join(name)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `(name, value)` or `(host dir, container dir)` pairs.
type Pairs = Vec<(String, String)>;

/// The device plugin's Allocate answer for a compute container holding `vf`: env, mounts.
fn allocate(vf: &VfInfo) -> (Pairs, Pairs) {
    let dev = VfDevice {
        id: vf.id.clone(),
        resource: RESOURCE.into(),
        pf: "igb0".into(),
        model: vf.model.clone(),
        vendor_id: "0x8086".into(),
        device_id: vf.device_id.clone(),
        mac: vf.mac.clone(),
        socket: vf.socket.clone(),
        healthy: true,
        core: None,
    };
    let r = container_response(RESOURCE, &[&dev], false);
    let env = r.envs.into_iter().collect();
    // By id only: one libvirtd plays both pods here, and both would have by-index/vf/0.
    let mounts = r
        .mounts
        .into_iter()
        .filter(|m| !m.container_path.contains("/by-index/"))
        .map(|m| (m.host_path, m.container_path))
        .collect();
    (env, mounts)
}

/// virt-launcher's side: Info, then v1alpha3 OnDefineDomain.
fn call_hook(socket: &Path, domain: &[u8], vmi: &[u8]) -> Result<Vec<u8>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let ch = emu_device_plugin::uds::connect(socket)
            .await
            .map_err(|e| format!("connect {}: {e}", socket.display()))?;
        let i = info::info_client::InfoClient::new(ch.clone())
            .info(info::InfoParams {})
            .await
            .map_err(|e| format!("Info: {e}"))?
            .into_inner();
        if !i.versions.iter().any(|v| v == "v1alpha3")
            || !i.hook_points.iter().any(|p| p.name == "OnDefineDomain")
        {
            return Err(format!("Info answered {i:?}"));
        }
        let r = v1alpha3::callbacks_client::CallbacksClient::new(ch)
            .on_define_domain(v1alpha3::OnDefineDomainParams {
                domain_xml: domain.to_vec(),
                vmi: vmi.to_vec(),
            })
            .await
            .map_err(|e| format!("OnDefineDomain: {}", e.message()))?;
        Ok(r.into_inner().domain_xml)
    })
}

#[test]
#[ignore = "boots two TCG guests under libvirtd from the guest root; run with -- --include-ignored (as root)"]
fn kubevirt_hook_domains_run_under_libvirt() {
    let mut h = Harness::new("kv");
    let run = h.dir().to_path_buf();
    // QEMU runs as 107: it must traverse the run directory to the kernel, initrd and sockets.
    h.check(
        "chmod run dir",
        Command::new("chmod")
            .arg("0711")
            .arg(&run)
            .status()
            .map_err(|e| e.to_string())
            .and_then(|s| s.success().then_some(()).ok_or("chmod failed".into())),
    );
    let agent = start_agent_with(&mut h, &["igb:2"], &["--socket-owner", "107:107"]);
    let vfs = pick_vfs(&h, &agent, &["0x10ca", "0x10ca"]);
    let topo = Topology::vf_pair(
        (vfs[0].socket.clone(), vfs[0].mac.clone()),
        (vfs[1].socket.clone(), vfs[1].mac.clone()),
    )
    .with_arg("bdf", "auto")
    .with_arg("mode", "basic");

    let allocs: Vec<_> = vfs.iter().map(allocate).collect();
    let mounts: Vec<(String, String)> = allocs.iter().flat_map(|(_, m)| m.clone()).collect();
    let kernel = run.join("vmlinuz");
    h.check(
        "copy kernel",
        std::fs::copy(h.env.kernel(), &kernel)
            .map(|_| ())
            .map_err(|e| e.to_string()),
    );
    h.add_log("libvirtd", run.join("libvirtd.log"));
    let libvirtd = Arc::new(h.check("libvirtd", Libvirtd::start(&h.env, &run, &mounts)));
    eprintln!(
        "libvirtd: {}",
        h.check("virsh version", libvirtd.virsh(&["version"]))
            .replace('\n', "; ")
    );
    let hook = h.check("hook binary", hook_bin());
    let domain_in = h.check(
        "domain fixture",
        std::fs::read_to_string(fixture("domain.xml")).map_err(|e| e.to_string()),
    );
    let mut vmi: serde_json::Value = h.check(
        "VMI fixture",
        std::fs::read(fixture("vmi-sidecar.json"))
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())),
    );
    // One VF per VMI here.
    vmi["spec"]["domain"]["resources"]["limits"][RESOURCE] = "1".into();
    vmi["spec"]["domain"]["resources"]["requests"][RESOURCE] = "1".into();
    let vmi = serde_json::to_vec(&vmi).unwrap_or_default();

    let names: HashMap<String, usize> = topo
        .guests
        .iter()
        .enumerate()
        .map(|(i, g)| (g.name.clone(), i))
        .collect();
    let hooks: Arc<Mutex<Vec<HookProc>>> = Arc::new(Mutex::new(Vec::new()));
    for g in &topo.guests {
        h.add_log(
            &format!("hook {}", g.name),
            run.join(format!("hook-{}.log", g.name)),
        );
    }
    let bridge = PathBuf::from(env!("CARGO_BIN_EXE_emu-console-bridge"));
    let lv = libvirtd.clone();
    let hk = hooks.clone();
    let run2 = run.clone();
    let ids: Vec<String> = vfs.iter().map(|v| v.id.clone()).collect();
    h.set_launcher(Box::new(move |g, initrd, append| {
        let i = *names.get(&g.name).ok_or("unknown guest")?;
        let gdir = run2.join(format!("vm-{}", g.name));
        std::fs::create_dir_all(&gdir).map_err(|e| e.to_string())?;
        let name = format!("emu-kv-{}-{}", g.name, std::process::id());
        let domain = domain_in
            .replace("@NAME@", &name)
            .replace("@RUN@", &gdir.display().to_string())
            .replace("@KERNEL@", &kernel.display().to_string())
            .replace("@INITRD@", &initrd.display().to_string())
            .replace("@CMDLINE@", &xml_escape(append))
            // One VMI uid per guest (libvirt keys domains on the SMBIOS uuid).
            .replace("06e72d69f223", &format!("06e72d69f{:03x}", i));
        let hp = HookProc::start(
            &hook,
            &run2.join(format!("hooks-{}", g.name)),
            "emu-sriov",
            &allocs[i].0,
            &["--check-sockets", "host"],
            &run2.join(format!("hook-{}.log", g.name)),
        )?;
        let out = call_hook(&hp.socket, domain.as_bytes(), &vmi)?;
        hk.lock().map_err(|e| e.to_string())?.push(hp);
        let path = gdir.join("domain.xml");
        std::fs::write(&path, &out).map_err(|e| e.to_string())?;
        lv.virsh(&["define", &path.display().to_string()])?;
        let argv = lv.virsh(&["domxml-to-native", "qemu-argv", "--domain", &name])?;
        std::fs::write(gdir.join("qemu-argv.txt"), &argv).map_err(|e| e.to_string())?;
        let sock = format!("/var/run/emu-sriov/{}/vf.sock", ids[i]);
        for want in [
            "memory-backend-memfd",
            "\"share\":true",
            "vfio-user-pci",
            sock.as_str(),
        ] {
            if !argv.contains(want) {
                return Err(format!("libvirt's QEMU command line lacks {want}: {argv}"));
            }
        }
        eprintln!("guest {}: libvirt QEMU argv: {}", g.name, argv.trim());
        lv.virsh(&["start", &name])?;
        let mut c = Command::new(&bridge);
        c.arg(gdir.join("virt-serial0")).arg("30");
        Ok(c)
    }));
    run_and_assert(h, agent, &topo, &vfs, Duration::from_secs(240));
    drop(hooks);
    drop(libvirtd);
}
