"""Chat model backends behind one :class:`ChatModel` protocol; :func:`build_chat_model` picks one."""

from common.llm.base import ChatModel, UsageMeter
from common.llm.factory import build_chat_model

__all__ = ["ChatModel", "UsageMeter", "build_chat_model"]
