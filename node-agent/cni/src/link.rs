//! Netlink (rtnetlink) inside a network namespace: a helper thread joins the namespace, opens
//! its netlink socket there and runs the operations on a one-thread tokio runtime. The calling
//! thread never changes namespace.

use crate::error::{code, CniError};
use futures::TryStreamExt as _;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{LinkAttribute, LinkFlags};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

/// A netlink failure, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct LinkError {
    pub what: String,
    pub detail: String,
}

impl LinkError {
    fn new(what: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        LinkError {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

impl From<LinkError> for CniError {
    fn from(e: LinkError) -> Self {
        CniError::new(code::IO_FAILURE, e.what, e.detail)
    }
}

/// Runs `f` with a netlink handle in namespace `netns` (`None`: the caller's).
pub fn in_ns<T, F, Fut>(netns: Option<&Path>, f: F) -> Result<T, LinkError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, LinkError>>,
{
    let ns = netns
        .map(|p| {
            std::fs::File::open(p)
                .map_err(|e| LinkError::new(format!("cannot open netns {}", p.display()), e))
        })
        .transpose()?;
    std::thread::Builder::new()
        .name("netns".into())
        .spawn(move || {
            if let Some(ns) = &ns {
                crate::sys::setns_net(ns)
                    .map_err(|e| LinkError::new("cannot join the netns", e))?;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(|e| LinkError::new("cannot start the netlink runtime", e))?;
            rt.block_on(async move {
                let (conn, handle, _) = rtnetlink::new_connection()
                    .map_err(|e| LinkError::new("cannot open a netlink socket", e))?;
                tokio::spawn(conn);
                f(handle).await
            })
        })
        .map_err(|e| LinkError::new("cannot start the netns thread", e))?
        .join()
        .unwrap_or_else(|_| Err(LinkError::new("netns thread", "panicked")))
}

/// One link as netlink reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    pub up: bool,
}

/// The link named `name`, if any.
pub async fn get(h: &Handle, name: &str) -> Result<Option<Link>, LinkError> {
    let mut s = h.link().get().match_name(name.to_owned()).execute();
    let msg = match s.try_next().await {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(None),
        // ENODEV: no such link.
        Err(rtnetlink::Error::NetlinkError(e))
            if e.code.map(|c| c.get()) == Some(-libc::ENODEV) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(LinkError::new(format!("cannot look up link {name}"), e)),
    };
    let mut link = Link {
        index: msg.header.index,
        name: name.to_owned(),
        mac: None,
        mtu: None,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    for a in msg.attributes {
        match a {
            LinkAttribute::Address(b) if b.len() == 6 => {
                let mut m = [0; 6];
                m.copy_from_slice(&b);
                link.mac = Some(m);
            }
            LinkAttribute::Mtu(m) => link.mtu = Some(m),
            LinkAttribute::IfName(n) => link.name = n,
            _ => {}
        }
    }
    Ok(Some(link))
}

/// Moves link `index` into the namespace at `netns`.
pub async fn move_to(h: &Handle, index: u32, netns: &Path) -> Result<(), LinkError> {
    let ns = std::fs::File::open(netns)
        .map_err(|e| LinkError::new(format!("cannot open netns {}", netns.display()), e))?;
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .setns_by_fd(ns.as_raw_fd())
                .build(),
        )
        .execute()
        .await
        .map_err(|e| {
            LinkError::new(
                format!("cannot move link {index} to {}", netns.display()),
                e,
            )
        })
}

/// Takes link `index` down.
pub async fn down(h: &Handle, index: u32) -> Result<(), LinkError> {
    h.link()
        .set(LinkUnspec::new_with_index(index).down().build())
        .execute()
        .await
        .map_err(|e| LinkError::new(format!("cannot set link {index} down"), e))
}

/// Renames link `index` (it must be down).
pub async fn rename(h: &Handle, index: u32, name: &str) -> Result<(), LinkError> {
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .name(name.to_owned())
                .build(),
        )
        .execute()
        .await
        .map_err(|e| LinkError::new(format!("cannot rename link {index} to {name}"), e))
}

/// Sets MAC and MTU of link `index` and brings it up.
pub async fn configure_up(h: &Handle, index: u32, mac: [u8; 6], mtu: u32) -> Result<(), LinkError> {
    h.link()
        .set(
            LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .mtu(mtu)
                .build(),
        )
        .execute()
        .await
        .map_err(|e| LinkError::new(format!("cannot set MAC/MTU {mtu} of link {index}"), e))?;
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| LinkError::new(format!("cannot set link {index} up"), e))
}

/// Adds `ip/prefix` to link `index` (an address already there is fine).
pub async fn add_address(h: &Handle, index: u32, ip: IpAddr, prefix: u8) -> Result<(), LinkError> {
    match h.address().add(index, ip, prefix).execute().await {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e))
            if e.code.map(|c| c.get()) == Some(-libc::EEXIST) =>
        {
            Ok(())
        }
        Err(e) => Err(LinkError::new(format!("cannot add {ip}/{prefix}"), e)),
    }
}

/// The addresses of link `index`.
pub async fn addresses(h: &Handle, index: u32) -> Result<Vec<(IpAddr, u8)>, LinkError> {
    let mut s = h.address().get().set_link_index_filter(index).execute();
    let mut out = Vec::new();
    while let Some(m) = s
        .try_next()
        .await
        .map_err(|e| LinkError::new("cannot list addresses", e))?
    {
        for a in &m.attributes {
            if let AddressAttribute::Address(ip) = a {
                out.push((*ip, m.header.prefix_len));
            }
        }
    }
    Ok(out)
}

/// Adds a route to `dst/prefix` (via `gw` when given) out of link `index`.
pub async fn add_route(
    h: &Handle,
    index: u32,
    dst: IpAddr,
    prefix: u8,
    gw: Option<IpAddr>,
) -> Result<(), LinkError> {
    let what = || format!("cannot add route {dst}/{prefix}");
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst, prefix)
        .map_err(|e| LinkError::new(what(), format!("{e:?}")))?;
    if let Some(g) = gw {
        b = b
            .gateway(g)
            .map_err(|e| LinkError::new(what(), format!("{e:?}")))?;
    }
    match h
        .route()
        .add(b.output_interface(index).build())
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(e))
            if e.code.map(|c| c.get()) == Some(-libc::EEXIST) =>
        {
            Ok(())
        }
        Err(e) => Err(LinkError::new(what(), e)),
    }
}

/// The namespace file of the calling process (the runtime's, which the agent shares).
pub fn own_netns() -> PathBuf {
    PathBuf::from("/proc/self/ns/net")
}
