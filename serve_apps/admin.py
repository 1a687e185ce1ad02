"""Operator commands: ``python -m serve_apps.admin <command>`` (see docs/RUNBOOK.md, docs/SECURITY.md).

Management (the same service as the management API; JSON on stdout; needs DATABASE_URL, or the
``DATA_DIR/local.env`` that ``make run`` writes):

    tenants create --slug S --name N [--id UUID]   a tenant and its first admin key (shown once)
    tenants list
    brands create --tenant T --slug S --name N [--persona-file persona.yaml] [--id UUID]
    brands list --tenant T
    keys create --tenant T --name N --scope SCOPE [--scope ...] [--expires-in-days D]
                                 [--token-file PATH]  (the token goes to PATH, mode 600, not stdout)
    keys list --tenant T
    keys revoke --tenant T --key KEY_ID
    audit --tenant T [--limit N]
    channels connect-whatsapp --tenant T --brand B --phone-number-id P --business-account-id W --app-id A
                              --access-token-file F --app-secret-file F --verify-token-file F
    channels connect-instagram --tenant T --brand B --account-id I --app-id A
                              --access-token-file F --app-secret-file F --verify-token-file F
    channels connect-telegram --tenant T --brand B --bot-token-file F
                                 (checks the token with getMe, generates the webhook secret and calls
                                 setWebhook with CHANNELS__PUBLIC_URL/webhooks/telegram/{connection id})
    channels list --tenant T --brand B
    channels enable|disable|delete --tenant T --connection C
    channels sync-templates --tenant T --connection C   (WhatsApp: read the account's message templates)
    agents create --tenant T --email E --display-name N [--role agent|supervisor|admin] [--brand B ...]
                  --password-file F      an agent account (signs in at /agent); --brand limits it
    agents list --tenant T
    agents disable|enable --tenant T --agent A   (disabling signs it out everywhere)
    rotate-keys                  re-encrypt every connection's credentials with the first key of
                                 SECRETS__ENCRYPTION_KEYS (put the new key first, run this, drop the old)
    generate-key                 print a new key for SECRETS__ENCRYPTION_KEYS

Credentials are read from files (``-`` is standard input), never from arguments (which ``ps`` shows),
and never printed: answers name the credentials that are set.

Streams and vectors:

    streams                      lengths, consumer groups, pending and lag of every project stream
    dead-letters STREAM          list entries of STREAM-dead with their reasons
    replay-dead STREAM [--limit] move entries of STREAM-dead back onto STREAM (oldest first)
    rebuild-vectors --tenant T --brand B
                                 re-embed a brand's chunks from Postgres (the system of record) and
                                 upsert them into Qdrant (same deterministic ids: idempotent), then build
                                 the embedded engine's index. Without QDRANT_URL, stop the app first
                                 (the embedded engine locks its directory).

Streams are the logical names (``inbound``, ``outbound``, ``ingest-jobs``); keys are namespaced with
``REDIS__KEY_PREFIX``. Replaying is safe because every consumer is idempotent (inbound messages by
their stored id, outbound replies by their delivery record, ingestion jobs by deterministic chunk ids).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import redis.asyncio as aioredis

from common.config import Settings, get_settings
from common.logging import get_logger
from common.streams import connect, stream_key

if TYPE_CHECKING:  # the commands import these lazily: `streams` needs neither torch nor Qdrant
    from common.knowledge.embeddings import Embedder
    from common.knowledge.vectorstore import VectorStore
    from common.schemas import ChunkRecord

log = get_logger(__name__)

DEAD_SUFFIX = "-dead"
KNOWN_STREAMS = ("inbound", "outbound", "ingest-jobs")


async def stream_report(client: aioredis.Redis, settings: Settings) -> list[dict[str, Any]]:
    """One row per existing stream (dead-letter streams included) with its groups' pending and lag."""
    rows: list[dict[str, Any]] = []
    for name in (*KNOWN_STREAMS, *(s + DEAD_SUFFIX for s in KNOWN_STREAMS)):
        key = stream_key(settings.redis, name)
        if not await client.exists(key):
            continue
        groups = await client.xinfo_groups(key)
        rows.append(
            {
                "stream": name,
                "length": await client.xlen(key),
                "groups": [
                    {
                        "name": g["name"],
                        "pending": g["pending"],
                        "lag": g.get("lag"),
                        "consumers": g["consumers"],
                    }
                    for g in groups
                ],
            }
        )
    return rows


