"""Where knowledge documents come from: local paths and globs, S3-compatible buckets, uploaded blobs.

A *source spec* names many documents; :func:`list_sources` expands it into :class:`SourceItem` s, and
:func:`read_source` fetches one item's bytes. Three locations exist:

* a local path or glob (``/data/kb/**/*.md``) — for the CLI and Ray jobs on nodes that see the files;
* ``s3://bucket/prefix`` — any S3-compatible store, endpoint and keys from :class:`common.config.S3Settings`;
* ``pglo:<oid>`` — a file uploaded through the API, kept as a Postgres large object until its job
  succeeds (durable with the job row, visible to every worker in a cluster, no extra service).

An item's ``uri`` is its identity in the brand's knowledge (the same uri re-ingested replaces the old
chunks); for uploads it is ``upload://<file name>``, so uploading a new version of a file updates it.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import Engine, text

from common.config import S3Settings
from common.errors import DependencyError, InvalidInput, NotFound, SourceReadError
from common.media_store import s3_client

S3_SCHEME = "s3"
BLOB_PREFIX = "pglo:"
UPLOAD_SCHEME = "upload://"


@dataclass(frozen=True, slots=True)
class SourceItem:
    """One document to ingest: its identity (``uri``), where its bytes are, and a declared type."""

    uri: str
    location: str
    content_type: str | None = None


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix")``."""
    parsed = urlparse(url)
    if parsed.scheme != S3_SCHEME or not parsed.netloc:
        raise InvalidInput(f"not an s3:// URL: {url!r}", details={"url": url})
    return parsed.netloc, parsed.path.lstrip("/")


def list_sources(spec: str, *, s3: S3Settings, client: Any | None = None) -> list[SourceItem]:
    """Expand a spec (local path/glob or ``s3://bucket/prefix``) into items, sorted by uri."""
    if spec.startswith(f"{S3_SCHEME}://"):
        return _list_s3(spec, client=client or s3_client(s3))
    paths = sorted({Path(p) for p in glob.glob(spec, recursive=True)} or _existing(spec))
    files = [p for p in paths if p.is_file()]
    for directory in (p for p in paths if p.is_dir()):
        files.extend(sorted(f for f in directory.rglob("*") if f.is_file()))
    return [SourceItem(uri=str(f.resolve()), location=str(f.resolve())) for f in sorted(set(files))]


def _existing(spec: str) -> set[Path]:
    path = Path(spec)
    return {path} if path.exists() else set()


def _list_s3(spec: str, *, client: Any) -> list[SourceItem]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3_url(spec)
    items: list[SourceItem] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = str(obj["Key"])
                if not key.endswith("/"):
                    url = f"s3://{bucket}/{key}"
                    items.append(SourceItem(uri=url, location=url))
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in {"NoSuchBucket", "AccessDenied", "403", "404"}:
            raise NotFound(f"cannot list {spec}: {code}", details={"source": spec}) from exc
        raise DependencyError(f"object storage failed listing {spec}: {exc}") from exc
    except BotoCoreError as exc:
        raise DependencyError(f"object storage unreachable listing {spec}: {exc}") from exc
    return sorted(items, key=lambda i: i.uri)


class SourceReader:
    """Reads items' bytes; holds one S3 client and one database engine, opened lazily, reused."""

    def __init__(self, *, s3: S3Settings, engine: Engine | None = None) -> None:
        self._s3_settings = s3
        self._s3: Any | None = None
        self._engine = engine

    def read(self, item: SourceItem) -> bytes:
        """The item's bytes. Raises :class:`SourceReadError` (quarantine) or DependencyError (retry)."""
        location = item.location
        if location.startswith(f"{S3_SCHEME}://"):
            return self._read_s3(location)
        if location.startswith(BLOB_PREFIX):
            return self._read_blob(location)
        try:
            return Path(location).read_bytes()
        except OSError as exc:
            raise SourceReadError(
                f"cannot read {location}: {exc.strerror}", details={"uri": item.uri}
            ) from exc

    def _read_s3(self, url: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        if self._s3 is None:
            self._s3 = s3_client(self._s3_settings)
        bucket, key = split_s3_url(url)
        try:
            body = self._s3.get_object(Bucket=bucket, Key=key)["Body"]
            data: bytes = body.read()
            return data
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"NoSuchKey", "NoSuchBucket", "AccessDenied", "404", "403"}:
                raise SourceReadError(f"cannot read {url}: {code}", details={"uri": url}) from exc
            raise DependencyError(f"object storage failed reading {url}: {exc}") from exc
        except BotoCoreError as exc:
            raise DependencyError(f"object storage unreachable reading {url}: {exc}") from exc

    def _read_blob(self, location: str) -> bytes:
        if self._engine is None:
            raise DependencyError("uploaded blobs need a database engine")
        oid = blob_oid(location)
        with self._engine.connect() as conn:
            exists = conn.scalar(text("SELECT 1 FROM pg_largeobject_metadata WHERE oid = :oid"), {"oid": oid})
            if not exists:
                raise SourceReadError(f"uploaded blob {oid} is gone", details={"oid": oid})
            data = conn.scalar(text("SELECT lo_get(:oid)"), {"oid": oid})
        return bytes(data)


def blob_location(oid: int) -> str:
    """Location string of an uploaded blob."""
    return f"{BLOB_PREFIX}{oid}"


def blob_oid(location: str) -> int:
    """Large-object id of a ``pglo:<oid>`` location."""
    value = location.removeprefix(BLOB_PREFIX)
    if not value.isdigit():
        raise InvalidInput(f"bad blob location {location!r}")
    return int(value)
