//! The hook driven over its unix socket the way virt-launcher drives it (Info, then Callbacks
//! v1alpha3 or v1alpha2 OnDefineDomain), with the KubeVirt-shaped inputs in `fixtures/` (see its
//! README for where their shape comes from).

use emu_sriov_kubevirt_hook::api::{info, v1alpha2, v1alpha3};
use emu_sriov_kubevirt_hook::server::serve;
use emu_sriov_kubevirt_hook::service::Hook;
use emu_sriov_kubevirt_hook::{HookConfig, SocketCheck};
use quick_xml::events::Event;
use quick_xml::Reader;
use std::path::{Path, PathBuf};
use tonic::transport::{Channel, Endpoint, Uri};

const QEMU_NS: &str = "http://libvirt.org/schemas/domain/qemu/1.0";

fn fixture(n: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(n),
    )
    .unwrap()
}

/// A canonical element: name, sorted attributes, children; whitespace-only text dropped.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    El(String, Vec<(String, String)>, Vec<Node>),
    Text(String),
}

fn canon(xml: &[u8]) -> Node {
    let mut r = Reader::from_reader(xml);
    let mut stack: Vec<Node> = vec![Node::El("#doc".into(), vec![], vec![])];
    loop {
        match r.read_event().unwrap() {
            Event::Eof => break,
            ev @ (Event::Start(_) | Event::Empty(_)) => {
                let (e, empty) = match &ev {
                    Event::Start(e) => (e, false),
                    Event::Empty(e) => (e, true),
                    _ => unreachable!(),
                };
                let mut attrs: Vec<(String, String)> = e
                    .attributes()
                    .map(|a| {
                        let a = a.unwrap();
                        (
                            String::from_utf8_lossy(a.key.as_ref()).into_owned(),
                            a.unescape_value().unwrap().into_owned(),
                        )
                    })
                    .collect();
                attrs.sort();
                let n = Node::El(
                    String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                    attrs,
                    vec![],
                );
                if empty {
                    push(&mut stack, n);
                } else {
                    stack.push(n);
                }
            }
            Event::End(_) => {
                let n = stack.pop().unwrap();
                push(&mut stack, n);
            }
            Event::Text(t) => {
                let s = t.decode().unwrap().into_owned();
                if !s.trim().is_empty() {
                    push(&mut stack, Node::Text(s));
                }
            }
            _ => {}
        }
    }
    stack.pop().unwrap()
}

fn push(stack: &mut [Node], n: Node) {
    if let Some(Node::El(_, _, c)) = stack.last_mut() {
        c.push(n);
    }
}

fn domain_of(doc: &Node) -> &Node {
    match doc {
        Node::El(_, _, c) => c
            .iter()
            .find(|n| matches!(n, Node::El(name, ..) if name == "domain"))
            .unwrap(),
        _ => panic!(),
    }
}

fn children<'a>(n: &'a Node, name: &str) -> Vec<&'a Node> {
    match n {
        Node::El(_, _, c) => c
            .iter()
            .filter(|x| matches!(x, Node::El(m, ..) if m == name))
            .collect(),
        _ => vec![],
    }
}

fn attr<'a>(n: &'a Node, k: &str) -> Option<&'a str> {
    match n {
        Node::El(_, a, _) => a.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str()),
        _ => None,
    }
}

/// `out` minus what the hook adds must equal `input`, canonically.
fn strip_additions(out: &Node, input: &Node) -> Node {
    let Node::El(name, attrs, kids) = out.clone() else {
        panic!()
    };
    let Node::El(_, in_attrs, in_kids) = input else {
        panic!()
    };
    let attrs: Vec<_> = attrs
        .into_iter()
        .filter(|(k, v)| {
            !(k == "xmlns:qemu" && v == QEMU_NS) || in_attrs.iter().any(|(x, _)| x == k)
        })
        .collect();
    let in_has_backing = in_kids
        .iter()
        .any(|n| matches!(n, Node::El(m, ..) if m == "memoryBacking"));
    let kids = kids
        .into_iter()
        .filter(|n| !matches!(n, Node::El(m, ..) if m == "qemu:commandline"))
        .filter(|n| in_has_backing || !matches!(n, Node::El(m, ..) if m == "memoryBacking"))
        .map(|n| match n {
            Node::El(m, a, c) if m == "memoryBacking" => Node::El(
                m,
                a,
                c.into_iter()
                    .filter(|x| {
                        !(matches!(x, Node::El(k, a, _) if k == "source" && a == &vec![("type".to_owned(), "memfd".to_owned())])
                            || matches!(x, Node::El(k, a, _) if k == "access" && a == &vec![("mode".to_owned(), "shared".to_owned())]))
                    })
                    .collect(),
            ),
            other => other,
        })
        .collect();
    Node::El(name, attrs, kids)
}

