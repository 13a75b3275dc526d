"""`kinema batch` on the built-in process pool: the same videos as the commands, resume, faults, bad input."""

from __future__ import annotations

import json

import pytest
from batch_files import PROMPT, children, interrupt, kill, mixed, rows, same_as_commands, start_batch, wait_for, write_lines

from kinema.runtime.batch.worker import sha256_file
from kinema.runtime.cli import main


def test_outputs_are_the_commands_videos(tmp_path):
    out = tmp_path / "out"
    assert main(["batch", str(mixed(tmp_path)), "--out", str(out), "--workers", "2", "--threads", "1", "-q"]) == 0
    same_as_commands(tmp_path, out)
    got = rows(out)
    assert [r["key"] for r in got] == ["1:3", "1:4", "2:7", "3:1"]  # one row per request, in the file's order
    for r in got:
        assert r["error"] is None and r["sha256"] == sha256_file(r["output"]) and r["seconds"] > 0 and r["worker"]
        assert r["request"]["seed"] == r["seed"] and r["settings"]["steps"] == "3"
    assert len({r["worker"] for r in got}) == 2


def test_seeds_flag_multiplies_lines_without_seeds(tmp_path):
    f = write_lines(tmp_path / "b.jsonl", [{"prompt": PROMPT, "steps": 2, "frames": 5}, {"prompt": PROMPT, "steps": 2, "frames": 5, "seed": 9}])
    assert main(["batch", str(f), "--out", str(tmp_path / "o"), "--seeds", "3", "--workers", "1", "-q"]) == 0
    assert [r["key"] for r in rows(tmp_path / "o")] == ["1:0", "1:1", "1:2", "2:9"]


def test_rerun_after_sigint_makes_each_output_exactly_once(tmp_path):
    f = write_lines(tmp_path / "b.jsonl", [{"prompt": PROMPT, "seeds": list(range(6)), "steps": 30, "name": "v"}])
    out = tmp_path / "out"
    proc = start_batch(str(f), "--out", str(out), "--workers", "1", "--threads", "2")
    wait_for(lambda: (out / "results.jsonl").is_file() and len(rows(out)) >= 2, what="two finished videos")
    code, err = interrupt(proc)
    assert code == 130 and "run the same command again" in err
    first = {r["key"]: r for r in rows(out)}
    assert 2 <= len(first) < 6 and not list(out.glob(".*.part"))
    made_before = {k: (r["output"], (out / r["output"]).stat().st_mtime_ns) for k, r in first.items()}
    assert main(["batch", str(f), "--out", str(out), "--workers", "1", "-q"]) == 0
    final = rows(out)
    assert [r["key"] for r in final] == [f"1:{s}" for s in range(6)] and all(r["error"] is None for r in final)
    for k, (path, mtime) in made_before.items():
        assert (out / path).stat().st_mtime_ns == mtime  # not made again
    assert sorted(p.name for p in out.glob("*.mp4")) == [f"v-seed{s}.mp4" for s in range(6)]


def test_a_worker_killed_mid_job_is_replaced_and_its_job_completes(tmp_path):
    f = write_lines(tmp_path / "b.jsonl", [{"prompt": PROMPT, "seeds": [0, 1, 2], "steps": 40, "name": "v"}])
    out = tmp_path / "out"
    proc = start_batch(str(f), "--out", str(out), "--workers", "1", "--threads", "2", "-q")
    worker = wait_for(lambda: children(proc.pid), what="the worker process")[0]
    wait_for(lambda: any(p.name.startswith(".v-seed0") for p in out.glob(".*.part")) if out.exists() else False, what="the first job writing")
    kill(worker)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    got = rows(out)
    assert [r["key"] for r in got] == ["1:0", "1:1", "1:2"] and all(r["error"] is None for r in got)
    assert str(worker) not in got[0]["worker"]  # made by the replacement
    assert not list(out.glob(".*.part"))


def test_a_request_that_keeps_killing_its_worker_is_recorded_failed(tmp_path, monkeypatch):
    from kinema.runtime.batch import pool

    results = []
    p = pool.Pool(None, 1, 1, retries=1)
    try:
        for proc in p.procs.values():
            proc.kill()  # the pool replaces a dead worker; kill the replacement too, each time a task is given
        orig = p._spawn

        def spawn_and_doom():
            orig()
            p.procs[p._next - 1].kill()

        monkeypatch.setattr(p, "_spawn", spawn_and_doom)
        p.map([{"key": "1:0", "request": {"prompt": PROMPT, "steps": 2}, "mode": "frames"}], results.append)
    finally:
        p.kill()
    assert len(results) == 1 and "died 2 times" in results[0]["error"]


@pytest.mark.parametrize("line,message", [
    ("{not json", "line 2: not JSON"),
    ('{"prompt": "x", "stepz": 3}', "line 2: stepz is not a request field"),
    ('{"prompt": "x", "steps": "many"}', "line 2: steps = 'many' is not a int"),
    ('{"prompt": "x", "steps": 0}', "line 2 (seed 0): steps=0"),
    ('{"task": "animate", "prompt": "x", "inputs": ["missing.png"]}', "line 2: input file"),
    ('{"prompt": "x", "name": "../up"}', "line 2: name='../up'"),
    ('{"prompt": "x", "output": "/tmp/x.mp4"}', "line 2: output is set by the batch runner"),
    ('{"prompt": "x", "name": "ok", "seeds": [1, 1]}', "line 2: output ok-seed1.mp4 is also that of line 2"),
])
def test_a_bad_line_is_exit_2_one_line_before_any_work(tmp_path, capsys, line, message):
    f = tmp_path / "b.jsonl"
    f.write_text(json.dumps({"prompt": PROMPT, "steps": 2}) + "\n" + line + "\n")
    out = tmp_path / "out"
    assert main(["batch", str(f), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()  # no worker started, no folder made


@pytest.mark.parametrize("extra,message", [
    (["--bundle", "/nonexistent/bundle"], "/nonexistent/bundle"),
    (["--ray", "127.0.0.1:1"], "--ray 127.0.0.1:1: no Ray cluster answers there"),
    (["--workers", "0"], "--workers 0 must be >= 1"),
])
def test_bad_flags_are_exit_2_one_line(tmp_path, capsys, extra, message):
    f = write_lines(tmp_path / "b.jsonl", [{"prompt": PROMPT, "steps": 2}])
    assert main(["batch", str(f), "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_keep_going_runs_the_good_lines(tmp_path, capsys):
    f = tmp_path / "b.jsonl"
    f.write_text("\n".join([json.dumps({"prompt": PROMPT, "steps": 2, "frames": 5}), "{oops", json.dumps({"prompt": PROMPT, "steps": -1})]) + "\n")
    assert main(["batch", str(f), "--out", str(tmp_path / "out"), "--keep-going", "--workers", "1", "-q"]) == 1
    err = capsys.readouterr().err
    assert "line 2: not JSON" in err and "line 3 (seed 0): steps=-1" in err
    assert [r["key"] for r in rows(tmp_path / "out")] == ["1:0"]
