"""Stored message (a JSON object) -> a provider's message dataclass, for the declarations."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any


def dataclass_adapter(cls: type, renames: Mapping[str, str | None]) -> Callable[
        [Mapping[str, Any]], Any]:
    """Build `cls` from a stored JSON object (keys renamed; None drops the key); an unknown
    key is a ValueError naming it."""
    names = {f.name for f in dataclasses.fields(cls)}
    tuples = {f.name for f in dataclasses.fields(cls) if "tuple" in str(f.type)}

    def adapt(payload: Mapping[str, Any]) -> Any:
        kwargs: dict[str, Any] = {}
        for key, value in payload.items():
            target = renames.get(key, key)
            if target is None:
                continue
            if target not in names:
                raise ValueError(f"{key}: not a field of {cls.__name__}")
            kwargs[target] = tuple(value) if isinstance(value, list) and target in tuples \
                else value
        return cls(**kwargs)

    return adapt


def lazy(module: str, cls_name: str, renames: Mapping[str, str | None]) -> Callable[
        [Mapping[str, Any]], Any]:
    """dataclass_adapter for `module.cls_name`, imported on first use."""
    built: list[Callable[[Mapping[str, Any]], Any]] = []

    def adapt(payload: Mapping[str, Any]) -> Any:
        if not built:
            import importlib

            built.append(dataclass_adapter(getattr(importlib.import_module(module), cls_name),
                                           renames))
        return built[0](payload)

    return adapt