struct Server {
    dir: PathBuf,
    sock: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start(
    tag: &str,
    env: &[(&str, &str)],
    network_info: Option<&[u8]>,
    check: SocketCheck,
) -> Server {
    let dir = std::env::temp_dir().join(format!("emu-kvhook-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ni = dir.join("network-info");
    if let Some(b) = network_info {
        std::fs::write(&ni, b).unwrap();
    }
    let cfg = HookConfig {
        name: "emu-sriov".into(),
        binding: "emu-sriov".into(),
        network_info: Some(ni),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        check_sockets: check,
    };
    let sock = dir.join("emu-sriov.sock");
    let s2 = sock.clone();
    let task = tokio::spawn(async move {
        let _ = serve(Hook::new(cfg), &s2, std::future::pending()).await;
    });
    for _ in 0..200 {
        if sock.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Server { dir, sock, task }
}

async fn channel(sock: &Path) -> Channel {
    let p = sock.to_owned();
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = p.clone();
            async move {
                tokio::net::UnixStream::connect(p)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        }))
        .await
        .unwrap()
}

async fn define(sock: &Path, domain: &[u8], vmi: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    v1alpha3::callbacks_client::CallbacksClient::new(channel(sock).await)
        .on_define_domain(v1alpha3::OnDefineDomainParams {
            domain_xml: domain.to_vec(),
            vmi: vmi.to_vec(),
        })
        .await
        .map(|r| r.into_inner().domain_xml)
}

const TWO_VFS: &str = r#"{"igb0-vf0":{"socket":"/var/run/emu-sriov/igb0-vf0/vf.sock","host_socket":"/nonexistent/igb0-vf0/vf.sock"},"igb0-vf1":{"socket":"/var/run/emu-sriov/igb0-vf1/vf.sock"}}"#;

fn device_sockets(domain: &Node) -> Vec<String> {
    let cl = children(domain, "qemu:commandline");
    assert_eq!(cl.len(), 1, "one qemu:commandline");
    let args: Vec<&str> = children(cl[0], "qemu:arg")
        .iter()
        .filter_map(|a| attr(a, "value"))
        .collect();
    args.chunks(2)
        .map(|p| {
            assert_eq!(p[0], "-device");
            let v: serde_json::Value = serde_json::from_str(p[1]).unwrap();
            assert_eq!(v["driver"], "vfio-user-pci");
            assert_eq!(v["socket"]["type"], "unix");
            v["socket"]["path"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn info_lists_on_define_domain_v1alpha3_and_v1alpha2() {
    let s = start("info", &[], None, SocketCheck::Off).await;
    let i = info::info_client::InfoClient::new(channel(&s.sock).await)
        .info(info::InfoParams {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(i.name, "emu-sriov");
    assert_eq!(i.versions, ["v1alpha3", "v1alpha2"]);
    assert!(i.hook_points.iter().any(|p| p.name == "OnDefineDomain"));
}

#[tokio::test]
async fn sidecar_env_two_vfs_memfd_shared_rest_unchanged() {
    let s = start(
        "env",
        &[("EMU_SRIOV_VF_VF_INFO", TWO_VFS)],
        None,
        SocketCheck::Off,
    )
    .await;
    let input = fixture("domain.xml");
    let out = define(&s.sock, &input, &fixture("vmi-sidecar.json"))
        .await
        .unwrap();
    let (cin, cout) = (canon(&input), canon(&out));
    let (din, dout) = (domain_of(&cin), domain_of(&cout));
    assert_eq!(attr(dout, "xmlns:qemu"), Some(QEMU_NS));
    let mb = children(dout, "memoryBacking");
    assert_eq!(mb.len(), 1);
    assert_eq!(attr(children(mb[0], "source")[0], "type"), Some("memfd"));
    assert_eq!(attr(children(mb[0], "access")[0], "mode"), Some("shared"));
    assert_eq!(
        device_sockets(dout),
        [
            "/var/run/emu-sriov/igb0-vf0/vf.sock",
            "/var/run/emu-sriov/igb0-vf1/vf.sock"
        ]
    );
    assert_eq!(
        strip_additions(dout, din),
        *din,
        "everything else unchanged"
    );
    // Byte for byte, too: the input is a prefix-wise subsequence — its text up to </domain>
    // appears unchanged except for the additions.
    let o = String::from_utf8(out).unwrap();
    let i = String::from_utf8(input).unwrap();
    let cut = i.rfind("</domain>").unwrap();
    assert!(o.starts_with(&i[..i.find('>').unwrap()]), "root tag kept");
    assert!(
        o.contains(&i[i.find('\n').unwrap()..cut]),
        "body kept byte for byte"
    );
}

#[tokio::test]
async fn hugepages_kept_and_v1alpha2_works() {
    let s = start(
        "huge",
        &[("EMU_SRIOV_VF_VF_INFO", TWO_VFS)],
        None,
        SocketCheck::Off,
    )
    .await;
    let input = fixture("domain-hugepages.xml");
    let out = v1alpha2::callbacks_client::CallbacksClient::new(channel(&s.sock).await)
        .on_define_domain(v1alpha2::OnDefineDomainParams {
            domain_xml: input.clone(),
            vmi: fixture("vmi-sidecar.json"),
        })
        .await
        .unwrap()
        .into_inner()
        .domain_xml;
    let (cin, cout) = (canon(&input), canon(&out));
    let dout = domain_of(&cout);
    let mb = children(dout, "memoryBacking");
    assert_eq!(mb.len(), 1);
    let hp = children(mb[0], "hugepages");
    assert_eq!(attr(children(hp[0], "page")[0], "size"), Some("2048"));
    assert_eq!(children(mb[0], "source").len(), 1);
    assert_eq!(children(mb[0], "access").len(), 1);
    assert_eq!(strip_additions(dout, domain_of(&cin)), *domain_of(&cin));
}

#[tokio::test]
async fn binding_plugin_uses_network_info() {
    let s = start(
        "binding",
        &[],
        Some(&fixture("network-info.json")),
        SocketCheck::Off,
    )
    .await;
    let out = define(
        &s.sock,
        &fixture("domain.xml"),
        &fixture("vmi-binding.json"),
    )
    .await
    .unwrap();
    assert_eq!(
        device_sockets(domain_of(&canon(&out))),
        ["/var/run/emu-sriov/igb0-vf3/vf.sock"]
    );
}

#[tokio::test]
async fn sidecar_without_env_uses_by_index_mounts() {
    let s = start("byidx", &[], None, SocketCheck::Off).await;
    let out = define(
        &s.sock,
        &fixture("domain.xml"),
        &fixture("vmi-sidecar.json"),
    )
    .await
    .unwrap();
    assert_eq!(
        device_sockets(domain_of(&canon(&out))),
        [
            "/var/run/emu-sriov/by-index/vf/0/vf.sock",
            "/var/run/emu-sriov/by-index/vf/1/vf.sock"
        ]
    );
}

#[tokio::test]
async fn vmi_without_vfs_gets_the_domain_back_unchanged() {
    let s = start(
        "none",
        &[("EMU_SRIOV_VF_VF_INFO", TWO_VFS)],
        None,
        SocketCheck::Off,
    )
    .await;
    let vmi = br#"{"metadata":{"name":"plain"},"spec":{"domain":{"devices":{}}}}"#;
    let input = fixture("domain.xml");
    assert_eq!(define(&s.sock, &input, vmi).await.unwrap(), input);
}

async fn refused(s: &Server, domain: &[u8], vmi: &[u8]) -> String {
    let e = define(&s.sock, domain, vmi).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    e.message().to_owned()
}

#[tokio::test]
async fn error_cases_say_which() {
    let one = r#"{"igb0-vf0":{"socket":"/var/run/emu-sriov/igb0-vf0/vf.sock"}}"#;
    let s = start(
        "err",
        &[("EMU_SRIOV_VF_VF_INFO", one)],
        None,
        SocketCheck::Off,
    )
    .await;
    let d = fixture("domain.xml");
    // Asks for two, was given one.
    let m = refused(&s, &d, &fixture("vmi-sidecar.json")).await;
    assert!(
        m.contains("2 × emu.sriov/vf") && m.contains("given 1"),
        "{m}"
    );
    // Binding interface whose network has no device-info (another network has).
    let other = br#"{"interfaces":[{"network":"other","deviceInfo":{"type":"vhost-user","vhost-user":{"path":"/var/run/emu-sriov/igb0-vf5/vf.sock"}}}]}"#;
    let s2 = start("err-ni", &[], Some(other), SocketCheck::Off).await;
    let m = refused(&s2, &d, &fixture("vmi-binding.json")).await;
    assert!(m.contains("`vf-net`") && m.contains("resourceName"), "{m}");
    // Domains the hook cannot edit safely.
    let vmi1 = br#"{"spec":{"domain":{"resources":{"limits":{"emu.sriov/vf":"1"}}}}}"#;
    let private = String::from_utf8(d.clone()).unwrap().replace(
        "\t<os>",
        "\t<memoryBacking>\n\t\t<access mode=\"private\"></access>\n\t</memoryBacking>\n\t<os>",
    );
    let m = refused(&s, private.as_bytes(), vmi1).await;
    assert!(m.contains("access mode=\"private\""), "{m}");
    let anon = String::from_utf8(d.clone()).unwrap().replace(
        "\t<os>",
        "\t<memoryBacking>\n\t\t<source type=\"anonymous\"></source>\n\t</memoryBacking>\n\t<os>",
    );
    assert!(refused(&s, anon.as_bytes(), vmi1)
        .await
        .contains("anonymous"));
    let taken = String::from_utf8(d.clone())
        .unwrap()
        .replace(QEMU_NS, "urn:other");
    assert!(refused(&s, taken.as_bytes(), vmi1)
        .await
        .contains("prefix `qemu`"));
    assert!(refused(&s, b"<domain><name>x</name>", vmi1)
        .await
        .contains("</domain>"));
    assert!(refused(&s, b"<domain><a></b></domain>", vmi1)
        .await
        .contains("not well-formed"));
    assert!(refused(&s, b"<network/>", vmi1).await.contains("<network>"));
    assert!(refused(&s, &d, b"{not json").await.contains("not JSON"));
    let bad_q = br#"{"spec":{"domain":{"resources":{"limits":{"emu.sriov/vf":"1.5"}}}}}"#;
    assert!(refused(&s, &d, bad_q).await.contains("1.5"));
}

#[tokio::test]
async fn missing_socket_is_named() {
    let s = start(
        "sock",
        &[("EMU_SRIOV_VF_VF_INFO", TWO_VFS)],
        None,
        SocketCheck::Host,
    )
    .await;
    let m = refused(&s, &fixture("domain.xml"), &fixture("vmi-sidecar.json")).await;
    assert!(
        m.contains("igb0-vf0")
            && m.contains("/nonexistent/igb0-vf0/vf.sock")
            && m.contains("does not exist"),
        "{m}"
    );
    let empty = r#"{"igb0-vf0":{"socket":""}}"#;
    let s = start(
        "nosock",
        &[("EMU_SRIOV_VF_VF_INFO", empty)],
        None,
        SocketCheck::Off,
    )
    .await;
    let vmi1 = br#"{"spec":{"domain":{"resources":{"limits":{"emu.sriov/vf":"1"}}}}}"#;
    assert!(refused(&s, &fixture("domain.xml"), vmi1)
        .await
        .contains("no socket path"));
}

#[test]
fn garbage_never_panics() {
    let cfg = HookConfig {
        name: "x".into(),
        binding: "emu-sriov".into(),
        network_info: None,
        env: vec![("EMU_SRIOV_VF_VF_INFO".into(), TWO_VFS.into())],
        check_sockets: SocketCheck::Off,
    };
    let vmi = fixture("vmi-sidecar.json");
    let d = fixture("domain-hugepages.xml");
    // Every prefix of a real domain, and byte flips through it.
    for cut in (0..d.len()).step_by(7) {
        let _ = emu_sriov_kubevirt_hook::on_define_domain(&cfg, &d[..cut], &vmi);
    }
    let mut x = d.clone();
    for i in (0..x.len()).step_by(13) {
        x[i] ^= 0x5a;
        let _ = emu_sriov_kubevirt_hook::on_define_domain(&cfg, &x, &vmi);
        let _ = emu_sriov_kubevirt_hook::on_define_domain(&cfg, &d, &x);
    }
}
