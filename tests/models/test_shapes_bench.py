"""ShapesBench: the scorer agrees with ShapesWorld's own renders and disagrees with wrong ones."""

import json

import numpy as np
import pytest

from kinema.models import shapes_bench as sb
from kinema.models import shapes_world as sw

ROWS = sb.load_prompts(sb.PROMPTS_PATH)
HELD = sb.load_prompts(sb.HELDOUT_PROMPTS_PATH)


def _blur(v: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over H and W (edge-padded), float32 (T, H, W, 3)."""
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    f = np.pad(v.astype(np.float32), ((0, 0), (r, r), (0, 0), (0, 0)), mode="edge")
    f = sum(k[i] * f[:, i : i + v.shape[1]] for i in range(2 * r + 1))
    f = np.pad(f, ((0, 0), (0, 0), (r, r), (0, 0)), mode="edge")
    return sum(k[i] * f[:, :, i : i + v.shape[2]] for i in range(2 * r + 1))


def _degrade(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What a small decoder does: soft edges (sigma 1 px), noise (std 8/255), a colour cast."""
    f = _blur(v, 1.0) + rng.normal(0.0, 8.0, v.shape) + np.array([10.0, -8.0, 6.0])
    return np.clip(f + 0.5, 0, 255).astype(np.uint8)


def _bench(rows, seeds, frames=17, height=64, width=64, post=None):
    by_prompt = {r["prompt"]: r for r in rows}

    def generate(prompt, seed):
        v = sb.ground_truth_generate(by_prompt[prompt], seed, frames, height, width)
        return post(v) if post else v

    return sb.run_bench(rows, seeds, generate)


def _report(name, result):
    acc = {k: v for k, v in result["accuracy"].items()}
    print(f"{name}: n={result['n']} adherence={result['adherence']:.4f} accuracy={acc}")


# ---------------------------------------------------------------------------- prompt files


def test_prompt_files_cover_the_world_and_match_the_generator():
    assert len(ROWS) >= 120 and 12 <= len(HELD) <= 24
    rows, held = sb.make_prompt_rows(0)
    assert rows == ROWS and held == HELD  # the committed files are what write_prompt_files makes
    objs = [o for r in ROWS for o in r["objects"]]
    assert {o["motion"] for o in objs} == set(sw.MOTIONS)
    assert {o["shape"] for o in objs} == set(sw.SHAPES)
    assert {o["color"] for o in objs} == set(sw.COLORS)
    assert {r["background"] for r in ROWS} == set(sw.BACKGROUNDS)
    assert {len(r["objects"]) for r in ROWS} == {1, 2}
    assert len({r["prompt"] for r in ROWS}) > 0.9 * len(ROWS)
    assert not any(sw.is_heldout(sw.row_to_spec(r)) for r in ROWS)
    assert all(sw.is_heldout(sw.row_to_spec(r)) for r in HELD)
    assert {(o["color"], o["shape"], o["motion"]) for r in HELD for o in r["objects"]} >= sw.HELD_OUT


def test_rows_check_a_size_only_where_the_prompt_states_it():
    objs = [(r["prompt"], o) for r in ROWS + HELD for o in r["objects"]]
    stated = [(p, o) for p, o in objs if "size" in o]
    assert 0.3 < len(stated) / len(objs) < 0.7  # captions name the size about half the time
    words = {"small": ("small", "tiny", "little"), "large": ("large", "big")}
    for p, o in objs:
        named = [s for s, ws in words.items() if any(f"{w} {o['color']} " in p + " " for w in ws)]
        assert named == ([o["size"]] if "size" in o else []), (p, o)
    assert sw.stated_size("a tiny red star and a blue disc", "red") and not sw.stated_size("a tiny red star and a blue disc", "blue")
    assert not sw.stated_size("a redder ball", "red") and sw.stated_size("a big red ball", "red")


@pytest.mark.parametrize(
    "line,problem",
    [
        ("{not json", "not valid JSON"),
        ('{"prompt": "x", "background": "blue", "objects": [{"color": "red", "shape": "circle", "motion": "left"}]}', "background"),
        ('{"prompt": "x", "background": "black", "objects": [{"colour": "red", "shape": "circle", "motion": "left"}]}', "unknown keys"),
        ('{"prompt": "x", "background": "black", "objects": [{"color": "gray", "shape": "circle", "motion": "left"}]}', "color 'gray'"),
        ('{"prompt": "x", "background": "black", "objects": [{"color": "red", "shape": "circle", "motion": "spin"}]}', "spinning circle"),
        ('{"prompt": "x", "background": "black", "objects": [{"color": "red", "shape": "star", "motion": "left", "size": "huge"}]}', "size 'huge'"),
        ('{"background": "black", "objects": [{"color": "red", "shape": "circle", "motion": "left"}]}', "prompt"),
        ('{"prompt": "x", "background": "black", "objects": []}', "1 or 2"),
        (
            '{"prompt": "x", "background": "black", "objects": [{"color": "red", "shape": "star", "motion": "left"},'
            ' {"color": "red", "shape": "circle", "motion": "up"}]}',
            "distinct colours",
        ),
    ],
)
def test_load_prompts_names_the_line_and_problem(tmp_path, line, problem):
    good = json.dumps(ROWS[0])
    path = tmp_path / "p.jsonl"
    path.write_text(f"{good}\n\n{line}\n{good}\n")
    with pytest.raises(ValueError, match="line 3") as e:
        sb.load_prompts(path)
    assert problem in str(e.value)


# ---------------------------------------------------------------------------- ground truth


def test_ground_truth_scores_perfectly_64x64():
    result = _bench(ROWS, seeds=[0, 1])
    _report("ground truth 17x64x64", result)
    assert result["n"] == 2 * len(ROWS)
    assert result["adherence"] >= 0.98
    assert min(v for v in result["accuracy"].values() if v is not None) >= 0.95
    assert min(result["motion_by_kind"].values()) >= 0.95
    assert 0.95 < result["flicker"] < 1.0 and 0.95 < result["smoothness"] < 1.0
    assert all(r["seed"] in (0, 1) and 0.0 <= r["adherence"] <= 1.0 for r in result["rows"])


def test_ground_truth_scores_perfectly_nonsquare_25_frames():
    result = _bench(ROWS, seeds=[2], frames=25, height=48, width=80)
    _report("ground truth 25x48x80", result)
    assert result["adherence"] >= 0.98
    assert min(v for v in result["accuracy"].values() if v is not None) >= 0.95


def test_ground_truth_heldout_and_short_clips():
    result = _bench(HELD, seeds=[0, 1], frames=5)
    _report("held-out 5x64x64", result)
    assert result["adherence"] >= 0.98


def test_degraded_ground_truth_still_scores_high():
    rng = np.random.default_rng(0)
    result = _bench(ROWS[::2], seeds=[3], post=lambda v: _degrade(v, rng))
    _report("degraded 17x64x64", result)
    assert result["adherence"] >= 0.9
    assert min(v for v in result["accuracy"].values() if v is not None) >= 0.9


# ---------------------------------------------------------------------------- not trivially true


def _swap(row, i, key, value):
    objs = [dict(o) for o in row["objects"]]
    objs[i][key] = value
    return dict(row, objects=objs)


def test_wrong_attributes_score_false():
    rng = np.random.default_rng(0)
    for n, row in enumerate(ROWS[::7]):
        v = sb.ground_truth_generate(row, n)
        assert sb.score_video(v, row)["adherence"] == 1.0
        obj = row["objects"][0]
        used = {o["color"] for o in row["objects"]}
        wrong_bg = sb.score_video(v, dict(row, background=next(b for b in sw.BACKGROUNDS if b != row["background"])))
        assert not wrong_bg["background"]
        wrong_color = sb.score_video(v, _swap(row, 0, "color", next(c for c in sw.COLORS if c not in used)))
        assert not wrong_color["objects"][0]["color"] and not wrong_color["objects"][0]["motion"]
        shapes = [s for s in sw.SHAPES if s != obj["shape"] and not (s == "circle" and obj["motion"] == "spin")]
        wrong_shape = sb.score_video(v, _swap(row, 0, "shape", shapes[rng.integers(len(shapes))]))
        assert not wrong_shape["objects"][0]["shape"], (row, wrong_shape["objects"][0])
        true_size = obj.get("size", "small")  # a row without a size renders small
        wrong_size = sb.score_video(v, _swap(row, 0, "size", "small" if true_size == "large" else "large"))
        assert not wrong_size["objects"][0]["size"]
        for motion in sw.MOTIONS:
            if motion == obj["motion"] or (motion == "spin" and obj["shape"] == "circle"):
                continue
            res = sb.score_video(v, _swap(row, 0, "motion", motion))["objects"][0]
            assert not res["motion"], (row, motion, res)
        if len(row["objects"]) == 2:
            assert not sb.score_video(v, dict(row, objects=row["objects"][:1]))["count"]


def test_static_video_fails_a_moving_prompt():
    row = next(r for r in ROWS if len(r["objects"]) == 1 and r["objects"][0]["motion"] == "left")
    v = sb.ground_truth_generate(row, 0)
    static = np.repeat(v[:1], len(v), 0)
    res = sb.score_video(static, row)
    assert res["background"] and res["objects"][0]["color"] and res["objects"][0]["shape"]
    assert not res["objects"][0]["motion"] and res["objects"][0]["detected_motion"] == "still"
    assert res["flicker"] == 1.0 and res["smoothness"] == 1.0


def test_extra_object_fails_count():
    row = next(r for r in ROWS if len(r["objects"]) == 1)
    used = row["objects"][0]["color"]
    extra = sw.ObjectSpec("square", next(c for c in sw.COLORS if c != used), "small", "still")
    spec = sw.ClipSpec(row["background"], sw.row_to_spec(row).objects + (extra,))
    res = sb.score_video(sw.render(spec, rng=0), row)
    assert res["detected_count"] == 2 and not res["count"]


def test_noise_scores_low():
    rng = np.random.default_rng(0)
    for row in ROWS[:20]:
        noise = rng.integers(0, 256, (17, 64, 64, 3), dtype=np.uint8)
        assert sb.score_video(noise, row)["adherence"] < 0.3


def test_flicker_and_smoothness_closed_form():
    ramp = np.repeat(np.arange(0, 170, 10, dtype=np.uint8), 8 * 8 * 3).reshape(17, 8, 8, 3)
    assert sb.flicker_score(ramp) == pytest.approx((255 - 10) / 255)
    assert sb.smoothness_score(ramp) == pytest.approx(1.0)
    strobe = np.zeros((9, 8, 8, 3), np.uint8)
    strobe[1::2] = 255
    assert sb.flicker_score(strobe) == pytest.approx(0.0)
    assert sb.smoothness_score(strobe) == pytest.approx(0.0)


def test_score_video_rejects_bad_frames():
    with pytest.raises(ValueError, match="uint8"):
        sb.score_video(np.zeros((17, 64, 64, 3), np.float32), ROWS[0])
    with pytest.raises(ValueError, match="T>=2"):
        sb.score_video(np.zeros((17, 64, 64), np.uint8), ROWS[0])
