"""What of a streaming model's partial text the customer may see, and a stream that breaks early."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from common.config import Settings
from common.conversation.drafting import Drafter, visible_draft
from common.errors import LLMError
from common.schemas import ChatMessage, ChatRequest
from tests.fakes.chat import ScriptedChatModel


@pytest.mark.parametrize(
    ("partial", "shown"),
    [
        ("You have 30 days", "You have 30 days"),
        ('Sure. ```action\n{"name": "create_ticket"', "Sure."),
        ('I will open one {"action": "create_ticket"', "I will open one"),
        ("```", ""),
    ],
)
def test_no_action_block_is_ever_shown(partial: str, shown: str) -> None:
    assert visible_draft(partial) == shown


class _Engine:
    """Only what Drafter's constructor stores; drafting is not run here."""


async def test_a_stream_that_fails_before_any_text_falls_back_to_one_completion() -> None:
    chat = ScriptedChatModel("the whole answer")

    async def broken(request: ChatRequest) -> AsyncIterator[str]:
        raise LLMError("stream refused")
        yield ""  # pragma: no cover - makes this an async generator

    seen: list[str] = []

    async def progress(text: str) -> None:
        seen.append(text)

    drafter = Drafter(settings=Settings(), retrieve=None, chat=chat.chat, actions=_Engine(), stream=broken)  # type: ignore[arg-type]
    request = ChatRequest(messages=[ChatMessage(role="user", content="hi")])
    response = await drafter._streamed(request, progress, 0.0)
    assert response.text == "the whole answer" and chat.calls == 1 and seen == []


async def test_a_stream_that_breaks_after_text_is_an_error_not_a_second_answer() -> None:
    chat = ScriptedChatModel("never asked")

    async def half(request: ChatRequest) -> AsyncIterator[str]:
        yield "You have"
        raise LLMError("stream broke")

    async def progress(text: str) -> None:
        return None

    drafter = Drafter(settings=Settings(), retrieve=None, chat=chat.chat, actions=_Engine(), stream=half)  # type: ignore[arg-type]
    with pytest.raises(LLMError):
        await drafter._streamed(ChatRequest(messages=[ChatMessage(role="user", content="hi")]), progress, 0.0)
    assert chat.calls == 0
