"""`kinema batch --ray` and `kinema bench shapes --ray` on a local two-node Ray cluster started by the test."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from batch_files import PROMPT, kill, mixed, rows, same_as_commands, wait_for, write_lines

from kinema.runtime.cli import main
from kinema.runtime.video.codecs import read_video

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    c.add_node(num_cpus=1)  # a second simulated node
    yield c.address
    ray.shutdown()
    c.shutdown()


def test_ray_batch_makes_the_commands_videos(cluster, tmp_path):
    out = tmp_path / "out"
    assert main(["batch", str(mixed(tmp_path)), "--out", str(out), "--ray", cluster, "--workers", "2", "--threads", "1", "-q"]) == 0
    same_as_commands(tmp_path, out)
    got = rows(out)
    assert [r["key"] for r in got] == ["1:3", "1:4", "2:7", "3:1"] and all(r["error"] is None for r in got)
    assert all(r["worker"].startswith("ray:") for r in got)


def test_ray_bytes_back_when_there_is_no_shared_folder(cluster, tmp_path):
    f = write_lines(tmp_path / "b.jsonl", [{"prompt": PROMPT, "seeds": [0, 1], "steps": 2, "name": "v"}])
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["batch", str(f), "--out", str(a), "--workers", "1", "--threads", "1", "-q"]) == 0
    assert main(["batch", str(f), "--out", str(b), "--ray", cluster, "--ray-bytes", "--workers", "2", "--threads", "1", "-q"]) == 0
    for name in ("v-seed0.mp4", "v-seed1.mp4"):
        assert np.array_equal(read_video(a / name)[0], read_video(b / name)[0])


def test_bench_shapes_over_ray_is_the_sequential_run(cluster, tmp_path):
    common = ["bench", "shapes", "--limit", "3", "--seeds", "2", "--steps", "2", "--threads", "1", "-q"]
    assert main([*common, "--json", str(tmp_path / "seq.json")]) == 0
    assert main([*common, "--json", str(tmp_path / "ray.json"), "--ray", cluster, "--workers", "2"]) == 0
    seq, par = (json.loads((tmp_path / n).read_text()) for n in ("seq.json", "ray.json"))
    assert par["rows"] == seq["rows"] and len(seq["rows"]) == 6
    assert {k: v for k, v in par.items() if k not in ("timing", "settings")} == {k: v for k, v in seq.items() if k not in ("timing", "settings")}


def _ray_workers() -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if b"ray::RayWorker" in (p / "cmdline").read_bytes():
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


def test_a_ray_worker_killed_mid_job_is_restarted_and_the_job_completes(cluster, tmp_path):
    f = write_lines(tmp_path / "b.jsonl", [{"prompt": PROMPT, "seeds": [0, 1, 2], "steps": 40, "name": "v"}])
    out = tmp_path / "out"
    codes = []
    t = threading.Thread(target=lambda: codes.append(main(["batch", str(f), "--out", str(out), "--ray", cluster, "--workers", "1", "--threads", "1", "-q"])))
    t.start()
    wait_for(lambda: out.exists() and list(out.glob(".v-seed0*.part")), timeout=120, what="the first job writing")
    victims = _ray_workers()
    assert len(victims) == 1
    kill(victims[0])
    t.join(300)
    assert codes == [0]
    got = rows(out)
    assert [r["key"] for r in got] == ["1:0", "1:1", "1:2"] and all(r["error"] is None for r in got)
    assert str(victims[0]) not in got[0]["worker"]  # the restarted actor made it


def test_compare_over_ray_is_the_sequential_run(cluster, tmp_path):
    from kinema.runtime.bundle.load import default_bundle_path

    b = str(default_bundle_path())
    common = ["compare", b, b, "--no-cost", "--limit", "3", "--seeds", "2", "--steps", "2", "--detail-prompts", "1", "--threads", "1", "-q"]
    assert main([*common, "-o", str(tmp_path / "seq")]) == 0
    assert main([*common, "-o", str(tmp_path / "ray"), "--ray", cluster, "--workers", "2"]) == 0
    seq, par = (json.loads((tmp_path / n / "report.json").read_text()) for n in ("seq", "ray"))
    for r in (seq, par):
        for entry in r["bundles"]:
            entry.pop("in_process_seconds_per_video")
    assert par == seq and len(seq["bundles"]) == 2 and seq["bundles"][1]["steps"]["free_running_psnr_db"]
