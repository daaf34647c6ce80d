//! The thin half of the operator: kube-runtime controllers that feed [`crate::render`] and
//! [`crate::network`] from their caches and write what differs, with server-side apply under
//! the field manager `emu-sriov-operator`.
//!
//! | controller | reconciles | triggered by | writes |
//! |---|---|---|---|
//! | nodes | one Node | the Node, any VfPool, its NodeState | that node's NodeState spec (create/update/delete) |
//! | pools | one VfPool | the pool, any NodeState naming it, any Node | the pool's status |
//! | networks | one VfNetwork | the network, its NAD | the NAD in the target namespace, the network's status |
//!
//! Every write is skipped when the object already says the same, so a restarted operator
//! converges with zero writes. Caches are synced before the first reconcile: a half-filled
//! cache would render wrong specs.

use crate::metrics::{ControllerLabel, Metrics};
use crate::network::{self, RenderedNad};
use crate::render::{self, Cond, NodeAction, NodeLabels, Pool};
use emu_sriov_crds::{
    conditions, NetworkAttachmentDefinition, NodeState, NodeStateSpec, VfNetwork, VfNetworkStatus,
    VfPool, VfPoolStatus, OPERATOR_MANAGER,
};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Finalizer on VfNetworks: their NAD may live in another namespace, where garbage
/// collection by owner reference cannot reach, so deletion removes it explicitly.
pub const NETWORK_FINALIZER: &str = "emu.sriov/network-attachment-definition";

/// How often a healthy object is looked at again even without events (a safety net; writes
/// happen only when something differs).
const RESYNC: Duration = Duration::from_secs(600);

/// How often a pool's status is recomputed even without events. The status is read from the
/// NodeState cache, a reflector of its own: the watch event that triggers the reconcile can
/// arrive a moment before that cache has the change, and the reconcile then sees the old
/// NodeState. Found by the operator test as a pool that stayed un-Ready for the whole 600 s
/// RESYNC. The recompute is in memory; a write happens only when the status differs.
const POOL_RECHECK: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("encoding an object: {0}")]
    Json(#[from] serde_json::Error),
    #[error("VfNetwork finalizer: {0}")]
    Finalizer(String),
    #[error("object without a name")]
    Unnamed,
}

/// Shared by every reconcile.
pub struct Ctx {
    pub client: Client,
    pub pools: Store<VfPool>,
    pub nodes: Store<Node>,
    pub states: Store<NodeState>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub nad: network::NadOptions,
}

