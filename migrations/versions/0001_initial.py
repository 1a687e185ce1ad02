"""Initial schema: tenants, brands, personas, channels, conversations, message log, knowledge, jobs, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[object]:
    """JSONB on Postgres, JSON elsewhere (same as common.db.models.JSONType)."""
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('outbox_messages',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('stream', sa.String(length=200), nullable=False),
    sa.Column('payload', _json(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('clock_timestamp()'), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_messages'))
    )
    op.create_index('ix_outbox_messages_unpublished', 'outbox_messages', ['created_at'], unique=False, postgresql_where=sa.text('published_at IS NULL'))
    op.create_table('tenants',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('slug', sa.String(length=100), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tenants')),
    sa.UniqueConstraint('slug', name=op.f('uq_tenants_slug'))
    )
    op.create_table('brands',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('slug', sa.String(length=100), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_brands_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_brands')),
    sa.UniqueConstraint('id', 'tenant_id', name=op.f('uq_brands_id_tenant_id')),
    sa.UniqueConstraint('tenant_id', 'slug', name=op.f('uq_brands_tenant_id_slug'))
    )
    op.create_index(op.f('ix_brands_tenant_id'), 'brands', ['tenant_id'], unique=False)
    op.create_table('automation_rules',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('brand_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('config', _json(), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('priority', sa.Integer(), server_default=sa.text('100'), nullable=False),
    sa.ForeignKeyConstraint(['brand_id', 'tenant_id'], ['brands.id', 'brands.tenant_id'], name=op.f('fk_automation_rules_brand_id_brands'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_automation_rules'))
    )
    op.create_index('ix_automation_rules_brand_id_priority', 'automation_rules', ['brand_id', 'priority'], unique=False)
    op.create_table('channel_configs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('brand_id', sa.Uuid(), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('external_id', sa.String(length=256), nullable=False),
    sa.Column('settings', _json(), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.CheckConstraint("channel IN ('webchat', 'whatsapp', 'instagram', 'telegram')", name=op.f('ck_channel_configs_channel')),
    sa.ForeignKeyConstraint(['brand_id', 'tenant_id'], ['brands.id', 'brands.tenant_id'], name=op.f('fk_channel_configs_brand_id_brands'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_channel_configs')),
    sa.UniqueConstraint('channel', 'external_id', name=op.f('uq_channel_configs_channel_external_id'))
    )
    op.create_index(op.f('ix_channel_configs_brand_id'), 'channel_configs', ['brand_id'], unique=False)
    op.create_table('conversations',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('brand_id', sa.Uuid(), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('customer_id', sa.String(length=256), nullable=False),
    sa.Column('state', sa.String(length=16), server_default='bot', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("channel IN ('webchat', 'whatsapp', 'instagram', 'telegram')", name=op.f('ck_conversations_channel')),
    sa.CheckConstraint("state IN ('bot', 'handoff', 'closed')", name=op.f('ck_conversations_state')),
    sa.ForeignKeyConstraint(['brand_id', 'tenant_id'], ['brands.id', 'brands.tenant_id'], name=op.f('fk_conversations_brand_id_brands'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_conversations')),
    sa.UniqueConstraint('brand_id', 'channel', 'customer_id', name=op.f('uq_conversations_brand_id_channel_customer_id'))
    )
    op.create_index('ix_conversations_brand_id_state', 'conversations', ['brand_id', 'state'], unique=False)
    op.create_table('ingestion_jobs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('brand_id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='queued', nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('counts', _json(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed')", name=op.f('ck_ingestion_jobs_status')),
    sa.ForeignKeyConstraint(['brand_id', 'tenant_id'], ['brands.id', 'brands.tenant_id'], name=op.f('fk_ingestion_jobs_brand_id_brands'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ingestion_jobs'))
    )
    op.create_index('ix_ingestion_jobs_brand_id_created_at', 'ingestion_jobs', ['brand_id', 'created_at'], unique=False)
    op.create_table('knowledge_sources',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('brand_id', sa.Uuid(), nullable=False),
    sa.Column('uri', sa.String(length=1024), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('content_type', sa.String(length=100), nullable=False),
    sa.Column('content_hash', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['brand_id', 'tenant_id'], ['brands.id', 'brands.tenant_id'], name=op.f('fk_knowledge_sources_brand_id_brands'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_knowledge_sources')),
    sa.UniqueConstraint('brand_id', 'uri', name=op.f('uq_knowledge_sources_brand_id_uri'))
    )
    op.create_table('persona_profiles',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('brand_id', sa.Uuid(), nullable=False),
    sa.Column('tone', sa.Text(), nullable=False),
    sa.Column('languages', _json(), nullable=False),
    sa.Column('greeting', sa.Text(), nullable=False),
    sa.Column('sign_off', sa.Text(), nullable=False),
    sa.Column('avoid_topics', _json(), nullable=False),
    sa.Column('escalation_message', sa.Text(), nullable=False),
    sa.Column('fallback_message', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['brand_id'], ['brands.id'], name=op.f('fk_persona_profiles_brand_id_brands'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_persona_profiles')),
    sa.UniqueConstraint('brand_id', name=op.f('uq_persona_profiles_brand_id'))
    )
    op.create_table('knowledge_chunks',
    sa.Column('id', sa.String(length=128), nullable=False),
    sa.Column('source_id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('brand_id', sa.Uuid(), nullable=False),
    sa.Column('ordinal', sa.Integer(), nullable=False),
    sa.Column('heading_path', sa.Text(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('content_hash', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['brand_id', 'tenant_id'], ['brands.id', 'brands.tenant_id'], name=op.f('fk_knowledge_chunks_brand_id_brands'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['source_id'], ['knowledge_sources.id'], name=op.f('fk_knowledge_chunks_source_id_knowledge_sources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_knowledge_chunks'))
    )
    op.create_index('ix_knowledge_chunks_brand_id_tenant_id', 'knowledge_chunks', ['brand_id', 'tenant_id'], unique=False)
    op.create_index('ix_knowledge_chunks_source_id_ordinal', 'knowledge_chunks', ['source_id', 'ordinal'], unique=False)
    op.create_table('message_logs',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('conversation_id', sa.Uuid(), nullable=False),
    sa.Column('tenant_id', sa.Uuid(), nullable=False),
    sa.Column('brand_id', sa.Uuid(), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('direction', sa.String(length=16), nullable=False),
    sa.Column('provider_message_id', sa.String(length=256), nullable=True),
    sa.Column('in_reply_to', sa.Uuid(), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('citations', _json(), nullable=False),
    sa.Column('guardrails', _json(), nullable=False),
    sa.Column('prompt', _json(), nullable=True),
    sa.Column('llm_usage', _json(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('clock_timestamp()'), nullable=False),
    sa.CheckConstraint("channel IN ('webchat', 'whatsapp', 'instagram', 'telegram')", name=op.f('ck_message_logs_channel')),
    sa.CheckConstraint("direction IN ('inbound', 'outbound')", name=op.f('ck_message_logs_direction')),
    sa.ForeignKeyConstraint(['brand_id', 'tenant_id'], ['brands.id', 'brands.tenant_id'], name=op.f('fk_message_logs_brand_id_brands'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_message_logs_conversation_id_conversations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_message_logs')),
    sa.UniqueConstraint('brand_id', 'channel', 'direction', 'provider_message_id', name=op.f('uq_message_logs_brand_id_channel_direction_provider_message_id'))
    )
    op.create_index('ix_message_logs_conversation_id_created_at', 'message_logs', ['conversation_id', 'created_at'], unique=False)
    op.create_index('ix_message_logs_in_reply_to', 'message_logs', ['in_reply_to'], unique=False)


def downgrade() -> None:
    """Drop everything, children before parents."""
    op.drop_index('ix_message_logs_in_reply_to', table_name='message_logs')
    op.drop_index('ix_message_logs_conversation_id_created_at', table_name='message_logs')
    op.drop_table('message_logs')
    op.drop_index('ix_knowledge_chunks_source_id_ordinal', table_name='knowledge_chunks')
    op.drop_index('ix_knowledge_chunks_brand_id_tenant_id', table_name='knowledge_chunks')
    op.drop_table('knowledge_chunks')
    op.drop_table('persona_profiles')
    op.drop_table('knowledge_sources')
    op.drop_index('ix_ingestion_jobs_brand_id_created_at', table_name='ingestion_jobs')
    op.drop_table('ingestion_jobs')
    op.drop_index('ix_conversations_brand_id_state', table_name='conversations')
    op.drop_table('conversations')
    op.drop_index(op.f('ix_channel_configs_brand_id'), table_name='channel_configs')
    op.drop_table('channel_configs')
    op.drop_index('ix_automation_rules_brand_id_priority', table_name='automation_rules')
    op.drop_table('automation_rules')
    op.drop_index(op.f('ix_brands_tenant_id'), table_name='brands')
    op.drop_table('brands')
    op.drop_table('tenants')
    op.drop_index('ix_outbox_messages_unpublished', table_name='outbox_messages', postgresql_where=sa.text('published_at IS NULL'))
    op.drop_table('outbox_messages')
