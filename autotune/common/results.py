"""The base of the typed results stages hand on: dataclasses that also read like the dicts they replace."""

from __future__ import annotations

import dataclasses
from enum import Enum

OMIT_NONE = {"omit_none": True}  # field metadata: leave the key out of ``as_dict`` while unset


def plain(value):
    """``value`` as JSON-able Python: results as dicts, enums as their values, tuples as lists."""
    if isinstance(value, Result):
        return value.as_dict()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(plain(k)): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class Result:
    """Mixin for result dataclasses: ``as_dict()`` for ``--json`` (field names are the JSON keys),
    and read access by key (``result["job_id"]``), as callers of the dict-returning API did."""

    def as_dict(self) -> dict:
        return {name: plain(value) for name, value in self._items()}

    def _items(self) -> list[tuple[str, object]]:
        """The fields set, in order (an ``OMIT_NONE`` field that is None is not set)."""
        return [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)
                if not (f.metadata.get("omit_none") and getattr(self, f.name) is None)]

    def __getitem__(self, key: str):
        if key not in self:
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in {name for name, _ in self._items()}

    def __setitem__(self, key: str, value) -> None:
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(key)
        setattr(self, key, value)

    def get(self, key: str, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> list[str]:
        return [name for name, _ in self._items()]
