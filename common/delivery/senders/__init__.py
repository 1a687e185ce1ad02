"""Provider senders, one module per channel (WhatsApp, Instagram, Telegram; web chat is registered from
``webchat.py`` when that module exists, see :mod:`common.delivery.registry`)."""

from common.delivery.senders.instagram import InstagramSender
from common.delivery.senders.telegram import TelegramSender
from common.delivery.senders.whatsapp import WhatsAppSender

__all__ = ["InstagramSender", "TelegramSender", "WhatsAppSender"]
