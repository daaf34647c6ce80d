//! The CNI commands.

use crate::agent::{self, Answer, Op, Request, Settings};
use crate::conf::{Env, NetConf, SUPPORTED_VERSIONS};
use crate::error::{code, CniError};
use crate::ipam;
use crate::link;
use crate::result::{parse_cidr, CniResult, Interface, IpConfig, Route};
use std::path::{Path, PathBuf};

/// Runs `env.command` with network configuration `stdin`; the text to print on success.
pub fn run(env: &Env, stdin: &[u8]) -> Result<String, CniError> {
    match env.command.as_str() {
        "VERSION" => Ok(version()),
        "ADD" => {
            let conf = NetConf::parse(stdin)?;
            add(env, &conf, stdin).map(|r| to_json(&r))
        }
        "DEL" => {
            let conf = NetConf::parse(stdin)?;
            del(env, &conf, stdin).map(|()| String::new())
        }
        "CHECK" => {
            let conf = NetConf::parse(stdin)?;
            check(env, &conf, stdin).map(|()| String::new())
        }
        "STATUS" => {
            let conf = NetConf::parse(stdin)?;
            agent::ping(&conf.agent_run_dir()).map_err(|e| {
                CniError::new(code::NOT_AVAILABLE, "the emu-sriov agent is not available", e.details)
            })?;
            Ok(String::new())
        }
        "GC" => {
            let conf = NetConf::parse(stdin)?;
            gc(env, &conf, stdin).map(|()| String::new())
        }
        "" => Err(CniError::new(
            code::INVALID_ENV,
            "CNI_COMMAND is not set",
            "this is a CNI plugin: a container runtime runs it with CNI_COMMAND=ADD|DEL|CHECK|STATUS|VERSION and the network configuration on stdin",
        )),
        other => Err(CniError::new(
            code::INVALID_ENV,
            format!("unknown CNI_COMMAND {other}"),
            "supported: ADD, DEL, CHECK, STATUS, GC, VERSION",
        )),
    }
}

fn to_json(r: &CniResult) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

fn version() -> String {
    serde_json::json!({
        "cniVersion": "1.1.0",
        "supportedVersions": SUPPORTED_VERSIONS,
    })
    .to_string()
}

fn settings(conf: &NetConf) -> Result<Settings, CniError> {
    Ok(Settings {
        mac: conf.runtime_config.mac.clone().or_else(|| conf.mac.clone()),
        vlan: conf.vlan,
        vlan_qos: conf.vlan_qos,
        spoofchk: NetConf::on_off("spoofchk", &conf.spoofchk)?,
        trust: NetConf::on_off("trust", &conf.trust)?,
        link_state: conf.link_state.clone(),
        min_tx_rate: conf.min_tx_rate,
        max_tx_rate: conf.max_tx_rate,
        mtu: conf.mtu,
    })
}

