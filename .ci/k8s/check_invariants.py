#!/usr/bin/env python3
"""Checks what schemas and generic policies cannot: that a rendered kvstore
deployment agrees with how `kvstore serve` works.

Usage: check_invariants.py RENDERED.yaml

Every rule below is a way the cluster breaks while every manifest is still
valid Kubernetes: a bootstrap count the nodes do not know about, a PDB that
allows losing the quorum, a pod that may not read the replica count it is
told to follow, a grace period shorter than the leadership
handover, a liveness probe that restarts nodes during an election, a peer
Service that hides catching-up followers, a probe or a PodMonitor on a port
the node does not serve, a plaintext ops port open to every pod, an object
of a component that lands in the wrong namespace. Prints one line per
violation and exits 1 if there is any.
"""

import sys

import yaml

# What a stop may take besides the drain: the leadership handover (the
# binary gives it 3 s) and a margin for the final flush.
HANDOVER_S = 3
FLUSH_MARGIN_S = 5


def env_of(container):
    """The container's plain env values (valueFrom entries map to None)."""
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def env_source(container, name):
    for e in container.get("env", []):
        if e["name"] == name:
            return e.get("valueFrom")
    return None


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


# Kinds that live in no namespace; every other object kvstore ships must sit
# in the StatefulSet's namespace (a component's object without one would be
# applied wherever the kubectl context points).
CLUSTER_SCOPED = {
    "Namespace",
    "StorageClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "ClusterIssuer",
    "CustomResourceDefinition",
    "PersistentVolume",
    "PriorityClass",
}