/// Starts the caches, waits for them, then runs the three controllers until `shutdown`.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    identity: String,
    nad: network::NadOptions,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (pools, pools_w) = reflector::store::<VfPool>();
    let (nodes, nodes_w) = reflector::store::<Node>();
    let (states, states_w) = reflector::store::<NodeState>();
    let mut caches = tokio::task::JoinSet::new();
    caches.spawn(drive(reflector::reflector(
        pools_w,
        watcher(
            Api::<VfPool>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )));
    caches.spawn(drive(reflector::reflector(
        nodes_w,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff(),
    )));
    caches.spawn(drive(reflector::reflector(
        states_w,
        watcher(
            Api::<NodeState>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )));
    tracing::info!("syncing caches (VfPools, Nodes, NodeStates)");
    let synced = async {
        pools.wait_until_ready().await?;
        nodes.wait_until_ready().await?;
        states.wait_until_ready().await
    };
    if synced.await.is_err() {
        tracing::error!("a cache stopped before it synced");
        return;
    }
    tracing::info!(
        pools = pools.state().len(),
        nodes = nodes.state().len(),
        node_states = states.state().len(),
        "caches synced; reconciling"
    );

    let reporter = Reporter {
        controller: OPERATOR_MANAGER.into(),
        instance: Some(identity),
    };
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        pools: pools.clone(),
        nodes: nodes.clone(),
        states: states.clone(),
        metrics,
        nad,
    });
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));

    let node_ctl = {
        let nodes_for_pools = nodes.clone();
        Controller::new(Api::<Node>::all(client.clone()), watcher::Config::default())
            .watches(
                Api::<VfPool>::all(client.clone()),
                watcher::Config::default(),
                move |_pool| {
                    nodes_for_pools
                        .state()
                        .iter()
                        .map(|n| ObjectRef::from_obj(n.as_ref()))
                        .collect::<Vec<_>>()
                },
            )
            .watches(
                Api::<NodeState>::all(client.clone()),
                watcher::Config::default(),
                |ns| Some(ObjectRef::<Node>::new(&ns.name_any())),
            )
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile_node, error_policy_node, ctx.clone())
    };
    let pool_ctl = {
        let pools_for_nodes = pools.clone();
        Controller::new(
            Api::<VfPool>::all(client.clone()),
            watcher::Config::default(),
        )
        .watches(
            Api::<NodeState>::all(client.clone()),
            watcher::Config::default(),
            |ns| {
                let mut names: Vec<String> = ns.spec.pools.iter().map(|p| p.name.clone()).collect();
                if let Some(s) = &ns.status {
                    names.extend(s.pools.iter().map(|p| p.name.clone()));
                }
                names.sort();
                names.dedup();
                names
                    .into_iter()
                    .map(|n| ObjectRef::<VfPool>::new(&n))
                    .collect::<Vec<_>>()
            },
        )
        .watches(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            move |_node| {
                pools_for_nodes
                    .state()
                    .iter()
                    .map(|p| ObjectRef::from_obj(p.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile_pool, error_policy_pool, ctx.clone())
    };
    let network_ctl = Controller::new(
        Api::<VfNetwork>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<NetworkAttachmentDefinition>::all(client.clone()),
        watcher::Config::default().labels(&format!(
            "{}={}",
            network::LABEL_MANAGED_BY,
            crate::MANAGED_BY
        )),
        |nad| {
            let l = nad.labels();
            let ns = l.get(network::LABEL_NETWORK_NAMESPACE)?;
            let name = l.get(network::LABEL_NETWORK_NAME)?;
            Some(ObjectRef::<VfNetwork>::new(name).within(ns))
        },
    )
    .graceful_shutdown_on(shutdown.clone())
    .run(reconcile_network, error_policy_network, ctx.clone());

    tokio::join!(
        report("nodes", node_ctl),
        report("pools", pool_ctl),
        report("networks", network_ctl)
    );
    caches.abort_all();
    tracing::info!("controllers stopped");
}

async fn drive<S, T, E>(stream: S)
where
    S: Stream<Item = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            tracing::warn!(error = %e, "watch failed; retrying with backoff (is the CRD installed and RBAC granted?)");
        }
    }
}

async fn report<S, T, E>(name: &'static str, stream: S)
where
    S: Stream<Item = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            tracing::debug!(controller = name, error = %e, "controller event");
        }
    }
}

/// Counts a reconcile and its in-flight time.
struct Tracked<'a> {
    metrics: &'a Metrics,
    label: ControllerLabel,
}

impl<'a> Tracked<'a> {
    fn start(metrics: &'a Metrics, controller: &'static str) -> Self {
        let label = ControllerLabel { controller };
        metrics.reconciles.get_or_create(&label).inc();
        metrics.in_flight.get_or_create(&label).inc();
        Tracked { metrics, label }
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.get_or_create(&self.label).dec();
    }
}

fn failed(ctx: &Ctx, controller: &'static str, what: String, e: &Error) -> Action {
    let label = ControllerLabel { controller };
    ctx.metrics.reconcile_errors.get_or_create(&label).inc();
    tracing::warn!(controller, object = %what, error = %e, "reconcile failed; retrying in 5 s");
    Action::requeue(Duration::from_secs(5))
}

fn error_policy_node(node: Arc<Node>, e: &Error, ctx: Arc<Ctx>) -> Action {
    failed(&ctx, "nodes", node.name_any(), e)
}

fn error_policy_pool(pool: Arc<VfPool>, e: &Error, ctx: Arc<Ctx>) -> Action {
    failed(&ctx, "pools", pool.name_any(), e)
}

fn error_policy_network(net: Arc<VfNetwork>, e: &Error, ctx: Arc<Ctx>) -> Action {
    let what = format!("{}/{}", net.namespace().unwrap_or_default(), net.name_any());
    failed(&ctx, "networks", what, e)
}

fn apply_params() -> PatchParams {
    PatchParams::apply(OPERATOR_MANAGER).force()
}

