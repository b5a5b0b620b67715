"""Reading the API server's discovery documents: the group list (`/apis`) and each group
version's resource list (`/api/v1`, `/apis/<group>/<version>`).

Kept apart from the cluster view because what arrives here is not always the API server's
own answer: an aggregated API (metrics-server, a custom metrics adapter, any APIService)
answers its group's discovery itself, through the API server, and may answer anything. So
these functions take any JSON and either return what it names or raise `DiscoveryMalformed`
(a `KubeError`), never anything else: a group version whose document was not a mapping
raised `AttributeError` out of the discovery refresh, and a document missing an entry's
`kind` or `resources` was read as a group with no kinds, its kinds dropped without a word
(an outside check). The caller leaves such a group out and keeps its last kinds.

Strict only about what a kind cannot be used without: an entry's `name` (its path) and
`kind` (what alerts name), and the types of the fields present. A field the API marks
optional or Go reads as its zero value when absent is read as client-go reads it:
`namespaced` missing or null is false (cluster-scoped), `singularName` missing is "", a
group without `preferredVersion` prefers the first of its `versions` (listed most preferred
first); `verbs`, `shortNames`, `categories` and the rest are never read. A real API server
always writes `namespaced`; an aggregated API or a stripped-down server may not, and a core
`/api/v1` entry without it stopped the Gateway at start (the core group must answer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from signalgate.kube.client import KubeError
from signalgate.kube.names import is_dns1123_subdomain, is_kind

# `v1`, `apps/v1`, `example.com/v1beta1`
API_VERSION = re.compile(
    r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?v[0-9]+[a-z0-9]*"
)


class DiscoveryMalformed(KubeError):
    """A discovery document that is none: not a JSON object, its `resources` or `groups` no
    list, an entry no object, or an entry without a name or kind or with a field of the wrong
    type. The API server answered (200); what it passed on cannot be read."""

    def __init__(self, where: str, what: str) -> None:
        super().__init__(200, "MalformedDiscovery", f"{where}: {what}")


@dataclass(frozen=True)
class Resource:
    """How to reach one kind through the API: its path prefix and plural."""

    kind: str
    api_version: str
    plural: str
    namespaced: bool

    def path(self, namespace: str, name: str) -> str:
        """The object's URL path, namespace and name each one escaped segment (checked as
        Kubernetes names where they arrive; escaped here too, so that no value can reach
        another path)."""
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        name = quote(name, safe="")
        if self.namespaced:
            return f"{prefix}/namespaces/{quote(namespace, safe='')}/{self.plural}/{name}"
        return f"{prefix}/{self.plural}/{name}"


def discovery_path(group_version: str) -> str:
    """Where a group version's resource list is served."""
    return "/api/v1" if group_version == "v1" else f"/apis/{group_version}"


@dataclass(frozen=True)
class GroupList:
    """What an `APIGroupList` (`/apis`) names: the preferred group version of each group
    that names one, and the groups that name none, as (the group's name, or "" when it has
    none, and why)."""

    versions: list[str]
    unreadable: list[tuple[str, str]]


def preferred_versions(document: Any) -> GroupList:
    """The preferred group version of each group in an `APIGroupList` (`/apis`). A document
    that is no group list is `DiscoveryMalformed`; one entry that names no version (no
    object, no `preferredVersion` nor `versions`, a version that is no group version) is
    that group's alone: left out and named in `unreadable`, the others read, as client-go
    fetches only the versions a group lists. One such entry made the whole discovery fail
    (at start, the Gateway did not start)."""
    if not isinstance(document, dict) or "groups" not in document:
        raise DiscoveryMalformed("/apis", "no APIGroupList (no 'groups')")
    groups = document["groups"]
    if groups is None:  # Go writes an empty list as null
        return GroupList([], [])
    if not isinstance(groups, list):
        raise DiscoveryMalformed("/apis", f"'groups' is {type(groups).__name__}, not a list")
    versions: list[str] = []
    unreadable: list[tuple[str, str]] = []
    for index, group in enumerate(groups):
        version = _preferred(group)
        if not isinstance(version, str) or not API_VERSION.fullmatch(version):
            name = group.get("name") if isinstance(group, dict) else None
            name = name if isinstance(name, str) and is_dns1123_subdomain(name) else ""
            unreadable.append(
                (name, f"/apis: groups[{index}] names no preferredVersion.groupVersion")
            )
            continue
        versions.append(version)
    return GroupList(versions, unreadable)


def _preferred(group: Any) -> Any:
    """A group's preferred `groupVersion`: its `preferredVersion` (optional in the API),
    else the first of its `versions`, as the API server lists the preferred one first."""
    if not isinstance(group, dict):
        return None
    preferred = group.get("preferredVersion")
    if preferred is None:
        listed = group.get("versions")
        preferred = listed[0] if isinstance(listed, list) and listed else None
    return preferred.get("groupVersion") if isinstance(preferred, dict) else None


def resources_of(group_version: str, document: Any) -> list[tuple[Resource, str]]:
    """The kinds an `APIResourceList` serves, as (resource, singular name) in its order;
    subresources (`pods/log`) left out. `resources: null` is an empty list (Go's encoding of
    one), `namespaced` missing or null false, as client-go reads them; a missing
    `resources`, or any entry that is not an object with a string `name` and a kind, or
    whose `namespaced` or `singularName` has another type, makes the whole document
    malformed, since what it would leave of the group is not what the group serves."""
    where = discovery_path(group_version)
    if not isinstance(document, dict) or "resources" not in document:
        raise DiscoveryMalformed(where, "no APIResourceList (no 'resources')")
    entries = document["resources"]
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise DiscoveryMalformed(where, f"'resources' is {type(entries).__name__}, not a list")
    out = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DiscoveryMalformed(where, f"resources[{index}] is no object")
        name, kind = entry.get("name"), entry.get("kind")
        namespaced, singular = entry.get("namespaced"), entry.get("singularName")
        if not isinstance(name, str) or not name:
            raise DiscoveryMalformed(where, f"resources[{index}] has no name")
        if "/" in name:
            continue  # a subresource (`pods/log`): never used here, so never held against the group
        if not isinstance(kind, str) or not is_kind(kind):
            raise DiscoveryMalformed(where, f"resources[{index}] ({name}) names no kind")
        if namespaced is None:
            namespaced = False  # Go's zero value: what client-go and kubectl read it as
        elif not isinstance(namespaced, bool):
            raise DiscoveryMalformed(
                where, f"resources[{index}] ({name}) 'namespaced' is no boolean"
            )
        if singular is not None and not isinstance(singular, str):
            raise DiscoveryMalformed(where, f"resources[{index}] ({name}) singularName")
        out.append((Resource(kind, group_version, name, namespaced), singular or ""))
    return out
