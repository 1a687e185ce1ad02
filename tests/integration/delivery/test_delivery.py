"""Outbound delivery against real Postgres and Redis, sending to the provider SIMULATOR over HTTP.

Exactly-once is counted where it matters: at the simulator, which records every send it accepted.
Crashes are simulated by raising from the dispatcher's hooks at the exact point named in each test.
The module uses its own freshly migrated database, so the relay only ever sees this module's outbox.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.channels.registry import build_registry
from common.config import ChannelSecrets, DeliverySettings, RedisSettings, Settings
from common.db import migrate
from common.db import repositories as repo
from common.db.models import MessageLog
from common.db.session import make_engine, make_sessionmaker
from common.delivery import OutboundDispatcher, OutboxRelay, Outcome
from common.domain import Channel, ConversationState, Persona
from common.schemas import LinkButton, OutboundPayload
from common.streams import OUTBOUND_STREAM, StreamPublisher
from serve_apps.simulator import FaultSpec, SimulatorServer

pytestmark = pytest.mark.integration

META_TOKEN = "sim-meta-token"
BOT_TOKEN = "777:sim-bot-token"
ACCOUNTS = {Channel.WHATSAPP: "PNID-1", Channel.INSTAGRAM: "IG-1", Channel.TELEGRAM: "777"}


class SimulatedCrash(Exception):
    """Stands for the process dying at this point."""


@pytest.fixture(scope="module")
def delivery_db(make_database) -> str:
    url = make_database()
    migrate.upgrade(url)
    return url


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer(meta_access_token=META_TOKEN, telegram_bot_token=BOT_TOKEN) as sim:
        yield sim


@dataclass
class World:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: aioredis.Redis
    sim: SimulatorServer
    tenant_id: uuid.UUID
    brand_id: uuid.UUID
    sleeps: list[float]

    def dispatcher(
        self, consumer: str, cls: type[OutboundDispatcher] = OutboundDispatcher, **delivery
    ) -> OutboundDispatcher:
        settings = self.settings
        if delivery:
            settings = settings.model_copy(update={"delivery": settings.delivery.model_copy(update=delivery)})
        return cls(
            settings=settings,
            sessionmaker=self.sessionmaker,
            redis=self.redis,
            senders=self._registry,
            consumer=consumer,
            sleep=self._sleep,
        )

    async def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def conversation(self, channel: Channel, customer: str) -> uuid.UUID:
        async with self.sessionmaker() as session:
            conv = await repo.get_or_create_conversation(
                session,
                tenant_id=self.tenant_id,
                brand_id=self.brand_id,
                channel=channel,
                customer_id=customer,
            )
            await session.commit()
            return conv.id

    async def payload(
        self,
        channel: Channel,
        text: str = "Thirty days.",
        *,
        customer: str | None = None,
        sender: str = "bot",
        wrote_ago: timedelta | None = timedelta(seconds=1),
        sent_ago: timedelta | None = None,
    ) -> OutboundPayload:
        """A reply to ``customer``, whose last message reached us ``wrote_ago`` (None: never wrote; the
        providers' windows) and was sent ``sent_ago`` by the provider's clock (None: not given)."""
        customer = customer or ("4242" if channel is Channel.TELEGRAM else f"cust-{uuid.uuid4().hex[:8]}")
        conversation_id = await self.conversation(channel, customer)
        if wrote_ago is not None:
            async with self.sessionmaker() as session:
                session.add(
                    MessageLog(
                        conversation_id=conversation_id,
                        tenant_id=self.tenant_id,
                        brand_id=self.brand_id,
                        channel=channel.value,
                        direction="inbound",
                        provider_message_id=f"in-{uuid.uuid4().hex}",
                        text="a question",
                        created_at=datetime.now(UTC) - wrote_ago,
                        sent_at=None if sent_ago is None else datetime.now(UTC) - sent_ago,
                    )
                )
                await session.commit()
        return OutboundPayload(
            message_id=uuid.uuid4(),
            conversation_id=conversation_id,
            tenant_id=self.tenant_id,
            brand_id=self.brand_id,
            channel=channel,
            customer_id=customer,
            in_reply_to="11" if channel is Channel.TELEGRAM else "wamid.IN",
            text=text,
            sender=sender,
        )

    async def publish(self, payload: OutboundPayload) -> None:
        await StreamPublisher(self.redis, self.settings.redis).publish(
            OUTBOUND_STREAM, payload.model_dump(mode="json")
        )

    async def delivery(self, message_id: uuid.UUID):
        async with self.sessionmaker() as session:
            return await repo.get_delivery(session, message_id=message_id)

    async def pending(self) -> int:
        info = await self.redis.xpending(
            self.settings.redis.key("stream", "outbound"), self.settings.delivery.consumer_group
        )
        return int(info["pending"])

    async def dead_letters(self) -> list[dict[str, str]]:
        return [f for _, f in await self.redis.xrange(self.settings.redis.key("stream", "outbound-dead"))]

    def sent_for(self, payload: OutboundPayload) -> list:
        return [
            s
            for s in self.sim.state.sent()
            if s.recipient == payload.customer_id and s.channel == payload.channel.value
        ]


@pytest_asyncio.fixture
async def world(delivery_db, redis_url, redis_prefix, simulator) -> AsyncIterator[World]:
    simulator.state.clear()
    settings = Settings(
        redis=RedisSettings(url=redis_url, key_prefix=f"{redis_prefix}:dlv{uuid.uuid4().hex[:6]}"),
        channels=ChannelSecrets(
            meta_access_token=SecretStr(META_TOKEN),
            meta_graph_url=simulator.url,
            telegram_bot_token=SecretStr(BOT_TOKEN),
            telegram_api_url=simulator.url,
        ),
        delivery=DeliverySettings(claim_min_idle_ms=0, lease_s=30, send_attempts=3, max_attempts=5),
    )
    engine = make_engine(delivery_db)
    sessionmaker = make_sessionmaker(engine)
    tenant_id, brand_id = uuid.uuid4(), uuid.uuid4()
    async with sessionmaker() as session:
        await repo.upsert_tenant(session, tenant_id=tenant_id, slug=f"t{tenant_id.hex[:8]}", name="T")
        await repo.upsert_brand(
            session, brand_id=brand_id, tenant_id=tenant_id, slug="b", name="B", persona=Persona()
        )
        for channel, account in ACCOUNTS.items():
            await repo.upsert_channel_config(
                session,
                tenant_id=tenant_id,
                brand_id=brand_id,
                channel=channel,
                external_id=f"{account}",
                settings={},
            )
        await session.commit()
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    w = World(settings, sessionmaker, client, simulator, tenant_id, brand_id, [])
    w._registry = build_registry(settings)
    await w.dispatcher("setup").ensure_group()
    try:
        yield w
    finally:
        await w._registry.aclose()
        await client.aclose()
        await engine.dispose()


async def drain(dispatcher: OutboundDispatcher, *, passes: int = 10) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for _ in range(passes):
        done = await dispatcher.run_once()
        if not done:
            break
        outcomes.extend(done)
    return outcomes


async def test_each_reply_sent_exactly_once_even_when_published_twice(world: World) -> None:
    payloads = [await world.payload(ch) for ch in (Channel.WHATSAPP, Channel.INSTAGRAM, Channel.TELEGRAM)]
    payloads.append(await world.payload(Channel.WHATSAPP))
    for p in payloads + payloads:  # every entry twice, as a relay re-publish would
        await world.publish(p)
    outcomes = await drain(world.dispatcher("d1"))
    assert sorted(outcomes).count(Outcome.SENT) == 4 and outcomes.count(Outcome.ALREADY_DONE) == 4
    for p in payloads:
        [sent] = world.sent_for(p)
        assert sent.text == p.text
        row = await world.delivery(p.message_id)
        assert row.status == "sent" and row.provider_message_id == sent.provider_message_id
    wa = world.sent_for(payloads[0])[0]
    assert wa.account == "PNID-1" and wa.reply_to == "wamid.IN"
    tg = world.sent_for(payloads[2])[0]
    assert tg.account == "777" and tg.reply_to == "11"
    assert await world.pending() == 0


async def test_crash_after_send_before_ack_is_not_resent(world: World) -> None:
    class CrashBeforeAck(OutboundDispatcher):
        async def _ack(self, entry_id: str) -> None:
            raise SimulatedCrash(entry_id)

    payloads = [await world.payload(Channel.WHATSAPP) for _ in range(3)]
    for p in payloads:
        await world.publish(p)
    with pytest.raises(SimulatedCrash):
        await world.dispatcher("doomed", CrashBeforeAck).run_once()  # sends the first, dies before XACK
    assert len(world.sim.state.sent()) == 1
    assert await world.pending() == 3  # all three were read by the dead consumer

    outcomes = await drain(world.dispatcher("heir"))  # XAUTOCLAIM takes them over
    assert outcomes == [Outcome.ALREADY_DONE, Outcome.SENT, Outcome.SENT]
    assert [len(world.sent_for(p)) for p in payloads] == [1, 1, 1]
    assert await world.pending() == 0


async def test_long_reply_is_split_to_the_channel_limit_at_the_simulator(world: World) -> None:
    text = ("Our return window is thirty days from delivery. " * 50).strip()  # ~2450 chars
    p = await world.payload(Channel.INSTAGRAM, text)
    await world.publish(p)
    assert await drain(world.dispatcher("d1")) == [Outcome.SENT]
    parts = [s.text for s in world.sent_for(p)]
    assert len(parts) == 3 and all(len(t) <= 1000 for t in parts) and " ".join(parts) == text
    row = await world.delivery(p.message_id)
    assert row.parts_sent == 3 and len(row.provider_message_ids) == 3


@pytest.mark.parametrize(
    ("resend", "expected_sends", "outcome"), [(False, 1, Outcome.DEAD_LETTERED), (True, 2, Outcome.SENT)]
)
async def test_crash_after_provider_accepted_before_record_is_bounded(
    world: World, resend, expected_sends, outcome
) -> None:
    """The window left: provider accepted, record never said so. Policy decides; one extra at most."""

    class CrashBeforeRecord(OutboundDispatcher):
        async def _mark_sent(self, payload, *, parts, ids) -> None:
            raise SimulatedCrash(str(payload.message_id))

    p = await world.payload(Channel.TELEGRAM)
    await world.publish(p)
    with pytest.raises(SimulatedCrash):
        await world.dispatcher("doomed", CrashBeforeRecord, lease_s=0.05).run_once()
    row = await world.delivery(p.message_id)
    assert row.status == "pending" and row.sending_since is not None
    import asyncio

    await asyncio.sleep(0.1)  # the dead dispatcher's lease expires
    outcomes = await drain(world.dispatcher("heir", resend_uncertain=resend))
    assert outcomes == [outcome]
    assert len(world.sent_for(p)) == expected_sends
    assert (await drain(world.dispatcher("third", resend_uncertain=resend))) == []  # settled: nothing more
    assert len(world.sent_for(p)) == expected_sends
    if not resend:
        [dead] = await world.dead_letters()
        assert dead["reason"].startswith("uncertain") and dead["message_id"] == str(p.message_id)


async def test_a_database_blip_after_the_send_is_waited_out_not_resent(world: World) -> None:
    from sqlalchemy.exc import OperationalError

    class BlipOnRecord(OutboundDispatcher):
        failures = 2

        async def _mark_sent(self, payload, *, parts, ids) -> None:
            if BlipOnRecord.failures:
                BlipOnRecord.failures -= 1
                raise OperationalError(
                    "UPDATE deliveries", {}, ConnectionError("server closed the connection")
                )
            await super()._mark_sent(payload, parts=parts, ids=ids)

    p = await world.payload(Channel.WHATSAPP)
    await world.publish(p)
    assert await drain(world.dispatcher("d1", BlipOnRecord)) == [Outcome.SENT]
    assert BlipOnRecord.failures == 0
    assert len(world.sent_for(p)) == 1
    assert (await world.delivery(p.message_id)).status == "sent"
    assert await world.pending() == 0


async def test_outbox_rows_committed_but_never_published_are_relayed_and_sent_once(world: World) -> None:
    payloads = [await world.payload(ch) for ch in (Channel.WHATSAPP, Channel.TELEGRAM, Channel.INSTAGRAM)]
    async with world.sessionmaker() as session:  # the orchestrator committed, then crashed before XADD
        for p in payloads:
            await repo.add_outbox(session, stream=OUTBOUND_STREAM, payload=p.model_dump(mode="json"))
        await session.commit()
    publisher = StreamPublisher(world.redis, world.settings.redis)
    # A first relay that crashed after XADD but before its commit: the rows went out, still unmarked.
    for p in payloads:
        await publisher.publish(OUTBOUND_STREAM, p.model_dump(mode="json"))
    relay = OutboxRelay(sessionmaker=world.sessionmaker, publisher=publisher, batch_size=2)
    assert (await relay.run_once()).published == 2  # oldest first, batch-bounded
    assert (await relay.run_once()).published == 1
    assert (await relay.run_once()).published == 0  # marked: nothing left
    entries = await world.redis.xrange(world.settings.redis.key("stream", OUTBOUND_STREAM))
    assert [json.loads(f["data"])["message_id"] for _, f in entries] == [
        str(p.message_id) for p in payloads
    ] * 2

    outcomes = await drain(world.dispatcher("d1"))
    assert outcomes.count(Outcome.SENT) == 3 and outcomes.count(Outcome.ALREADY_DONE) == 3
    assert [len(world.sent_for(p)) for p in payloads] == [1, 1, 1]


async def test_429_then_success_honours_retry_after(world: World) -> None:
    world.sim.state.add_fault(FaultSpec(kind="429", count=2, retry_after_s=2))
    p = await world.payload(Channel.WHATSAPP)
    await world.publish(p)
    assert await drain(world.dispatcher("d1")) == [Outcome.SENT]
    assert world.sleeps == [2.0, 2.0]  # Retry-After, not the computed backoff
    assert len(world.sent_for(p)) == 1
    row = await world.delivery(p.message_id)
    assert row.status == "sent" and row.attempts == 1


async def test_retries_used_up_leave_the_entry_pending_then_it_is_taken_over(world: World) -> None:
    world.sim.state.add_fault(FaultSpec(kind="500", count=3, channel="telegram"))  # = send_attempts
    p = await world.payload(Channel.TELEGRAM)
    await world.publish(p)
    assert await drain(world.dispatcher("d1"), passes=1) == [Outcome.DEFERRED]
    row = await world.delivery(p.message_id)
    assert row.status == "pending" and "500" in row.last_error and row.claimed_until is None
    assert await world.pending() == 1 and world.sent_for(p) == []
    assert await drain(world.dispatcher("d2")) == [Outcome.SENT]
    assert len(world.sent_for(p)) == 1 and await world.pending() == 0
    assert (await world.delivery(p.message_id)).attempts == 2


async def test_permanent_4xx_goes_to_dead_letter_with_reason(world: World) -> None:
    world.sim.state.add_fault(FaultSpec(kind="400", count=1))
    p = await world.payload(Channel.INSTAGRAM)
    await world.publish(p)
    assert await drain(world.dispatcher("d1")) == [Outcome.DEAD_LETTERED]
    assert world.sent_for(p) == [] and world.sleeps == []  # never retried
    [dead] = await world.dead_letters()
    assert "400" in dead["reason"] and dead["message_id"] == str(p.message_id)
    assert json.loads(dead["data"])["text"] == p.text
    row = await world.delivery(p.message_id)
    assert row.status == "failed" and "400" in row.last_error
    assert await world.pending() == 0


async def test_the_message_that_hands_over_is_sent_though_a_person_now_owns_it(world: World) -> None:
    payload = (
        await world.payload(Channel.WHATSAPP, "I'll connect you with our team.", customer="ho-2")
    ).model_copy(update={"handoff": True})
    async with world.sessionmaker() as session:  # the state change was written with this reply
        await repo.set_conversation_state(
            session, conversation_id=payload.conversation_id, state=ConversationState.HANDOFF
        )
        await session.commit()
    await world.publish(payload)
    assert await drain(world.dispatcher("d1")) == [Outcome.SENT]
    assert [s.text for s in world.sent_for(payload)] == ["I'll connect you with our team."]


async def test_handoff_conversation_skips_bot_reply_but_sends_agent_message(world: World) -> None:
    bot = await world.payload(Channel.WHATSAPP, "bot answer", customer="handoff-1")
    async with world.sessionmaker() as session:
        await repo.set_conversation_state(
            session, conversation_id=bot.conversation_id, state=ConversationState.HANDOFF
        )
        await session.commit()
    agent = await world.payload(
        Channel.WHATSAPP, "Hi, this is Dana from support.", customer="handoff-1", sender="agent"
    )
    await world.publish(bot)
    await world.publish(agent)
    assert await drain(world.dispatcher("d1")) == [Outcome.SKIPPED, Outcome.SENT]
    assert [s.text for s in world.sent_for(bot)] == ["Hi, this is Dana from support."]
    assert (await world.delivery(bot.message_id)).status == "skipped"
    assert await world.pending() == 0


async def test_brand_without_account_and_garbage_entries_are_dead_lettered(world: World) -> None:
    async with world.sessionmaker() as session:
        await repo.upsert_channel_config(
            session,
            tenant_id=world.tenant_id,
            brand_id=world.brand_id,
            channel=Channel.INSTAGRAM,
            external_id="IG-1",
            settings={},
            enabled=False,
        )
        await session.commit()
    p = await world.payload(Channel.INSTAGRAM)
    await world.publish(p)
    await world.redis.xadd(world.settings.redis.key("stream", OUTBOUND_STREAM), {"data": "{not json"})
    assert await drain(world.dispatcher("d1")) == [Outcome.DEAD_LETTERED, Outcome.DEAD_LETTERED]
    reasons = [d["reason"] for d in await world.dead_letters()]
    assert reasons[0] == "brand has no enabled instagram account" and reasons[1].startswith("invalid payload")
    assert world.sim.state.sent() == [] and await world.pending() == 0


async def test_worker_loops_relay_and_deliver_until_stopped(world: World) -> None:
    import asyncio

    from common.delivery.worker import DeliveryWorker

    settings = world.settings.model_copy(
        update={
            "delivery": world.settings.delivery.model_copy(update={"block_ms": 100, "relay_interval_s": 0.05})
        }
    )
    p = await world.payload(Channel.TELEGRAM, "From the outbox, through the loops.")
    async with world.sessionmaker() as session:
        await repo.add_outbox(session, stream=OUTBOUND_STREAM, payload=p.model_dump(mode="json"))
        await session.commit()
    worker = DeliveryWorker(
        settings=settings, sessionmaker=world.sessionmaker, redis=world.redis, consumer="w1"
    )
    worker.start()
    try:
        sent = await asyncio.to_thread(world.sim.state.wait_for, 1, timeout_s=15, channel="telegram")
        assert worker.healthy()
    finally:
        await worker.stop()
    assert [s.text for s in sent] == ["From the outbox, through the loops."]
    assert (await world.delivery(p.message_id)).status == "sent"
    assert not worker.healthy()


# --- the providers' customer-service windows ----------------------------------------------------------


async def _set_whatsapp_template(world: World, template: dict | None) -> None:
    from sqlalchemy import update

    from common.db.models import ChannelConfig

    settings = {} if template is None else {"window_template": template}
    async with world.sessionmaker() as session:
        await session.execute(
            update(ChannelConfig)
            .where(ChannelConfig.brand_id == world.brand_id, ChannelConfig.channel == "whatsapp")
            .values(settings=settings)
        )
        await session.commit()


@pytest.mark.parametrize(
    ("channel", "sender", "ago", "expected"),
    [
        (Channel.WHATSAPP, "bot", timedelta(hours=23, minutes=59), Outcome.SENT),  # inside
        (Channel.WHATSAPP, "bot", timedelta(hours=24, minutes=1), Outcome.HELD),  # just outside
        (Channel.WHATSAPP, "agent", timedelta(days=2), Outcome.HELD),  # an agent's reply outside, no template
        (Channel.WHATSAPP, "bot", None, Outcome.HELD),  # the customer never wrote
        (Channel.INSTAGRAM, "bot", timedelta(hours=23), Outcome.SENT),
        (Channel.INSTAGRAM, "bot", timedelta(hours=25), Outcome.HELD),
        (Channel.INSTAGRAM, "agent", timedelta(days=6), Outcome.SENT),  # HUMAN_AGENT tag, up to 7 days
        (Channel.INSTAGRAM, "agent", timedelta(days=8), Outcome.HELD),
        (Channel.TELEGRAM, "bot", timedelta(days=30), Outcome.SENT),  # no window
    ],
)
async def test_each_window_rule(
    world: World, channel: Channel, sender: str, ago: timedelta | None, expected: Outcome
) -> None:
    await _set_whatsapp_template(world, None)
    if sender == "agent":
        conv_payload = await world.payload(channel, sender=sender, wrote_ago=ago)
        async with world.sessionmaker() as session:  # a person owns it: the agent's reply is what goes
            await repo.set_conversation_state(
                session, conversation_id=conv_payload.conversation_id, state=ConversationState.HANDOFF
            )
            await session.commit()
        payload = conv_payload
    else:
        payload = await world.payload(channel, wrote_ago=ago)
    await world.publish(payload)
    assert await drain(world.dispatcher("d1")) == [expected]
    row = await world.delivery(payload.message_id)
    sent = world.sent_for(payload)
    if expected is Outcome.HELD:
        assert row.status == "held" and "window" in row.last_error and sent == []
        assert await world.pending() == 0 and await world.dead_letters() == []  # acked, not dead-lettered
    else:
        assert row.status == "sent" and len(sent) == 1
        if (
            channel is Channel.INSTAGRAM
            and sender == "agent"
            and ago is not None
            and ago > timedelta(hours=24)
        ):
            assert sent[0].body["tag"] == "HUMAN_AGENT" and sent[0].body["messaging_type"] == "MESSAGE_TAG"


async def test_a_template_with_more_parameters_carries_the_reply_in_its_own(world: World) -> None:
    parameters = ["Customer Care", "about your question: {reply}"]
    await _set_whatsapp_template(
        world, {"name": "care_followup", "language": "en_US", "parameters": parameters}
    )
    reply = "Refunds take 5 to 7 days. " * 60  # 1560 characters: split to the room left in its parameter
    payload = await world.payload(Channel.WHATSAPP, reply.strip(), wrote_ago=timedelta(days=2))
    await world.publish(payload)
    assert await drain(world.dispatcher("d1")) == [Outcome.SENT]
    sent = world.sent_for(payload)
    assert len(sent) == 2
    for part in sent:
        [body] = part.body["template"]["components"]
        first, second = (p["text"] for p in body["parameters"])
        assert first == "Customer Care" and second.startswith("about your question: ")
        assert len(second) <= 1024
    joined = " ".join(
        p.body["template"]["components"][0]["parameters"][1]["text"].removeprefix("about your question: ")
        for p in sent
    )
    assert " ".join(joined.split()) == " ".join(reply.split())


async def test_outside_the_window_a_reply_goes_as_the_connections_template(world: World) -> None:
    await _set_whatsapp_template(world, {"name": "support_followup", "language": "en_US"})
    payload = await world.payload(Channel.WHATSAPP, "Your refund was approved.", wrote_ago=timedelta(days=3))
    await world.publish(payload)
    assert await drain(world.dispatcher("d1")) == [Outcome.SENT]
    [sent] = world.sent_for(payload)
    assert sent.body["type"] == "template" and "text" not in sent.body
    assert sent.text == "template:support_followup:en_US|Your refund was approved."
    # Inside the window the same connection sends free-form text.
    inside = await world.payload(Channel.WHATSAPP, "Thirty days.")
    await world.publish(inside)
    assert await drain(world.dispatcher("d1")) == [Outcome.SENT]
    assert world.sent_for(inside)[0].body["type"] == "text"


@pytest.mark.parametrize(
    ("wrote_ago", "sent_ago", "expected"),
    [
        # A webhook Meta retried for a day: it reached us a second ago, but the window opened when the
        # customer sent it, so free-form text would be refused (131047).
        (timedelta(seconds=1), timedelta(hours=25), "template"),
        # The provider's clock ahead of ours cannot stretch the window past when the message reached us.
        (timedelta(hours=25), -timedelta(hours=2), "template"),
        (timedelta(seconds=1), timedelta(minutes=5), "text"),
    ],
)
async def test_the_window_starts_when_the_customer_sent_the_message(
    world: World, wrote_ago: timedelta, sent_ago: timedelta, expected: str
) -> None:
    await _set_whatsapp_template(world, {"name": "support_followup", "language": "en_US"})
    payload = await world.payload(Channel.WHATSAPP, "Yes, we do.", wrote_ago=wrote_ago, sent_ago=sent_ago)
    await world.publish(payload)
    assert await drain(world.dispatcher("d1")) == [Outcome.SENT]
    assert world.sent_for(payload)[0].body["type"] == expected


@pytest.mark.parametrize("channel", [Channel.WHATSAPP, Channel.INSTAGRAM, Channel.TELEGRAM])
async def test_a_confirmation_goes_with_yes_no_buttons(world: World, channel: Channel) -> None:
    await _set_whatsapp_template(world, None)
    payload = (await world.payload(channel, "Shall I open a ticket for you?")).model_copy(
        update={"quick_replies": ["Yes", "No"]}
    )
    await world.publish(payload)
    assert await drain(world.dispatcher("d1")) == [Outcome.SENT]
    [sent] = world.sent_for(payload)
    body = sent.body
    if channel is Channel.WHATSAPP:
        assert body["type"] == "interactive" and sent.text == "Shall I open a ticket for you?"
        titles = [b["reply"]["title"] for b in body["interactive"]["action"]["buttons"]]
    elif channel is Channel.INSTAGRAM:
        titles = [q["title"] for q in body["message"]["quick_replies"]]
    else:
        titles = [b["callback_data"] for b in body["reply_markup"]["inline_keyboard"][0]]
    assert titles == ["Yes", "No"]


SUGGESTIONS = ["Shipping times", "Return policy", "Warranty claims", "Order status", "Payment methods"]


@pytest.mark.parametrize("channel", [Channel.WHATSAPP, Channel.INSTAGRAM, Channel.TELEGRAM])
async def test_more_options_than_buttons_go_as_a_list(world: World, channel: Channel) -> None:
    await _set_whatsapp_template(world, None)
    payload = (await world.payload(channel, "I can help with these:")).model_copy(
        update={"quick_replies": SUGGESTIONS}
    )
    await world.publish(payload)
    assert await drain(world.dispatcher("d1")) == [Outcome.SENT]
    [sent] = world.sent_for(payload)
    body = sent.body
    if channel is Channel.WHATSAPP:  # a list message: 5 rows (buttons hold 3); a tap is a list_reply
        assert body["interactive"]["type"] == "list"
        titles = [r["title"] for r in body["interactive"]["action"]["sections"][0]["rows"]]
    elif channel is Channel.INSTAGRAM:  # quick replies hold 13
        titles = [q["title"] for q in body["message"]["quick_replies"]]
    else:  # one option per keyboard row
        keyboard = body["reply_markup"]["inline_keyboard"]
        assert all(len(row) == 1 for row in keyboard)
        titles = [row[0]["callback_data"] for row in keyboard]
    assert titles == SUGGESTIONS


async def test_a_telegram_option_is_cut_to_64_bytes_not_characters(world: World) -> None:
    option = "¿Dónde está mi pedido? " * 3  # 69 characters, 75 bytes
    payload = (await world.payload(Channel.TELEGRAM, "Pick one:")).model_copy(
        update={"quick_replies": [option, "Otra cosa"]}
    )
    await world.publish(payload)
    assert await drain(world.dispatcher("d1")) == [Outcome.SENT]  # not refused (BUTTON_DATA_INVALID)
    [sent] = world.sent_for(payload)
    data = sent.body["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    assert len(data.encode()) <= 64 and option.startswith(data)


LINKS = [
    LinkButton(title="Refund timing", url="https://help.example.com/returns#refunds"),
    LinkButton(title="International shipping rates", url="https://help.example.com/shipping"),
]


@pytest.mark.parametrize("channel", [Channel.WHATSAPP, Channel.INSTAGRAM, Channel.TELEGRAM])
async def test_cited_pages_go_as_link_buttons(world: World, channel: Channel) -> None:
    await _set_whatsapp_template(world, None)
    payload = (await world.payload(channel, "Refunds take 5 to 7 days.")).model_copy(update={"links": LINKS})
    await world.publish(payload)
    assert await drain(world.dispatcher("d1")) == [Outcome.SENT]
    [sent] = world.sent_for(payload)
    body = sent.body
    assert sent.text == "Refunds take 5 to 7 days."
    if channel is Channel.WHATSAPP:  # one call-to-action URL button per message: the first page
        assert body["interactive"]["type"] == "cta_url"
        assert body["interactive"]["action"]["parameters"] == {
            "display_text": "Refund timing",
            "url": "https://help.example.com/returns#refunds",
        }
    elif channel is Channel.INSTAGRAM:  # a button template, titles cut to 20 characters
        buttons = body["message"]["attachment"]["payload"]["buttons"]
        assert [(b["type"], b["title"], b["url"]) for b in buttons] == [
            ("web_url", "Refund timing", LINKS[0].url),
            ("web_url", "International shippi", LINKS[1].url),
        ]
    else:
        keyboard = body["reply_markup"]["inline_keyboard"]
        assert keyboard == [[{"text": link.title, "url": link.url}] for link in LINKS]


async def test_outside_the_window_a_template_carries_no_buttons_or_links(world: World) -> None:
    await _set_whatsapp_template(world, {"name": "support_followup", "language": "en_US"})
    payload = (
        await world.payload(Channel.WHATSAPP, "Your refund was approved.", wrote_ago=timedelta(days=2))
    ).model_copy(update={"links": LINKS, "quick_replies": ["Yes", "No"]})
    await world.publish(payload)
    assert await drain(world.dispatcher("d1")) == [Outcome.SENT]
    [sent] = world.sent_for(payload)
    assert sent.body["type"] == "template" and "interactive" not in sent.body
