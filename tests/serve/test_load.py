"""The load generators on their own, against two tiny loopback HTTP servers (no Ray)."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deploylab.serve import load


def _server(hits: list):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            hits.append(self.path)
            body = b'{"outputs": []}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


@pytest.fixture
def two_servers():
    hits = ([], [])
    servers = [_server(h) for h in hits]
    yield [url for _, url in servers], hits
    for httpd, _ in servers:
        httpd.shutdown()
        httpd.server_close()


def test_closed_loop_spreads_its_clients_over_several_servers(two_servers):
    urls, hits = two_servers
    res = load.closed_loop(urls, "m", [load.text_request("hi")], concurrency=4,
                           duration_s=10, max_requests=40)
    assert res.ok == res.requests == 40 and res.errors == {}
    assert len(hits[0]) + len(hits[1]) == 40
    assert hits[0] and hits[1], "one server got no request"
    assert set(hits[0]) == {"/v2/models/m/infer"}


def test_open_loop_sends_requests_to_several_servers_in_turn(two_servers):
    urls, hits = two_servers
    res = load.open_loop(urls, "m", [load.text_request("hi")], rate=200, duration_s=0.1,
                         version="2")
    assert res.ok == res.requests == 20
    assert len(hits[0]) == len(hits[1]) == 10  # request i goes to server i % 2
    assert set(hits[1]) == {"/v2/models/m/versions/2/infer"}


@pytest.mark.parametrize("urls", [[], ["http://127.0.0.1:1", "http://example.com:80"]])
def test_an_empty_or_remote_target_list_is_refused_before_any_request(urls):
    with pytest.raises(ValueError, match=r"URL|this machine only"):
        load.closed_loop(urls, "m", [load.text_request("hi")], duration_s=1)
