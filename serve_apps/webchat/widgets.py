"""Widget tokens: resolve the public token of a web chat widget to its brand and display settings.

A widget is a ``channel_configs`` row with ``channel = webchat`` and ``external_id = <token>``. The token
is public (it sits in the embedding page); it names a brand, it does not authenticate anyone. An unknown,
malformed or disabled token is one and the same 404, so probing tokens reveals nothing about tenants.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.conversation.escalation import BrandRules
from common.db import repositories as repo
from common.domain import BrandProfile, Channel
from common.errors import NotFound, Unauthorized
from common.logging import get_logger
from serve_apps.webchat.schemas import WidgetConfigOut, WidgetDisplay

log = get_logger(__name__)

TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{8,128}$")


@dataclass(frozen=True)
class Widget:
    """A resolved widget: the brand it answers for and how it looks."""

    token: str
    brand: BrandProfile
    display: WidgetDisplay
    suggestions: tuple[str, ...] = ()

    @property
    def tenant_id(self) -> uuid.UUID:
        """The owning tenant (from the brand)."""
        return self.brand.tenant_id

    def config_out(self) -> WidgetConfigOut:
        """Public display configuration; the greeting falls back to the persona's."""
        d = self.display
        return WidgetConfigOut(
            brand_name=self.brand.name,
            title=d.title or self.brand.name,
            greeting=d.greeting or self.brand.persona.greeting,
            primary_color=d.primary_color,
            primary_text_color=d.primary_text_color,
            position=d.position,
            launcher_label=d.launcher_label,
            placeholder=d.placeholder,
            require_identity=d.require_identity,
            suggestions=list(self.suggestions),
        )

    def check_origin(self, origin: str | None) -> None:
        """Refuse a browser request from a page outside ``allowed_origins`` (when the list is set).

        Browsers always send ``Origin`` on these requests; servers and curl may omit it, and this check is
        not authentication, only a guard against other sites embedding the widget.
        """
        allowed = self.display.allowed_origins
        if allowed and origin is not None and origin not in allowed:
            raise Unauthorized("this page may not use the widget", details={"origin": origin})


async def resolve_widget(sessionmaker: async_sessionmaker[AsyncSession], token: str) -> Widget:
    """The enabled widget with this token; :class:`NotFound` otherwise."""
    if not TOKEN_PATTERN.match(token):
        raise NotFound("unknown widget")
    async with sessionmaker() as session:
        config = await repo.find_channel_config(session, channel=Channel.WEBCHAT, external_id=token)
        if config is None or not config.enabled:
            raise NotFound("unknown widget")
        brand = await repo.get_brand_profile(session, brand_id=config.brand_id)
        settings = dict(config.settings or {})
        rules = BrandRules.from_rows(await repo.list_automation_rules(session, brand_id=config.brand_id))
    if brand is None:  # pragma: no cover - the foreign key keeps the brand
        raise NotFound("unknown widget")
    display = parse_display(settings, token=token)
    return Widget(token=token, brand=brand, display=display, suggestions=rules.suggestions)


async def brand_widget(sessionmaker: async_sessionmaker[AsyncSession], brand_id: uuid.UUID) -> Widget:
    """The brand's enabled widget (the first by token) for the hosted ``/chat/{brand_id}`` page."""
    async with sessionmaker() as session:
        brand = await repo.get_brand_profile(session, brand_id=brand_id)
        config = await repo.find_brand_channel_config(session, brand_id=brand_id, channel=Channel.WEBCHAT)
        first = (config.external_id, dict(config.settings or {})) if config is not None else None
    if brand is None:
        raise repo.unknown_brand(brand_id)
    if first is None:
        raise NotFound("this brand has no web chat widget", details={"brand_id": str(brand_id)})
    token, settings = first
    return Widget(token=token, brand=brand, display=parse_display(settings, token=token))


def parse_display(settings: dict[str, Any], *, token: str) -> WidgetDisplay:
    """Display options from stored settings; an invalid option alone falls back to its default, logged.

    Field by field, so one bad color never resets ``allowed_origins`` or ``require_identity``.
    """
    valid: dict[str, Any] = {}
    for name in WidgetDisplay.model_fields:
        if name not in settings:
            continue
        try:
            WidgetDisplay.model_validate({name: settings[name]})
        except ValidationError:
            log.warning("webchat_display_invalid", token_prefix=token[:4], field=name)
            continue
        valid[name] = settings[name]
    return WidgetDisplay.model_validate(valid)
