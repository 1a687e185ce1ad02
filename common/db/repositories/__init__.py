"""Data access: async functions with keyword-only arguments.

The caller owns the transaction: these functions ``flush`` (so ids and server defaults are known) and never
``commit``. Inserts that race (conversations, inbound messages) use ``INSERT ... ON CONFLICT`` so concurrent
callers settle in the database, not in Python.

One module per aggregate (access: keys and audit; brands, channels, conversations, outbox, knowledge,
deliveries, actions); this package re-exports them all, so callers write
``from common.db import repositories as repo`` and ``repo.require_brand(...)`` whichever module a
function lives in.
"""

from common.db.repositories.access import (
    find_api_key,
    insert_api_key,
    insert_audit,
    list_api_keys,
    list_audit,
    revoke_api_key,
)
from common.db.repositories.actions import (
    claim_pending_action,
    finish_action_log,
    insert_action_log,
    list_action_logs,
    pending_action,
)
from common.db.repositories.brands import (
    add_automation_rule,
    get_brand_profile,
    get_tenant,
    list_automation_rules,
    list_brands,
    list_tenants,
    require_brand,
    unknown_brand,
    upsert_brand,
    upsert_tenant,
)
from common.db.repositories.channels import (
    delete_channel_config,
    encrypted_channel_configs,
    find_app_channel_configs,
    find_brand_channel_config,
    find_channel_config,
    get_channel_config,
    insert_channel_config,
    list_channel_configs,
    route_of,
    upsert_channel_config,
)
from common.db.repositories.conversations import (
    find_conversation,
    find_inbound,
    find_reply_to,
    get_conversation,
    get_conversation_with_messages,
    get_message,
    get_or_create_conversation,
    insert_inbound,
    insert_outbound,
    list_conversations,
    messages_after,
    recent_messages,
    set_conversation_state,
)
from common.db.repositories.deliveries import (
    claim_delivery,
    finish_delivery,
    get_delivery,
    mark_delivery_sending,
    release_delivery,
)
from common.db.repositories.knowledge import (
    chunk_texts,
    create_ingestion_job,
    get_ingestion_job,
    list_chunks,
    sync_source_chunks,
    update_ingestion_job,
    upsert_knowledge_source,
)
from common.db.repositories.outbox import (
    add_outbox,
    mark_outbox_published,
    unpublished_outbox,
)

__all__ = [
    "add_automation_rule",
    "add_outbox",
    "chunk_texts",
    "claim_delivery",
    "claim_pending_action",
    "create_ingestion_job",
    "delete_channel_config",
    "encrypted_channel_configs",
    "find_api_key",
    "find_app_channel_configs",
    "find_brand_channel_config",
    "find_channel_config",
    "find_conversation",
    "find_inbound",
    "find_reply_to",
    "finish_action_log",
    "finish_delivery",
    "get_brand_profile",
    "get_channel_config",
    "get_conversation",
    "get_conversation_with_messages",
    "get_delivery",
    "get_ingestion_job",
    "get_message",
    "get_or_create_conversation",
    "get_tenant",
    "insert_action_log",
    "insert_api_key",
    "insert_audit",
    "insert_channel_config",
    "insert_inbound",
    "insert_outbound",
    "list_action_logs",
    "list_api_keys",
    "list_audit",
    "list_automation_rules",
    "list_brands",
    "list_channel_configs",
    "list_chunks",
    "list_conversations",
    "list_tenants",
    "mark_delivery_sending",
    "mark_outbox_published",
    "messages_after",
    "pending_action",
    "recent_messages",
    "release_delivery",
    "require_brand",
    "revoke_api_key",
    "route_of",
    "set_conversation_state",
    "sync_source_chunks",
    "unknown_brand",
    "unpublished_outbox",
    "update_ingestion_job",
    "upsert_brand",
    "upsert_channel_config",
    "upsert_knowledge_source",
    "upsert_tenant",
]