def port_of(address):
    """The port of a `host:port` listen address, or None."""
    try:
        return int(str(address).rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def container_port(container, ref):
    """The number a probe's or a PodMonitor's port (a name or a number)
    means in `container`, or None if the container has no such port."""
    for p in container.get("ports", []):
        if ref == p.get("name") or ref == p.get("containerPort"):
            return p.get("containerPort")
    return ref if isinstance(ref, int) else None


def rule_ports(rule):
    return {p.get("port") for p in rule.get("ports", [])}


def check_ops(by_kind, where, container, labels):
    """The ops port: served, probed, scraped, and not open to everyone."""
    errors = []
    env = env_of(container)
    ops = port_of(env.get("KVSTORE_OPS_LISTEN"))
    if ops is None:
        return [f"{where}: KVSTORE_OPS_LISTEN is not set to host:port; the probes need the ops port"]
    named = {p.get("name"): p.get("containerPort") for p in container.get("ports", [])}
    if named.get("ops") != ops:
        errors.append(
            f"{where}: the container port named ops is {named.get('ops')!r}, but KVSTORE_OPS_LISTEN "
            f"serves {ops}"
        )

    # Probes: readiness is /readyz; startup and liveness are /healthz, never
    # /readyz or the gRPC readiness name (they would restart nodes during an
    # election). All on the ops port: the kubelet presents no client
    # certificate, so a probe of the client port fails once it requires one.
    ready = container.get("readinessProbe", {})
    get = ready.get("httpGet")
    if not get or get.get("path") != "/readyz" or container_port(container, get.get("port")) != ops:
        errors.append(f"{where}: the readiness probe must be httpGet /readyz on the ops port ({ops})")
    for probe in ("livenessProbe", "startupProbe"):
        p = container.get(probe)
        if p is None:
            errors.append(f"{where}: no {probe}")
            continue
        if "grpc" in p and p["grpc"].get("service", "") in ("", "kvstore.v1.KV"):
            errors.append(
                f"{where}: the {probe} asks the readiness health service, which is NOT_SERVING "
                "without a leader; it would restart nodes during an election"
            )
            continue
        get = p.get("httpGet")
        if get and get.get("path") == "/readyz":
            errors.append(
                f"{where}: the {probe} asks /readyz, which is 503 without a leader; it would "
                "restart nodes during an election"
            )
        elif not get or get.get("path") != "/healthz" or container_port(container, get.get("port")) != ops:
            errors.append(f"{where}: the {probe} must be httpGet /healthz on the ops port ({ops})")

    # The ops port is plaintext and unauthenticated: every NetworkPolicy
    # rule that admits it must name its sources.
    for pol in by_kind.get("NetworkPolicy", []):
        if not matches(pol["spec"].get("podSelector", {}).get("matchLabels"), labels):
            continue
        for rule in pol["spec"].get("ingress", []):
            ports = rule_ports(rule)
            if (not rule.get("ports") or ops in ports or "ops" in ports) and not rule.get("from"):
                errors.append(
                    f"NetworkPolicy {pol['metadata']['name']}: a rule admits the plaintext ops port "
                    f"{ops} from any source; name its sources (the monitoring namespace)"
                )

    # A PodMonitor of these pods scrapes /metrics on the ops port.
    for pm in by_kind.get("PodMonitor", []):
        name = pm["metadata"]["name"]
        if not matches(pm["spec"].get("selector", {}).get("matchLabels"), labels):
            errors.append(f"PodMonitor {name}: its selector does not select the kvstore pods")
        for ep in pm["spec"].get("podMetricsEndpoints", []):
            if named.get(ep.get("port")) != ops:
                errors.append(
                    f"PodMonitor {name}: scrapes port {ep.get('port')!r}, which is not the container port "
                    f"named ops ({ops}); it would scrape nothing"
                )
            if ep.get("path", "/metrics") != "/metrics":
                errors.append(f"PodMonitor {name}: scrapes {ep.get('path')!r}, not /metrics")

    # Alerts an operator can act on: a severity to route by, a summary and a
    # description that says what to do.
    for pr in by_kind.get("PrometheusRule", []):
        for group in pr["spec"].get("groups", []):
            for rule in group.get("rules", []):
                if "alert" not in rule:
                    continue
                missing = [
                    k
                    for k, have in (
                        ("labels.severity", (rule.get("labels") or {}).get("severity")),
                        ("annotations.summary", (rule.get("annotations") or {}).get("summary")),
                        ("annotations.description", (rule.get("annotations") or {}).get("description")),
                    )
                    if not have
                ]
                if missing:
                    errors.append(
                        f"PrometheusRule {pr['metadata']['name']}: alert {rule['alert']} has no "
                        + ", ".join(missing)
                    )
    return errors


def mebibytes(quantity):
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024 * 1024}
    q = str(quantity)
    for suffix, factor in units.items():
        if q.endswith(suffix):
            return float(q[: -len(suffix)]) * factor
    return float(q) / (1024 * 1024)  # plain bytes


def check_api_access(by_kind, sts, pod):
    """KVSTORE_REPLICAS_SOURCE=kubernetes: a token is mounted, and a Role
    bound to the pod's service account allows `get` on this StatefulSet."""
    errors = []
    name = sts["metadata"]["name"]
    namespace = sts["metadata"].get("namespace")
    where = f"StatefulSet {name}"
    account = pod.get("serviceAccountName", "default")
    sa = next((a for a in by_kind.get("ServiceAccount", []) if a["metadata"]["name"] == account), None)
    mounted = pod.get("automountServiceAccountToken")
    if mounted is None and sa is not None:
        mounted = sa.get("automountServiceAccountToken")
    if mounted is False:
        errors.append(
            f"{where}: KVSTORE_REPLICAS_SOURCE is kubernetes but automountServiceAccountToken is false; "
            "the pod has no token to read spec.replicas with"
        )

    def allows(rule):
        return (
            "apps" in rule.get("apiGroups", [])
            and ("statefulsets" in rule.get("resources", []) or "*" in rule.get("resources", []))
            and ("get" in rule.get("verbs", []) or "*" in rule.get("verbs", []))
            and (not rule.get("resourceNames") or name in rule["resourceNames"])
        )

    roles = {
        r["metadata"]["name"]
        for r in by_kind.get("Role", [])
        if r["metadata"].get("namespace") == namespace and any(allows(x) for x in r.get("rules", []))
    }
    bound = any(
        b["metadata"].get("namespace") == namespace
        and b["roleRef"].get("kind") == "Role"
        and b["roleRef"].get("name") in roles
        and any(
            s.get("kind") == "ServiceAccount" and s.get("name") == account and s.get("namespace", namespace) == namespace
            for s in b.get("subjects", [])
        )
        for b in by_kind.get("RoleBinding", [])
    )
    if not bound:
        errors.append(
            f"{where}: KVSTORE_REPLICAS_SOURCE is kubernetes but no Role bound to service account "
            f"{account!r} allows get on statefulsets named {name!r} in namespace {namespace!r}"
        )
    return errors