fn request(env: &Env, op: Op) -> Request {
    Request {
        op,
        container_id: env.container_id.clone(),
        if_name: env.if_name.clone(),
        vf: None,
        netns: None,
        settings: Settings::default(),
        network: None,
        valid: Vec::new(),
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// ADD: claim (recorded by the agent first), move, configure, IPAM, result. Any failure after
/// the claim undoes what was done, so that the VF is free again.
fn add(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<CniResult, CniError> {
    env.require(&["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])?;
    let netns = PathBuf::from(&env.netns);
    if !netns.exists() {
        return Err(CniError::new(
            code::CONTAINER_UNKNOWN,
            "the container's network namespace does not exist",
            env.netns.clone(),
        ));
    }
    let vf = conf.vf()?;
    let claim = Request {
        op: Op::Claim,
        vf: Some(vf),
        netns: Some(env.netns.clone()),
        settings: settings(conf)?,
        network: Some(conf.name.clone()),
        ..request(env, Op::Claim)
    };
    let answer = agent::call(&conf.agent_run_dir(), &claim)?;
    match attach(env, conf, stdin, &answer) {
        Ok(r) => Ok(r.for_version(&conf.cni_version)),
        Err(e) => {
            // Undo: give the interface back and free the VF; the first error is the one to
            // report.
            let _ = ipam::delegate(env, conf.ipam.as_ref(), "DEL", stdin);
            let _ = detach(env, &answer);
            let _ = agent::call(&conf.agent_run_dir(), &request(env, Op::Release));
            Err(e)
        }
    }
}

fn attach(env: &Env, conf: &NetConf, stdin: &[u8], a: &Answer) -> Result<CniResult, CniError> {
    let mac = parse_mac(&a.mac).ok_or_else(|| {
        CniError::new(
            code::DECODE_FAILURE,
            "the agent sent an invalid MAC",
            a.mac.clone(),
        )
    })?;
    let netns = PathBuf::from(&env.netns);
    // Into the pod, unless an earlier, interrupted ADD moved it already.
    let host = a.host_name.clone();
    let here = link::in_ns(None, move |h| async move { link::get(&h, &host).await })?;
    if let Some(l) = here {
        let ns = netns.clone();
        link::in_ns(None, move |h| async move {
            link::down(&h, l.index).await?;
            link::move_to(&h, l.index, &ns).await
        })?;
    }
    let (host, ifname, mtu) = (a.host_name.clone(), env.if_name.clone(), a.mtu);
    let index = link::in_ns(Some(&netns), move |h| async move {
        let l = match link::get(&h, &host).await? {
            Some(l) => l,
            None => link::get(&h, &ifname)
                .await?
                .ok_or_else(|| link::LinkError {
                    what: "the VF's interface is not in the container".into(),
                    detail: format!("neither {host} nor {ifname} found"),
                })?,
        };
        if l.name != ifname {
            link::down(&h, l.index).await?;
            link::rename(&h, l.index, &ifname).await?;
        }
        link::configure_up(&h, l.index, mac, mtu).await?;
        Ok(l.index)
    })?;
    let mut result = CniResult {
        cni_version: conf.cni_version.clone(),
        interfaces: vec![Interface {
            name: env.if_name.clone(),
            mac: a.mac.clone(),
            mtu: Some(a.mtu),
            sandbox: env.netns.clone(),
        }],
        ..Default::default()
    };
    if let Some(ip) = ipam::delegate(env, conf.ipam.as_ref(), "ADD", stdin)? {
        apply_ipam(&netns, index, &ip)?;
        result.ips = ip
            .ips
            .into_iter()
            .map(|c| IpConfig {
                interface: Some(0),
                ..c
            })
            .collect();
        result.routes = ip.routes;
        result.dns = ip.dns;
    }
    Ok(result)
}

/// Puts the IPAM result's addresses and routes on the interface.
fn apply_ipam(netns: &Path, index: u32, r: &CniResult) -> Result<(), CniError> {
    let bad = |s: &str| {
        CniError::new(
            code::DECODE_FAILURE,
            "the IPAM result has an invalid address",
            s.to_owned(),
        )
    };
    let mut addrs = Vec::new();
    for ip in &r.ips {
        addrs.push(parse_cidr(&ip.address).ok_or_else(|| bad(&ip.address))?);
    }
    let mut routes = Vec::new();
    let default_gw = |v4: bool| {
        r.ips
            .iter()
            .filter_map(|ip| ip.gateway.as_deref()?.parse::<std::net::IpAddr>().ok())
            .find(|g| g.is_ipv4() == v4)
    };
    for rt in &r.routes {
        let (dst, len) = parse_cidr(&rt.dst).ok_or_else(|| bad(&rt.dst))?;
        let gw = match rt.gw.as_deref() {
            Some(g) => Some(g.parse().map_err(|_| bad(g))?),
            None => default_gw(dst.is_ipv4()),
        };
        routes.push((dst, len, gw));
    }
    link::in_ns(Some(netns), move |h| async move {
        for (ip, len) in addrs {
            link::add_address(&h, index, ip, len).await?;
        }
        for (dst, len, gw) in routes {
            link::add_route(&h, index, dst, len, gw).await?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Moves the VF's interface back home under its host name (best effort: when it cannot be
/// found, the agent destroys and recreates the TAP on release).
fn detach(env: &Env, a: &Answer) -> Result<(), CniError> {
    let netns = PathBuf::from(if env.netns.is_empty() {
        &a.netns
    } else {
        &env.netns
    });
    if a.vf.is_empty() || !netns.exists() {
        return Ok(());
    }
    let (host, ifname) = (a.host_name.clone(), a.if_name.clone());
    link::in_ns(Some(&netns), move |h| async move {
        let l = match link::get(&h, &ifname).await? {
            Some(l) => l,
            None => match link::get(&h, &host).await? {
                Some(l) => l,
                None => return Ok(()),
            },
        };
        link::down(&h, l.index).await?;
        if l.name != host {
            link::rename(&h, l.index, &host).await?;
        }
        link::move_to(&h, l.index, &link::own_netns()).await
    })?;
    Ok(())
}

/// DEL: IPAM released, interface home, VF released. Succeeds when there is nothing to do.
fn del(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    env.require(&["CNI_CONTAINERID", "CNI_IFNAME"])?;
    let run_dir = conf.agent_run_dir();
    let held = agent::call(&run_dir, &request(env, Op::Check))?;
    ipam::delegate(env, conf.ipam.as_ref(), "DEL", stdin)?;
    if held.vf.is_empty() {
        return Ok(());
    }
    if let Err(e) = detach(env, &held) {
        eprintln!(
            "emu-sriov-cni: could not move {} back ({e}); the agent recreates it",
            env.if_name
        );
    }
    agent::call(&run_dir, &request(env, Op::Release))?;
    Ok(())
}

/// GC (spec 1.1): the agent frees every claim of this network whose attachment is not in
/// `cni.dev/valid-attachments` (none given: all of them), moving or recreating each TAP at
/// home; then each freed attachment's IPAM allocation is released (IPAM DEL with that
/// attachment's container id and ifName: host-local and static have no GC of their own).
/// Claims whose network namespace is gone are freed by the agent anyway, GC or not.
fn gc(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    let req = Request {
        network: Some(conf.name.clone()),
        valid: conf.valid_attachments.clone().unwrap_or_default(),
        container_id: String::new(),
        if_name: String::new(),
        ..request(env, Op::Gc)
    };
    let answer = agent::call(&conf.agent_run_dir(), &req)?;
    let mut failed = None;
    for c in &answer.collected {
        let of_attachment = Env {
            container_id: c.container_id.clone(),
            if_name: c.if_name.clone(),
            netns: String::new(),
            ..env.clone()
        };
        if let Err(e) = ipam::delegate(&of_attachment, conf.ipam.as_ref(), "DEL", stdin) {
            eprintln!(
                "emu-sriov-cni: GC freed VF {} of {}/{} but its IPAM release failed: {e}",
                c.vf, c.container_id, c.if_name
            );
            failed.get_or_insert(e);
        }
    }
    failed.map_or(Ok(()), Err)
}

/// CHECK: the container holds a VF under ifName, its TAP is alive under that name, and the
/// interface in the container has the MAC and the addresses ADD gave it.
fn check(env: &Env, conf: &NetConf, stdin: &[u8]) -> Result<(), CniError> {
    env.require(&["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])?;
    let prev: CniResult = match &conf.prev_result {
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            CniError::new(
                code::DECODE_FAILURE,
                "cannot decode prevResult",
                e.to_string(),
            )
        })?,
        None => {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "CHECK needs prevResult",
                "the runtime passes the result of ADD as prevResult",
            ))
        }
    };
    let held = agent::call(&conf.agent_run_dir(), &request(env, Op::Check))?;
    if held.vf.is_empty() {
        return Err(CniError::new(
            code::NOT_HELD,
            "the container holds no emu-sriov VF",
            format!(
                "no claim for container {} interface {}",
                env.container_id, env.if_name
            ),
        ));
    }
    let changed =
        |d: String| CniError::new(code::INTERFACE_CHANGED, "the VF's interface changed", d);
    if held.current_name.as_deref() != Some(env.if_name.as_str()) {
        return Err(changed(format!(
            "VF {} is {} (expected {} in the container)",
            held.vf,
            held.current_name.as_deref().unwrap_or("gone"),
            env.if_name
        )));
    }
    let netns = PathBuf::from(&env.netns);
    let ifname = env.if_name.clone();
    let (l, addrs) = link::in_ns(Some(&netns), move |h| async move {
        let Some(l) = link::get(&h, &ifname).await? else {
            return Ok((None, Vec::new()));
        };
        let a = link::addresses(&h, l.index).await?;
        Ok((Some(l), a))
    })?;
    let Some(l) = l else {
        return Err(changed(format!("{} is not in {}", env.if_name, env.netns)));
    };
    if l.mac != parse_mac(&held.mac) {
        return Err(changed(format!(
            "{} has another MAC than {}",
            env.if_name, held.mac
        )));
    }
    for ip in &prev.ips {
        let want = parse_cidr(&ip.address);
        if want.is_some_and(|w| !addrs.contains(&w)) {
            return Err(changed(format!(
                "{} lost address {}",
                env.if_name, ip.address
            )));
        }
    }
    let _: Vec<&Route> = prev.routes.iter().collect();
    ipam::delegate(env, conf.ipam.as_ref(), "CHECK", stdin)?;
    Ok(())
}
