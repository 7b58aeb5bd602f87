"""Manifests: valid against the official schemas, named safely, locked down, secrets kept out."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import kubernetes_validate
import pytest

from codexk8s.adapters.kubernetes import manifests
from codexk8s.adapters.kubernetes.manifests import EgressRule, RunNetworkSettings, RunPodSettings
from codexk8s.adapters.kubernetes.permissions import LOG_READER_ROLE_NAME
from codexk8s.domain.runtime import parse_pod_profile, workload_name
from tests.adapters.kubernetes.conftest import IMAGE, PREFIX, make_spec

# The oldest and newest 1.3x minor versions the installed kubernetes-validate knows.
K8S_VERSIONS = ("1.30", "1.34")


def all_manifests(
    *,
    settings: RunPodSettings | None = None,
    network: RunNetworkSettings | None = None,
    control_plane: manifests.ServiceAccountRef | None = None,
    installation: str = "",
    **overrides: Any,
) -> list[dict[str, Any]]:
    spec = make_spec(**overrides)
    namespace = manifests.namespace_name(PREFIX, spec, installation=installation)
    return manifests.run_manifests(
        namespace,
        spec,
        image=IMAGE,
        settings=settings or RunPodSettings(),
        network=network,
        control_plane=control_plane,
        installation=installation,
    )


# Everything a pod profile and the network settings can set, for the schema check.
FULL_PROFILE = parse_pod_profile(
    {
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "8Gi"}},
        "nodeSelector": {"pool": "agents"},
        "tolerations": [{"key": "agents", "operator": "Exists", "effect": "NoSchedule"}],
        "imagePullSecrets": ["registry-credentials"],
        "serviceAccountAnnotations": {"iam.gke.io/gcp-service-account": "agents@p.iam"},
    }
)
FULL_NETWORK = RunNetworkSettings(
    cluster_cidrs=("198.18.0.0/15", "2001:db8:42::/56"),
    internet_ports=(443, 22),
    extra=(
        EgressRule("169.254.20.10/32", 53, "UDP"),
        EgressRule("10.20.0.0/16", 8443),
        EgressRule("192.168.7.0/24"),
    ),
)


def job(**overrides: Any) -> dict[str, Any]:
    return all_manifests(**overrides)[-1]


@pytest.mark.parametrize("full", [False, True], ids=["defaults", "every-setting"])
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_passes_the_strict_official_schema(version: str, full: bool) -> None:
    built = (
        all_manifests(
            settings=RunPodSettings().with_profile(FULL_PROFILE),
            network=FULL_NETWORK,
            installation="0123456789abcdef0123456789abcdef",
        )
        if full
        else all_manifests()
    )
    owned = manifests.secret_manifest(
        built[0]["metadata"]["name"], make_spec(), owner={"name": "codexk8s-run-7", "uid": "u-1"}
    )
    kinds = []
    for manifest in [*built, owned]:
        kubernetes_validate.validate(manifest, version, strict=True)
        kinds.append(manifest["kind"])
    assert kinds == [
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "RoleBinding",
        "ResourceQuota",
        "LimitRange",
        "NetworkPolicy",
        "Secret",
        "Job",
        "Secret",
    ]


def test_strict_validation_would_catch_a_misspelled_field() -> None:
    # Guards the test above against validating nothing.
    broken = copy.deepcopy(job())
    broken["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_same_lineage_same_namespace_other_lineage_other_namespace() -> None:
    first = manifests.namespace_name(PREFIX, make_spec(1, lineage="demo/1/42/dev"))
    revise = manifests.namespace_name(PREFIX, make_spec(2, lineage="demo/1/42/dev"))
    other = manifests.namespace_name(PREFIX, make_spec(3, lineage="demo/1/43/dev"))
    assert first == revise
    assert other != first
    assert first.startswith(f"{PREFIX}-demo-")


def test_a_run_without_lineage_gets_its_own_namespace() -> None:
    assert manifests.namespace_name(PREFIX, make_spec(5, lineage="")) == f"{PREFIX}-demo-r5"


@pytest.mark.parametrize(
    ("prefix", "project"),
    [
        (PREFIX, "demo"),
        (PREFIX, "a" * 32),
        ("x" * 40, "a-very-long-project-key-of-32-ch"),
        ("p", "Weird_Key.With--Stuff"),
    ],
)
def test_namespace_names_are_dns_labels_and_keep_the_whole_lineage_hash(
    prefix: str, project: str
) -> None:
    spec = make_spec(project_key=project, lineage=f"{project}/1/2/dev")
    name = manifests.namespace_name(prefix, spec)
    assert manifests.is_dns_label(name), name
    assert name.startswith(f"{prefix}-")
    assert name.endswith(manifests.lineage_hash(spec.lineage))


def test_a_prefix_leaving_no_room_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        manifests.namespace_name("x" * 60, make_spec())


def test_labels_identify_project_run_and_lineage() -> None:
    spec = make_spec(41, labels={"team": "core", "codexk8s.io/run-id": "999"})
    namespace, *_, job_manifest = all_manifests(
        run_id=41, labels={"team": "core", "codexk8s.io/run-id": "999"}
    )
    expected = {
        "app.kubernetes.io/managed-by": "codexk8s",
        "codexk8s.io/project": "demo",
        "codexk8s.io/run-id": "41",
        "codexk8s.io/lineage": manifests.lineage_hash(spec.lineage),
    }
    assert expected.items() <= namespace["metadata"]["labels"].items()
    pod_labels = job_manifest["spec"]["template"]["metadata"]["labels"]
    # The caller's labels are kept, but cannot override the ones the watch relies on.
    assert {**expected, "team": "core"}.items() <= pod_labels.items()
    assert job_manifest["metadata"]["labels"] == pod_labels
    assert job_manifest["metadata"]["name"] == workload_name(41)


def test_the_job_never_retries_and_ends_at_the_deadline() -> None:
    spec = job(timeout_seconds=1234)["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 1234
    assert spec["ttlSecondsAfterFinished"] == RunPodSettings().job_ttl_seconds_after_finished
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    # A run that may wait for people: the Job's own timer allows for the wait (the control plane
    # stops the run at its paused deadline).
    waiting = job(timeout_seconds=1234, wait_allowance_seconds=600)["spec"]
    assert waiting["activeDeadlineSeconds"] == 1834


def test_the_pod_is_non_root_without_privileges_or_api_token() -> None:
    pod = job()["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == manifests.SERVICE_ACCOUNT_NAME
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["runAsNonRoot"] is True
    assert security["privileged"] is False


def test_image_command_and_resources_come_from_the_spec_and_settings() -> None:
    spec = make_spec(image="ghcr.io/acme/agent:2")
    settings = RunPodSettings(cpu_limit="3", memory_limit="6Gi")
    built = manifests.job_manifest("ns-x", spec, image="ghcr.io/acme/agent:2", settings=settings)
    container = built["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/acme/agent:2"
    assert container["command"] == list(spec.command)
    assert container["resources"]["limits"]["cpu"] == "3"
    assert container["resources"]["limits"]["memory"] == "6Gi"
    assert container["resources"]["requests"]["memory"] == settings.memory_request


def test_a_job_without_command_is_refused() -> None:
    with pytest.raises(ValueError, match="no command"):
        job(command=())


def test_credentials_live_only_in_the_secret() -> None:
    token = "token-of-run-7"
    built = all_manifests()
    secret = next(m for m in built if m["kind"] == "Secret")
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "CODEXK8S_RUN_TOKEN": token
    }
    others = [m for m in built if m["kind"] != "Secret"]
    assert token not in json.dumps(others)
    env = job()["spec"]["template"]["spec"]["containers"][0]["env"]
    by_name = {item["name"]: item for item in env}
    assert by_name["CODEXK8S_RUN_TOKEN"] == {
        "name": "CODEXK8S_RUN_TOKEN",
        "valueFrom": {
            "secretKeyRef": {"name": manifests.secret_name(7), "key": "CODEXK8S_RUN_TOKEN"}
        },
    }
    assert by_name["CODEXK8S_CALLBACK_URL"]["value"] == "http://cp.example/api/v1/runs"


def test_a_secret_value_also_listed_as_plain_env_is_not_leaked() -> None:
    env = job(env={"CODEXK8S_RUN_TOKEN": "oops"})["spec"]["template"]["spec"]["containers"][0]
    names = [item["name"] for item in env["env"]]
    assert names.count("CODEXK8S_RUN_TOKEN") == 1
    assert "oops" not in json.dumps(env)


def test_the_agent_role_grants_nothing() -> None:
    role = next(m for m in all_manifests() if m["kind"] == "Role")
    assert role["rules"] == []
    binding = next(m for m in all_manifests() if m["kind"] == "RoleBinding")
    assert binding["subjects"][0]["name"] == manifests.SERVICE_ACCOUNT_NAME
    service_account = next(m for m in all_manifests() if m["kind"] == "ServiceAccount")
    assert service_account["automountServiceAccountToken"] is False


def test_the_log_reader_is_bound_to_the_control_plane_and_no_one_else() -> None:
    platform = manifests.ServiceAccountRef("platform", "cp")
    bindings = [
        m
        for m in all_manifests(control_plane=platform, installation="i1")
        if m["kind"] == "RoleBinding"
    ]
    agent, logs = bindings
    assert agent["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": manifests.ROLE_NAME,
    }  # fmt: skip
    assert logs["metadata"]["name"] == LOG_READER_ROLE_NAME
    assert logs["metadata"]["namespace"] == agent["metadata"]["namespace"]
    assert logs["metadata"]["labels"] == {
        manifests.MANAGED_BY_LABEL: manifests.MANAGED_BY, manifests.INSTALLATION_LABEL: "i1",
    }  # fmt: skip
    assert logs["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": LOG_READER_ROLE_NAME,
    }
    assert logs["subjects"] == [{"kind": "ServiceAccount", "name": "cp", "namespace": "platform"}]
    assert platform.username == "system:serviceaccount:platform:cp"
    # The same object whatever the run: a log reader finding it missing applies it as it is.
    other_run = manifests.log_reader_binding_manifest(
        logs["metadata"]["namespace"], platform, installation="i1"
    )
    assert other_run == logs


def _policy(**options: Any) -> dict[str, Any]:
    return next(m for m in all_manifests(**options) if m["kind"] == "NetworkPolicy")["spec"]


def test_network_policy_denies_ingress_and_allows_only_dns_control_plane_and_public_https() -> None:
    spec = _policy()
    assert spec["podSelector"] == {}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in spec  # no ingress rule: every inbound connection is denied
    dns, control_plane, internet = spec["egress"]
    assert dns["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert control_plane["to"][0]["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "codexk8s"}
    }
    assert control_plane["to"][0]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "codexk8s",
        "app.kubernetes.io/component": "control-plane",
    }
    assert control_plane["ports"] == [{"protocol": "TCP", "port": 3000}]
    v4, v6 = (peer["ipBlock"] for peer in internet["to"])
    assert v4["cidr"] == "0.0.0.0/0" and v6["cidr"] == "::/0"
    # The metadata endpoint, private ranges, CGNAT and link-local are all outside the rule.
    assert set(v4["except"]) == {
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
    }  # fmt: skip
    assert set(v6["except"]) == {"fc00::/7", "fe80::/10"}
    assert internet["ports"] == [{"protocol": "TCP", "port": 443}]


def test_network_policy_takes_cluster_ranges_extra_destinations_and_ports() -> None:
    spec = _policy(network=FULL_NETWORK)
    internet = spec["egress"][2]
    v4, v6 = (peer["ipBlock"] for peer in internet["to"])
    assert "198.18.0.0/15" in v4["except"] and "2001:db8:42::/56" in v6["except"]
    assert internet["ports"] == [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 22}]
    node_dns, internal_git, open_range = spec["egress"][3:]
    assert node_dns == {
        "to": [{"ipBlock": {"cidr": "169.254.20.10/32"}}],
        "ports": [{"protocol": "UDP", "port": 53}],
    }
    assert internal_git == {
        "to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
        "ports": [{"protocol": "TCP", "port": 8443}],
    }
    assert open_range == {"to": [{"ipBlock": {"cidr": "192.168.7.0/24"}}]}
    # No internet ports: only DNS, the control plane and the extra rules remain.
    closed = _policy(network=RunNetworkSettings(internet_ports=()))
    assert len(closed["egress"]) == 2


def test_a_pod_profile_reaches_the_pod_its_service_account_and_the_namespace_limits() -> None:
    settings = RunPodSettings().with_profile(FULL_PROFILE)
    built = {m["kind"]: m for m in all_manifests(settings=settings)}
    pod = built["Job"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "agents"}
    assert pod["tolerations"] == [{"key": "agents", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["imagePullSecrets"] == [{"name": "registry-credentials"}]
    resources = pod["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == "1" and resources["requests"]["memory"] == "2Gi"
    assert resources["limits"]["memory"] == "8Gi"
    assert resources["limits"]["cpu"] == RunPodSettings().cpu_limit  # untouched: the default
    assert built["ServiceAccount"]["metadata"]["annotations"] == {
        "iam.gke.io/gcp-service-account": "agents@p.iam"
    }
    assert built["LimitRange"]["spec"]["limits"][0]["max"]["memory"] == "8Gi"
    assert built["ResourceQuota"]["spec"]["hard"]["limits.memory"] == str(2 * 8 * 1024**3)
    # An agent's profile goes over the installation's: maps merge, lists replace.
    agent = parse_pod_profile({"nodeSelector": {"gpu": "yes"}, "imagePullSecrets": ["other"]})
    both = RunPodSettings().with_profile(FULL_PROFILE).with_profile(agent)
    assert dict(both.node_selector) == {"pool": "agents", "gpu": "yes"}
    assert both.image_pull_secrets == ("other",)
    assert both.memory_limit == "8Gi"
    # Without a profile nothing optional appears.
    bare = job()["spec"]["template"]["spec"]
    assert not {"nodeSelector", "tolerations", "imagePullSecrets"} & set(bare)


def test_a_profile_whose_request_exceeds_its_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="cpu request 3 exceeds its limit 2"):
        RunPodSettings().with_profile(parse_pod_profile({"resources": {"requests": {"cpu": "3"}}}))


def test_every_object_carries_the_installation_and_namespaces_differ_per_installation() -> None:
    one, two = "a" * 32, "b" * 32
    built = all_manifests(installation=one)
    for manifest in built:
        assert manifest["metadata"]["labels"][manifests.INSTALLATION_LABEL] == one
    assert built[-1]["spec"]["template"]["metadata"]["labels"][manifests.INSTALLATION_LABEL] == one
    spec = make_spec()
    names = {
        manifests.namespace_name(PREFIX, spec, installation=one),
        manifests.namespace_name(PREFIX, spec, installation=two),
        manifests.namespace_name(PREFIX, spec),
    }
    assert len(names) == 3  # same lineage, three installations: three namespaces
    lone = make_spec(lineage="")
    assert manifests.namespace_name(PREFIX, lone, installation=one) != manifests.namespace_name(
        PREFIX, lone, installation=two
    )


def test_quota_covers_quota_pods_times_the_limits() -> None:
    settings = RunPodSettings(cpu_limit="1500m", memory_limit="3Gi", quota_pods=2)
    quota = manifests.resource_quota_manifest("ns", make_spec(), settings)["spec"]["hard"]
    assert quota["pods"] == "2"
    assert quota["limits.cpu"] == "3"
    assert quota["limits.memory"] == str(6 * 1024**3)
    assert quota["services"] == "0"
    limits = manifests.limit_range_manifest("ns", make_spec(), settings)["spec"]["limits"][0]
    assert limits["max"]["cpu"] == "1500m"


def test_requests_above_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="memory request"):
        RunPodSettings(memory_request="8Gi", memory_limit="4Gi")


def test_the_namespace_enforces_the_restricted_pod_security_profile() -> None:
    labels = all_manifests()[0]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_owner_reference_ties_the_secret_to_the_job() -> None:
    secret = manifests.secret_manifest("ns", make_spec(), owner={"name": "j", "uid": "u-9"})
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u-9"}
    ]