def check(docs):
    errors = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    sets = [
        s
        for s in by_kind.get("StatefulSet", [])
        if any("KVSTORE_REPLICAS" in env_of(c) for c in s["spec"]["template"]["spec"]["containers"])
    ]
    if not sets:
        return ["no StatefulSet runs kvstore (no container sets KVSTORE_REPLICAS)"]
    for sts in sets:
        name = sts["metadata"]["name"]
        spec = sts["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"].get("labels", {})
        container = next(c for c in pod["containers"] if "KVSTORE_REPLICAS" in env_of(c))
        env = env_of(container)
        where = f"StatefulSet {name}"
        namespace = sts["metadata"].get("namespace")

        replicas = spec.get("replicas", 1)
        try:
            members = int(env["KVSTORE_REPLICAS"])
        except (TypeError, ValueError):
            errors.append(f"{where}: KVSTORE_REPLICAS must be a literal number, got {env['KVSTORE_REPLICAS']!r}")
            members = None
        # KVSTORE_REPLICAS is the bootstrap count: what a new cluster starts
        # with. After that membership follows spec.replicas, but what is
        # applied is a cluster's first creation (or a re-apply that would
        # set spec.replicas back), so the two must agree here.
        if members is not None and members != replicas:
            errors.append(
                f"{where}: spec.replicas is {replicas} but KVSTORE_REPLICAS is {members}; "
                "the node's membership must equal the StatefulSet's replica count"
            )
        if spec.get("ordinals", {}).get("start", 0) != 0:
            errors.append(f"{where}: spec.ordinals.start must be 0 (members are ordinals 0..replicas-1)")
        if spec.get("podManagementPolicy") != "Parallel":
            errors.append(
                f"{where}: podManagementPolicy must be Parallel; OrderedReady deadlocks a new "
                "cluster (pod 0 is not Ready until a quorum exists)"
            )

        # The peer Service.
        svc_name = spec.get("serviceName")
        if env.get("KVSTORE_SERVICE", "kvstore-headless") != svc_name:
            errors.append(f"{where}: KVSTORE_SERVICE {env.get('KVSTORE_SERVICE')!r} is not serviceName {svc_name!r}")
        svc = next((s for s in by_kind.get("Service", []) if s["metadata"]["name"] == svc_name), None)
        if svc is None:
            errors.append(f"{where}: its serviceName {svc_name!r} is not among the rendered Services")
        else:
            sspec = svc["spec"]
            if sspec.get("clusterIP") != "None":
                errors.append(f"Service {svc_name}: must be headless (clusterIP: None) for per-pod DNS names")
            if sspec.get("publishNotReadyAddresses") is not True:
                errors.append(
                    f"Service {svc_name}: publishNotReadyAddresses must be true; a catching-up "
                    "follower is not Ready but its peers must resolve it"
                )
            if not matches(sspec.get("selector"), labels):
                errors.append(f"Service {svc_name}: its selector does not select the pods of {name}")
            srv_port = env.get("KVSTORE_SRV_PORT_NAME", "peer")
            if srv_port not in {p.get("name") for p in sspec.get("ports", [])}:
                errors.append(f"Service {svc_name}: has no port named {srv_port!r} (its SRV records list the peers)")
        ns_src = env_source(container, "KVSTORE_NAMESPACE")
        if not (ns_src and ns_src.get("fieldRef", {}).get("fieldPath") == "metadata.namespace"):
            errors.append(f"{where}: KVSTORE_NAMESPACE must come from the downward API (metadata.namespace)")
        if pod.get("enableServiceLinks", True):
            errors.append(
                f"{where}: enableServiceLinks must be false; injected KVSTORE_* variables of a "
                "Service named kvstore would be read as flags"
            )

        # Disruptions: one member at a time, at any size. The member count
        # follows `kubectl scale`, so a fixed minAvailable would be a quorum
        # at one size only (2 of 3 lets 3 of 5 go); maxUnavailable: 1 keeps
        # a quorum at every size of three or more.
        pdbs = [
            p
            for p in by_kind.get("PodDisruptionBudget", [])
            if matches(p["spec"].get("selector", {}).get("matchLabels"), labels)
        ]
        if not pdbs:
            errors.append(f"{where}: no PodDisruptionBudget selects its pods")
        for p in pdbs:
            pname = p["metadata"]["name"]
            if "minAvailable" in p["spec"]:
                errors.append(
                    f"PodDisruptionBudget {pname}: minAvailable {p['spec']['minAvailable']} is right "
                    "for one member count only; use maxUnavailable: 1, which holds at any size"
                )
            if p["spec"].get("maxUnavailable") != 1:
                errors.append(
                    f"PodDisruptionBudget {pname}: maxUnavailable is {p['spec'].get('maxUnavailable')!r}, "
                    "must be 1 (one member down at a time keeps a quorum at any size)"
                )

        # The replica count from the API: the pod must be able to read it.
        if env.get("KVSTORE_REPLICAS_SOURCE") == "kubernetes":
            errors += check_api_access(by_kind, sts, pod)

        # Stopping: the grace period covers preStop, handover, drain, flush.
        grace = int(env.get("KVSTORE_SHUTDOWN_GRACE_S") or 20)
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        need = pre_stop + HANDOVER_S + grace + FLUSH_MARGIN_S
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        if tgps < need:
            errors.append(
                f"{where}: terminationGracePeriodSeconds {tgps} is shorter than preStop {pre_stop} s + "
                f"handover {HANDOVER_S} s + drain {grace} s + {FLUSH_MARGIN_S} s"
            )

        # The ops port: probes, the PodMonitor, the NetworkPolicy, alerts.
        errors += check_ops(by_kind, where, container, labels)

        # Everything shipped sits in the StatefulSet's namespace.
        for d in docs:
            if d["kind"] in CLUSTER_SCOPED:
                continue
            ns = d["metadata"].get("namespace")
            if ns != namespace:
                errors.append(
                    f"{d['kind']} {d['metadata'].get('name')}: namespace {ns!r}, not the StatefulSet's "
                    f"{namespace!r}; without one it lands in the kubectl context's namespace"
                )

        # The data dir is a per-pod volume.
        data_dir = env.get("KVSTORE_DATA_DIR")
        mounts = {m["mountPath"].rstrip("/"): m["name"] for m in container.get("volumeMounts", [])}
        claim = mounts.get((data_dir or "").rstrip("/"))
        templates = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
        if claim is None:
            errors.append(f"{where}: nothing is mounted at KVSTORE_DATA_DIR {data_dir!r}")
        elif claim not in templates:
            errors.append(f"{where}: the data dir volume {claim!r} is not a volumeClaimTemplate (one PVC per pod)")
        if pod.get("securityContext", {}).get("fsGroup") is None:
            errors.append(f"{where}: no fsGroup; a fresh volume would not be writable by the non-root user")

        # Memory: the limit leaves room around sled's cache.
        cache = int(env.get("KVSTORE_CACHE_MB") or 128)
        limit = container.get("resources", {}).get("limits", {}).get("memory")
        if limit is None:
            errors.append(f"{where}: no memory limit")
        elif mebibytes(limit) < 3 * cache:
            errors.append(f"{where}: memory limit {limit} is under three times KVSTORE_CACHE_MB ({cache} MiB)")
    return errors


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1], encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    errors = check(docs)
    for e in errors:
        print(f"INVARIANT FAILED: {e}")
    if not errors:
        print(f"invariants hold: {sys.argv[1]}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
