"""What the server answers for a request it gave up on: 504 Gateway Timeout, not Serve's 408.

Serve answers 408 Request Timeout to a request it has not answered within `request_timeout_s`,
on its proxy and on each replica's own endpoint. 408 says the *client* was too slow to send
its request; here the server was too slow to answer it, which HTTP calls 504 (a gateway, the
proxy, gave up on its upstream, the replica). Clients, load balancers and dashboards treat a
5xx as the server's failure, to alert on and to retry; a 4xx as the caller's mistake.

Serve takes ASGI middlewares for its HTTP servers from a function named in the environment
variable RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH, read by every proxy and replica when it
starts: `deploylab.serve.start` sets it to `proxy_middlewares` below for the Ray it starts
(`CALLBACK`). On a cluster of your own, export it before `ray start` on every node; without
it the server answers Serve's 408, which the kit's client retries all the same.

Ray's own metrics still count such a request as 408 (`ray_serve_num_http_requests_total`):
the proxy records the status it decided on, before the middleware rewrites it on the way out.
The kit's server never answers 408 itself, so every 408 there is one of these.
"""

from __future__ import annotations

ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "deploylab.serve.gateway:proxy_middlewares"


class GatewayTimeout:
    """ASGI middleware: the response status 408 goes out as 504; everything else unchanged."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_504(message):
            if message["type"] == "http.response.start" and message["status"] == 408:
                message = {**message, "status": 504}
            await send(message)

        return await self.app(scope, receive, send_504)


def proxy_middlewares() -> list:
    """Serve's HTTP proxy callback: the middlewares its HTTP servers run (see module doc)."""
    from starlette.middleware import Middleware

    return [Middleware(GatewayTimeout)]
