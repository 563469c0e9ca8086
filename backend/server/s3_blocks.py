"""Chunks as objects in an S3-compatible store: ``s3://BUCKET/chunks/ab/<id>``.

Credentials and region come from the usual ``AWS_*`` variables. The bucket is
created if missing. A PUT is durable, and atomic, once S3 acknowledges it: a reader
sees the whole object or none.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions
import trio

from backend.errors import StoreError
from backend.server.blocks import Stored
from backend.tasks import for_each

PUT_MANY_WORKERS = 8
"""Objects of one ``put_many`` stored at once."""

_PREFIX = "chunks/"

T = TypeVar("T")


def _reason(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class S3BlockStore:
    def __init__(self, bucket: str, endpoint: str | None, region: str | None) -> None:
        self.bucket = bucket
        self.url = f"s3://{bucket}" + (f"?endpoint={endpoint}" if endpoint else "")
        config = botocore.config.Config(
            retries={"max_attempts": 4, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            max_pool_connections=32,
            s3={"addressing_style": "path"},
        )
        self._s3: Any = boto3.client(
            "s3", endpoint_url=endpoint, region_name=region or "us-east-1", config=config
        )
        self._ensure_bucket()

    def _ensure_bucket(self) -> None:
        try:
            self._s3.head_bucket(Bucket=self.bucket)
            return
        except botocore.exceptions.ClientError:
            pass
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise StoreError(f"object store unreachable: {_reason(exc)}") from None
        try:
            self._s3.create_bucket(Bucket=self.bucket)
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StoreError(f"cannot create bucket {self.bucket}: {_reason(exc)}") from None
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise StoreError(f"object store unreachable: {_reason(exc)}") from None

    def _key(self, cid: str) -> str:
        return f"{_PREFIX}{cid[:2]}/{cid}"

    async def put(self, cid: str, sealed: bytes) -> None:
        def work() -> None:
            self._s3.put_object(Bucket=self.bucket, Key=self._key(cid), Body=sealed)

        await self._call(work, f"store chunk {cid}")

    async def put_many(self, chunks: list[tuple[str, bytes]]) -> None:
        """Each object is durable once stored: a few at a time."""

        async def one(chunk: tuple[str, bytes]) -> None:
            await self.put(*chunk)

        await for_each(chunks, one, PUT_MANY_WORKERS)

    async def get(self, cid: str) -> bytes | None:
        def work() -> bytes | None:
            try:
                answer = self._s3.get_object(Bucket=self.bucket, Key=self._key(cid))
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise
            return bytes(answer["Body"].read())

        return await self._call(work, f"read chunk {cid}")

    async def has(self, cid: str) -> bool:
        def work() -> bool:
            try:
                self._s3.head_object(Bucket=self.bucket, Key=self._key(cid))
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                    return False
                raise
            return True

        return await self._call(work, f"look up chunk {cid}")

    async def held(self, cids: list[str]) -> set[str]:
        """A ``HEAD`` each, a few at a time."""
        found: set[str] = set()

        async def one(cid: str) -> None:
            if await self.has(cid):
                found.add(cid)

        await for_each(cids, one, PUT_MANY_WORKERS)
        return found

    async def ids(self) -> AsyncIterator[str]:
        async for chunk in self.stored():
            yield chunk.cid

    async def stored(self) -> AsyncIterator[Stored]:
        def page(token: str | None) -> tuple[list[Stored], str | None]:
            args = {"Bucket": self.bucket, "Prefix": _PREFIX}
            if token:
                args["ContinuationToken"] = token
            answer = self._s3.list_objects_v2(**args)
            found = [
                Stored(
                    obj["Key"].rsplit("/", 1)[-1],
                    int(obj["Size"]),
                    obj["LastModified"].timestamp(),
                )
                for obj in answer.get("Contents", [])
            ]
            return found, answer.get("NextContinuationToken")

        token: str | None = None
        while True:
            found, token = await self._call(functools.partial(page, token), "list chunks")
            for chunk in found:
                yield chunk
            if not token:
                return

    async def delete(self, cid: str) -> None:
        """S3 answers a DELETE of an absent key with success too."""

        def work() -> None:
            self._s3.delete_object(Bucket=self.bucket, Key=self._key(cid))

        await self._call(work, f"delete chunk {cid}")

    async def _call(self, fn: Callable[[], T], what: str) -> T:
        try:
            return await trio.to_thread.run_sync(fn)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise StoreError(f"cannot {what}: {_reason(exc)}") from None

    async def close(self) -> None:
        self._s3.close()
