"""`deploylab.serve.gateway`: Serve's 408 goes out as 504, nothing else changes, and Serve
accepts the callback. (The slow timeout test in test_server.py sees it end to end.)"""

import asyncio

import pytest

from deploylab.serve import gateway


def _app(status: int):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"Request r1 timed out after 1s."})
    return app


def _sent(app, scope_type: str = "http") -> list[dict]:
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    asyncio.run(gateway.GatewayTimeout(app)({"type": scope_type}, receive, send))
    return sent


def test_a_timeout_goes_out_as_504_with_its_message():
    start, body = _sent(_app(408))
    assert start["status"] == 504
    assert start["headers"] == [(b"content-type", b"text/plain")]
    assert body["body"] == b"Request r1 timed out after 1s."


@pytest.mark.parametrize("status", [200, 400, 404, 413, 500, 503])
def test_every_other_status_goes_out_unchanged(status):
    assert _sent(_app(status))[0]["status"] == status


def test_a_scope_other_than_http_passes_through():
    assert _sent(_app(408), scope_type="websocket")[0]["status"] == 408


def test_serve_accepts_the_callback_and_its_import_path_names_it():
    # what every proxy and replica does with the variable when it starts
    from ray.serve._private.http_util import validate_http_proxy_callback_return
    from ray.serve._private.utils import call_function_from_import_path

    [middleware] = validate_http_proxy_callback_return(
        call_function_from_import_path(gateway.CALLBACK))
    assert middleware.cls is gateway.GatewayTimeout

