"""Channel connections: a brand's WhatsApp numbers, Instagram accounts and Telegram bots, each with its
own credentials, under both the HTTP API (``/v1/brands/{id}/channels``, ``/v1/channels/{id}``) and the
admin CLI (``python -m serve_apps.admin channels ...``).

Credentials are write-only: they are encrypted (:mod:`common.crypto`) in the same transaction that
creates the row, and no answer, audit entry, log line or error holds them: answers name which
credentials are set, nothing more. Every connection gets its own webhook URL, so the secret that checks a
delivery is chosen by the URL before the body is read:

* WhatsApp and Instagram: ``{public_url}/webhooks/meta/{app_id}`` (one URL per Meta app: Meta sends every
  account of an app to the app's callback), checked with the app secret and the verify token given here;
* Telegram: ``{public_url}/webhooks/telegram/{connection_id}``. The platform checks the bot token with
  ``getMe``, generates the ``secret_token`` and calls ``setWebhook`` itself.

A provider account is connected once: connecting it again from the same brand replaces its credentials
(tokens expire and are rotated), from anywhere else is 409.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common import domain
from common.access.management import audit
from common.access.principal import Principal
from common.channels import telegram, whatsapp
from common.config import Settings
from common.crypto import CredentialCipher
from common.db import repositories as repo
from common.db.models import ChannelConfig
from common.db.repositories.channels import META_CHANNELS
from common.delivery.window import (
    TEMPLATE_KEY,
    TEMPLATES_KEY,
    TEMPLATES_SYNCED_KEY,
    WindowTemplate,
    template_problem,
    usable_templates,
)
from common.errors import Conflict, CredentialsUnavailable, DependencyError, Forbidden, InvalidInput, NotFound
from common.logging import get_logger

log = get_logger(__name__)

#: Provider account ids: Meta's are numeric, the simulator's have letters and '-'.
ACCOUNT_ID = r"^[A-Za-z0-9_-]{1,64}$"
SECRET = Field(min_length=1, max_length=4096)
#: ``settings`` key listing which credentials a connection holds (names only; the values are encrypted).
CREDENTIAL_NAMES_KEY = "credential_names"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _MetaConnectionIn(_Model):
    """What every Meta product's connection holds (from the app's dashboard)."""

    app_id: str = Field(pattern=ACCOUNT_ID)
    access_token: SecretStr = SECRET
    app_secret: SecretStr = SECRET
    verify_token: SecretStr = Field(min_length=8, max_length=256)


class WhatsAppConnectionIn(_MetaConnectionIn):
    """A WhatsApp Cloud API number of a Meta app (the values are in the app's WhatsApp settings)."""

    channel: Literal["whatsapp"]
    phone_number_id: str = Field(pattern=ACCOUNT_ID)
    business_account_id: str = Field(pattern=ACCOUNT_ID)


class InstagramConnectionIn(_MetaConnectionIn):
    """An Instagram professional account messaging through a Meta app."""

    channel: Literal["instagram"]
    account_id: str = Field(pattern=ACCOUNT_ID)


class TelegramConnectionIn(_Model):
    """A Telegram bot (its token from @BotFather); the webhook secret is generated, not given."""

    channel: Literal["telegram"]
    bot_token: SecretStr = Field(min_length=3, max_length=256)


ConnectionIn = Annotated[
    WhatsAppConnectionIn | InstagramConnectionIn | TelegramConnectionIn, Field(discriminator="channel")
]


class ConnectionPatch(_Model):
    """``PATCH /v1/channels/{id}``: the fields to change."""

    enabled: bool | None = None
    window_template: WindowTemplate | None = Field(
        default=None, description="WhatsApp: the approved template replies outside the 24-hour window go as"
    )
    clear_window_template: bool = False


class ConnectionOut(_Model):
    """A connection as the API shows it: which credentials it has, never their values."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    brand_id: uuid.UUID
    channel: domain.Channel
    external_id: str
    app_id: str | None
    enabled: bool
    credentials: list[str] = Field(description="Names of the credentials set (values are write-only)")
    webhook_path: str | None = Field(description="Where the provider must deliver (None: web chat)")
    webhook_url: str | None = Field(description="webhook_path on CHANNELS__PUBLIC_URL, when that is set")
    webhook_registered: bool | None = Field(
        default=None, description="Telegram: whether setWebhook was called (needs CHANNELS__PUBLIC_URL)"
    )
    settings: dict[str, Any]
    created_at: datetime


def webhook_path(row: ChannelConfig) -> str | None:
    """The path a connection's provider delivers to."""
    if row.channel == domain.Channel.TELEGRAM.value:
        return (
            f"/webhooks/telegram/{row.id}"
            if row.credentials is not None
            else f"/webhooks/telegram/{row.external_id}"
        )
    if row.channel in META_CHANNELS:
        if row.app_id is not None and row.credentials is not None:
            return f"/webhooks/meta/{row.app_id}"
        return f"/webhooks/{row.channel}"
    return None


class Connections:
    """Connect, list, enable/disable and remove channel connections; rotate the encryption key."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._settings = settings
        self._cipher = CredentialCipher.from_settings(settings.secrets)
        self._transport = transport

    def out(self, row: ChannelConfig, *, registered: bool | None = None) -> ConnectionOut:
        """API view of a connection."""
        path = webhook_path(row)
        public = self._settings.channels.public_url
        # Names are kept beside the token, so listing needs no key (and works while one is missing).
        names = (
            list((row.settings or {}).get(CREDENTIAL_NAMES_KEY, [])) if row.credentials is not None else []
        )
        return ConnectionOut(
            id=row.id,
            tenant_id=row.tenant_id,
            brand_id=row.brand_id,
            channel=domain.Channel(row.channel),
            external_id=row.external_id,
            app_id=row.app_id,
            enabled=row.enabled,
            credentials=names,
            webhook_path=path,
            webhook_url=f"{public.rstrip('/')}{path}" if public and path else None,
            webhook_registered=registered,
            settings={k: v for k, v in (row.settings or {}).items() if k != CREDENTIAL_NAMES_KEY},
            created_at=row.created_at,
        )

    async def connect(
        self, actor: Principal, tenant_id: uuid.UUID, brand_id: uuid.UUID, body: ConnectionIn
    ) -> ConnectionOut:
        """Connect a provider account to one of the tenant's brands (or replace its credentials)."""
        if not self._cipher.configured:
            raise InvalidInput("SECRETS__ENCRYPTION_KEYS is not set: credentials cannot be stored")
        if isinstance(body, TelegramConnectionIn):
            return await self._connect_telegram(actor, tenant_id, brand_id, body)
        if isinstance(body, WhatsAppConnectionIn):
            external, extra = body.phone_number_id, {"business_account_id": body.business_account_id}
        else:
            external, extra = body.account_id, {}
        values = {
            "access_token": body.access_token,
            "app_secret": body.app_secret,
            "verify_token": body.verify_token,
        }
        async with self._sessionmaker() as session:
            row = await self._put(
                session,
                actor,
                tenant_id,
                brand_id,
                domain.Channel(body.channel),
                external,
                values,
                body.app_id,
                extra,
            )
            out = self.out(row)
            await session.commit()
        return out

    async def _connect_telegram(
        self, actor: Principal, tenant_id: uuid.UUID, brand_id: uuid.UUID, body: TelegramConnectionIn
    ) -> ConnectionOut:
        token = body.bot_token.get_secret_value()
        bot_id = telegram.bot_id_of(token)
        channels = self._settings.channels
        async with httpx.AsyncClient(transport=self._transport, timeout=10.0) as client:
            me = await telegram.bot_api(
                client, api_url=channels.telegram_api_url, token=token, method="getMe", body={}
            )
            if not isinstance(me, dict) or str(me.get("id")) != bot_id:
                raise InvalidInput("Telegram's getMe does not match the bot token")
            values: dict[str, SecretStr | str] = {
                "bot_token": body.bot_token,
                "secret_token": secrets.token_urlsafe(32),
            }
            extra = {"username": str(me.get("username", ""))[:64]}
            async with self._sessionmaker() as session:
                row = await self._put(
                    session, actor, tenant_id, brand_id, domain.Channel.TELEGRAM, bot_id, values, None, extra
                )
                registered = False
                public = channels.public_url
                if public:
                    if self._settings.is_production and not public.startswith("https://"):
                        raise InvalidInput("Telegram only delivers webhooks to https:// URLs")
                    # Registered before the commit: if Telegram refuses, no connection is left half made.
                    await telegram.bot_api(
                        client,
                        api_url=channels.telegram_api_url,
                        token=token,
                        method="setWebhook",
                        body={
                            "url": f"{public.rstrip('/')}/webhooks/telegram/{row.id}",
                            "secret_token": values["secret_token"],
                            "allowed_updates": ["message"],
                        },
                    )
                    registered = True
                out = self.out(row, registered=registered)
                await session.commit()
        return out

    async def _put(
        self,
        session: AsyncSession,
        actor: Principal,
        tenant_id: uuid.UUID,
        brand_id: uuid.UUID,
        channel: domain.Channel,
        external_id: str,
        values: Mapping[str, SecretStr | str],
        app_id: str | None,
        extra: dict[str, Any],
    ) -> ChannelConfig:
        await repo.require_brand(session, brand_id=brand_id, tenant_id=self._tenant(actor, tenant_id))
        sealed = self._cipher.encrypt(values)
        extra = {**extra, CREDENTIAL_NAMES_KEY: sorted(values)}
        existing = await repo.find_channel_config(session, channel=channel, external_id=external_id)
        if existing is not None:
            if existing.brand_id != brand_id:
                raise Conflict("this account is already connected", details={"external_id": external_id})
            existing.credentials, existing.app_id = sealed, app_id
            existing.settings = {**(existing.settings or {}), **extra}
            await session.flush()
            await audit(
                session,
                actor,
                tenant_id,
                "channel.credentials_replace",
                "channel",
                existing.id,
                after=self.out(existing),
            )
            return existing
        row = await repo.insert_channel_config(
            session,
            tenant_id=tenant_id,
            brand_id=brand_id,
            channel=channel,
            external_id=external_id,
            settings=extra,
            credentials=sealed,
            app_id=app_id,
        )
        if row is None:  # connected a moment ago by a concurrent call
            raise Conflict("this account is already connected", details={"external_id": external_id})
        await audit(session, actor, tenant_id, "channel.connect", "channel", row.id, after=self.out(row))
        return row

    async def ensure_default(
        self,
        actor: Principal,
        tenant_id: uuid.UUID,
        brand_id: uuid.UUID,
        channel: domain.Channel,
        external_id: str,
        settings: dict[str, Any],
    ) -> ConnectionOut:
        """Route an account to a brand on the deployment's ``CHANNELS__*`` credentials (idempotent).

        Operator only (``make run``'s demo seed, a single-connection deploy, web chat widgets): a tenant
        must bring its own credentials, or it could claim accounts verified by the platform's secret.
        """
        if actor.tenant_id is not None:
            raise Forbidden("connections on the deployment's credentials are made by the operator")
        async with self._sessionmaker() as session:
            await repo.require_brand(session, brand_id=brand_id, tenant_id=tenant_id)
            existing = await repo.find_channel_config(session, channel=channel, external_id=external_id)
            if existing is not None and existing.brand_id != brand_id:
                raise Conflict("this account is already connected", details={"external_id": external_id})
            if existing is not None:
                existing.settings = {**(existing.settings or {}), **settings}
                await session.flush()
                row = existing
            else:
                inserted = await repo.insert_channel_config(
                    session,
                    tenant_id=tenant_id,
                    brand_id=brand_id,
                    channel=channel,
                    external_id=external_id,
                    settings=settings,
                    credentials=None,
                    app_id=None,
                )
                if inserted is None:
                    raise Conflict("this account is already connected", details={"external_id": external_id})
                row = inserted
                await audit(
                    session, actor, tenant_id, "channel.connect", "channel", row.id, after=self.out(row)
                )
            out = self.out(row)
            await session.commit()
        return out

    async def list(self, actor: Principal, tenant_id: uuid.UUID, brand_id: uuid.UUID) -> list[ConnectionOut]:
        """The brand's connections (web chat widgets included)."""
        async with self._sessionmaker() as session:
            await repo.require_brand(session, brand_id=brand_id, tenant_id=self._tenant(actor, tenant_id))
            rows = await repo.list_channel_configs(session, tenant_id=tenant_id, brand_id=brand_id)
            return [self.out(r) for r in rows]

    async def get(self, actor: Principal, tenant_id: uuid.UUID, connection_id: uuid.UUID) -> ConnectionOut:
        """One of the tenant's connections; 404 for any other."""
        async with self._sessionmaker() as session:
            return self.out(await self._row(session, actor, tenant_id, connection_id))

    async def update(
        self, actor: Principal, tenant_id: uuid.UUID, connection_id: uuid.UUID, patch: ConnectionPatch
    ) -> ConnectionOut:
        """Enable or disable a connection (a disabled one is acknowledged but not answered), or set its
        WhatsApp out-of-window template."""
        async with self._sessionmaker() as session:
            row = await self._row(session, actor, tenant_id, connection_id)
            before = self.out(row)
            if patch.enabled is not None:
                row.enabled = patch.enabled
            if patch.window_template is not None or patch.clear_window_template:
                if row.channel != domain.Channel.WHATSAPP.value:
                    raise InvalidInput("a window template is for WhatsApp connections")
                extra = dict(row.settings or {})
                extra.pop(TEMPLATE_KEY, None)
                if patch.window_template is not None:
                    problem = template_problem(extra, patch.window_template)
                    if problem is not None:
                        raise InvalidInput(
                            problem,
                            details={
                                "usable": [f"{t['name']}:{t['language']}" for t in usable_templates(extra)]
                            },
                        )
                    extra[TEMPLATE_KEY] = patch.window_template.model_dump()
                row.settings = extra
            await session.flush()
            out = self.out(row)
            await audit(
                session,
                actor,
                tenant_id,
                "channel.update",
                "channel",
                connection_id,
                before=before,
                after=out,
            )
            await session.commit()
        return out

    async def sync_templates(
        self, actor: Principal, tenant_id: uuid.UUID, connection_id: uuid.UUID
    ) -> ConnectionOut:
        """Read a WhatsApp connection's message templates from its business account and keep them with
        the connection (``settings.templates``): the window template is then checked against them when
        it is set, and before each send."""
        async with self._sessionmaker() as session:
            row = await self._row(session, actor, tenant_id, connection_id)
            if row.channel != domain.Channel.WHATSAPP.value:
                raise InvalidInput("templates are synced for WhatsApp connections")
            waba = (row.settings or {}).get("business_account_id")
            if not isinstance(waba, str) or not waba:
                raise InvalidInput("the connection has no business_account_id: connect it again with one")
            route = repo.route_of(row, self._cipher)
            token = route.secret_or("access_token", self._settings.channels.meta_access_token)
            if not token:
                raise InvalidInput("the connection has no access token to read its templates with")
            channels = self._settings.channels
            async with httpx.AsyncClient(transport=self._transport, timeout=10.0) as client:
                templates = await whatsapp.list_templates(
                    client,
                    graph_url=channels.meta_graph_url,
                    version=channels.meta_graph_version,
                    waba_id=waba,
                    token=token,
                )
            before = self.out(row)
            row.settings = {
                **(row.settings or {}),
                TEMPLATES_KEY: templates,
                TEMPLATES_SYNCED_KEY: datetime.now(UTC).isoformat(),
            }
            await session.flush()
            out = self.out(row)
            await audit(
                session,
                actor,
                tenant_id,
                "channel.templates_sync",
                "channel",
                connection_id,
                before=before,
                after=out,
            )
            await session.commit()
        return out

    async def delete(self, actor: Principal, tenant_id: uuid.UUID, connection_id: uuid.UUID) -> ConnectionOut:
        """Remove a connection and its credentials; the brand's conversations stay."""
        async with self._sessionmaker() as session:
            row = await self._row(session, actor, tenant_id, connection_id)
            out = self.out(row)
            if row.channel == domain.Channel.TELEGRAM.value and row.credentials is not None:
                await self._unregister_telegram(row.credentials)
            await repo.delete_channel_config(session, connection_id=connection_id)
            await audit(session, actor, tenant_id, "channel.delete", "channel", connection_id, before=out)
            await session.commit()
        return out

    async def _unregister_telegram(self, sealed: str) -> None:
        """Best effort ``deleteWebhook``: Telegram stops delivering to a URL that now answers 401. A
        failure (Telegram unreachable, token revoked, the key gone) does not keep the connection: it is
        logged, and removing a connection always works."""
        try:
            token = self._cipher.decrypt(sealed).get("bot_token")
        except CredentialsUnavailable as exc:
            log.warning("telegram_delete_webhook_skipped", error=exc.message)
            return
        if token is None:
            return
        try:
            async with httpx.AsyncClient(transport=self._transport, timeout=10.0) as client:
                await telegram.bot_api(
                    client,
                    api_url=self._settings.channels.telegram_api_url,
                    token=token.get_secret_value(),
                    method="deleteWebhook",
                    body={},
                )
        except (InvalidInput, DependencyError) as exc:
            log.warning("telegram_delete_webhook_failed", error=exc.message)

    async def rotate_keys(self, actor: Principal) -> int:
        """Re-encrypt every connection's credentials with the first key (operator); how many rows.

        One transaction with the rows locked: replicas still decrypt both old and new tokens meanwhile,
        because every key in ``SECRETS__ENCRYPTION_KEYS`` decrypts.
        """
        async with self._sessionmaker() as session:
            rows = await repo.encrypted_channel_configs(session)
            for row in rows:
                if row.credentials is not None:  # always: selected for having them
                    row.credentials = self._cipher.rotate(row.credentials)
            await audit(
                session, actor, None, "secrets.rotate", "channel_configs", "*", after={"rows": len(rows)}
            )
            await session.commit()
        return len(rows)

    async def _row(
        self, session: AsyncSession, actor: Principal, tenant_id: uuid.UUID, connection_id: uuid.UUID
    ) -> ChannelConfig:
        row = await repo.get_channel_config(
            session, connection_id=connection_id, tenant_id=self._tenant(actor, tenant_id)
        )
        if row is None:
            raise NotFound("unknown channel connection", details={"connection_id": str(connection_id)})
        return row

    @staticmethod
    def _tenant(actor: Principal, tenant_id: uuid.UUID) -> uuid.UUID:
        # A tenant's principal only names its own tenant (the routes pass it); the operator any.
        if actor.tenant_id is not None and actor.tenant_id != tenant_id:
            raise NotFound("unknown tenant", details={"tenant_id": str(tenant_id)})
        return tenant_id
