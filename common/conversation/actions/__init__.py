"""The action framework: plugins the LLM may ask for, validated, allow-listed, authorized and recorded.

Adding a plugin is one module in :mod:`common.conversation.actions.plugins` exposing ``NAME`` and
``build(deps) -> ActionPlugin | None`` plus one line in :data:`PLUGIN_BUILDERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from common.conversation.actions.base import ActionContext, ActionPlugin, ActionResult, PluginDeps
from common.conversation.actions.plugins import create_ticket, faq_fallback, order_lookup

PluginBuilder = Callable[[PluginDeps], ActionPlugin | None]

#: Every known plugin; a builder returns None when its backend is not configured.
PLUGIN_BUILDERS: dict[str, PluginBuilder] = {
    order_lookup.NAME: order_lookup.build,
    create_ticket.NAME: create_ticket.build,
    faq_fallback.NAME: faq_fallback.build,
}

#: Plugins that change something and so run only once the customer confirms (``side_effect``); the only
#: ones a brand's ``offer`` rule may propose.
CONFIRMED_ACTIONS: frozenset[str] = frozenset(
    p.NAME for p in (order_lookup, create_ticket, faq_fallback) if p.SIDE_EFFECT
)


class ActionRegistry:
    """The plugins available in this process, by name."""

    def __init__(self, plugins: Iterable[ActionPlugin]) -> None:
        self._plugins = {p.name: p for p in plugins}

    @classmethod
    def build(cls, deps: PluginDeps) -> ActionRegistry:
        """Every plugin in :data:`PLUGIN_BUILDERS` whose backend is configured."""
        built = (builder(deps) for builder in PLUGIN_BUILDERS.values())
        return cls(p for p in built if p is not None)

    def get(self, name: str) -> ActionPlugin | None:
        """The plugin called ``name``, if available."""
        return self._plugins.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        """Available plugin names."""
        return tuple(self._plugins)


__all__ = [
    "CONFIRMED_ACTIONS",
    "PLUGIN_BUILDERS",
    "ActionContext",
    "ActionPlugin",
    "ActionRegistry",
    "ActionResult",
    "PluginDeps",
]
