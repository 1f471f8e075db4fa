#!/usr/bin/env python3
"""Checks the checker: every invariant of check_invariants.py, broken on
purpose in a copy of a rendered manifest that passes, must be reported.

Usage: test_invariants.py RENDERED.yaml

RENDERED must include the optional monitoring component (validate.sh passes
the eks-monitoring fixture), so that its PodMonitor and alerts are checked
too.

Each case below is one broken fixture: a change that breaks exactly one
invariant, and the words its report must hold. A case the checker lets
through means the invariant is not checked, and the run fails.
"""

import copy
import sys

import yaml

import check_invariants


def sts(docs):
    return next(d for d in docs if d["kind"] == "StatefulSet")


def container(docs):
    return next(
        c
        for c in sts(docs)["spec"]["template"]["spec"]["containers"]
        if any(e["name"] == "KVSTORE_REPLICAS" for e in c.get("env", []))
    )


def set_env(docs, name, value):
    env = container(docs)["env"]
    env[:] = [e for e in env if e["name"] != name]
    if value is not None:
        env.append({"name": name, "value": value})


def service(docs):
    name = sts(docs)["spec"]["serviceName"]
    return next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == name)


def drop_kind(docs, kind):
    docs[:] = [d for d in docs if d["kind"] != kind]


def kind(docs, k):
    return next(d for d in docs if d["kind"] == k)


def pdb(docs):
    return kind(docs, "PodDisruptionBudget")


def probe(docs, which):
    return container(docs)[which]


def ops_rule(docs):
    """The NetworkPolicy ingress rule that admits the ops port."""
    rules = kind(docs, "NetworkPolicy")["spec"]["ingress"]
    return next(r for r in rules if any(p.get("port") == 7381 for p in r.get("ports", [])))


def first_alert(docs):
    return kind(docs, "PrometheusRule")["spec"]["groups"][0]["rules"][0]