async def _xrange(client: aioredis.Redis, key: str, limit: int) -> list[tuple[str, dict[str, str]]]:
    # The client decodes responses (decode_responses=True), so entries are str, not bytes.
    return cast(list[tuple[str, dict[str, str]]], await client.xrange(key, count=limit))


async def dead_letters(
    client: aioredis.Redis, settings: Settings, stream: str, limit: int
) -> list[dict[str, Any]]:
    """Entries of ``stream``'s dead-letter stream, oldest first."""
    key = stream_key(settings.redis, stream + DEAD_SUFFIX)
    entries = await _xrange(client, key, limit)
    return [{"id": entry_id, **fields} for entry_id, fields in entries]


async def replay_dead(client: aioredis.Redis, settings: Settings, stream: str, limit: int) -> int:
    """Move up to ``limit`` dead letters back onto ``stream``; returns how many moved.

    Each entry is re-added before it is deleted from the dead-letter stream, so a crash in between
    duplicates (harmless: consumers are idempotent) rather than loses.
    """
    dead_key = stream_key(settings.redis, stream + DEAD_SUFFIX)
    live_key = stream_key(settings.redis, stream)
    moved = 0
    for entry_id, fields in await _xrange(client, dead_key, limit):
        if "data" not in fields:
            continue
        await client.xadd(live_key, {"data": fields["data"]})
        await client.xdel(dead_key, entry_id)
        moved += 1
    return moved


async def rebuild_vectors(settings: Settings, *, tenant_id: uuid.UUID, brand_id: uuid.UUID) -> int:
    """Re-embed every chunk Postgres holds for the brand and upsert it; returns the number of chunks."""
    return await _rebuild(settings, settings.database.url or "", brands=[(tenant_id, brand_id)])


async def migrate_local_vectors(settings: Settings, *, database_url: str) -> int | None:
    """On the first start of the embedded Qdrant Edge engine over a qdrant-client local-mode directory,
    rebuild every brand's vectors from Postgres; returns the chunks rebuilt, ``None`` when not needed.

    The old files are only read to notice them (Edge cannot open them); nothing is deleted. A marker in
    the Edge directory makes later starts skip this; an interrupted rebuild runs again in full
    (deterministic ids: idempotent).
    """
    from common.knowledge import vectorstore

    if not vectorstore.needs_local_migration(settings):
        return None
    brands = await _brands_with_chunks(database_url)
    chunks = await _rebuild(settings, database_url, brands=brands)
    vectorstore.mark_local_migration_done(settings, chunks=chunks)
    log.info(
        "vectorstore.migrated",
        message="rebuilt the vectors of an old qdrant-client local-mode directory from Postgres into "
        "Qdrant Edge; the old files are no longer read and may be deleted",
        path=str(settings.qdrant_path),
        brands=len(brands),
        chunks=chunks,
    )
    return chunks


