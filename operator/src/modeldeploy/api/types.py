"""Building blocks of the API models: the base model, cross-field rules, constrained types.

A `Rule` is declared once and enforced twice: as a CEL `x-kubernetes-validations` entry in the
generated CRD (the API server refuses a bad object at admission) and as a Python predicate run
by the model's own validator (the operator refuses the same objects). Keep both forms of a rule
next to each other so they cannot drift apart; the unit and integration tests run one table of
invalid objects against both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

__all__ = [
    "DNS_LABEL_PATTERN",
    "DURATION_PATTERN",
    "QUANTITY_PATTERN",
    "ApiModel",
    "DnsSubdomain",
    "Duration",
    "Quantity",
    "Rule",
    "list_map",
    "parse_duration",
    "parse_quantity",
    "passthrough_list",
    "passthrough_object",
]

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
# The pattern Kubernetes itself publishes for resource.Quantity.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


@dataclass(frozen=True)
class Rule:
    """A cross-field rule: CEL for the API server, `check` for Python, one message for both.

    `check` receives the validated model and returns True when the object is valid. `field_path`
    (relative to the object the rule sits on, e.g. ".steps") and `reason` end up in the API
    server's error, so the message names the offending field either way.
    """

    cel: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None
    reason: str | None = None

    def schema(self) -> dict[str, str]:
        """The `x-kubernetes-validations` entry of this rule."""
        entry = {"rule": self.cel, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        if self.reason:
            entry["reason"] = self.reason
        return entry


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields and loose types refused.

    Subclasses list their cross-field rules in `__rules__`; they become CEL rules in the CRD and
    are checked after validation here, in the same order.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
    )

    __rules__: ClassVar[Sequence[Rule]] = ()

    @model_validator(mode="before")
    @classmethod
    def _accept_mappings(cls, data: Any) -> Any:
        # Strict mode takes only dicts; kopf hands objects over as read-only Mapping views.
        if isinstance(data, Mapping) and not isinstance(data, dict):
            return dict(data)
        return data

    @model_validator(mode="after")
    def _check_rules(self) -> ApiModel:
        for rule in type(self).__rules__:
            if not rule.check(self):
                raise ValueError(rule.message)
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(core_schema)
        target = handler.resolve_ref_schema(json_schema)
        if cls.__rules__:
            target["x-kubernetes-validations"] = [rule.schema() for rule in cls.__rules__]
        return json_schema

    def to_dict(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset optional fields omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_merge_patch(self) -> dict[str, Any]:
        """A JSON merge patch that makes the stored object equal to this one: unset optional
        fields are sent as null, which removes them (e.g. `status.canary` after a promotion)."""
        return self.model_dump(mode="json", by_alias=True)


def _unique_by(key: str) -> Callable[[list[Any] | None], list[Any] | None]:
    def check(items: list[Any] | None) -> list[Any] | None:
        if items is None:
            return items
        seen: set[Any] = set()
        for item in items:
            value = item.get(key) if isinstance(item, dict) else getattr(item, key)
            if value in seen:
                raise ValueError(f"duplicate {key} {value!r}: each {key} may appear only once")
            seen.add(value)
        return items

    return check


def list_map(key: str) -> tuple[Any, ...]:
    """Metadata for a list keyed by `key`: unique keys in Python and a list-map in the CRD."""
    return (
        AfterValidator(_unique_by(key)),
        Field(
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": [key]}
        ),
    )


def passthrough_object(target: str) -> WithJsonSchema:
    """Schema of an object passed verbatim into a Kubernetes object (validated again there)."""
    return WithJsonSchema(
        {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "x-passthrough": target}
    )


def passthrough_list(target: str, max_items: int) -> WithJsonSchema:
    """Schema of a list of objects passed verbatim into a Kubernetes object."""
    return WithJsonSchema(
        {
            "type": "array",
            "maxItems": max_items,
            "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "x-passthrough": target,
        }
    )


Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=32)]
"""A duration such as `30s`, `5m`, `1h30m` or `250ms`."""

DnsSubdomain = Annotated[
    str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=253)
]
"""The name of a Kubernetes object (a DNS subdomain)."""

_QUANTITY_RE = re.compile(QUANTITY_PATTERN)


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, str) and (len(value) > 64 or not _QUANTITY_RE.match(value)):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 1Gi)")
    return value


Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "maxLength": 64,
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity: an integer or a string such as `500m` or `1Gi`."""

_BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY_SPLIT = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(.*)$")


def parse_quantity(value: int | str) -> Decimal:
    """The exact value of a Kubernetes quantity (`"500m"` -> 0.5, `"1Gi"` -> 1073741824)."""
    if isinstance(value, int):
        return Decimal(value)
    match = _QUANTITY_SPLIT.match(value) if _QUANTITY_RE.match(value) else None
    if match is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    number, suffix = Decimal(match.group(1)), match.group(2)
    if suffix in _BINARY_SUFFIXES:
        return number * _BINARY_SUFFIXES[suffix]
    if suffix in _DECIMAL_SUFFIXES:
        return number * _DECIMAL_SUFFIXES[suffix]
    return number * Decimal(10) ** int(suffix[1:])  # e/E exponent


_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str) -> timedelta:
    """A duration of the API (`"1h30m"`, `"250ms"`) as a timedelta."""
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"{value!r} is not a duration such as 30s, 5m or 1h30m")
    seconds = sum(
        float(number) * _DURATION_UNIT[unit] for number, unit in _DURATION_PART.findall(value)
    )
    return timedelta(seconds=seconds)