// ---------------------------------------------------------------------------------------------
// Nodes → NodeState specs

/// The cached pools the renderer sees: named, and not being deleted.
fn live_pools(state: &[Arc<VfPool>]) -> Vec<Pool<'_>> {
    state
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| Pool::from_object(p))
        .collect()
}

async fn reconcile_node(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let _t = Tracked::start(&ctx.metrics, "nodes");
    let name = node.metadata.name.clone().ok_or(Error::Unnamed)?;
    let pools_state = ctx.pools.state();
    let pools = live_pools(&pools_state);
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let api = Api::<NodeState>::all(ctx.client.clone());

    let cached = ctx.states.get(&ObjectRef::new(&name));
    let desired = render::render_node(labels, &pools, cached.as_deref());
    let mut action = render::node_action(desired.clone(), cached.as_deref());
    let owned = cached.as_deref().is_some_and(|ns| owned_by(ns, &node));
    if action == NodeAction::Keep && (cached.is_none() || owned) {
        return Ok(Action::requeue(RESYNC));
    }
    // The cache may trail our own last write: look at the live object before writing.
    let live = api.get_opt(&name).await?;
    let desired = render::render_node(labels, &pools, live.as_ref());
    action = render::node_action(desired, live.as_ref());
    let live_owned = live.as_ref().is_some_and(|ns| owned_by(ns, &node));
    match action {
        NodeAction::Keep if live.is_none() || live_owned => {}
        NodeAction::Keep => {
            let spec = live.map(|ns| ns.spec).unwrap_or_default();
            apply_node_state(&ctx, &api, &node, &name, &spec).await?;
        }
        NodeAction::Apply(spec) => {
            let first = live.is_none();
            apply_node_state(&ctx, &api, &node, &name, &spec).await?;
            tracing::info!(node = %name, pools = spec.pools.len(), created = first, "NodeState spec applied");
        }
        NodeAction::Delete => {
            api.delete(&name, &DeleteParams::default()).await?;
            ctx.metrics.wrote("NodeState", "delete");
            tracing::info!(node = %name, "no pool is placed on the node any more: NodeState deleted");
        }
    }
    Ok(Action::requeue(RESYNC))
}

fn owned_by(ns: &NodeState, node: &Node) -> bool {
    let uid = node.metadata.uid.as_deref();
    ns.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Node" && Some(o.uid.as_str()) == uid)
}

async fn apply_node_state(
    ctx: &Ctx,
    api: &Api<NodeState>,
    node: &Node,
    name: &str,
    spec: &NodeStateSpec,
) -> Result<(), Error> {
    let owner = node.metadata.uid.as_ref().map(|uid| OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: name.to_owned(),
        uid: uid.clone(),
        controller: Some(true),
        block_owner_deletion: None,
    });
    let body = json!({
        "apiVersion": NodeState::api_version(&()),
        "kind": NodeState::kind(&()),
        "metadata": {
            "name": name,
            "labels": {network::LABEL_MANAGED_BY: crate::MANAGED_BY},
            "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
        },
        "spec": spec,
    });
    api.patch(name, &apply_params(), &Patch::Apply(&body))
        .await?;
    ctx.metrics.wrote("NodeState", "apply");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pool status

async fn reconcile_pool(pool: Arc<VfPool>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let _t = Tracked::start(&ctx.metrics, "pools");
    let name = pool.metadata.name.clone().ok_or(Error::Unnamed)?;
    let Some(me) = Pool::from_object(&pool) else {
        return Err(Error::Unnamed);
    };
    let pools_state = ctx.pools.state();
    let pools = live_pools(&pools_state);
    let nodes_state = ctx.nodes.state();
    let empty = BTreeMap::new();
    let nodes: Vec<NodeLabels<'_>> = nodes_state
        .iter()
        .filter_map(|n| {
            Some(NodeLabels {
                name: n.metadata.name.as_deref()?,
                labels: n.metadata.labels.as_ref().unwrap_or(&empty),
            })
        })
        .collect();
    let states_state = ctx.states.state();
    let states: Vec<&NodeState> = states_state.iter().map(|s| s.as_ref()).collect();
    let (mut status, conds) = render::pool_status(&me, &pools, &nodes, &states);
    let old = pool.status.clone().unwrap_or_default();
    status.conditions = stamp(&conds, &old.conditions, me.generation);
    if status == old {
        return Ok(Action::requeue(POOL_RECHECK));
    }
    publish_pool_events(&ctx, &pool, &old, &conds).await;
    let body = json!({
        "apiVersion": VfPool::api_version(&()),
        "kind": VfPool::kind(&()),
        "status": status,
    });
    Api::<VfPool>::all(ctx.client.clone())
        .patch_status(&name, &apply_params(), &Patch::Apply(&body))
        .await?;
    ctx.metrics.wrote("VfPool", "apply-status");
    Ok(Action::requeue(POOL_RECHECK))
}

