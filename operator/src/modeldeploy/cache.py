"""An informer's cache in miniature: what the watches last showed, so reads need no request.

kopf owns the watches (:mod:`modeldeploy.handlers`); its events for the children (Deployments,
Services, shadow ConfigMaps, autoscalers, disruption budgets) and the serving pods land in one
:class:`Store`, with our own applies' responses and the lists of each resync (after which an
object the store lacks is known to be absent). :class:`CachingKube` answers the reconciles'
reads from the store and falls through to the API when it cannot say.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from modeldeploy.kube import Kube
from modeldeploy.resources import CHILDREN, POD

CHILD_KINDS = frozenset(r.kind for r in CHILDREN)
"""Kinds whose reads by name the store answers (pods are kept trimmed: only listed)."""
TOMBSTONES = 10_000


def version_number(version: str | int | None) -> int:
    """A resourceVersion as a number, to tell the newer of two (0 when absent or not a number)."""
    try:
        return int(version or 0)
    except (TypeError, ValueError):
        return 0


def resource_version(obj: Mapping[str, Any]) -> int:
    """The object's ``metadata.resourceVersion`` as a number (see :func:`version_number`)."""
    return version_number(obj["metadata"].get("resourceVersion"))


class Store:
    """The children and serving pods as their watch events and our own applies last showed
    them (pods trimmed to what the status needs).

    An object never seen falls through to a real read, unless its kind was listed in that
    namespace (:meth:`refresh`): from then on, the store knows every one we manage.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._gone: dict[tuple[str, str, str], int] = {}
        self._listed: set[tuple[str, str | None]] = set()

    def put(self, obj: Mapping[str, Any]) -> bool:
        """Remember ``obj`` unless a newer version (or its deletion) is known; True if new."""
        key = (str(obj["kind"]), str(obj["metadata"]["namespace"]), str(obj["metadata"]["name"]))
        version = resource_version(obj)
        with self._guard:
            known = self._objects.get(key)
            if known is not None and version < resource_version(known):
                return False
            if version and version <= self._gone.get(key, 0):
                return False
            news = known is None or not version or version != resource_version(known)
            self._objects[key] = dict(obj)
            self._gone.pop(key, None)
            return news

    def drop(self, kind: str, namespace: str, name: str, version: int = 0) -> None:
        """Forget a deleted child (``version``: its last, so late events cannot revive it)."""
        with self._guard:
            self._objects.pop((kind, namespace, name), None)
            if version:
                if len(self._gone) >= TOMBSTONES:
                    self._gone.clear()  # only a racing list at startup needs them
                self._gone[(kind, namespace, name)] = version

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._guard:
            return self._objects.get((kind, namespace, name))

    def refresh(
        self, kind: str, namespace: str | None, items: list[dict[str, Any]], version: int
    ) -> None:
        """A list of every managed ``kind`` in ``namespace`` (None: all), taken at ``version``:
        keep what it shows, forget what it lacks (deleted while a watch was away) unless the
        store knows a later version; from now on, a child the store lacks is absent."""
        metas = [item["metadata"] for item in items]
        listed = {(kind, str(m["namespace"]), str(m["name"])) for m in metas}
        with self._guard:
            for key, known in list(self._objects.items()):
                in_scope = key[0] == kind and namespace in (None, key[1])
                if in_scope and key not in listed and resource_version(known) <= version:
                    del self._objects[key]
            self._listed.add((kind, namespace))
        for item in items:
            self.put(item)

    def known_absent(self, kind: str, namespace: str, name: str) -> bool:
        """True when a list and the watch since say this child does not exist."""
        with self._guard:
            listed = (kind, namespace) in self._listed or (kind, None) in self._listed
            return listed and (kind, namespace, name) not in self._objects

    def select(
        self, kind: str, namespace: str, selector: str | None
    ) -> list[dict[str, Any]] | None:
        """Objects of ``kind`` matching an equality ``selector``; None when the store cannot
        say (the kind not listed there yet, or a selector it does not understand)."""
        wanted = equality_selector(selector)
        with self._guard:
            listed = (kind, namespace) in self._listed or (kind, None) in self._listed
            if wanted is None or not listed:
                return None
            return [
                obj
                for (k, ns, _), obj in self._objects.items()
                if k == kind
                and ns == namespace
                and all(obj["metadata"].get("labels", {}).get(a) == b for a, b in wanted.items())
            ]

    def __contains__(self, key: tuple[str, str, str]) -> bool:
        with self._guard:
            return key in self._objects


def equality_selector(selector: str | None) -> dict[str, str] | None:
    """``a=b,c=d`` as a dict; None for any other form (set-based, ``!=``, bare keys)."""
    if not selector:
        return None
    wanted: dict[str, str] = {}
    for term in selector.split(","):
        key, sep, value = term.replace("==", "=").partition("=")
        if not sep or "!" in key or "=" in value or " " in term.strip():
            return None
        wanted[key.strip()] = value.strip()
    return wanted


class CachingKube(Kube):
    """``Kube`` whose reads of children and serving pods come from the store."""

    def __init__(self, kube: Kube, store: Store, fence: Callable[[], bool] | None = None) -> None:
        super().__init__(kube.client, kube.field_manager, kube.timeout, fence)
        self.store = store

    def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        cacheable = namespace is not None and kind in CHILD_KINDS
        if cacheable:
            cached = self.store.get(kind, namespace or "", name)
            if cached is not None:
                return cached
            if self.store.known_absent(kind, namespace or "", name):
                return None
        found = super().get(api_version, kind, namespace, name)
        if cacheable:
            if found is None:
                self.store.drop(kind, namespace or "", name)
            else:
                self.store.put(found)
        return found

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        label_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        if (api_version, kind) == (POD.api_version, POD.kind) and namespace:
            pods = self.store.select(POD.kind, namespace, label_selector)
            if pods is not None:
                return pods
        return super().list(api_version, kind, namespace, label_selector)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        applied = super().apply(obj)
        if applied.get("kind") in CHILD_KINDS:
            self.store.put(applied)
        return applied

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete, then forget the child (also when it was already gone). A DELETE that fails
        leaves it in the store: the retry of the reconcile still knows it exists and deletes it
        again, instead of taking it for absent until the next resync lists it."""
        deleted = super().delete(api_version, kind, namespace, name)
        self.store.drop(kind, namespace, name)
        return deleted
