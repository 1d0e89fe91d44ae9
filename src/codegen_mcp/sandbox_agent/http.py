"""The agent's HTTP edge: bearer auth, one error mapping, JSON bodies in and out.

Every failure becomes `{"error": {"code", "message"}}` with the code's HTTP status, in one middleware; every
body and path argument is validated by its model into one sentence, never a traceback.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from codegen_mcp.api import routes
from codegen_mcp.api.errors import CodegenError, ErrorCode, InvalidArgument, NotFound, validation_sentence
from codegen_mcp.sandbox_agent.agent import AGENT

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def error_response(err: CodegenError) -> web.Response:
    headers = {"WWW-Authenticate": "Bearer"} if err.code is ErrorCode.UNAUTHORIZED else None
    return web.json_response(err.to_dict(), status=err.code.http_status, headers=headers)


def _http_error(exc: web.HTTPException, request: web.Request) -> CodegenError:
    if exc.status == 404:
        return NotFound(f"there is no endpoint {request.method} {request.path}")
    if exc.status == 405:
        return InvalidArgument(f"{request.method} is not allowed on {request.path}")
    if exc.status == 413:
        return CodegenError(
            f"the request body is larger than {request.client_max_size} bytes", code=ErrorCode.TOO_LARGE
        )
    return CodegenError(exc.reason or "the request failed", code=ErrorCode.INVALID_ARGUMENT)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except CodegenError as err:
        return error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_http_error(exc, request))
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return error_response(CodegenError("the agent failed unexpectedly; the details are in its log"))


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    token = request.app[AGENT].token
    if token is not None and request.path != routes.HEALTHZ.path:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise CodegenError(
                "a valid bearer token is required (Authorization: Bearer <token>)", code=ErrorCode.UNAUTHORIZED
            )
    return await handler(request)


def validated(model: type[M], data: Mapping[str, Any]) -> M:
    """`data` (a body, a query, path parameters) as `model`; a refusal becomes one invalid_argument sentence."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise InvalidArgument(validation_sentence(err, model=model)) from None


async def read_args(request: web.Request, model: type[M]) -> M:
    """The JSON body validated as `model`; errors become one-sentence invalid_argument errors."""
    raw = await request.read()
    if not raw.strip():
        body: Any = {}
    else:
        try:
            body = json.loads(raw)
        except ValueError:  # also bytes that are not UTF-8
            raise InvalidArgument("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidArgument("the request body must be a JSON object")
    return validated(model, body)


def model_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.json_response(text=model.model_dump_json(), status=status)
