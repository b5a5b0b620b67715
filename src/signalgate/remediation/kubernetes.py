"""The Kubernetes RR store: RemediationRequests as `kubernaut.ai/v1alpha1` custom resources.

This is where Kubernaut's controllers look for RRs, so in a cluster the Gateway writes them
here. Race freedom across Gateway replicas comes from the API server alone, without the
per-fingerprint Lease Kubernaut's Gateway takes:

- **Names decide creation.** The n-th RR ever opened for a fingerprint is named
  `rr-<first 12 hex of the fingerprint>-<first 8 hex of sha256("<fingerprint>:<n>")>`, and
  carries n in the `signalgate.io/generation` label. To open a new RR a replica creates
  generation max+1; `AlreadyExists` means another replica won, and the signal is re-decided
  against a fresh, consistent read of that fingerprint's RRs (a `spec.signalFingerprint`
  field-selector list).
- **A watch-fed cache** of the namespace's RRs answers "which RR is active for this
  fingerprint" without a request, so a duplicate costs one status write.
- **Counts go through the status subresource** with the object's `resourceVersion`: a stale
  one is refused (409), re-read and retried, so a controller's concurrent change is never
  overwritten. Concurrent changes to one RR inside one process are **coalesced**: while one
  status write is in flight, the next ones queue, and the queue is written as one change
  (`occurrenceCount + N`). Each caller is answered only after the write that covers it.
  Each queued change carries the condition it needs (the RR still active, or still
  suppressing); a change whose condition no longer holds is re-decided from scratch.

Errors (`_call`): what nothing can be stored through until the cluster is put right, and
which needs no restart when it is — the API server unreachable, timing out or overloaded,
refusing this Gateway's credentials, serving no RRs (the CRD removed), the namespace missing
or being deleted — is `StoreUnavailable` (503, unready), its message saying which; an RR too
large to store is `TooLarge` (the signal's own problem); any other refusal of the RR as
written (validation, an admission policy) is `StoreRefused`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import quote

import orjson

from signalgate.common.logging import SampledLog
from signalgate.common.tasks import cancel_and_wait
from signalgate.kube.client import (
    KubeAlreadyExists,
    KubeClient,
    KubeConflict,
    KubeError,
    KubeNotFound,
    KubeNotServed,
    KubeTooLarge,
    KubeUnauthorized,
    KubeUnavailable,
    WatchSilent,
)
from signalgate.kube.sizes import ETCD_MAX_REQUEST_BYTES, stored_json_size
from signalgate.remediation.model import (
    API_VERSION,
    CREATED_AT_ANNOTATION,
    INITIAL_PHASE,
    SIGNAL_RESOLVED,
    Deduplication,
    RemediationRequest,
    SignalResolved,
    StatusPatch,
    choose_suppressor,
    parse_time,
)
from signalgate.remediation.store import (
    Conflict,
    Decision,
    FiringResult,
    ListQuery,
    NotFound,
    Page,
    StoreRefused,
    StoreUnavailable,
    TooLarge,
    clamp_limit,
    decode_cursor,
    drain_failing_fast,
    encode_cursor,
)

log = logging.getLogger(__name__)
# a watch that keeps breaking (the CRD missing) breaks every few seconds: one line per interval
watch_log = SampledLog(log, interval=60.0)

GROUP_VERSION = API_VERSION  # kubernaut.ai/v1alpha1
PLURAL = "remediationrequests"
CRD_NAME = f"{PLURAL}.{GROUP_VERSION.split('/')[0]}"  # remediationrequests.kubernaut.ai
GENERATION_LABEL = "signalgate.io/generation"
FINGERPRINT_FIELD = "spec.signalFingerprint"
# how the API server refuses a field selector the CRD does not offer (`selectableFields`)
FIELD_NOT_SUPPORTED = "field label not supported"
# how long after the API server refused the fingerprint field selector a fingerprint's RRs
# are read by listing the namespace before the selector is tried again (seconds): the CRD
# may have been installed with `selectableFields` meanwhile, or the API server upgraded.
# One refused list per interval is what trying costs; a relist after a broken watch (which
# updating the CRD causes) tries again at the next read too.
RESELECT_AFTER = 300.0
# the cause the API server gives for refusing a new object in a namespace being deleted
NAMESPACE_TERMINATING = "NamespaceTerminating"
# bounded retries: a decision that keeps losing races is a 503, not a spin
MAX_DECISION_ATTEMPTS = 8
MAX_CONFLICT_RETRIES = 16
# what our model owns in `status`; the rest is other writers' and passed through untouched
_OWNED_STATUS = frozenset({"overallPhase", "deduplication", "message"})


# how long after a call found the API server unreachable lists read it instead of the cache
CACHE_DOUBTED_FOR = 30.0
# a watch request younger than this is not started again for a call's failure: it is
# already on a new connection, and failing calls would otherwise restart it as fast as
# they fail during an outage
WATCH_SETTLE = 5.0
# how many deletions the cache remembers, so a late read cannot bring a deleted RR back
REMEMBERED_DELETIONS = 4096


def rr_name(fingerprint: str, generation: int) -> str:
    digest = hashlib.sha256(f"{fingerprint}:{generation}".encode()).hexdigest()
    return f"rr-{fingerprint[:12]}-{digest[:8]}"


def _resource_version(rr: RemediationRequest) -> int:
    value = rr.extra_metadata.get("resourceVersion", "0")
    return int(value) if str(value).isdigit() else 0


# a generation label of more digits is a hand edit, not ours: read as none, since the next
# generation's label would pass the 63 characters a label value may hold, and every later
# signal of the fingerprint was refused by the API server (an outside check: 63 nines)
MAX_GENERATION_DIGITS = 18


def _generation(rr: RemediationRequest) -> int:
    labels = rr.extra_metadata.get("labels") or {}
    value = str(labels.get(GENERATION_LABEL, "0"))
    readable = value.isascii() and value.isdigit() and len(value) <= MAX_GENERATION_DIGITS
    return int(value) if readable else 0


def from_object(obj: dict[str, Any]) -> RemediationRequest:
    """The model of an RR custom resource, whoever wrote it."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = dict(obj.get("status") or {})
    created_at = _created_at(metadata)
    dedup = status.get("deduplication") or {}
    first = dedup.get("firstSeenAt")
    last = dedup.get("lastSeenAt")
    completion = status.get("completionStatus") or {}
    routing = status.get("routingStatus") or {}
    resolved = None
    for condition in status.get("conditions") or ():
        if condition.get("type") == SIGNAL_RESOLVED:
            resolved = SignalResolved(
                condition.get("status") == "True", parse_time(condition["lastTransitionTime"])
            )
    labels = dict(metadata.get("labels") or {})
    generation = labels.pop(GENERATION_LABEL, None)
    extra_metadata = {
        key: value
        for key, value in metadata.items()
        if key not in ("name", "namespace", "labels", "managedFields")
    }
    if generation is not None:
        extra_metadata["labels"] = {GENERATION_LABEL: generation}
    next_allowed = routing.get("nextAllowedExecution")
    return RemediationRequest(
        name=metadata["name"],
        namespace=metadata.get("namespace", ""),
        fingerprint=str(spec.get("signalFingerprint", "")),
        created_at=created_at,
        spec=spec,
        deduplication=Deduplication(
            parse_time(first) if first else created_at,
            parse_time(last) if last else created_at,
            # no deduplication status yet: the signal that created it, seen once
            int(dedup["occurrenceCount"]) if "occurrenceCount" in dedup else 1,
        ),
        # an RR whose status nobody wrote yet is one the Gateway just created: Pending
        overall_phase=status.get("overallPhase") or INITIAL_PHASE,
        outcome=completion.get("outcome"),
        next_allowed_execution=parse_time(next_allowed) if next_allowed else None,
        message=status.get("message"),
        signal_resolved=resolved,
        labels=labels,
        extra_status={k: v for k, v in status.items() if k not in _OWNED_STATUS},
        extra_metadata=extra_metadata,
    )


