"""The rectifier rules, by name; a new rectifier kind is one file with ``@register_rule``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from onnx_am.errors import PassError
from onnx_am.passes.base import RectifierRule

#: rule name -> rule instance, in registration order.
RULES: dict[str, RectifierRule] = {}


def register_rule(name: str) -> Callable[[type[RectifierRule]], type[RectifierRule]]:
    """Class decorator: register a :class:`RectifierRule` subclass under ``name``.

    Raises:
        PassError: ``name`` is already registered, or the class names no ``op_type``.
    """

    def decorate(cls: type[RectifierRule]) -> type[RectifierRule]:
        if name in RULES:
            raise PassError(
                f"rectifier rule {name!r} is already registered ({type(RULES[name]).__name__})"
            )
        if not cls.op_type:
            raise PassError(f"rectifier rule {name!r} ({cls.__name__}) names no ONNX op_type")
        cls.name = name
        RULES[name] = cls()
        return cls

    return decorate


def select_rules(names: Sequence[str | RectifierRule] | None = None) -> list[RectifierRule]:
    """The rules to apply: the default ones (every rectifier rule; not the opt-in smooth
    rules), or those named (or given) in ``names``.

    Raises:
        PassError: a name is not registered.
    """
    if names is None:
        return [rule for rule in RULES.values() if rule.default]
    selected = []
    for entry in names:
        if isinstance(entry, RectifierRule):
            selected.append(entry)
        elif entry in RULES:
            selected.append(RULES[entry])
        else:
            raise PassError(f"unknown rectifier rule {entry!r}; choose from {', '.join(RULES)}")
    return selected
