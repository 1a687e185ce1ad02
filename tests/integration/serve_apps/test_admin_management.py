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


def test_connect_a_telegram_bot_and_rotate_the_key_from_the_command_line(
    make_database: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from common.crypto import CredentialCipher, generate_key, parse_keys
    from common.db import migrate
    from serve_apps.simulator import SimulatorServer

    database = make_database()  # its own: rotate-keys re-encrypts every row, and only this test's are here
    migrate.upgrade(database)
    old, new = generate_key(), generate_key()
    bot_token = "7300000003:CLI-bot-token"
    token_file = tmp_path / "bot.token"
    token_file.write_text(bot_token + "\n")

    def run(*argv: str) -> tuple[int, str, str]:
        get_settings.cache_clear()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    with SimulatorServer(telegram_bot_tokens=(bot_token,)) as sim:
        monkeypatch.setenv("DATABASE_URL", database)
        monkeypatch.setenv("SECRETS__ENCRYPTION_KEYS", old)
        monkeypatch.setenv("CHANNELS__TELEGRAM_API_URL", sim.url)
        monkeypatch.setenv("CHANNELS__PUBLIC_URL", "https://gw.example.test")
        code, out, _ = run(
            "tenants", "create", "--slug", "cli-tg", "--name", "T", "--token-file", str(tmp_path / "k")
        )
        tenant = json.loads(out)["tenant"]["id"]
        code, out, _ = run("brands", "create", "--tenant", tenant, "--slug", "b", "--name", "B")
        brand = json.loads(out)["id"]
        code, out, err = run(
            "channels",
            "connect-telegram",
            "--tenant",
            tenant,
            "--brand",
            brand,
            "--bot-token-file",
            str(token_file),
        )
        assert code == 0, err
        connection = json.loads(out)
        assert bot_token not in out and connection["credentials"] == ["bot_token", "secret_token"]
        assert connection["external_id"] == "7300000003" and connection["webhook_registered"] is True
        registered = sim.state.telegram_webhooks["7300000003"]
        assert registered["url"] == f"https://gw.example.test/webhooks/telegram/{connection['id']}"
        # A wrong token is Telegram's refusal, one line and exit 2, and connects nothing.
        token_file.write_text("7300000004:not-a-bot\n")
        code, out, err = run(
            "channels",
            "connect-telegram",
            "--tenant",
            tenant,
            "--brand",
            brand,
            "--bot-token-file",
            str(token_file),
        )
        assert code == 2 and "Telegram refused getMe" in err and "not-a-bot" not in err + out

    code, out, _ = run("channels", "disable", "--tenant", tenant, "--connection", connection["id"])
    assert code == 0 and json.loads(out)["enabled"] is False
    code, out, _ = run("channels", "list", "--tenant", tenant, "--brand", brand)
    assert [c["id"] for c in json.loads(out)] == [connection["id"]]

    monkeypatch.setenv("SECRETS__ENCRYPTION_KEYS", f"{new},{old}")
    code, out, _ = run("rotate-keys")
    assert code == 0 and json.loads(out) == {"reencrypted": 1}

    async def stored() -> str:
        engine = make_engine(database, pool_size=1)
        try:
            async with engine.connect() as conn:
                return str(await conn.scalar(text("SELECT credentials FROM channel_configs")))
        finally:
            await engine.dispose()

    sealed = asyncio.run(stored())
    assert bot_token not in sealed
    assert CredentialCipher(parse_keys(new)).decrypt(sealed)["bot_token"].get_secret_value() == bot_token
    code, out, _ = run("generate-key")
    assert code == 0 and parse_keys(out.strip())
    # Telegram is gone now (the simulator stopped): deleteWebhook fails, the connection is removed anyway.
    monkeypatch.setenv("SECRETS__ENCRYPTION_KEYS", new)
    code, out, err = run("channels", "delete", "--tenant", tenant, "--connection", connection["id"])
    assert code == 0, err
    code, out, _ = run("channels", "list", "--tenant", tenant, "--brand", brand)
    assert json.loads(out) == []
    get_settings.cache_clear()


def test_agent_accounts_from_the_command_line(cli: Any, tmp_path: Path, database_url: str) -> None:
    code, out, _ = cli("tenants", "create", "--slug", f"ag-{uuid.uuid4().hex[:8]}", "--name", "T")
    tenant = out["tenant"]["id"]
    code, brand, _ = cli("brands", "create", "--tenant", tenant, "--slug", "b", "--name", "B")
    password = tmp_path / "pw"
    password.write_text("a long enough passphrase\n")
    code, agent, err = cli(
        "agents",
        "create",
        "--tenant",
        tenant,
        "--email",
        "Ann@T.test",
        "--display-name",
        "Ann",
        "--brand",
        brand["id"],
        "--password-file",
        str(password),
    )
    assert code == 0, err
    assert agent["email"] == "ann@t.test" and agent["brand_ids"] == [brand["id"]] and agent["role"] == "agent"
    assert "passphrase" not in json.dumps(agent)
    code, listed, _ = cli("agents", "list", "--tenant", tenant)
    assert [a["id"] for a in listed] == [agent["id"]]
    code, disabled, _ = cli("agents", "disable", "--tenant", tenant, "--agent", agent["id"])
    assert code == 0 and disabled["disabled"] is True
    code, _, err = cli(
        "agents",
        "create",
        "--tenant",
        str(uuid.uuid4()),
        "--email",
        "b@t.test",
        "--display-name",
        "B",
        "--password-file",
        str(password),
    )
    assert code == 2 and "unknown tenant" in err
