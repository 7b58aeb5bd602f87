"""Pod profiles (CODEXK8S_RUN_POD, an agent's --pod): validated, with the bad field named."""

from __future__ import annotations

from typing import Any

import pytest

from codexk8s.domain.runtime import PodProfile, PodProfileError, parse_pod_profile

FULL = {
    "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": "4Gi", "cpu": "2"}},
    "nodeSelector": {"kubernetes.io/arch": "amd64"},
    "tolerations": [{"key": "agents", "operator": "Equal", "value": "yes", "effect": "NoExecute",
                     "tolerationSeconds": 60}],
    "imagePullSecrets": ["ghcr-pull"],
    "serviceAccountAnnotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/agents"},
}  # fmt: skip


def test_a_full_profile_round_trips() -> None:
    profile = parse_pod_profile(FULL)
    assert profile.to_json() == FULL
    assert parse_pod_profile(None) == PodProfile()
    assert PodProfile().to_json() == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "must be a JSON object"),
        ({"nodeSelctor": {}}, "unknown field(s) nodeSelctor"),
        ({"resources": {"limit": {}}}, "resources takes only requests and limits"),
        ({"resources": {"limits": {"gpu": "1"}}}, "resources.limits.gpu: only cpu"),
        ({"resources": {"requests": {"memory": "4 GB"}}}, "is not a quantity"),
        ({"resources": {"requests": {"cpu": 2}}}, "is not a quantity"),
        ({"tolerations": [{"key": "a", "operater": "Exists"}]}, "tolerations must be"),
        ({"imagePullSecrets": ["Not_A_Name"]}, "imagePullSecrets must be a list of Secret"),
        ({"nodeSelector": {"pool": 3}}, "nodeSelector: 'pool' must be"),
        ({"serviceAccountAnnotations": {"bad key!": "x"}}, "serviceAccountAnnotations"),
    ],
)
def test_malformed_profiles_name_the_field(raw: Any, message: str) -> None:
    with pytest.raises(PodProfileError) as raised:
        parse_pod_profile(raw)
    assert message in str(raised.value)
