//! The Helm chart charts/emu-sriov, checked with the real `helm` (tests/cluster/build.sh helm)
//! and the real kube-apiserver (src/k8s.rs): its CRDs are crdgen's (crds/*.yaml), `helm lint
//! --strict` passes with every values file in ci/, `helm template` renders each of them and the
//! API server accepts every rendered object in a server-side dry run (schemas, CEL rules,
//! RBAC objects, the agents' ValidatingAdmissionPolicy and its CEL, the example CRs against
//! their CRDs), and a bad values file fails with the schema's readable message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use emu_sriov_tests::env::workspace_root;
use emu_sriov_tests::k8s::{self, ControlPlane};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

fn chart() -> PathBuf {
    workspace_root().join("charts/emu-sriov")
}

fn helm_bin() -> PathBuf {
    let bin = k8s::bin_dir()
        .expect("the Kubernetes programs (tests/cluster/build.sh)")
        .join("helm");
    assert!(
        bin.is_file(),
        "{} missing: build it with `tests/cluster/build.sh helm`",
        bin.display()
    );
    bin
}

fn helm(args: &[&str]) -> Output {
    Command::new(helm_bin())
        .args(args)
        .current_dir(workspace_root())
        // No repositories, plugins or caches of the user's.
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("emu-sriov-helm/config"),
        )
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("emu-sriov-helm/cache"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("emu-sriov-helm/data"),
        )
        .stdin(Stdio::null())
        .output()
        .expect("running helm")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The values files in ci/ (relative to the workspace root).
fn values_files() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(chart().join("ci"))
        .expect("charts/emu-sriov/ci")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            p.strip_prefix(workspace_root())
                .expect("under the workspace")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    v.sort();
    assert!(v.len() >= 3, "ci/ has several values files: {v:?}");
    v
}

fn yaml_files(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).expect("read CRD"),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn chart_crds_are_the_generated_ones() {
    let repo = yaml_files(&workspace_root().join("crds"));
    let chart = yaml_files(&chart().join("crds"));
    let names = |v: &[(String, String)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&chart),
        names(&repo),
        "charts/emu-sriov/crds must hold exactly crds/*.yaml (cp crds/*.yaml charts/emu-sriov/crds/)"
    );
    for ((name, a), (_, b)) in chart.iter().zip(&repo) {
        assert!(
            a == b,
            "charts/emu-sriov/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/emu-sriov/crds/"
        );
    }
}

#[test]
fn chart_lints_strict_with_every_values_file() {
    let out = helm(&["lint", "--strict", "charts/emu-sriov"]);
    assert!(
        out.status.success(),
        "helm lint --strict:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    for f in values_files() {
        let out = helm(&["lint", "--strict", "charts/emu-sriov", "-f", &f]);
        assert!(
            out.status.success(),
            "helm lint --strict -f {f}:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

#[test]
fn bad_values_fail_with_the_schema_message() {
    let out = helm(&[
        "template",
        "t",
        "charts/emu-sriov",
        "-f",
        "tests/cluster/chart/bad-values.yaml",
    ]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "bad values were accepted");
    for needle in [
        "values don't meet the specifications of the schema",
        "additional properties 'replica' not allowed",
        "/agent/kubeletDir",
        "/agent/capabilities/0",
    ] {
        assert!(
            err.contains(needle),
            "`{needle}` missing from helm's message:\n{err}"
        );
    }
}

#[tokio::test]
async fn rendered_manifests_pass_a_server_side_dry_run() {
    let cp = ControlPlane::shared();
    let client = cp.client();
    // The chart's CRDs (helm installs crds/ before the templates), and Multus' NAD.
    let mut crds: Vec<CustomResourceDefinition> = yaml_files(&chart().join("crds"))
        .iter()
        .map(|(n, y)| serde_yaml::from_str(y).unwrap_or_else(|e| panic!("crds/{n}: {e}")))
        .collect();
    crds.push(k8s::nad_crd());
    k8s::install_crds(&client, crds)
        .await
        .expect("install the chart's CRDs");
    let ns = k8s::create_namespace(&client, "chart")
        .await
        .expect("namespace");

    for f in values_files() {
        // As `helm install` against a >= 1.30 server would: the agents' admission policy too.
        let out = helm(&[
            "template",
            "emu",
            "charts/emu-sriov",
            "-n",
            &ns,
            "-f",
            &f,
            "--api-versions",
            "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy",
        ]);
        assert!(
            out.status.success(),
            "helm template -f {f}:\n{}",
            text(&out.stderr)
        );
        let rendered = text(&out.stdout);
        // prometheus-operator's CRD is not on this server: check that ServiceMonitor renders,
        // dry-run everything else.
        let docs: Vec<&str> = rendered
            .split("\n---")
            .filter(|d| d.contains("kind:"))
            .filter(|d| !d.contains("\nkind: ServiceMonitor"))
            .collect();
        let kinds = docs.len();
        let path = cp
            .data_dir()
            .join(format!("chart-{}.yaml", f.replace('/', "_")));
        std::fs::write(&path, docs.join("\n---")).expect("write rendered manifests");
        let out = cp.kubectl([
            "apply",
            "--dry-run=server",
            "--server-side",
            "--field-manager=emu-sriov-chart-test",
            "-f",
            &path.to_string_lossy(),
        ]);
        assert!(
            out.status.success(),
            "server-side dry run of {f} ({kinds} objects) failed:\n{}",
            text(&out.stderr)
        );
        let applied = text(&out.stdout).lines().count();
        assert_eq!(
            applied,
            kinds,
            "every object of {f} in the dry run:\n{}",
            text(&out.stdout)
        );
        eprintln!("{f}: {kinds} objects accepted by kube-apiserver (dry run)");
    }
}
