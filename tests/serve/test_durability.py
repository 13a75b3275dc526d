"""Jobs survive the server: SIGKILL mid-job, restart on the same data folder, nothing lost or half-served."""

from __future__ import annotations

import base64
import io
import json
import sqlite3
import threading
import time
import warnings

import httpx2 as httpx
import openai
import pytest
from PIL import Image
from served import FAST, PROMPT, Served

from kinema.runtime.video.codecs import read_video

warnings.filterwarnings("ignore", category=DeprecationWarning)


def _wait(client, vid, pred, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = client.videos.retrieve(vid)
        if pred(v):
            return v
        time.sleep(0.05)
    raise AssertionError(f"{vid} never reached the state; last {v.status} {v.progress}")


def _stored(data, key="status") -> dict:
    """What the job records on disk say, read with sqlite3 beside the server."""
    with sqlite3.connect(data / "jobs.sqlite3") as db:
        return {i: json.loads(r).get(key) for i, r in db.execute("SELECT id, record FROM jobs")}


def test_sigkill_mid_job_then_restart_loses_nothing(tmp_path):
    data = tmp_path / "data"
    first = Served(data).start()
    client = first.client()
    ids = [client.videos.create(prompt=PROMPT, extra_body={"num_inference_steps": 40, "seed": i}).id for i in range(3)]
    _wait(client, ids[0], lambda v: v.status == "in_progress" and v.progress >= 5)
    first.kill()
    folders = {i: data / "jobs" / i for i in ids}
    assert not any((f / "video.mp4").exists() for f in folders.values())  # the running one is only a hidden .part
    assert list(folders[ids[0]].glob(".video.mp4.*.part"))
    assert _stored(data) == {ids[0]: "in_progress", ids[1]: "queued", ids[2]: "queued"}

    second = Served(data).start()
    try:
        client = second.client()
        listed = {v.id: v.status for v in client.videos.list(order="asc")}
        assert set(listed) == set(ids) and set(listed.values()) <= {"queued", "in_progress", "completed"}
        assert listed[ids[2]] == "queued"  # behind two jobs of 40 steps: not started yet, nothing to serve
        r = httpx.get(f"{second.url}/v1/videos/{ids[2]}/content", headers={"Authorization": f"Bearer {second.key}"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_ready"
        for i in ids:
            v = _wait(client, i, lambda v: v.status in ("completed", "failed"), timeout=120)
            assert v.status == "completed", v.error
            (tmp_path / f"{i}.mp4").write_bytes(client.videos.download_content(i).read())
            assert read_video(tmp_path / f"{i}.mp4")[0].shape[0] == 17
        assert _stored(data, "attempts") == {ids[0]: 1, ids[1]: None, ids[2]: None}
    finally:
        second.stop()


def test_events_stream_every_step_with_previews(server):
    client = server.client()
    blocker = client.videos.create(prompt=PROMPT, extra_body={"num_inference_steps": 12, "seed": 1})
    job = client.videos.create(prompt=PROMPT, extra_body={"num_inference_steps": 5, "seed": 2})
    events = []
    with httpx.stream("GET", f"{server.url}/v1/videos/{job.id}/events?preview=1", headers={"Authorization": f"Bearer {server.key}"}, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if events[-1]["type"] == "status" and events[-1]["status"] in ("completed", "failed"):
                    break
    assert events[0]["type"] == "status" and events[0]["status"] in ("queued", "in_progress")
    steps = [e["step"] for e in events if e["type"] == "progress"]
    assert steps == [1, 2, 3, 4, 5]
    progress = [e["progress"] for e in events if e["type"] == "progress"]
    assert progress == sorted(progress) and progress[-1] < 100 and events[-1] == {**events[-1], "status": "completed", "progress": 100}
    picture = Image.open(io.BytesIO(base64.b64decode(events[1]["preview"].split(",", 1)[1])))
    assert picture.format == "PNG" and picture.size[0] > 0
    assert client.videos.retrieve(blocker.id).status in ("completed", "in_progress")


def test_queue_full_is_429_and_the_sdk_retry_gets_in(tmp_path):
    s = Served(tmp_path / "data", "--queue", "2").start()
    try:
        made, errors = [], []

        def submitter(k):
            client = s.client(max_retries=12)
            try:
                for j in range(3):
                    made.append(client.videos.create(prompt=PROMPT, extra_body={**FAST, "seed": 10 * k + j}).id)
            except openai.APIError as e:
                errors.append(e)

        threads = [threading.Thread(target=submitter, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors and len(made) == 12
        assert httpx.get(s.url + "/health").json()["refused"] > 0  # some were refused, and got in on a retry
        client = s.client()
        for vid in made:
            assert _wait(client, vid, lambda v: v.status in ("completed", "failed"), timeout=120).status == "completed"
        assert len(set(made)) == 12
    finally:
        s.stop()


def test_finished_jobs_expire(tmp_path):
    s = Served(tmp_path / "data", "--expire-hours", str(1.5 / 3600)).start()
    try:
        client = s.client()
        v = _wait(client, client.videos.create(prompt=PROMPT, extra_body=FAST).id, lambda v: v.status == "completed")
        assert v.expires_at is not None and v.expires_at - v.completed_at in (1, 2)
        deadline = time.time() + 20
        while time.time() < deadline and (tmp_path / "data" / "jobs" / v.id).exists():
            time.sleep(0.2)
        assert not (tmp_path / "data" / "jobs" / v.id).exists()
        with pytest.raises(openai.NotFoundError):
            client.videos.retrieve(v.id)
        assert _stored(tmp_path / "data") == {}
    finally:
        s.stop()
