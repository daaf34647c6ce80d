//! ARP frames for the uplink tests: a userspace VF at [`VF_IP`] asks for the test-made
//! namespace's host at [`HOST_IP`] (both in 198.18.0.0/15, the project's test range).

/// The host end inside the test-made network namespace.
pub const HOST_IP: [u8; 4] = [198, 18, 1, 1];
/// The address the userspace VF claims.
pub const VF_IP: [u8; 4] = [198, 18, 1, 10];

/// A broadcast ARP request from `mac`/[`VF_IP`] for [`HOST_IP`], padded to 60 bytes.
pub fn arp_request(mac: [u8; 6]) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&VF_IP);
    // target MAC zero
    f[38..42].copy_from_slice(&HOST_IP);
    f
}

/// An ARP reply from [`HOST_IP`] to `mac`/[`VF_IP`]: the sender MAC it announces.
pub fn arp_reply_from_host(frame: &[u8], mac: [u8; 6]) -> Option<[u8; 6]> {
    let ok = frame.len() >= 42
        && frame[..6] == mac
        && frame[12..14] == [0x08, 0x06]
        && frame[20..22] == [0, 2]
        && frame[28..32] == HOST_IP
        && frame[32..38] == mac
        && frame[38..42] == VF_IP;
    if !ok {
        return None;
    }
    frame[22..28].try_into().ok()
}
