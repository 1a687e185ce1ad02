"""Channels: one module per channel holding both directions, its webhook adapter and its sender.

* :mod:`.base`: the contracts (``ChannelAdapter`` and its events, ``Sender``, ``RecipientConfig``).
* :mod:`.meta`: what WhatsApp and Instagram share (Meta's webhook signature and envelope, Graph sends).
* :mod:`.whatsapp`, :mod:`.instagram`, :mod:`.telegram`: adapter + sender each; :mod:`.webchat`: the
  web chat sender (its routes are the gateway's).
* :mod:`.http`, :mod:`.splitting`: the HTTP sender base and how long replies are cut into parts.
* :mod:`.registry`: ``Channel`` → adapter and sender.

Nothing is imported here, so a channel module can import :mod:`.base` without loading the registry.
"""
