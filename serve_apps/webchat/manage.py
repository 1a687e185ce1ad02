"""Web chat widgets of a brand, managed through the API (``/v1/brands/{id}/widgets``, ``/v1/widgets/{id}``).

A widget is a ``channel_configs`` row (``channel = webchat``, ``external_id`` = its public token, display
options in ``settings``). The platform generates the token (128 random bits): it is public, it sits in
the embedding page. The widget's **identity key** (to sign visitor identities,
:mod:`serve_apps.webchat.identity`) is derived from ``CHANNELS__WEBCHAT_IDENTITY_SECRET`` and the token;
it is returned once, when the widget is created. To change it, create a new widget and delete the old
one. ``allowed_origins`` restricts which sites may call the widget's API (checked on every call) and
which may frame the hosted chat page (``Content-Security-Policy: frame-ancestors``).
"""

from __future__ import annotations

import re
import secrets
import uuid
from typing import Any

from pydantic import ConfigDict, Field, field_validator
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.access.management import audit
from common.access.principal import Principal
from common.config import Settings
from common.db import repositories as repo
from common.db.models import ChannelConfig
from common.domain import Channel
from common.errors import Conflict, NotFound
from serve_apps.webchat.identity import widget_identity_key
from serve_apps.webchat.schemas import WidgetDisplay

#: ``scheme://host[:port]``, what browsers send in ``Origin``.
ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$")


class WidgetIn(WidgetDisplay):
    """``POST /v1/brands/{id}/widgets`` and ``PATCH /v1/widgets/{id}`` (the display options, strictly)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        bad = [o for o in value if not ORIGIN.fullmatch(o)]
        if bad:
            raise ValueError(f"origins are scheme://host[:port] without a path: {', '.join(bad[:5])}")
        return sorted(set(value))


class WidgetOut(WidgetDisplay):
    """A widget as the API shows it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: uuid.UUID
    brand_id: uuid.UUID
    token: str
    enabled: bool
    embed: str = Field(description="The script tag to put in the brand's pages")


class CreatedWidgetOut(WidgetOut):
    """The answer to a widget's creation: the only time its identity key is shown."""

    identity_key: str | None = Field(
        description="Hex HMAC key to sign visitor identities (None: CHANNELS__WEBCHAT_IDENTITY_SECRET unset)"
    )


class Widgets:
    """Create, list, change and remove a brand's widgets."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings

    def out(self, row: ChannelConfig) -> WidgetOut:
        """API view of a widget."""
        display = WidgetDisplay.model_validate(
            {k: v for k, v in (row.settings or {}).items() if k in WidgetDisplay.model_fields}
        )
        base = (self._settings.channels.public_url or "").rstrip("/")
        embed = f'<script src="{base}/widget.js" data-token="{row.external_id}" async></script>'
        return WidgetOut(
            **display.model_dump(),
            id=row.id,
            brand_id=row.brand_id,
            token=row.external_id,
            enabled=row.enabled,
            embed=embed,
        )

    async def create(
        self, actor: Principal, tenant_id: uuid.UUID, brand_id: uuid.UUID, body: WidgetIn
    ) -> CreatedWidgetOut:
        """A new widget with a generated token."""
        token = secrets.token_urlsafe(16)
        async with self._sessionmaker() as session:
            await repo.require_brand(session, brand_id=brand_id, tenant_id=tenant_id)
            row = await repo.insert_channel_config(
                session,
                tenant_id=tenant_id,
                brand_id=brand_id,
                channel=Channel.WEBCHAT,
                external_id=token,
                settings=_settings(body),
                credentials=None,
                app_id=None,
            )
            if row is None:  # pragma: no cover - 128 random bits do not collide
                raise Conflict("widget token taken; try again")
            row.enabled = body.enabled
            await session.flush()
            out = self.out(row)
            await audit(session, actor, tenant_id, "widget.create", "widget", row.id, after=out)
            await session.commit()
        secret = self._settings.channels.webchat_identity_secret
        key = widget_identity_key(secret, token).hex() if secret is not None else None
        return CreatedWidgetOut(**out.model_dump(), identity_key=key)

    async def list_widgets(self, tenant_id: uuid.UUID, brand_id: uuid.UUID) -> list[WidgetOut]:
        """The brand's widgets."""
        async with self._sessionmaker() as session:
            await repo.require_brand(session, brand_id=brand_id, tenant_id=tenant_id)
            rows = await repo.list_channel_configs(session, tenant_id=tenant_id, brand_id=brand_id)
        return [self.out(r) for r in rows if r.channel == Channel.WEBCHAT.value]

    async def get(self, tenant_id: uuid.UUID, widget_id: uuid.UUID) -> WidgetOut:
        """One of the tenant's widgets."""
        async with self._sessionmaker() as session:
            return self.out(await self._row(session, tenant_id, widget_id))

    async def update(
        self, actor: Principal, tenant_id: uuid.UUID, widget_id: uuid.UUID, body: WidgetIn
    ) -> WidgetOut:
        """Replace the display options (and ``enabled``); the token stays."""
        async with self._sessionmaker() as session:
            row = await self._row(session, tenant_id, widget_id)
            before = self.out(row)
            row.settings = {**(row.settings or {}), **_settings(body)}
            row.enabled = body.enabled
            await session.flush()
            out = self.out(row)
            await audit(
                session, actor, tenant_id, "widget.update", "widget", widget_id, before=before, after=out
            )
            await session.commit()
        return out

    async def delete(self, actor: Principal, tenant_id: uuid.UUID, widget_id: uuid.UUID) -> WidgetOut:
        """Remove a widget: its token stops working (the brand's conversations stay)."""
        async with self._sessionmaker() as session:
            row = await self._row(session, tenant_id, widget_id)
            out = self.out(row)
            await repo.delete_channel_config(session, connection_id=widget_id)
            await audit(session, actor, tenant_id, "widget.delete", "widget", widget_id, before=out)
            await session.commit()
        return out

    @staticmethod
    async def _row(session: AsyncSession, tenant_id: uuid.UUID, widget_id: uuid.UUID) -> ChannelConfig:
        row = await repo.get_channel_config(session, connection_id=widget_id, tenant_id=tenant_id)
        if row is None or row.channel != Channel.WEBCHAT.value:
            raise NotFound("unknown widget", details={"widget_id": str(widget_id)})
        return row


def _settings(body: WidgetIn) -> dict[str, Any]:
    return body.model_dump(mode="json", exclude={"enabled"})
