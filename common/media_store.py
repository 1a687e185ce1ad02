"""Where the bytes of the media customers send are kept: Postgres (``media_contents``, the default: no
extra service, in every backup of the database) or an S3-compatible bucket (``MEDIA__S3_BUCKET``; AWS
S3, MinIO, Ceph), which keeps large files out of the database.

Both write the bytes and mark the media ``stored`` so that a crash leaves nothing half-stored:

* Postgres: bytes and ``stored`` in one transaction (the caller commits);
* S3: the object is uploaded first, under a key fixed by the media id
  (``<prefix><tenant>/<brand>/<media id>``), then ``stored`` and the key are committed. A crash in
  between leaves the media ``pending`` and the redelivered message uploads the same key again: an
  overwrite, never a second copy or a row pointing at nothing.

Reading follows the row: media stored before the bucket was configured stays readable from Postgres.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from common.config import S3Settings, Settings
from common.db import repositories as repo
from common.errors import DependencyError
from common.logging import get_logger

log = get_logger(__name__)


def s3_client(settings: S3Settings) -> Any:
    """A boto3 S3 client for ``settings`` (imported lazily: only S3 users pay for boto3)."""
    import boto3

    secret = settings.secret_access_key.get_secret_value() if settings.secret_access_key else None
    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=secret,
        region_name=settings.region,
    )


class MediaStore(Protocol):
    """Keeps and returns the bytes of a media item."""

    async def put(
        self, session: AsyncSession, media: Any, *, data: bytes, mime_type: str | None, sha256: str
    ) -> None:
        """Keep ``data`` for the ``media`` row and mark it ``stored`` (the caller commits)."""
        ...

    async def get(self, session: AsyncSession, media: Any) -> bytes | None:
        """The bytes of a stored ``media`` row, or None."""
        ...


class PostgresMediaStore:
    """The bytes in ``media_contents``, written in the caller's transaction."""

    async def put(
        self, session: AsyncSession, media: Any, *, data: bytes, mime_type: str | None, sha256: str
    ) -> None:
        """Bytes and ``stored`` together."""
        await repo.store_media(session, media_id=media.id, data=data, mime_type=mime_type, sha256=sha256)

    async def get(self, session: AsyncSession, media: Any) -> bytes | None:
        """From ``media_contents``."""
        return await repo.media_content(session, media_id=media.id)


class S3MediaStore:
    """The bytes in an S3-compatible bucket; the row keeps the object key."""

    def __init__(self, *, bucket: str, prefix: str, s3: S3Settings, client: Any | None = None) -> None:
        self._bucket = bucket
        self._prefix = prefix
        self._settings = s3
        self._client = client
        self._fallback = PostgresMediaStore()

    def key(self, media: Any) -> str:
        """The object key of a media item: fixed by its id, so a retried upload overwrites."""
        return f"{self._prefix}{media.tenant_id}/{media.brand_id}/{media.id}"

    async def put(
        self, session: AsyncSession, media: Any, *, data: bytes, mime_type: str | None, sha256: str
    ) -> None:
        """Upload, then mark ``stored`` with the key; an unreachable bucket is a :class:`DependencyError`
        (the message is processed again later, the media still ``pending``)."""
        key = self.key(media)
        extra = {"ContentType": mime_type} if mime_type else {}
        await self._call("put_object", Bucket=self._bucket, Key=key, Body=data, **extra)
        await repo.store_media(
            session,
            media_id=media.id,
            data=None,
            mime_type=mime_type,
            sha256=sha256,
            object_key=key,
            size_bytes=len(data),
        )
        log.info("media_uploaded", media_id=str(media.id), bucket=self._bucket, bytes=len(data))

    async def get(self, session: AsyncSession, media: Any) -> bytes | None:
        """From the bucket; media stored before the bucket was configured, from Postgres."""
        if not media.object_key:
            return await self._fallback.get(session, media)
        answer = await self._call("get_object", Bucket=self._bucket, Key=media.object_key)
        body = answer["Body"]
        try:
            data: bytes = await asyncio.to_thread(body.read)
        finally:
            body.close()
        return data

    async def _call(self, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        if self._client is None:
            self._client = s3_client(self._settings)
        try:
            # boto3 is synchronous: in a thread, so the event loop keeps serving.
            return await asyncio.to_thread(getattr(self._client, method), **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise DependencyError(
                f"media storage ({self._bucket}) failed: {type(exc).__name__}",
                details={"bucket": self._bucket, "operation": method},
            ) from exc


def build_media_store(settings: Settings) -> MediaStore:
    """S3 when ``MEDIA__S3_BUCKET`` is set (``S3__*`` for the endpoint and keys), else Postgres."""
    media = settings.media
    if media.s3_bucket:
        return S3MediaStore(bucket=media.s3_bucket, prefix=media.s3_prefix, s3=settings.s3)
    return PostgresMediaStore()


__all__ = ["MediaStore", "PostgresMediaStore", "S3MediaStore", "build_media_store", "s3_client"]
