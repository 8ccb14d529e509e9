"""Upload limits and content sniffing: what makes a file ``stored`` or ``rejected``.

Each uploaded file is streamed to a temporary file while its size and SHA-256 are counted (a
file above the per-file limit is cut off and rejected), then decoded by the project's loader
(:func:`carcheck.data.images.decode_image`: the format comes from the content, never from the
name or the content type; decompression bombs, truncated and corrupt files, non-images are
refused with the loader's reason), then checked against the case's photo count and byte total.
A rejected file never stops the other files of the request. The whole request body is bounded
by :class:`BodyLimitMiddleware` (413 before it is all read).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import error_body

__all__ = ["Checked", "receive_file", "BodyLimitMiddleware", "SNIFF_MAX_PIXELS", "FORMAT_SUFFIX"]

#: files are decoded at reduced size for the check (JPEG: DCT scaling; every byte is still decoded,
#: so truncation shows) -- a full-size decode of a 12 MP photo would cost the request ~100 ms
SNIFF_MAX_PIXELS = 1_000_000

#: suffix of the stored file by sniffed format (the assessment's file name)
FORMAT_SUFFIX = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif",
                 "GIF": ".gif"}

CHUNK = 1 << 20


@dataclass
class Checked:
    """Outcome of one uploaded file: ``tmp`` is the received file when ``reason`` is None."""

    size: int
    sha256: str | None
    reason: str | None = None
    tmp: Path | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None


def receive_file(fileobj, store, max_file_bytes: int, min_side: int = 1) -> Checked:
    """Stream ``fileobj`` (a binary file object) into a temporary file of ``store`` and check it.

    Returns:
        :class:`Checked`; on rejection the temporary file is already removed and ``reason`` says why.
    """
    fd, tmp = store.temp_file()
    h = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = fileobj.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_file_bytes:
                    tmp.unlink(missing_ok=True)
                    return Checked(size, None, f"file too large: more than {max_file_bytes} bytes "
                                                f"(limit {max_file_bytes / 2 ** 20:.1f} MiB per file)")
                h.update(chunk)
                out.write(chunk)
        if size == 0:
            tmp.unlink(missing_ok=True)
            return Checked(0, None, "empty file")
        from ..data.images import ImageLoadError, decode_image

        try:
            img = decode_image(tmp, max_decoded_pixels=SNIFF_MAX_PIXELS, min_side=min_side)
        except ImageLoadError as e:
            tmp.unlink(missing_ok=True)
            return Checked(size, h.hexdigest(), e.reason)
        return Checked(size, h.hexdigest(), None, tmp, img.format, img.width, img.height)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class BodyTooLarge(Exception):
    """Raised from ``receive`` when the request body exceeds the limit."""


class BodyLimitMiddleware:
    """ASGI middleware: a request whose body is larger than ``limit`` bytes is answered 413 (a
    ``Content-Length`` above it without reading anything, a chunked body as soon as it passes it).

    The body parser (FastAPI's form reading) turns any exception raised from ``receive`` into its own
    400; so once the limit is passed, whatever the application answers is dropped and the 413 sent instead.
    """

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    n = int(v)
                except ValueError:
                    n = 0
                if n > self.limit:
                    return await self._reject(send)
        seen = 0
        exceeded = False
        started = False

        async def limited_receive():
            nonlocal seen, exceeded
            if exceeded:
                raise BodyTooLarge()
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    exceeded = True
                    raise BodyTooLarge()
            return msg

        async def tracking_send(msg):
            nonlocal started
            if exceeded and not started:
                return  # the application's answer to a cut-off body (e.g. a 400): replaced by the 413
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            pass
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._reject(send)

    async def _reject(self, send):
        import json

        body = json.dumps(error_body("too_large", f"request body larger than {self.limit} bytes",
                                     {"limit_bytes": self.limit})).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
