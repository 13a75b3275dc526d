"""What the server refuses: an open bind without a key, oversized bodies, unknown and path-shaped ids."""

from __future__ import annotations

import httpx2 as httpx
import pytest

from kinema.runtime.cli import main


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_an_open_bind_without_a_key_refuses_to_start(host, capsys, monkeypatch):
    monkeypatch.delenv("KINEMA_API_KEY", raising=False)
    assert main(["serve", "--host", host, "--port", "8123"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and host in err[0] and "--api-key" in err[0]


def _auth(server):
    return {"Authorization": f"Bearer {server.key}"}


def test_an_oversized_body_is_413(server):
    big = b"x" * ((1 << 20) + 1)  # the server runs with --max-upload-mb 1
    r = httpx.post(server.url + "/v1/videos", headers=_auth(server), files={"input_reference": ("a.png", big, "image/png")}, data={"prompt": "a red circle"})
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]

    def chunks():  # no content-length: counted as it arrives
        for _ in range(40):
            yield b"y" * 65536

    r = httpx.post(server.url + "/v1/videos", headers=_auth(server) | {"content-type": "application/json"}, content=chunks())
    assert r.status_code == 413


@pytest.mark.parametrize("path", [
    "/v1/videos/video_000000000000000000000000",
    "/v1/videos/video_000000000000000000000000/content",
    "/v1/videos/..%2F..%2F..%2Fetc%2Fpasswd/content",
    "/v1/videos/%2E%2E/content",
    "/v1/videos/video_..%2F..%2Fjobs.sqlite3/content",
    "/v1/videos/jobs/content",
])
def test_unknown_and_path_shaped_ids_are_404(server, path):
    r = httpx.get(server.url + path, headers=_auth(server))
    assert r.status_code == 404
    assert "root:" not in r.text and '"request"' not in r.text


def test_delete_unknown_is_404(server):
    r = httpx.delete(server.url + "/v1/videos/video_ffffffffffffffffffffffff", headers=_auth(server))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_the_key_guards_every_v1_route(server):
    for method, path in (("GET", "/v1/videos"), ("POST", "/v1/videos"), ("GET", "/v1/models")):
        assert httpx.request(method, server.url + path).status_code == 401
    assert httpx.get(server.url + "/health").status_code == 200