async def _brands_with_chunks(database_url: str) -> list[tuple[uuid.UUID, uuid.UUID]]:
    from sqlalchemy import select

    from common.db.models import KnowledgeChunk
    from common.db.session import make_engine, make_sessionmaker

    engine = make_engine(database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            rows = await session.execute(select(KnowledgeChunk.tenant_id, KnowledgeChunk.brand_id).distinct())
            return sorted((tenant, brand) for tenant, brand in rows.tuples())
    finally:
        await engine.dispose()


async def _rebuild(
    settings: Settings, database_url: str, *, brands: list[tuple[uuid.UUID, uuid.UUID]]
) -> int:
    """Re-embed and upsert the chunks of ``brands``, then build the index: this process owns the store."""
    from common.knowledge.embeddings import build_embedder
    from common.knowledge.vectorstore import VectorStore

    records = [r for tenant, brand in brands for r in await _brand_records(database_url, tenant, brand)]
    if not records:
        return 0
    embedder = build_embedder(settings.embeddings)
    store = VectorStore(settings)
    try:
        store.ensure_collection(embedder.model_name, embedder.dimension)
        _reembed(store, embedder, records)
        # Nothing serves from this process: the blocking HNSW build belongs here, not in a replica.
        store.optimize()
    finally:
        store.close()
    return len(records)


async def _brand_records(database_url: str, tenant_id: uuid.UUID, brand_id: uuid.UUID) -> list[ChunkRecord]:
    from sqlalchemy import select

    from common.db import repositories as repo
    from common.db.models import KnowledgeSource
    from common.db.session import make_engine, make_sessionmaker
    from common.schemas import ChunkRecord

    engine = make_engine(database_url, pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            chunks = await repo.list_chunks(session, tenant_id=tenant_id, brand_id=brand_id)
            sources = {
                s.id: s.uri
                for s in await session.scalars(
                    select(KnowledgeSource).where(KnowledgeSource.brand_id == brand_id)
                )
            }
    finally:
        await engine.dispose()
    return [
        ChunkRecord(
            chunk_id=c.id,
            tenant_id=c.tenant_id,
            brand_id=c.brand_id,
            source=sources[c.source_id],
            heading_path=c.heading_path,
            ordinal=c.ordinal,
            text=c.text,
            content_hash=c.content_hash,
        )
        for c in chunks
    ]


def _reembed(store: VectorStore, embedder: Embedder, records: list[ChunkRecord]) -> None:
    from common.knowledge.chunking import embedding_text

    for start in range(0, len(records), 64):
        batch = records[start : start + 64]
        store.upsert(
            batch, embedder.embed([embedding_text(heading_path=r.heading_path, text=r.text) for r in batch])
        )


MANAGEMENT_COMMANDS = ("tenants", "brands", "keys", "audit", "channels", "agents", "rotate-keys")


def local_settings(settings: Settings) -> Settings:
    """``settings`` with what ``make run`` wrote into ``DATA_DIR/local.env`` (embedded Postgres URL, local
    encryption key, public and simulator URLs) for every variable the environment leaves unset."""
    path = settings.data_dir / "local.env"
    if not path.is_file():
        return settings
    from dotenv import dotenv_values

    for name, value in dotenv_values(path).items():
        if value is not None:
            os.environ.setdefault(name, value)
    get_settings.cache_clear()
    return get_settings()


def read_secret(path: str) -> str:
    """A credential from a file (``-``: standard input), surrounding whitespace removed."""
    from common.errors import InvalidInput

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    if not text.strip():
        raise InvalidInput(f"{path} is empty")
    return text.strip()


async def _manage(opts: argparse.Namespace, settings: Settings, database_url: str) -> Any:
    from common.access import management as m
    from common.access.connections import Connections
    from common.access.principal import operator_principal
    from common.db.session import make_engine, make_sessionmaker

    engine = make_engine(database_url, pool_size=1)
    sessionmaker = make_sessionmaker(engine)
    service = m.Management(sessionmaker)
    actor = operator_principal("operator:cli")
    try:
        if opts.command in ("channels", "rotate-keys"):
            connections = Connections(sessionmaker, settings)
            if opts.command == "rotate-keys":
                return {"reencrypted": await connections.rotate_keys(actor)}
            return await _channels(opts, connections, actor)
        if opts.command == "agents":
            return await _agents(opts, sessionmaker, settings, actor)
        if opts.command == "tenants":
            if opts.action == "list":
                return await service.list_tenants()
            body = m.TenantIn(slug=opts.slug, name=opts.name)
            if opts.id is not None:
                return await service.ensure_tenant(actor, tenant_id=opts.id, body=body)
            return _token_out(await service.create_tenant(actor, body), opts.token_file)
        if opts.command == "brands":
            if opts.action == "list":
                return await service.list_brands(actor, opts.tenant)
            persona = m.PersonaIn(**_yaml(opts.persona_file)) if opts.persona_file else m.PersonaIn()
            brand = m.BrandIn(slug=opts.slug, name=opts.name, persona=persona)
            if opts.id is not None:
                return await service.ensure_brand(actor, opts.tenant, brand_id=opts.id, body=brand)
            return await service.create_brand(actor, opts.tenant, brand)
        if opts.command == "keys":
            if opts.action == "list":
                return await service.list_keys(actor, opts.tenant)
            if opts.action == "revoke":
                return await service.revoke_key(actor, opts.tenant, opts.key)
            key = m.KeyIn(
                name=opts.name, scopes=m.parse_scopes(opts.scope), expires_in_days=opts.expires_in_days
            )
            return _token_out(await service.create_key(actor, opts.tenant, key), opts.token_file)
        return await service.list_audit(actor, opts.tenant, limit=opts.limit)
    finally:
        await engine.dispose()


async def _agents(opts: argparse.Namespace, sessionmaker: Any, settings: Settings, actor: Any) -> Any:
    from pydantic import SecretStr

    from common.access import agents as a
    from common.access.principal import Role

    service = a.AgentAccounts(sessionmaker, session_hours=settings.api.agent_session_hours)
    if opts.action == "list":
        return await service.list_accounts(actor, opts.tenant)
    if opts.action in ("enable", "disable"):
        patch = a.AgentAccountPatch(disabled=opts.action == "disable")
        return (await service.update(actor, opts.tenant, opts.agent, patch))[0]
    body = a.AgentAccountIn(
        email=opts.email,
        display_name=opts.display_name,
        role=Role(opts.role),
        brand_ids=opts.brand or None,
        password=SecretStr(read_secret(opts.password_file)),
    )
    return await service.create(actor, opts.tenant, body)


async def _channels(opts: argparse.Namespace, connections: Any, actor: Any) -> Any:
    from pydantic import TypeAdapter

    from common.access import connections as c

    if opts.action == "list":
        return await connections.list(actor, opts.tenant, opts.brand)
    if opts.action in ("enable", "disable"):
        patch = c.ConnectionPatch(enabled=opts.action == "enable")
        return await connections.update(actor, opts.tenant, opts.connection, patch)
    if opts.action == "delete":
        return await connections.delete(actor, opts.tenant, opts.connection)
    if opts.action == "sync-templates":
        return await connections.sync_templates(actor, opts.tenant, opts.connection)
    body: dict[str, Any] = {"channel": opts.action.removeprefix("connect-")}
    if opts.action == "connect-telegram":
        body["bot_token"] = read_secret(opts.bot_token_file)
    else:
        body.update(
            app_id=opts.app_id,
            access_token=read_secret(opts.access_token_file),
            app_secret=read_secret(opts.app_secret_file),
            verify_token=read_secret(opts.verify_token_file),
        )
        if opts.action == "connect-whatsapp":
            body.update(phone_number_id=opts.phone_number_id, business_account_id=opts.business_account_id)
        else:
            body["account_id"] = opts.account_id
    connection = TypeAdapter(c.ConnectionIn).validate_python(body)
    return await connections.connect(actor, opts.tenant, opts.brand, connection)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (mode 600 before anything is written into it)."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text, encoding="utf-8")


def _token_out(created: Any, token_file: str | None) -> Any:
    """With ``--token-file`` the token is written there (mode 600) and left out of stdout."""
    if token_file is None:
        return created
    key = created.admin_key if hasattr(created, "admin_key") else created
    path = Path(token_file)
    write_private(path, key.token + "\n")
    shown = created.model_dump(mode="json")
    target = shown.get("admin_key", shown)
    target["token"] = f"written to {path}"
    return shown


def _yaml(path: str) -> dict[str, Any]:
    import yaml

    from common.errors import InvalidInput

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput(f"{path} must hold a mapping of persona fields")
    return data


def _json(value: Any) -> str:
    from pydantic import BaseModel

    def plain(item: Any) -> Any:
        if isinstance(item, BaseModel):
            return item.model_dump(mode="json")
        if isinstance(item, list):
            return [plain(i) for i in item]
        return item

    return json.dumps(plain(value), indent=2, default=str)


async def _run(opts: argparse.Namespace) -> int:
    settings = get_settings()
    if opts.command == "generate-key":
        from common.crypto import generate_key

        print(generate_key())
        return 0
    if opts.command in MANAGEMENT_COMMANDS:
        settings = local_settings(settings)
        database_url = settings.database.url
        if not database_url:
            print("DATABASE_URL is not set (and no DATA_DIR/local.env from a running `make run`)")
            return 2
        from pydantic import ValidationError

        from common.errors import AssistantError

        try:
            print(_json(await _manage(opts, settings, database_url)))
        except ValidationError as exc:
            errors = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            print(f"invalid input: {errors}", file=sys.stderr)
            return 2
        except AssistantError as exc:
            print(
                f"{exc.code}: {exc.message} {json.dumps(exc.details) if exc.details else ''}".rstrip(),
                file=sys.stderr,
            )
            return 2 if exc.status_code < 500 else 1
        return 0
    if opts.command == "rebuild-vectors":
        if not settings.database.url:
            print("DATABASE_URL is not set")
            return 2
        count = await rebuild_vectors(settings, tenant_id=opts.tenant, brand_id=opts.brand)
        print(json.dumps({"rebuilt_chunks": count}))
        return 0
    if not settings.redis.url:
        print("REDIS_URL is not set (the embedded Valkey of `make run` listens on redis://127.0.0.1:6390/0)")
        return 2
    client = connect(settings.redis)
    try:
        if opts.command == "streams":
            result: Any = await stream_report(client, settings)
        elif opts.command == "dead-letters":
            result = await dead_letters(client, settings, opts.stream, opts.limit)
        else:
            result = {"replayed": await replay_dead(client, settings, opts.stream, opts.limit)}
    finally:
        await client.aclose()
    print(json.dumps(result, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m serve_apps.admin",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("streams", help="stream lengths, groups, pending, lag")
    for name in ("dead-letters", "replay-dead"):
        cmd = sub.add_parser(name)
        cmd.add_argument("stream", choices=KNOWN_STREAMS)
        cmd.add_argument("--limit", type=int, default=100)
    rebuild = sub.add_parser("rebuild-vectors", help="re-embed a brand's chunks from Postgres into Qdrant")
    rebuild.add_argument("--tenant", type=uuid.UUID, required=True)
    rebuild.add_argument("--brand", type=uuid.UUID, required=True)
    _management_parsers(sub)
    return asyncio.run(_run(parser.parse_args(argv)))


def _management_parsers(sub: Any) -> None:
    tenants = sub.add_parser("tenants", help="create or list tenants").add_subparsers(
        dest="action", required=True
    )
    create = tenants.add_parser("create", help="a tenant and its first admin key")
    create.add_argument("--slug", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--id", type=uuid.UUID, help="fixed id: create or update (idempotent, no key)")
    create.add_argument("--token-file", help="write the admin key's token here (mode 600) instead of stdout")
    tenants.add_parser("list")

    brands = sub.add_parser("brands", help="create or list a tenant's brands").add_subparsers(
        dest="action", required=True
    )
    create = brands.add_parser("create")
    create.add_argument("--tenant", type=uuid.UUID, required=True)
    create.add_argument("--slug", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--persona-file", help="YAML mapping of persona fields (tone, greeting, ...)")
    create.add_argument("--id", type=uuid.UUID, help="fixed id: create or update (idempotent)")
    brands.add_parser("list").add_argument("--tenant", type=uuid.UUID, required=True)

    keys = sub.add_parser("keys", help="create, list or revoke a tenant's API keys").add_subparsers(
        dest="action", required=True
    )
    create = keys.add_parser("create")
    create.add_argument("--tenant", type=uuid.UUID, required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", required=True, help="repeat for several scopes")
    create.add_argument("--expires-in-days", type=int)
    create.add_argument("--token-file", help="write the token here (mode 600) instead of stdout")
    keys.add_parser("list").add_argument("--tenant", type=uuid.UUID, required=True)
    revoke = keys.add_parser("revoke")
    revoke.add_argument("--tenant", type=uuid.UUID, required=True)
    revoke.add_argument("--key", type=uuid.UUID, required=True)

    audit = sub.add_parser("audit", help="a tenant's audit log, newest first")
    audit.add_argument("--tenant", type=uuid.UUID, required=True)
    audit.add_argument("--limit", type=int, default=100)

    channels = sub.add_parser("channels", help="a brand's channel connections").add_subparsers(
        dest="action", required=True
    )
    meta = {
        "connect-whatsapp": ("--phone-number-id", "--business-account-id"),
        "connect-instagram": ("--account-id",),
    }
    for action, ids in meta.items():
        cmd = channels.add_parser(action)
        for flag in ("--tenant", "--brand"):
            cmd.add_argument(flag, type=uuid.UUID, required=True)
        for flag in (*ids, "--app-id"):
            cmd.add_argument(flag, required=True)
        for flag in ("--access-token-file", "--app-secret-file", "--verify-token-file"):
            cmd.add_argument(flag, required=True, help="file holding it ('-': standard input)")
    telegram = channels.add_parser("connect-telegram")
    for flag in ("--tenant", "--brand"):
        telegram.add_argument(flag, type=uuid.UUID, required=True)
    telegram.add_argument("--bot-token-file", required=True, help="file holding it ('-': standard input)")
    listing = channels.add_parser("list")
    for flag in ("--tenant", "--brand"):
        listing.add_argument(flag, type=uuid.UUID, required=True)
    for action in ("enable", "disable", "delete", "sync-templates"):
        cmd = channels.add_parser(action)
        cmd.add_argument("--tenant", type=uuid.UUID, required=True)
        cmd.add_argument("--connection", type=uuid.UUID, required=True)
    agents = sub.add_parser("agents", help="a tenant's agent accounts").add_subparsers(
        dest="action", required=True
    )
    create = agents.add_parser("create")
    create.add_argument("--tenant", type=uuid.UUID, required=True)
    create.add_argument("--email", required=True)
    create.add_argument("--display-name", required=True)
    create.add_argument("--role", choices=("agent", "supervisor", "admin"), default="agent")
    create.add_argument("--brand", type=uuid.UUID, action="append", help="limit to this brand (repeat)")
    create.add_argument("--password-file", required=True, help="file holding it ('-': standard input)")
    agents.add_parser("list").add_argument("--tenant", type=uuid.UUID, required=True)
    for action in ("enable", "disable"):
        cmd = agents.add_parser(action)
        cmd.add_argument("--tenant", type=uuid.UUID, required=True)
        cmd.add_argument("--agent", type=uuid.UUID, required=True)
    sub.add_parser("rotate-keys", help="re-encrypt channel credentials with the first encryption key")
    sub.add_parser("generate-key", help="print a new key for SECRETS__ENCRYPTION_KEYS")


if __name__ == "__main__":
    sys.exit(main())