def _created_at(metadata: dict[str, Any]) -> datetime:
    """The `kubernaut.ai/created-at` annotation, else the server's `creationTimestamp`. An
    annotation is free text anyone may set (`kubectl annotate`): one that is no RFC 3339
    time is passed over, not an RR nobody can read. It was a `ValueError` that broke the
    watch for good and made every RR list a 500 (an outside check)."""
    stamp = (metadata.get("annotations") or {}).get(CREATED_AT_ANNOTATION)
    if stamp:
        try:
            return parse_time(str(stamp))
        except (ValueError, OverflowError):
            log.warning(
                "an RR's created-at annotation is no RFC 3339 time: its creationTimestamp is read",
                extra={"rr": metadata.get("name"), "annotation": str(stamp)[:64]},
            )
    return parse_time(str(metadata.get("creationTimestamp")))


def to_object(rr: RemediationRequest) -> dict[str, Any]:
    """The whole object to write (the API server takes `status` only on the subresource)."""
    document = rr.to_json()
    metadata = document["metadata"]
    metadata.pop("creationTimestamp", None)  # the server's to set
    return document


@dataclass
class _Change:
    """One caller's status change, queued for the next coalesced write of one RR."""

    apply: Callable[[RemediationRequest], RemediationRequest]
    # the condition the change needs of the RR as it is when written
    holds: Callable[[RemediationRequest], bool]
    done: asyncio.Future[RemediationRequest | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class KubernetesStore:
    """`RemediationStore` on a Kubernetes API server, in one namespace."""

    # a status write or create sent is made or not by the API server, whatever becomes of
    # the caller (the drain task writes a queued change even after its caller gave up)
    writes_outlive_cancellation = True

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        watch_timeout: int = 300,
        *,
        reselect_after: float = RESELECT_AFTER,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.watch_timeout = watch_timeout
        self._reselect_after = reselect_after
        self._collection = f"/apis/{GROUP_VERSION}/namespaces/{namespace}/{PLURAL}"
        self._objects: dict[str, RemediationRequest] = {}
        self._by_fingerprint: dict[str, set[str]] = {}
        # the highest generation ever seen per fingerprint, kept when RRs are deleted, so a
        # deleted generation's name is never created again
        self._generations: dict[str, int] = {}
        self._queues: dict[str, list[_Change]] = {}
        self._writers: dict[str, asyncio.Task[None]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._stream: asyncio.Task[str] | None = None  # the watch's current request
        self._stream_since = 0.0  # when it started (loop time)
        self._followed = ""  # the last resourceVersion the watch delivered
        self._synced = asyncio.Event()
        # when a call last found the API server unreachable: the watch may be stalled then
        # (not broken yet), so lists read the API server for a while (`CACHE_DOUBTED_FOR`)
        self._unreachable_at = float("-inf")
        # the resourceVersion each recently deleted RR was deleted at (bounded)
        self._gone: OrderedDict[str, int] = OrderedDict()
        # when (loop time) the API server last refused the fingerprint field selector; None
        # while it takes it. Tried again `reselect_after` later, or after a relist.
        self._unselectable_at: float | None = None

    def __repr__(self) -> str:
        return f"KubernetesStore({self.client.config.server!r}, namespace={self.namespace!r})"

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """List the namespace's RRs and start watching; raises `StoreUnavailable` at once if
        the API server cannot be reached (the Gateway does not start without its store)."""
        if self._watcher is not None:
            raise RuntimeError(f"{self!r} is already open")
        try:
            version = await self._relist()
        except KubeUnavailable as exc:
            raise StoreUnavailable(f"{self!r}: cannot list RRs: {exc}") from exc
        except KubeError as exc:
            raise StoreUnavailable(
                f"{self!r}: cannot list RRs ({exc}); is the RemediationRequest CRD installed "
                "and may this ServiceAccount list them?"
            ) from exc
        self._synced.set()
        self._watcher = asyncio.create_task(self._watch(version), name="rr-watch")

    async def close(self) -> None:
        watcher, self._watcher = self._watcher, None
        await cancel_and_wait(watcher, *self._writers.values())

    async def ping(self) -> None:
        try:
            await self._call("GET", self._collection, params={"limit": "1"})
            await self._check_namespace()
        except asyncio.CancelledError:
            # the readiness probe's deadline (2 s) is shorter than the client's: a ping it
            # gave up on found the API server too slow, and lists must not trust the watch
            # (the probe is what notices a stall when no signal comes; an outside check
            # listed deleted RRs as active 28 s into one)
            self._doubt()
            raise

    async def _check_namespace(self) -> None:
        """Raise `StoreUnavailable` when the controller namespace does not exist or is being
        deleted: the API server lists the RRs of a namespace that does not exist as an empty
        list, so with RBAC from a ClusterRole (Kubernaut's chart) a mistyped or deleted
        `controllerNamespace` passed readiness while every signal was a 503. A Gateway that
        may not read namespaces (403) is judged by the list alone."""
        try:
            found = await self.client.request(
                "GET", f"/api/v1/namespaces/{quote(self.namespace, safe='')}"
            )
        except KubeNotFound as exc:
            raise StoreUnavailable(
                f"{self!r}: the namespace {self.namespace!r} does not exist "
                f"(controllerNamespace): {exc.message}"
            ) from exc
        except KubeUnavailable as exc:
            raise StoreUnavailable(f"{self!r}: {exc}") from exc
        except KubeError:
            return
        if (found.get("status") or {}).get("phase") == "Terminating":
            raise StoreUnavailable(
                f"{self!r}: the namespace {self.namespace!r} (controllerNamespace) is being "
                "deleted, and the API server takes no new RRs in it"
            )

    # --- the cache ------------------------------------------------------------------------

    async def _relist(self) -> str:
        listed = await self.client.request("GET", self._collection)
        self._reconcile(listed, self._objects.values())
        return str((listed.get("metadata") or {}).get("resourceVersion", ""))

    def _reconcile(self, listed: dict[str, Any], covered: Iterable[RemediationRequest]) -> None:
        """Fold a LIST answer into the cache: what it holds is remembered (unless the cache
        has a newer version), and a cached RR of those the list `covered` that it lacks is
        forgotten — but only when the list is newer than that RR. An RR this process created
        or changed while the list was on its way is newer than the list, and stays: dropping
        it lost an active RR from the cache while its generation stayed counted, and the
        next signal created the next generation beside it (two active RRs for one
        fingerprint after every watch break, an outside check found). What is forgotten is
        remembered as deleted as of the list (`_deleted`), as the watch's deletions are."""
        alive = {self._remember(from_object(item)).name for item in listed.get("items") or ()}
        version = str((listed.get("metadata") or {}).get("resourceVersion", ""))
        as_of = int(version) if version.isdigit() else None
        for rr in list(covered):
            if rr.name not in alive and (as_of is None or _resource_version(rr) <= as_of):
                self._deleted(rr.name, version)

    async def _watch(self, version: str) -> None:
        """Keep the cache fed; on any break, relist and watch again (with a short backoff).
        A watch that went silent, or that a call's failure put in doubt (`_doubt`), is
        started again from the last version it delivered, on a new connection: a stalled
        connection is not a broken watch until its read times out, and a restarted watch
        replays what it missed (or says 410, and the namespace is listed again)."""
        delay = 0.2
        while True:
            self._followed = started_at = version  # (a stream cancelled before it ran)
            self._stream = asyncio.create_task(self._follow(version), name="rr-watch-stream")
            self._stream_since = asyncio.get_running_loop().time()
            try:
                version = await self._stream
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # the store closes
                version = self._followed  # doubted: watch again where it was
            except WatchSilent as exc:
                log.info("RR watch silent; watching again", extra={"error": str(exc)})
                version = self._followed
            except (KubeError, ValueError, KeyError) as exc:
                watch_log.log(
                    logging.WARNING, "broke", "RR watch broke; relisting", {"error": str(exc)}
                )
                self._synced.clear()  # lists go to the API server until the cache is whole
                if self._followed != started_at:  # it had been delivering: not a loop of breaks
                    delay = 0.2
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                try:
                    version = await self._relist()
                except KubeError:
                    continue
                except (ValueError, KeyError) as exc:
                    # an object it cannot read: retried like a failed list, never the end
                    # of the watch (it ended the watch task for good, with /readyz 200)
                    watch_log.log(
                        logging.ERROR,
                        "unreadable",
                        "RR list unreadable; relisting",
                        {"error": str(exc)},
                    )
                    continue
                self._synced.set()
                if self._unselectable_at is not None:
                    # the watch broke, as updating the CRD breaks it: the CRD may offer the
                    # field selector now, so the next fingerprint read tries it
                    self._unselectable_at = float("-inf")
            else:
                delay = 0.2

    async def _follow(self, version: str) -> str:
        """One watch request from `version` until the server ends it; the last version it
        delivered (also in `_followed`, for a watch cancelled midway)."""
        async for event in self.client.watch(
            self._collection,
            params={"resourceVersion": version},
            timeout_seconds=self.watch_timeout,
        ):
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                raise KubeError(int(obj.get("code", 500)), "WatchError", str(obj))
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind in ("ADDED", "MODIFIED"):
                self._remember(from_object(obj))
            elif kind == "DELETED":
                self._deleted(obj["metadata"]["name"], version)
            self._followed = version
        return version

    def _doubt(self) -> None:
        """A call found the API server unreachable or too slow: lists read it instead of the
        cache for a while (`CACHE_DOUBTED_FOR`), and the watch starts again on a new
        connection (its own may be the stalled one, heard from again only when its read
        times out)."""
        now = asyncio.get_running_loop().time()
        self._unreachable_at = now
        stream = self._stream
        if stream is not None and not stream.done() and now - self._stream_since > WATCH_SETTLE:
            stream.cancel()

    def _remember(self, rr: RemediationRequest) -> RemediationRequest:
        """Cache `rr` unless the cache already holds a newer version of it, or saw it
        deleted after this version: a read answered before the watch's DELETED but handled
        after it put the deleted RR back, listed for good (an outside check)."""
        held = self._objects.get(rr.name)
        if held is not None and _resource_version(held) > _resource_version(rr):
            return held
        gone = self._gone.get(rr.name)
        if gone is not None and gone >= _resource_version(rr):
            return rr
        self._index(rr)
        return rr

    def _deleted(self, name: str, version: str) -> None:
        self._forget(name)
        self._gone[name] = int(version) if version.isdigit() else 0
        self._gone.move_to_end(name)
        while len(self._gone) > REMEMBERED_DELETIONS:
            self._gone.popitem(last=False)

    def _index(self, rr: RemediationRequest) -> None:
        self._objects[rr.name] = rr
        self._by_fingerprint.setdefault(rr.fingerprint, set()).add(rr.name)
        generation = _generation(rr)
        if generation > self._generations.get(rr.fingerprint, 0):
            self._generations[rr.fingerprint] = generation

    def _forget(self, name: str) -> None:
        rr = self._objects.pop(name, None)
        if rr is not None:
            self._by_fingerprint.get(rr.fingerprint, set()).discard(name)

    def _of_fingerprint(self, fingerprint: str) -> list[RemediationRequest]:
        names = self._by_fingerprint.get(fingerprint, ())
        return [self._objects[n] for n in names if n in self._objects]

    def _name_taken(self, fingerprint: str, generation: int) -> None:
        """The name of `generation` is held by an object that is none of the fingerprint's
        RRs (a consistent read just said so): created by hand, or for another fingerprint.
        That generation is passed over, by every replica alike (each sees the same object),
        so the next create takes the next name; retried on it, every signal of the
        fingerprint was a 503 for good, logged as other replicas changing its RRs (an
        outside check)."""
        self._generations[fingerprint] = generation
        log.warning(
            "an RR name is held by an object of another fingerprint: its generation is passed over",
            extra={"rr": rr_name(fingerprint, generation), "fingerprint": fingerprint[:12]},
        )

    async def _refresh(self, fingerprint: str) -> list[RemediationRequest]:
        """A consistent read of one fingerprint's RRs (the cache may lag another replica)."""
        listed = await self._list(fingerprint)
        self._reconcile(listed, self._of_fingerprint(fingerprint))
        return self._of_fingerprint(fingerprint)

    # --- talking to the API server --------------------------------------------------------

    async def _list_from_server(self, fingerprint: str | None) -> list[RemediationRequest]:
        """Every RR (of one fingerprint: a field selector), remembered as read."""
        listed = await self._list(fingerprint)
        return [self._remember(from_object(item)) for item in listed.get("items") or ()]

    async def _list(self, fingerprint: str | None) -> dict[str, Any]:
        """A LIST of the namespace's RRs, or of one fingerprint's: by the field selector,
        or, where the CRD offers none, the namespace's filtered here, as Kubernaut's Gateway
        falls back. An API server before 1.31 drops a CRD's `selectableFields` (and older
        CRDs of Kubernaut's have none): every decision that needs a fresh read (a signal
        after its RR ended, a lost race) was a 500, for good (an outside check). The
        selector is tried again `reselect_after` seconds after it was refused, and after
        the watch relists: once refused, the namespace was listed for every such read
        until the Gateway restarted, long after the CRD was fixed (an outside check)."""
        if fingerprint is None:
            return await self._call("GET", self._collection)
        if self._selector_worth_trying():
            try:
                listed = await self._call(
                    "GET",
                    self._collection,
                    params={"fieldSelector": f"{FINGERPRINT_FIELD}={fingerprint}"},
                )
            except StoreRefused as exc:
                cause = exc.__cause__
                if not (isinstance(cause, KubeError) and FIELD_NOT_SUPPORTED in cause.message):
                    raise
                self._selector_refused(cause)
            else:
                if self._unselectable_at is not None:
                    self._unselectable_at = None
                    log.info(
                        f"the RemediationRequest CRD offers the {FINGERPRINT_FIELD} field "
                        "selector again: a fingerprint's RRs are read by it"
                    )
                return listed
        listed = await self._call("GET", self._collection)
        items = [
            item
            for item in listed.get("items") or ()
            if (item.get("spec") or {}).get("signalFingerprint") == fingerprint
        ]
        return {**listed, "items": items}

    def _selector_worth_trying(self) -> bool:
        """Whether to ask with the fingerprint field selector: it was never refused, or
        `reselect_after` has passed since, or a relist asked for it."""
        if self._unselectable_at is None:
            return True
        return asyncio.get_running_loop().time() - self._unselectable_at >= self._reselect_after

    def _selector_refused(self, cause: KubeError) -> None:
        """Note the refusal; warn when it is news (not at every attempt to go back)."""
        if self._unselectable_at is None:
            log.warning(
                f"the RemediationRequest CRD offers no {FINGERPRINT_FIELD} field selector: a "
                "fingerprint's RRs are read by listing the namespace, and the selector is "
                f"tried again every {self._reselect_after:g} s; install "
                f"deploy/kubernetes/remediationrequest-crd.yaml ({CRD_NAME} with "
                "selectableFields, Kubernetes 1.31 or later)",
                extra={"error": cause.message},
            )
        self._unselectable_at = asyncio.get_running_loop().time()

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return await self.client.request(method, path, **kwargs)
        except KubeUnauthorized as exc:
            # its ServiceAccount deleted, or the token revoked or expired: no RBAC can fix
            # that (the log said to grant RBAC); a valid token is read again without a restart
            raise StoreUnavailable(
                f"{self!r}: the API server does not accept this Gateway's token ({exc}): its "
                "ServiceAccount was deleted, or the token revoked or expired; give the "
                "Gateway a valid token of its ServiceAccount (deploy/kubernaut/rbac.yaml)"
            ) from exc
        except KubeUnavailable as exc:
            self._doubt()
            raise StoreUnavailable(f"{self!r}: {exc}") from exc
        except KubeNotServed as exc:
            # the CRD removed while the Gateway runs (Kubernaut's chart uninstalled and
            # installed again): nothing can be stored until it is back, which needs no
            # restart (the watch relists), so 503 and unready, as when unreachable; it was
            # a 500 and a traceback per signal, and a /readyz that crashed
            raise StoreUnavailable(
                f"{self!r}: the API server serves no RemediationRequests ({exc.message}): "
                f"install the CRD {CRD_NAME} (deploy/kubernetes/remediationrequest-crd.yaml)"
            ) from exc
        except KubeNotFound as exc:
            if path == self._collection:
                # only its namespace missing makes the collection itself not found (a list
                # of a namespace that does not exist is empty; a create is refused)
                raise StoreUnavailable(
                    f"{self!r}: the namespace {self.namespace!r} does not exist "
                    f"(controllerNamespace): {exc.message}"
                ) from exc
            raise  # one RR missing: the callers' to decide
        except (KubeAlreadyExists, KubeConflict):
            raise  # the callers' to decide
        except KubeTooLarge as exc:
            body = kwargs.get("body")
            size = stored_json_size(orjson.dumps(body)) if body is not None else 0
            raise TooLarge(
                f"its RemediationRequest is {size:,} bytes as the Kubernetes API server "
                f"writes it ('<', '>' and '&' take 6 bytes each there), more than it stores "
                f"(etcd's default bound is {ETCD_MAX_REQUEST_BYTES:,}): {exc.message}"
            ) from exc
        except KubeError as exc:
            if exc.status != 403:
                # e.g. 422: the CRD installed validates the RR more strictly than this
                # Gateway writes it (another version of the CRD)
                raise StoreRefused(f"{self!r}: the API server refused {method}: {exc}") from exc
            if NAMESPACE_TERMINATING in exc.causes:
                # a 403 too, but no RBAC can fix it (the log said to grant RBAC): the
                # namespace goes, and RRs are stored again once it is created anew
                raise StoreUnavailable(
                    f"{self!r}: the namespace {self.namespace!r} (controllerNamespace) is "
                    f"being deleted, and the API server takes no new RRs in it ({exc.message})"
                ) from exc
            # this Gateway's own permissions refused (a removed RoleBinding): nothing was
            # stored, and granting them back needs no restart, so the signal is answered
            # 503 (retry) and readiness fails, as when unreachable
            raise StoreUnavailable(
                f"{self!r}: the API server refused this Gateway's credentials ({exc}); "
                "grant its ServiceAccount the RBAC in deploy/kubernaut/rbac.yaml"
            ) from exc

    async def _get(self, name: str) -> RemediationRequest | None:
        try:
            obj = await self._call("GET", f"{self._collection}/{quote(name, safe='')}")
        except KubeNotFound:
            return None
        return self._remember(from_object(obj))

    async def _put_status(
        self, rr: RemediationRequest, was: RemediationRequest, *, phase: bool = False
    ) -> RemediationRequest:
        """Write `rr`'s status, refused (409) if the object changed since it was read as
        `was`: only the difference is sent (a merge patch with the resourceVersion as
        precondition), not the whole object with its spec."""
        status = rr.status_json()
        changes = merge_diff(was.status_json(), status)
        # the counters a status nobody wrote yet reads as (seen once, at the creation time)
        # are always sent whole, so they are written the first time. `overallPhase` is sent
        # only when it changes: an RR without one is new to Kubernaut's orchestrator, which
        # owns the phase and starts its work (start time, timeouts, audit) when it sets it;
        # `phase`: a consumer set it through the status API, so it is written even when it
        # reads as it was (an unset phase reads as Pending)
        changes["deduplication"] = status["deduplication"]
        if phase:
            changes["overallPhase"] = status["overallPhase"]
        patch = {
            "metadata": {"resourceVersion": rr.extra_metadata.get("resourceVersion")},
            "status": changes,
        }
        written = await self._call(
            "PATCH",
            f"{self._collection}/{quote(rr.name, safe='')}/status",
            body=patch,
            content_type="application/merge-patch+json",
        )
        return self._remember(from_object(written))

    # --- coalesced status changes ---------------------------------------------------------

    async def _change(
        self,
        name: str,
        apply: Callable[[RemediationRequest], RemediationRequest],
        holds: Callable[[RemediationRequest], bool],
    ) -> RemediationRequest | None:
        """Apply `apply` to RR `name` if `holds` is true of it when written: the written RR,
        or None when the condition no longer holds (or the RR is gone)."""
        change = _Change(apply, holds)
        self._queues.setdefault(name, []).append(change)
        if name not in self._writers:
            self._writers[name] = asyncio.create_task(self._drain(name), name=f"rr-status-{name}")
        return await change.done

    async def _drain(self, name: str) -> None:
        """Write the RR's queued changes, batch after batch; after an outage (an API server
        that stopped answering) the changes queued behind the write get its answer, not a
        write and a `kubernetes.timeout` of their own (`drain_failing_fast`)."""

        def take() -> list[_Change] | None:
            return self._queues.pop(name, None) or None

        async def write(batch: list[_Change]) -> StoreUnavailable | None:
            try:
                await self._write_batch(name, batch)
            except BaseException as exc:
                failure = exc if isinstance(exc, Exception) else StoreUnavailable("store closing")
                fail(batch, failure)
                if not isinstance(exc, Exception):
                    raise
                return failure if isinstance(failure, StoreUnavailable) else None
            return None

        def fail(batch: list[_Change], failure: Exception) -> None:
            for change in batch:
                if not change.done.done():
                    change.done.set_exception(failure)

        try:
            await drain_failing_fast(take, write, fail)
        finally:
            self._writers.pop(name, None)
            for change in self._queues.pop(name, ()):
                if not change.done.done():
                    change.done.set_exception(StoreUnavailable("store closing"))

    async def _write_batch(self, name: str, batch: list[_Change]) -> None:
        rr = self._objects.get(name)
        for _ in range(MAX_CONFLICT_RETRIES):
            if rr is None:
                rr = await self._get(name)
            if rr is None:
                _settle(batch, None)
                return
            keep: list[_Change] = []
            stale: list[_Change] = []
            for change in batch:
                (keep if change.holds(rr) else stale).append(change)
            _settle(stale, None)  # their callers decide again from scratch
            batch = keep
            if not batch:
                return
            changed = rr
            counts: list[int] = []  # each change's own count, as applied in turn
            for change in batch:
                changed = change.apply(changed)
                counts.append(changed.deduplication.occurrence_count)
            try:
                written = await self._put_status(changed, rr)
            except KubeConflict:
                rr = None  # re-read and try again
                continue
            except KubeNotFound:
                self._forget(name)
                _settle(batch, None)
                return
            for change, count in zip(batch, counts, strict=True):
                if not change.done.done():
                    change.done.set_result(written.counted_as(count))
            return
        raise StoreUnavailable(
            f"{self!r}: RR {name!r} kept changing under {MAX_CONFLICT_RETRIES} status writes"
        )

    # --- the store API --------------------------------------------------------------------

    async def record_firing(self, candidate: RemediationRequest, now: datetime) -> FiringResult:
        return await self.record_firing_of(candidate.fingerprint, lambda: candidate, now)

    async def record_firing_of(
        self, fingerprint: str, build: Callable[[], RemediationRequest], now: datetime
    ) -> FiringResult:
        candidate: RemediationRequest | None = None  # built once, and only to create an RR
        known = self._of_fingerprint(fingerprint)
        refreshed = False  # whether `known` was read from the API server
        for _ in range(MAX_DECISION_ATTEMPTS):
            active = _newest(rr for rr in known if rr.active)
            if active is not None:
                bumped = await self._change(
                    active.name, lambda rr: rr.seen_again(1, now), _is_active
                )
                if bumped is not None:
                    return FiringResult(Decision.DUPLICATE, bumped)
                known, refreshed = await self._refresh(fingerprint), True
                continue
            suppressing = choose_suppressor(known, now)
            if suppressing is not None:
                bumped = await self._change(
                    suppressing.name,
                    lambda rr: rr.seen_again(1, now),
                    lambda rr: rr.suppresses(now),
                )
                if bumped is not None:
                    return FiringResult(Decision.DUPLICATE, bumped)
                known, refreshed = await self._refresh(fingerprint), True
                continue
            generation = self._generations.get(fingerprint, 0) + 1
            if generation > 1 and not refreshed:
                # the name of generation 1 is what makes two replicas' first creates collide;
                # a later generation is only as safe as the knowledge that none is active, so
                # it is decided on a consistent read, never on the cache alone
                known, refreshed = await self._refresh(fingerprint), True
                continue
            try:
                if candidate is None:
                    candidate = build()
                created = await self._create(candidate, generation, now)
            except KubeAlreadyExists:
                known, refreshed = await self._refresh(fingerprint), True
                if self._generations.get(fingerprint, 0) < generation:
                    self._name_taken(fingerprint, generation)
                continue
            if created is not None:
                return FiringResult(Decision.CREATED, created)
            known, refreshed = await self._refresh(fingerprint), True
        raise StoreUnavailable(
            f"{self!r}: no decision for fingerprint {fingerprint[:12]}… after "
            f"{MAX_DECISION_ATTEMPTS} attempts (other replicas kept changing its RRs)"
        )

    async def _create(
        self, candidate: RemediationRequest, generation: int, now: datetime
    ) -> RemediationRequest | None:
        """Create generation `generation` of the candidate's RR, without a status: an RR with
        no `status.deduplication` reads as seen once, and the first duplicate or resolved
        notice writes it. Kubernaut's Gateway writes that status right after the create; one
        write per new RR instead of two takes about twice as many new RRs per second from
        one API server, whose CPU is what limits them (docs/performance.md)."""
        rr = replace(
            candidate,
            name=rr_name(candidate.fingerprint, generation),
            namespace=self.namespace,
            extra_metadata={"labels": {GENERATION_LABEL: str(generation)}},
        )
        document = to_object(rr)
        document.pop("status")
        made = await self._call("POST", self._collection, body=document)
        return self._remember(from_object(made))

    async def record_resolved(self, fingerprint: str, now: datetime) -> RemediationRequest | None:
        known = self._of_fingerprint(fingerprint)
        for _ in range(MAX_DECISION_ATTEMPTS):
            active = _newest(rr for rr in known if rr.active)
            if active is None:
                return None
            resolved = await self._change(active.name, lambda rr: rr.resolved_at(now), _is_active)
            if resolved is not None:
                return resolved
            known = await self._refresh(fingerprint)
        raise StoreUnavailable(f"{self!r}: no decision for a resolved notice (contention)")

    async def get(self, name: str) -> RemediationRequest | None:
        return await self._get(name)

    async def list(self, query: ListQuery) -> Page:
        """Newest first (creation time, then name). A fingerprint's RRs are read from the API
        server (a field selector: a consistent read, and small). Without one the list is the
        watch-fed cache's while the watch runs: reading the whole namespace from the API
        server for every page took 6.7 s and 450 MB at 10,000 RRs (an outside check), and
        paging through them was quadratic. The cache holds this replica's writes at once and
        another replica's within the watch's delay; while the watch is broken (relisting),
        lists read the API server. The other filters are applied here, as the CRD can select
        only on spec fields."""
        after = decode_cursor(query.cursor) if query.cursor is not None else None
        limit = clamp_limit(query.limit)
        if query.fingerprint is None and self._cache_trusted():
            candidates = list(self._objects.values())
        else:
            candidates = await self._list_from_server(query.fingerprint)
        matching = [
            rr
            for rr in candidates
            if (query.phase is None or rr.overall_phase == query.phase)
            and (query.namespace is None or rr.target_namespace == query.namespace)
            and (query.active is None or rr.active == query.active)
            and (after is None or (rr.created_at, rr.name) < after)
        ]
        matching.sort(key=lambda rr: (rr.created_at, rr.name), reverse=True)
        items = matching[:limit]
        more = len(matching) > limit
        last = items[-1] if more else None
        return Page(items, encode_cursor(last.created_at, last.name) if last else None)

    def _cache_trusted(self) -> bool:
        """The watch runs, and no call found the API server unreachable lately: a stalled
        connection is not a broken watch until its read times out (minutes), and the cache
        answered lists 200 meanwhile, stale (an outside check: 222 s). Readiness probes
        call the API server every few seconds, so a stall shows here within one."""
        recently = asyncio.get_running_loop().time() - self._unreachable_at < CACHE_DOUBTED_FOR
        return self._synced.is_set() and not recently

    async def update_status(self, name: str, patch: StatusPatch) -> RemediationRequest:
        for _ in range(MAX_CONFLICT_RETRIES):
            rr = await self._get(name)
            if rr is None:
                raise NotFound(f"RemediationRequest {name!r} not found")
            changed = patch.apply(rr)
            explicit_phase = patch.overall_phase is not None
            if changed == rr and not explicit_phase:
                return rr
            if changed.active and not rr.active:
                others = await self._refresh(rr.fingerprint)
                if any(o.active and o.name != name for o in others):
                    raise Conflict(
                        f"RemediationRequest {name!r}: phase {patch.overall_phase!r} would make "
                        "it active while another RR for its fingerprint is active"
                    )
            try:
                return await self._put_status(changed, rr, phase=explicit_phase)
            except KubeConflict:
                continue
            except KubeNotFound as exc:
                self._forget(name)
                raise NotFound(f"RemediationRequest {name!r} not found") from exc
        raise StoreUnavailable(f"{self!r}: RR {name!r} kept changing under the status patch")


def merge_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7396) that turns `old` into `new`."""
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            inner = merge_diff(before, value)
            if inner:
                patch[key] = inner
        elif value != before or key not in old:
            patch[key] = value
    return patch


def _settle(changes: Iterable[_Change], result: RemediationRequest | None) -> None:
    for change in changes:
        if not change.done.done():
            change.done.set_result(result)


def _is_active(rr: RemediationRequest) -> bool:
    return rr.active


def _newest(rrs: Iterable[RemediationRequest]) -> RemediationRequest | None:
    return max(rrs, key=lambda rr: (rr.created_at, rr.name), default=None)
