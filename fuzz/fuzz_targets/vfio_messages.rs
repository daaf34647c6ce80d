//! Arbitrary bytes as a vfio-user message stream into the real server loop
//! (`emu_vfio_server::Server`) serving the agent's real igbvf device (`IgbVfDevice`: BAR0,
//! config space, mailbox to the PF model, a thread-less dataplane). The input is written to
//! a fresh connection, the write side is shut down and the replies are read until EOF: the
//! server must answer or close, never panic or hang. One server is reused across runs; the
//! device is scrubbed after each (as for a VF's next user).
#![no_main]

use emu_dataplane::{Dataplane, DataplaneConfig, Mode, VfPort};
use emu_nic_defs::igbvf as r;
use emu_nic_model::igb_pf::IgbPf;
use emu_nic_model::igbvf::vf::IgbVf;
use emu_nic_model::vmdq::SwitchTable;
use emu_sriov_agent::device::{IgbVfDevice, IgbvfGlue, PfShared, VfCore};
use emu_sriov_fuzz::igb_admins;
use emu_vfio_server::{DmaTable, IrqSet, Server, ServerHandle};
use libfuzzer_sys::fuzz_target;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Longer than any honest reply takes; a server that neither answers nor closes by then hangs.
const HANG: Duration = Duration::from_secs(10);

struct Fixture {
    path: PathBuf,
    device: Arc<IgbVfDevice>,
    dataplane: Mutex<Dataplane>,
    _server: Mutex<ServerHandle>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // libFuzzer's main is not Rust's: SIGPIPE is not ignored unless we say so, and a write
        // to a connection the server closed must fail with EPIPE, not kill the fuzzer.
        // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let dir = std::env::temp_dir().join(format!("emu-sriov-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("cannot create the socket directory");
        let path = dir.join("vf.sock");

        let mut vf = IgbVf::new();
        vf.set_link(true);
        let _ = vf.pf_reset_done();
        let dma = Arc::new(DmaTable::new());
        let irqs = Arc::new(IrqSet::new(u32::from(r::MSIX_VECTORS)));
        let port = Arc::new(VfPort::new(
            "igb0-vf0".into(),
            vf,
            dma.clone(),
            Box::new(irqs.clone()),
        ));
        let config = DataplaneConfig {
            mode: Mode::Stepped,
            cores: Vec::new(),
        };
        let dataplane = Dataplane::start(config, vec![port.clone()], SwitchTable::new())
            .expect("cannot start the dataplane");
        let pf = Arc::new(PfShared {
            name: "igb0".into(),
            model: Mutex::new(IgbPf::new(&igb_admins()[..1])),
            ports: vec![0],
        });
        let device = Arc::new(IgbVfDevice::new(
            VfCore::new(port, 0, dataplane.control()),
            IgbvfGlue::new(pf, None),
        ));
        let mut server =
            Server::bind(&path, device.clone(), dma, irqs).expect("cannot bind the server");
        // A truncated message is followed by EOF at once; keep stalls cheap anyway.
        server.set_message_timeout(Duration::from_millis(200));
        let server = server.spawn("vfio-fuzz".into());
        Fixture {
            path,
            device,
            dataplane: Mutex::new(dataplane),
            _server: Mutex::new(server),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let stream = UnixStream::connect(&fx.path).expect("cannot connect to the server");
    stream
        .set_read_timeout(Some(HANG))
        .expect("set_read_timeout");
    let mut reader = stream.try_clone().expect("try_clone");
    // Read replies while writing, so that neither side blocks on a full socket buffer.
    let replies = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // Reset by the server: it closed on us, which is an answer.
                Err(_) => return true,
            }
        }
    });
    // The server may close before taking everything (a protocol error): EPIPE is fine.
    let _ = (&stream).write_all(data);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let closed = replies.join().expect("reader thread panicked");
    assert!(
        closed,
        "the server neither answered nor closed within {HANG:?}"
    );
    drop(stream);
    // One pass of the dataplane over whatever the client programmed, then a clean VF.
    let _ = fx.dataplane.lock().unwrap().step();
    fx.device.scrub();
});
