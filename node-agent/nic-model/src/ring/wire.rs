//! Ethernet, IP and L4 numbers that the offloads and the receive classifiers of every model
//! read frames by (IEEE 802.1Q, IANA assignments).

/// 802.1Q tag protocol identifier (the EtherType of a tagged frame).
pub(crate) const ETHERTYPE_VLAN: u16 = 0x8100;
/// 802.1ad outer tag.
pub(crate) const ETHERTYPE_QINQ: u16 = 0x88A8;
pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
pub(crate) const ETHERTYPE_IPV6: u16 = 0x86DD;
pub(crate) const ETHERTYPE_ARP: u16 = 0x0806;

pub(crate) const IPPROTO_ICMP: u8 = 1;
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;
pub(crate) const IPPROTO_ICMPV6: u8 = 58;
pub(crate) const IPPROTO_SCTP: u8 = 132;
/// IPv6 extension headers (next-header values).
pub(crate) const IPV6_HOPOPTS: u8 = 0;
pub(crate) const IPV6_ROUTING: u8 = 43;
pub(crate) const IPV6_FRAGMENT: u8 = 44;
pub(crate) const IPV6_DSTOPTS: u8 = 60;

pub(crate) const IPV4_MIN_HLEN: usize = 20;
pub(crate) const IPV6_HLEN: usize = 40;
pub(crate) const TCP_MIN_HLEN: usize = 20;
pub(crate) const TCP_FLAG_FIN: u8 = 0x01;
pub(crate) const TCP_FLAG_PSH: u8 = 0x08;
pub(crate) const TCP_FLAG_CWR: u8 = 0x80;