/// Turns conditions into API conditions, keeping the old transition time of any condition
/// whose status did not change.
fn stamp(conds: &[Cond], old: &[Condition], generation: i64) -> Vec<Condition> {
    conds
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let prev = old.iter().find(|o| o.type_ == c.type_);
            let last_transition_time = match prev {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => Time(
                    jiff::Timestamp::now()
                        .round(jiff::Unit::Second)
                        .unwrap_or_else(|_| jiff::Timestamp::now()),
                ),
            };
            Condition {
                type_: c.type_.to_owned(),
                status: status.to_owned(),
                reason: c.reason.to_owned(),
                message: c.message.clone(),
                observed_generation: Some(generation),
                last_transition_time,
            }
        })
        .collect()
}

/// Events for what a user must see: a pool overridden on some node, an agent that cannot
/// apply it. Sent when the condition turns on or its message changes, not on every reconcile.
async fn publish_pool_events(ctx: &Ctx, pool: &VfPool, old: &VfPoolStatus, conds: &[Cond]) {
    for c in conds.iter().filter(|c| c.status) {
        let (reason, type_) = match c.type_ {
            conditions::OVERLAP => ("Overlap", EventType::Warning),
            conditions::DEGRADED => ("AgentCannotApply", EventType::Warning),
            _ => continue,
        };
        let was = old
            .conditions
            .iter()
            .any(|o| o.type_ == c.type_ && o.status == "True" && o.message == c.message);
        if was {
            continue;
        }
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(&c.message, 1000)),
            action: "Reconcile".into(),
            secondary: None,
        };
        match ctx.recorder.publish(&ev, &pool.object_ref(&())).await {
            Ok(()) => ctx.metrics.wrote("Event", "create"),
            Err(e) => tracing::debug!(error = %e, "could not publish an event"),
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

// ---------------------------------------------------------------------------------------------
// VfNetwork → NetworkAttachmentDefinition

async fn reconcile_network(net: Arc<VfNetwork>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let _t = Tracked::start(&ctx.metrics, "networks");
    let ns = net.namespace().ok_or(Error::Unnamed)?;
    let api = Api::<VfNetwork>::namespaced(ctx.client.clone(), &ns);
    let had_finalizer = net.finalizers().iter().any(|f| f == NETWORK_FINALIZER);
    let c = ctx.clone();
    let result = finalizer(&api, NETWORK_FINALIZER, net, |event| async move {
        match event {
            FinalizerEvent::Apply(net) => apply_network(&c, &net).await,
            FinalizerEvent::Cleanup(net) => cleanup_network(&c, &net).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    if !had_finalizer && result.is_ok() {
        // The finalizer helper added it (a JSON patch) before applying.
        ctx.metrics.wrote("VfNetwork", "add-finalizer");
    }
    result
}

async fn apply_network(ctx: &Ctx, net: &VfNetwork) -> Result<Action, Error> {
    let ns = net.namespace().ok_or(Error::Unnamed)?;
    let name = net.name_any();
    let generation = net.metadata.generation.unwrap_or(0);
    let old = net.status.clone().unwrap_or_default();
    let (nad_ref, cond) = match network::render(net, &ctx.nad) {
        Ok(r) => match ensure_nad(ctx, &r).await {
            Ok(()) => (
                Some(format!("{}/{}", r.namespace, r.name)),
                Cond {
                    type_: conditions::READY,
                    status: true,
                    reason: "Rendered",
                    message: format!(
                        "NetworkAttachmentDefinition {}/{} is up to date",
                        r.namespace, r.name
                    ),
                },
            ),
            Err(Error::Kube(kube::Error::Api(e))) if e.code == 404 => (
                old.network_attachment_definition.clone(),
                Cond {
                    type_: conditions::READY,
                    status: false,
                    reason: "NoNetworkAttachmentDefinitionCRD",
                    message: format!(
                        "cannot write NetworkAttachmentDefinition {}/{}: the k8s.cni.cncf.io CRD is not installed (install Multus) or the namespace does not exist: {}",
                        r.namespace, r.name, e.message
                    ),
                },
            ),
            Err(e) => return Err(e),
        },
        // Bad input loses nothing: the NAD already rendered stays as it was.
        Err(e) => (
            old.network_attachment_definition.clone(),
            Cond {
                type_: conditions::READY,
                status: false,
                reason: "InvalidSpec",
                message: e.to_string(),
            },
        ),
    };
    let status = VfNetworkStatus {
        observed_generation: Some(generation),
        network_attachment_definition: nad_ref,
        conditions: stamp(std::slice::from_ref(&cond), &old.conditions, generation),
    };
    if status != old {
        let body = json!({
            "apiVersion": VfNetwork::api_version(&()),
            "kind": VfNetwork::kind(&()),
            "status": status,
        });
        Api::<VfNetwork>::namespaced(ctx.client.clone(), &ns)
            .patch_status(&name, &apply_params(), &Patch::Apply(&body))
            .await?;
        ctx.metrics.wrote("VfNetwork", "apply-status");
    }
    Ok(Action::requeue(RESYNC))
}

/// Applies the NAD if the live one differs (or is missing).
async fn ensure_nad(ctx: &Ctx, r: &RenderedNad) -> Result<(), Error> {
    let api = Api::<NetworkAttachmentDefinition>::namespaced(ctx.client.clone(), &r.namespace);
    if let Some(live) = api.get_opt(&r.name).await? {
        let same_config = live.spec.config.as_deref().is_some_and(|c| {
            serde_json::from_str::<serde_json::Value>(c).ok()
                == serde_json::from_str::<serde_json::Value>(&r.config).ok()
        });
        let has = |want: &BTreeMap<String, String>, got: &BTreeMap<String, String>| {
            want.iter().all(|(k, v)| got.get(k) == Some(v))
        };
        if same_config && has(&r.annotations, live.annotations()) && has(&r.labels, live.labels()) {
            return Ok(());
        }
    }
    let body = json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {
            "name": r.name,
            "namespace": r.namespace,
            "annotations": r.annotations,
            "labels": r.labels,
        },
        "spec": {"config": r.config},
    });
    api.patch(&r.name, &apply_params(), &Patch::Apply(&body))
        .await?;
    ctx.metrics.wrote("NetworkAttachmentDefinition", "apply");
    tracing::info!(nad = %format!("{}/{}", r.namespace, r.name), "NetworkAttachmentDefinition applied");
    Ok(())
}

async fn cleanup_network(ctx: &Ctx, net: &VfNetwork) -> Result<Action, Error> {
    let own_ns = net.namespace().ok_or(Error::Unnamed)?;
    let target = net
        .spec
        .network_namespace
        .clone()
        .unwrap_or_else(|| own_ns.clone());
    let name = net.name_any();
    let api = Api::<NetworkAttachmentDefinition>::namespaced(ctx.client.clone(), &target);
    match api.get_opt(&name).await {
        Ok(Some(nad)) => {
            // Only ours: a NAD someone else made under the same name stays.
            let l = nad.labels();
            if l.get(network::LABEL_NETWORK_NAMESPACE) == Some(&own_ns)
                && l.get(network::LABEL_NETWORK_NAME) == Some(&name)
            {
                api.delete(&name, &DeleteParams::default()).await?;
                ctx.metrics.wrote("NetworkAttachmentDefinition", "delete");
                tracing::info!(nad = %format!("{target}/{name}"), "VfNetwork deleted: its NetworkAttachmentDefinition too");
            }
        }
        Ok(None) => {}
        // No NAD CRD (Multus gone): nothing to clean up.
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    ctx.metrics.wrote("VfNetwork", "remove-finalizer");
    Ok(Action::await_change())
}
