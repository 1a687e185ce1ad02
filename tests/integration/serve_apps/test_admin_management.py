"""``python -m serve_apps.admin tenants|brands|keys|audit``: onboarding without code, over the same
management service as the API; tokens shown once and stored only as hashes; bad input is one line."""

from __future__ import annotations

import asyncio
import json
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from common.access.principal import Scope
from common.config import Settings, get_settings
from common.db.session import make_engine, make_sessionmaker
from common.errors import Unauthorized
from serve_apps.admin import main
from serve_apps.gateway.auth import Authenticator

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_settings.cache_clear()

    def run(*argv: str) -> tuple[int, Any, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, (json.loads(out) if code == 0 else out), err

    yield run
    get_settings.cache_clear()


def _principal(database_url: str, token: str) -> Any:
    async def check() -> Any:
        engine = make_engine(database_url, pool_size=1)
        try:
            sessionmaker = make_sessionmaker(engine)
            return await Authenticator(Settings(api={"key_cache_ttl_s": 0}), lambda: sessionmaker).principal(
                f"Bearer {token}"
            )
        finally:
            await engine.dispose()

    return asyncio.run(check())


def _raw_key_rows(database_url: str) -> list[str]:
    async def read() -> list[str]:
        engine = make_engine(database_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(text("SELECT row_to_json(k)::text FROM api_keys k"))
                return [r[0] for r in rows]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_onboard_a_tenant_brand_and_keys_from_the_command_line(
    cli: Any, database_url: str, tmp_path: Path
) -> None:
    slug = f"cli-{uuid.uuid4().hex[:8]}"
    code, created, _ = cli("tenants", "create", "--slug", slug, "--name", "Cli Co")
    assert code == 0, created
    tenant = created["tenant"]["id"]
    admin_token = created["admin_key"]["token"]
    assert created["admin_key"]["scopes"] == ["admin"] and admin_token.startswith("ema_")
    admin = _principal(database_url, admin_token)
    assert str(admin.tenant_id) == tenant and admin.allows(Scope.KNOWLEDGE_WRITE)

    persona = tmp_path / "persona.yaml"
    persona.write_text("tone: warm and brief\ngreeting: Hello from Cli Co!\n", encoding="utf-8")
    code, brand, _ = cli(
        "brands",
        "create",
        "--tenant",
        tenant,
        "--slug",
        "shop",
        "--name",
        "Cli Shop",
        "--persona-file",
        str(persona),
    )
    assert code == 0 and brand["persona"]["greeting"] == "Hello from Cli Co!", brand
    code, brands, _ = cli("brands", "list", "--tenant", tenant)
    assert [b["id"] for b in brands] == [brand["id"]]

    token_file = tmp_path / "agents.key"
    code, key, _ = cli(
        "keys",
        "create",
        "--tenant",
        tenant,
        "--name",
        "console",
        "--scope",
        "agents",
        "--token-file",
        str(token_file),
    )
    assert code == 0 and key["token"] == f"written to {token_file}" and key["scopes"] == ["agents"]
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text(encoding="utf-8").strip()
    agent = _principal(database_url, token)
    assert agent.allows(Scope.AGENTS) and agent.allows(Scope.BRANDS_READ) and not agent.allows(Scope.ADMIN)

    # Only hashes are stored: neither token appears anywhere in the table's rows.
    rows = " ".join(_raw_key_rows(database_url))
    assert admin_token not in rows and token not in rows and key["prefix"] in rows

    code, listed, _ = cli("keys", "list", "--tenant", tenant)
    assert {k["prefix"] for k in listed} == {created["admin_key"]["prefix"], key["prefix"]}
    assert all("token" not in k and "token_hash" not in k for k in listed)

    code, revoked, _ = cli("keys", "revoke", "--tenant", tenant, "--key", key["id"])
    assert code == 0 and revoked["revoked_at"]
    with pytest.raises(Unauthorized):
        _principal(database_url, token)

    code, audit, _ = cli("audit", "--tenant", tenant)
    actions = [e["action"] for e in audit]
    assert {"tenant.create", "key.create", "brand.create", "key.revoke"} <= set(actions)
    assert all(e["actor"] == "operator:cli" for e in audit)
    assert admin_token not in json.dumps(audit) and token not in json.dumps(audit)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["tenants", "create", "--slug", "Bad Slug!", "--name", "x"], "invalid input: slug"),
        (
            ["keys", "create", "--tenant", str(uuid.uuid4()), "--name", "k", "--scope", "root"],
            "unknown scope root",
        ),
        (
            ["keys", "create", "--tenant", str(uuid.uuid4()), "--name", "k", "--scope", "operator"],
            "cannot hold",
        ),
        (["brands", "list", "--tenant", str(uuid.uuid4())], "not_found: unknown tenant"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli: Any, argv: list[str], expected: str) -> None:
    code, out, err = cli(*argv)
    assert code == 2 and expected in err and "Traceback" not in err + str(out)


def test_a_taken_slug_is_a_conflict(cli: Any) -> None:
    slug = f"dup-{uuid.uuid4().hex[:8]}"
    assert cli("tenants", "create", "--slug", slug, "--name", "One")[0] == 0
    code, _, err = cli("tenants", "create", "--slug", slug, "--name", "Two")
    assert code == 2 and err.startswith("conflict:")
