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
        let mut frame = [0u8; 60];
        frame[..6].copy_from_slice(&rx.driver.mac());
        frame[6..12].copy_from_slice(&tx.driver.mac());
        frame[12..14].copy_from_slice(&0x88B5u16.to_be_bytes()); // IEEE local experimental
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
        let t0 = Instant::now();
        let target = self.received + n;
        let end = t0 + deadline;
        while self.received < target {
            if Instant::now() >= end {
                return Err(format!(
                    "only {} of {n} frames arrived within {deadline:?}",
                    n - (target - self.received)
                ));
            }
            let before = self.received;
            {
                let mem = self.tx.mem.lock();
                for _ in 0..32 {
                    let in_flight = self.sent - self.received;
                    if self.sent >= target || in_flight >= WINDOW {
                        break;
                    }
                    match self.tx.driver.queue_tx(&mem, &self.frame) {
                        Ok(true) => self.sent += 1,
                        Ok(false) => break,
                        Err(e) => return Err(format!("queue: {e}")),
                    }
                }
                self.tx.driver.flush();
                self.tx
                    .driver
                    .reclaim(&mem)
                    .map_err(|e| format!("reclaim: {e}"))?;
            }
            let mem = self.rx.mem.lock();
            let got = self
                .rx
                .driver
                .poll_rx(&mem, &mut [], &mut |_| {})
                .map_err(|e| format!("rx: {e}"))?;
            self.received += u64::from(got);
            if self.received == before {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        Ok(t0.elapsed())
    }
}
