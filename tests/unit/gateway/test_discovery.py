"""Discovery documents as an aggregated API may pass them on: whatever JSON arrives, the
parsers return what it names or raise `DiscoveryMalformed`, nothing else. A group whose
document was malformed ended the discovery refresh task or dropped the group's kinds
without a word (an outside check); the real-API-server side is
tests/integration/kubernetes/test_kube_discovery.py."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signalgate.gateway.discovery import (
    DiscoveryMalformed,
    Resource,
    preferred_versions,
    resources_of,
)
from signalgate.kube.client import KubeError

GADGET = {"name": "gadgets", "singularName": "gadget", "namespaced": True, "kind": "Gadget"}


def test_a_resource_list_names_its_kinds_without_subresources() -> None:
    document = {
        "kind": "APIResourceList",
        "groupVersion": "example.com/v1",
        "resources": [
            GADGET,
            {"name": "gadgets/status", "namespaced": True, "kind": "Gadget"},
            # a subresource described sloppily (an aggregated API's) costs the group nothing
            {"name": "gadgets/proxy", "kind": ""},
            {"name": "dials", "singularName": "", "namespaced": False, "kind": "Dial"},
        ],
    }
    assert resources_of("example.com/v1", document) == [
        (Resource("Gadget", "example.com/v1", "gadgets", True), "gadget"),
        (Resource("Dial", "example.com/v1", "dials", False), ""),
    ]
    # Go's encoding of an empty list: a group serving nothing, not a malformed one
    assert resources_of("example.com/v1", {"resources": None}) == []


@pytest.mark.parametrize(
    "document",
    [
        None,
        [],
        "resources",
        {},
        {"kind": "Status", "status": "Failure"},
        {"resources": "gadgets"},
        {"resources": {"gadgets": GADGET}},
        {"resources": 3},
        {"resources": [None]},
        {"resources": ["gadgets"]},
        {"resources": [[GADGET]]},
        {"resources": [GADGET, 7]},
        {"resources": [{**GADGET, "name": None}]},
        {"resources": [{k: v for k, v in GADGET.items() if k != "name"}]},
        {"resources": [{k: v for k, v in GADGET.items() if k != "kind"}]},
        {"resources": [{**GADGET, "kind": ""}]},
        {"resources": [{**GADGET, "kind": {"name": "Gadget"}}]},
        {"resources": [{**GADGET, "kind": "Gad get"}]},
        {"resources": [{**GADGET, "namespaced": "false"}]},
        {"resources": [{**GADGET, "namespaced": 1}]},
        {"resources": [{**GADGET, "singularName": ["gadget"]}]},
    ],
)
def test_what_is_no_resource_list_is_malformed(document: Any) -> None:
    with pytest.raises(DiscoveryMalformed) as raised:
        resources_of("example.com/v1", document)
    assert "/apis/example.com/v1" in str(raised.value)
    assert isinstance(raised.value, KubeError)  # what the discovery refresh counts and logs


def test_fields_kubernetes_marks_optional_are_read_as_client_go_reads_them() -> None:
    """An entry with only its name and kind (no `namespaced`, `singularName`, `verbs`) is a
    cluster-scoped kind, as Go's zero value makes it for client-go; before, such an entry
    in the core group's `/api/v1` stopped the Gateway at start."""
    document = {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {"name": "widgets", "kind": "Widget"},
            {"name": "pods", "kind": "Pod", "namespaced": None, "singularName": None},
        ],
    }
    assert resources_of("v1", document) == [
        (Resource("Widget", "v1", "widgets", False), ""),
        (Resource("Pod", "v1", "pods", False), ""),
    ]


def test_a_group_without_a_preferred_version_prefers_its_first() -> None:
    document = {
        "groups": [
            {
                "name": "example.com",
                "versions": [
                    {"groupVersion": "example.com/v2", "version": "v2"},
                    {"groupVersion": "example.com/v1", "version": "v1"},
                ],
            },
            {
                "name": "apps",
                "versions": [{"groupVersion": "apps/v1"}],
                "preferredVersion": {"groupVersion": "apps/v1"},
            },
        ]
    }
    assert preferred_versions(document).versions == ["example.com/v2", "apps/v1"]


@pytest.mark.parametrize("document", [None, {"groups": "apps"}, {"groups": {"apps": {}}}, {}])
def test_what_is_no_group_list_is_malformed(document: Any) -> None:
    with pytest.raises(DiscoveryMalformed):
        preferred_versions(document)


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ({"name": "apps", "versions": []}, "apps"),
        ({"name": "apps", "versions": ["apps/v1"]}, "apps"),
        (None, ""),
        ({"name": "apps"}, "apps"),
        ({"name": "apps", "preferredVersion": "apps/v1"}, "apps"),
        ({"preferredVersion": {"groupVersion": "../../api/v1"}}, ""),
        ({"name": "../x", "versions": []}, ""),  # a name that is no group's is not repeated
    ],
)
def test_an_entry_naming_no_version_is_that_groups_alone(entry: Any, named: str) -> None:
    """One such entry made the whole group list malformed; now the others are read."""
    ok = {"name": "batch", "preferredVersion": {"groupVersion": "batch/v1"}}
    groups = preferred_versions({"groups": [ok, entry, ok]})
    assert groups.versions == ["batch/v1", "batch/v1"]
    ((name, why),) = groups.unreadable
    assert name == named and "groups[1]" in why


def test_a_group_list_names_each_groups_preferred_version() -> None:
    document = {
        "groups": [
            {"name": "apps", "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}},
            {"name": "example.com", "preferredVersion": {"groupVersion": "example.com/v1beta1"}},
        ]
    }
    assert preferred_versions(document).versions == ["apps/v1", "example.com/v1beta1"]
    assert preferred_versions({"groups": None}).versions == []


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "resources",
                    "groups",
                    "name",
                    "kind",
                    "namespaced",
                    "singularName",
                    "preferredVersion",
                    "groupVersion",
                    "x",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(JSON)
def test_any_json_is_parsed_or_malformed_never_an_other_error(document: Any) -> None:
    for parse in (lambda d: resources_of("example.com/v1", d), preferred_versions):
        with contextlib.suppress(DiscoveryMalformed):
            parse(document)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries({}, optional=dict.fromkeys(GADGET, JSON)), max_size=4))
def test_entries_near_a_real_one_are_parsed_or_malformed(entries: list[dict[str, Any]]) -> None:
    try:
        parsed = resources_of("example.com/v1", {"resources": entries})
    except DiscoveryMalformed:
        return
    for resource, singular in parsed:
        assert isinstance(resource.kind, str) and resource.kind
        assert isinstance(resource.namespaced, bool)
        assert isinstance(singular, str)
