//! Counted traffic between two VFs of a running agent through userspace igbvf drivers
//! (`emu_vf_driver`), for tests that must show "traffic on another VF continues".
//!
//! A [`Flow`] sends from one VF to the other with a window smaller than the receiver's RX
//! ring, so no frame is ever dropped for lack of buffers: every frame sent must arrive, and
//! [`Flow::pump`] fails if one does not within its deadline.

use emu_vf_driver::client::{attach, AttachedVf};
use std::path::Path;
use std::time::{Duration, Instant};

/// Frames in flight at most (the receiver's ring holds [`RING`]).
const WINDOW: u64 = 128;
/// Descriptors per ring of each attached VF.
pub const RING: u32 = 256;

/// A one-way stream of 60-byte frames from `tx` to `rx`.
pub struct Flow {
    pub tx: AttachedVf,
    pub rx: AttachedVf,
    frame: [u8; 60],
    /// Frames queued so far.
    pub sent: u64,
    /// Frames received so far.
    pub received: u64,
}

impl Flow {
    /// Attaches to both sockets (sealed memory) and builds the frame `tx` → `rx`.
    pub fn new(tx: &Path, rx: &Path) -> Result<Flow, String> {
        let tx = attach(tx, RING).map_err(|e| format!("attach {}: {e}", tx.display()))?;
        let rx = attach(rx, RING).map_err(|e| format!("attach {}: {e}", rx.display()))?;
        Ok(Flow::between(tx, rx))
    }

    /// A flow between two VFs already attached.
    pub fn between(tx: AttachedVf, rx: AttachedVf) -> Flow {
        let frame = frame(&rx, &tx);
        Flow {
            tx,
            rx,
            frame,
            sent: 0,
            received: 0,
        }
    }

    /// Sends `n` more frames and waits until every one of them arrived (≤ `deadline`).
    /// Returns how long it took.
    pub fn pump(&mut self, n: u64, deadline: Duration) -> Result<Duration, String> {
        let target = self.received + n;
        send_counted(
            &mut self.tx,
            &mut self.rx,
            &self.frame,
            target,
            deadline,
            (&mut self.sent, &mut self.received),
        )
    }
}

/// A 60-byte frame `from` → `to` (EtherType 0x88B5, IEEE local experimental).
pub fn frame(to: &AttachedVf, from: &AttachedVf) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[..6].copy_from_slice(&to.driver.mac());
    f[6..12].copy_from_slice(&from.driver.mac());
    f[12..14].copy_from_slice(&0x88B5u16.to_be_bytes());
    f
}

/// Sends `n` frames `tx` → `rx` with at most [`WINDOW`] in flight and waits until every one
/// arrived (≤ `deadline`). Returns how long it took.
pub fn transfer(
    tx: &mut AttachedVf,
    rx: &mut AttachedVf,
    n: u64,
    deadline: Duration,
) -> Result<Duration, String> {
    let f = frame(rx, tx);
    let (mut sent, mut received) = (0, 0);
    send_counted(tx, rx, &f, n, deadline, (&mut sent, &mut received))
}

/// Sends `frame` until `received` reaches `target`, counting into `sent` and `received`.
fn send_counted(
    tx: &mut AttachedVf,
    rx: &mut AttachedVf,
    frame: &[u8],
    target: u64,
    deadline: Duration,
    (sent, received): (&mut u64, &mut u64),
) -> Result<Duration, String> {
    let t0 = Instant::now();
    let end = t0 + deadline;
    while *received < target {
        if Instant::now() >= end {
            return Err(format!(
                "only {} of {target} frames arrived within {deadline:?} ({} sent)",
                *received, *sent
            ));
        }
        let before = *received;
        {
            let mem = tx.mem.lock();
            for _ in 0..32 {
                if *sent >= target || *sent - *received >= WINDOW {
                    break;
                }
                match tx.driver.queue_tx(&mem, frame) {
                    Ok(true) => *sent += 1,
                    Ok(false) => break,
                    Err(e) => return Err(format!("queue: {e}")),
                }
            }
            tx.driver.flush();
            tx.driver
                .reclaim(&mem)
                .map_err(|e| format!("reclaim: {e}"))?;
        }
        let mem = rx.mem.lock();
        let got = rx
            .driver
            .poll_rx(&mem, &mut [], &mut |_| {})
            .map_err(|e| format!("rx: {e}"))?;
        *received += u64::from(got);
        if *received == before {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    Ok(t0.elapsed())
}