CASES = [
    ("no kvstore StatefulSet", lambda d: set_env(d, "KVSTORE_REPLICAS", None), "no StatefulSet runs kvstore"),
    ("replicas not a number", lambda d: set_env(d, "KVSTORE_REPLICAS", "three"), "must be a literal number"),
    ("membership differs from replicas", lambda d: set_env(d, "KVSTORE_REPLICAS", "5"), "the node's membership must equal"),
    ("ordinals not from 0", lambda d: sts(d)["spec"].update(ordinals={"start": 1}), "ordinals.start must be 0"),
    ("OrderedReady", lambda d: sts(d)["spec"].update(podManagementPolicy="OrderedReady"), "must be Parallel"),
    ("service name mismatch", lambda d: set_env(d, "KVSTORE_SERVICE", "elsewhere"), "is not serviceName"),
    ("peer Service missing", lambda d: sts(d)["spec"].update(serviceName="missing"), "is not among the rendered Services"),
    ("Service not headless", lambda d: service(d)["spec"].update(clusterIP="10.0.0.1"), "must be headless"),
    (
        "not-ready addresses hidden",
        lambda d: service(d)["spec"].update(publishNotReadyAddresses=False),
        "publishNotReadyAddresses must be true",
    ),
    ("selector misses the pods", lambda d: service(d)["spec"].update(selector={"app": "other"}), "does not select the pods"),
    ("no SRV port", lambda d: set_env(d, "KVSTORE_SRV_PORT_NAME", "nope"), "has no port named"),
    ("namespace not from the downward API", lambda d: set_env(d, "KVSTORE_NAMESPACE", "default"), "downward API"),
    (
        "service links on",
        lambda d: sts(d)["spec"]["template"]["spec"].update(enableServiceLinks=True),
        "enableServiceLinks must be false",
    ),
    ("no PDB", lambda d: drop_kind(d, "PodDisruptionBudget"), "no PodDisruptionBudget"),
    (
        "PDB by minAvailable",
        lambda d: pdb(d)["spec"].update(minAvailable=2),
        "is right for one member count only",
    ),
    ("PDB lets two go", lambda d: pdb(d)["spec"].update(maxUnavailable=2), "must be 1"),
    (
        "no token for the API",
        lambda d: sts(d)["spec"]["template"]["spec"].update(automountServiceAccountToken=False),
        "automountServiceAccountToken is false",
    ),
    (
        "Role for another StatefulSet",
        lambda d: kind(d, "Role")["rules"][0].update(resourceNames=["other"]),
        "allows get on statefulsets named",
    ),
    (
        "Role without get",
        lambda d: kind(d, "Role")["rules"][0].update(verbs=["list"]),
        "allows get on statefulsets named",
    ),
    (
        "Role bound to another account",
        lambda d: kind(d, "RoleBinding")["subjects"][0].update(name="default"),
        "allows get on statefulsets named",
    ),
    ("no RoleBinding", lambda d: drop_kind(d, "RoleBinding"), "allows get on statefulsets named"),
    (
        "grace period too short",
        lambda d: sts(d)["spec"]["template"]["spec"].update(terminationGracePeriodSeconds=5),
        "terminationGracePeriodSeconds",
    ),
    ("readiness a TCP check", lambda d: container(d).update(readinessProbe={"tcpSocket": {"port": 7379}}), "readiness probe must be"),
    (
        "readiness on the client port (gRPC, no client certificate)",
        lambda d: container(d).update(readinessProbe={"grpc": {"port": 7379}}),
        "readiness probe must be httpGet /readyz on the ops port",
    ),
    (
        "readiness on /healthz",
        lambda d: probe(d, "readinessProbe")["httpGet"].update(path="/healthz"),
        "readiness probe must be httpGet /readyz",
    ),
    ("no liveness probe", lambda d: container(d).pop("livenessProbe"), "no livenessProbe"),
    ("no startup probe", lambda d: container(d).pop("startupProbe"), "no startupProbe"),
    (
        "liveness on the readiness name",
        lambda d: container(d).update(livenessProbe={"grpc": {"port": 7379, "service": ""}}),
        "the livenessProbe asks the readiness health service",
    ),
    (
        "liveness on /readyz",
        lambda d: probe(d, "livenessProbe")["httpGet"].update(path="/readyz"),
        "the livenessProbe asks /readyz",
    ),
    (
        "startup probe on the client port",
        lambda d: probe(d, "startupProbe")["httpGet"].update(port="grpc"),
        "the startupProbe must be httpGet /healthz on the ops port",
    ),
    ("no ops port", lambda d: set_env(d, "KVSTORE_OPS_LISTEN", None), "KVSTORE_OPS_LISTEN is not set"),
    (
        "ops port elsewhere than the container port",
        lambda d: set_env(d, "KVSTORE_OPS_LISTEN", "0.0.0.0:9000"),
        "but KVSTORE_OPS_LISTEN serves 9000",
    ),
    (
        "ops port open to every source",
        lambda d: ops_rule(d).pop("from"),
        "admits the plaintext ops port",
    ),
    (
        "a rule that admits every port from anywhere",
        lambda d: kind(d, "NetworkPolicy")["spec"]["ingress"].append({}),
        "admits the plaintext ops port",
    ),
    (
        "PodMonitor on another port",
        lambda d: kind(d, "PodMonitor")["spec"]["podMetricsEndpoints"][0].update(port="grpc"),
        "it would scrape nothing",
    ),
    (
        "PodMonitor selecting other pods",
        lambda d: kind(d, "PodMonitor")["spec"]["selector"].update(matchLabels={"app": "other"}),
        "does not select the kvstore pods",
    ),
    (
        "PodMonitor on another path",
        lambda d: kind(d, "PodMonitor")["spec"]["podMetricsEndpoints"][0].update(path="/healthz"),
        "not /metrics",
    ),
    ("alert without a severity", lambda d: first_alert(d)["labels"].pop("severity"), "has no labels.severity"),
    (
        "alert without a description",
        lambda d: first_alert(d)["annotations"].pop("description"),
        "has no annotations.description",
    ),
    (
        "component object without a namespace",
        lambda d: kind(d, "PodMonitor")["metadata"].pop("namespace"),
        "lands in the kubectl context's namespace",
    ),
    (
        "nothing at the data dir",
        lambda d: set_env(d, "KVSTORE_DATA_DIR", "/elsewhere"),
        "nothing is mounted at KVSTORE_DATA_DIR",
    ),
    (
        "data dir not a claim template",
        lambda d: sts(d)["spec"].update(volumeClaimTemplates=[]),
        "is not a volumeClaimTemplate",
    ),
    (
        "no fsGroup",
        lambda d: sts(d)["spec"]["template"]["spec"].setdefault("securityContext", {}).pop("fsGroup", None),
        "no fsGroup",
    ),
    ("no memory limit", lambda d: container(d)["resources"]["limits"].pop("memory"), "no memory limit"),
    (
        "memory under three caches",
        lambda d: set_env(d, "KVSTORE_CACHE_MB", "4096"),
        "under three times KVSTORE_CACHE_MB",
    ),
]


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        base = [d for d in yaml.safe_load_all(f) if d]
    assert not check_invariants.check(base), "the base manifest must pass"
    failures = []
    for name, breaks, says in CASES:
        docs = copy.deepcopy(base)
        breaks(docs)
        errors = check_invariants.check(docs)
        if not any(says in e for e in errors):
            failures.append(f"{name}: expected a report with {says!r}, got {errors}")
    for f in failures:
        print(f"NOT CAUGHT: {f}")
    print(f"invariant checker: {len(CASES) - len(failures)} of {len(CASES)} broken fixtures caught")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
