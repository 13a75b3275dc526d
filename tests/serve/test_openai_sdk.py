"""The official `openai` SDK's `client.videos` against `kinema serve`: what code written for OpenAI's video API does."""

from __future__ import annotations

import warnings

import numpy as np
import openai
import pytest

from kinema.runtime.cli import main
from kinema.runtime.video.codecs import read_video

from served import FAST, PROMPT

warnings.filterwarnings("ignore", category=DeprecationWarning)  # the SDK marks client.videos deprecated since the hosted service closed


def _cli_frames(tmp_path, *args) -> np.ndarray:
    out = tmp_path / f"cli-{len(list(tmp_path.iterdir()))}.mp4"
    assert main([*args, "-o", str(out), "--threads", "1", "-q"]) == 0
    return read_video(out)[0]


def _download(client, video_id, path, variant="video") -> bytes:
    data = client.videos.download_content(video_id, variant=variant).read()
    path.write_bytes(data)
    return data


def test_create_and_poll_then_download_is_kinema_generate(server, tmp_path):
    client = server.client()
    video = client.videos.create_and_poll(prompt=PROMPT, seconds="2", size="64x64", extra_body=FAST, poll_interval_ms=100)
    assert video.status == "completed" and video.progress == 100 and video.error is None
    extra = video.model_extra
    assert (extra["num_frames"], extra["num_inference_steps"], extra["seed"], video.size) == (17, 3, 4, "64x64")
    assert video.seconds == f"{17 / extra['fps']:g}"
    data = _download(client, video.id, tmp_path / "served.mp4")
    assert data[4:8] == b"ftyp"
    served = read_video(tmp_path / "served.mp4")[0]
    cli = _cli_frames(tmp_path, "generate", PROMPT, "--seconds", "2", "--width", "64", "--height", "64", "--steps", "3", "--seed", "4")
    assert served.shape == cli.shape and served.shape[0] == 17  # both scaled up for viewing the same way
    assert np.array_equal(served, cli)
    thumb = _download(client, video.id, tmp_path / "t.webp", "thumbnail")
    sprite = _download(client, video.id, tmp_path / "s.jpg", "spritesheet")
    assert thumb[:4] == b"RIFF" and thumb[8:12] == b"WEBP" and sprite[:2] == b"\xff\xd8"


def test_size_is_rounded_to_the_bundles_rule(server):
    video = server.client().videos.create(prompt=PROMPT, size="70x50", extra_body=FAST)
    assert video.status == "queued" and video.size == "64x48"


def test_retrieve_list_pages_and_delete(server):
    client = server.client()
    made = [client.videos.create(prompt=f"a blue square moving left number {i}", extra_body=FAST).id for i in range(3)]
    assert client.videos.retrieve(made[0]).id == made[0]
    page = client.videos.list(limit=2, order="asc")
    assert len(page.data) == 2 and page.has_more
    everything = [v.id for v in client.videos.list(limit=2, order="asc")]  # the SDK follows `after` itself
    assert everything[-3:] == made and len(everything) == len(set(everything))
    newest = client.videos.list(limit=1, order="desc").data[0].id
    assert newest == made[-1]
    for vid in made:
        gone = client.videos.delete(vid)
        assert gone.deleted and gone.id == vid
        with pytest.raises(openai.NotFoundError):
            client.videos.retrieve(vid)


@pytest.mark.parametrize("body,field", [
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"guidance_scale": "lots"}, "guidance_scale"),
    ({"seed": 1.5}, "seed"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"num_frames": 18}, "num_frames"),
])
def test_an_invalid_value_is_a_bad_request_naming_the_field(server, body, field):
    with pytest.raises(openai.BadRequestError) as err:
        server.client().videos.create(prompt=PROMPT, extra_body=body)
    assert field in str(err.value) and err.value.status_code == 400


def test_bad_size_seconds_and_model(server):
    client = server.client()
    for kw, field in (({"size": "9999x64"}, "size"), ({"size": "wide"}, "size"), ({"seconds": "-1"}, "seconds"), ({"model": "sora-2"}, "model")):
        with pytest.raises(openai.BadRequestError) as err:
            client.videos.create(prompt=PROMPT, **kw)
        assert field in str(err.value)
        assert err.value.param == field


def test_wrong_key_is_an_authentication_error(server):
    with pytest.raises(openai.AuthenticationError):
        server.client(key="sk-wrong").videos.list()


def test_remix_is_kinema_edit_of_the_source(server, tmp_path):
    client = server.client()
    src = client.videos.create_and_poll(prompt=PROMPT, extra_body=FAST, poll_interval_ms=100)
    _download(client, src.id, tmp_path / "src.mp4")
    remix = client.videos.remix(src.id, prompt="a green circle moving right on a black background", extra_body=FAST)
    assert remix.remixed_from_video_id == src.id
    remix = client.videos.poll(remix.id, poll_interval_ms=100)
    assert remix.status == "completed", remix.error
    _download(client, remix.id, tmp_path / "remix.mp4")
    cli = _cli_frames(tmp_path, "edit", str(tmp_path / "src.mp4"), "--prompt", "a green circle moving right on a black background", "--strength", "0.7", "--steps", "3", "--seed", "4")
    assert np.array_equal(read_video(tmp_path / "remix.mp4")[0], cli)
    with open(tmp_path / "src.mp4", "rb") as f:  # the same edit, the source uploaded
        edited = client.videos.edit(video=("src.mp4", f, "video/mp4"), prompt="a green circle moving right on a black background", extra_body=FAST)
    edited = client.videos.poll(edited.id, poll_interval_ms=100)
    _download(client, edited.id, tmp_path / "edited.mp4")
    assert np.array_equal(read_video(tmp_path / "edited.mp4")[0], cli)


def test_extend_an_upload_and_by_id(server, tmp_path):
    import httpx2 as httpx

    client = server.client()
    src = client.videos.create_and_poll(prompt=PROMPT, extra_body=FAST, poll_interval_ms=100)
    _download(client, src.id, tmp_path / "src.mp4")
    with open(tmp_path / "src.mp4", "rb") as f:
        longer = client.videos.extend(video=("clip.mp4", f, "video/mp4"), prompt=PROMPT, seconds="1", extra_body=FAST)
    longer = client.videos.poll(longer.id, poll_interval_ms=100)
    assert longer.status == "completed", longer.error
    assert float(longer.seconds) == pytest.approx((17 + 8) / 8)  # the stitched total
    _download(client, longer.id, tmp_path / "longer.mp4")
    cli = _cli_frames(tmp_path, "extend", str(tmp_path / "src.mp4"), "--prompt", PROMPT, "--seconds", "1", "--steps", "3", "--seed", "4")
    assert np.array_equal(read_video(tmp_path / "longer.mp4")[0], cli)
    # a completed video by id, as JSON
    r = httpx.post(server.url + "/v1/videos/extensions", headers={"Authorization": f"Bearer {server.key}"},
                   json={"prompt": PROMPT, "seconds": "1", "video": {"id": src.id}, **FAST})
    assert r.status_code == 200, r.text
    by_id = client.videos.poll(r.json()["id"], poll_interval_ms=100)
    _download(client, by_id.id, tmp_path / "by_id.mp4")
    assert np.array_equal(read_video(tmp_path / "by_id.mp4")[0], cli)
