"""Settings that nest by concern, built from flat keywords once.

A settings object (:class:`~onnx_am.engine.config.AMConfig`,
:class:`~onnx_am.audit.options.AnalyzeOptions`) holds a few small groups, each a frozen
dataclass declared with :func:`group`. :func:`build` routes flat keywords (``steps=64``,
``restarts=3``) to the group that declares them, so a caller writes what it means without
spelling the nesting, and the defaults stay where each group declares them;
:func:`replaced` does the same for a copy; :func:`flat` is the inverse view.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field, fields, is_dataclass, replace
from typing import Any, TypeVar

#: ``field(metadata=...)`` key that marks a field as a nested settings group.
GROUP = "onnx_am.group"
#: The most fields one settings object (or group) may have: readable at a glance.
MAX_FIELDS = 12

T = TypeVar("T")


def group(cls: type) -> Any:
    """A dataclass field holding the settings group ``cls`` (its defaults by default)."""
    return field(default_factory=cls, metadata={GROUP: True})


def groups(cls: type) -> dict[str, type]:
    """``{field name: group class}`` of the groups ``cls`` declares."""
    return {f.name: f.default_factory for f in fields(cls) if f.metadata.get(GROUP)}


def flat_names(cls: type) -> dict[str, str | None]:
    """``{flat keyword: group field}`` for ``cls`` (``None``: a field of ``cls`` itself).

    Raises:
        TypeError: two groups declare the same name (a flat keyword would be ambiguous).
    """
    names: dict[str, str | None] = {}
    nested = groups(cls)
    for f in fields(cls):
        inner = [g.name for g in fields(nested[f.name])] if f.name in nested else [f.name]
        for name in inner:
            if name in names:
                raise TypeError(f"{cls.__name__}: {name!r} is declared twice")
            names[name] = f.name if f.name in nested else None
    return names


def build(cls: type[T], flat_values: Mapping[str, Any]) -> T:
    """``cls`` from flat keywords; a group may also be given whole by its field name.

    Raises:
        TypeError: a keyword that ``cls`` and its groups do not declare.
    """
    return replaced(cls(), **flat_values)


def replaced(settings: T, **flat_values: Any) -> T:
    """A copy of ``settings`` with flat keywords (or whole groups) changed.

    Raises:
        TypeError: a keyword that the settings and their groups do not declare.
    """
    cls = type(settings)
    names = flat_names(cls)
    nested = groups(cls)
    top: dict[str, Any] = {}
    inner: dict[str, dict[str, Any]] = {}
    for name, value in flat_values.items():
        if name in nested:
            top[name] = value
        elif name in names:
            if names[name] is None:
                top[name] = value
            else:
                inner.setdefault(names[name], {})[name] = value
        else:
            raise TypeError(f"{cls.__name__} has no setting {name!r}")
    for name, values in inner.items():
        top[name] = replace(top.get(name, getattr(settings, name)), **values)
    return replace(settings, **top)


def flat(settings: Any) -> dict[str, Any]:
    """``{flat keyword: value}`` of ``settings`` and its groups (the inverse of :func:`build`)."""
    nested = groups(type(settings))
    values: dict[str, Any] = {}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if f.name in nested:
            values.update({g.name: getattr(value, g.name) for g in fields(value)})
        else:
            values[f.name] = value
    return values


def is_settings(cls: type) -> bool:
    """Whether ``cls`` is a dataclass of settings (its name ends in Settings, Options or
    Config)."""
    return is_dataclass(cls) and cls.__name__.endswith(("Settings", "Options", "Config"))


__all__ = ["GROUP", "MAX_FIELDS", "build", "flat", "flat_names", "group", "groups", "replaced"]
