"""JSON errors of the API: every error answers ``{"error": {"code", "message", "detail"}}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "error_body", "install_error_handlers"]

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid_request",
          429: "rate_limited", 500: "internal_error", 503: "unavailable"}


class ApiError(Exception):
    """An error answer: HTTP ``status``, a stable machine ``code``, a human ``message`` and optional ``detail``."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.detail, self.headers = status, code, message, detail, headers


def error_body(code: str, message: str, detail: Any = None) -> dict:
    """The JSON body of an error."""
    return {"error": {"code": code, "message": message, "detail": detail}}


def install_error_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` (ours, FastAPI's validation, Starlette's 404/405, any bug) a JSON error."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, e: ApiError):
        return JSONResponse(error_body(e.code, e.message, e.detail), status_code=e.status, headers=e.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException):
        return JSONResponse(error_body(_CODES.get(e.status_code, "error"), str(e.detail)), status_code=e.status_code,
                            headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError):
        detail = [{"loc": list(err.get("loc", ())), "msg": err.get("msg"), "type": err.get("type")}
                  for err in e.errors()]
        return JSONResponse(error_body("invalid_request", "the request does not match the API", detail),
                            status_code=422)

    @app.exception_handler(Exception)
    async def _bug(_: Request, e: Exception):
        import logging

        logging.getLogger("carcheck.serve").exception("internal error")
        return JSONResponse(error_body("internal_error", f"internal error ({type(e).__name__})"), status_code=500)
