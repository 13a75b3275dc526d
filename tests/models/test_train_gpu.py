"""The budgeted, resumable training script: shards within their limit, exact resumes, joined weights, bad shard sets.

Runs on the CPU with the "test" DiT size on a small synthetic latent cache, and shards of
0.25 MiB so that even these small states span many files.
"""

from __future__ import annotations

import csv
import shutil
import warnings

import numpy as np
import pytest
import torch
from safetensors import safe_open

from kinema.models import train_gpu
from kinema.models.shards import MIB, ShardError, load_shards, save_shards
from kinema.models.tiny_dit import DIT_SIZES, TinyDiT
from kinema.models.weights import load_weights

LIMIT = 0.25  # MiB per file


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A latent cache in `build_dataset`'s format: 6 clips of the (9, 64, 64) bucket, 2 captions each."""
    folder = tmp_path_factory.mktemp("work")
    g = torch.Generator().manual_seed(0)
    n, per = 6, 2
    captions = n * per + 1  # the last one is the empty caption
    data = {
        "buckets": {(9, 64, 64): {"latents": torch.randn(n, 8, 3, 8, 8, generator=g).half(), "captions": torch.arange(n * per).view(n, per)}},
        "text": torch.randn(captions, 32, 384, generator=g).half(),
        "mask": (torch.arange(32) < 8).long().expand(captions, 32).clone(),
        "empty": captions - 1,
    }
    torch.save(data, folder / "dit_data.pt")
    return folder


def _dit(work, out, *extra):
    torch.set_num_threads(1)
    args = ["dit", "--out", str(out), "--work", str(work), "--size", "test", "--steps", "6", "--batch", "4", "--lr", "1e-2",
            "--scratch", "--checkpoint", "full", "--shard-mib", str(LIMIT), "--device", "cpu", "--log-every", "100"]
    return train_gpu.main(args + list(extra))


@pytest.fixture(scope="module")
def runs(work, tmp_path_factory):
    """Six steps in one call; three, then three more resumed from its shards; the same resumed from the weights only."""
    root = tmp_path_factory.mktemp("runs")
    _dit(work, root / "whole")
    _dit(work, root / "first", "--max-steps", "3")
    same = ["--work", str(work), "--device", "cpu", "--shard-mib", str(LIMIT)]  # a resumed call takes its recipe from the checkpoint
    train_gpu.main(["dit", "--out", str(root / "second"), "--resume", str(root / "first"), *same])
    shutil.copytree(root / "first", root / "lean")
    (root / "lean" / "ckpt.json").unlink()
    for p in (root / "lean").glob("ckpt-*.safetensors"):
        p.unlink()
    tensors, state, _ = load_shards(root / "first", "ckpt")
    save_shards({}, root / "lean", "ckpt", {**state, "mode": "weights"}, int(LIMIT * MIB))
    train_gpu.main(["dit", "--out", str(root / "lean_after"), "--resume", str(root / "lean"), *same])
    return root


def _rows(path):
    return [(int(r["step"]), float(r["loss"]), float(r["lr"])) for r in csv.DictReader(path.open())]


def test_a_few_steps_write_many_shards_each_within_the_limit(runs):
    for name in ("whole", "first", "second"):
        files = sorted((runs / name).iterdir())
        assert max(p.stat().st_size for p in files) <= LIMIT * MIB
        assert len(list((runs / name).glob("ckpt-*.safetensors"))) >= 10  # 5 MiB of state in 0.25 MiB files
        assert {"ckpt.json", "weights.json", "loss_dit.csv", "train.log"} <= {p.name for p in files}
    tensors, state, _ = load_shards(runs / "whole", "ckpt")
    assert state["step"] == 6 and state["mode"] == "full" and state["total"] == 6
    model = TinyDiT(DIT_SIZES["test"])
    assert {k for k in tensors if k.startswith("model.")} == {f"model.{k}" for k in model.state_dict()}
    assert tensors["opt.0.step"].item() == 6.0  # AdamW's own count came through


def test_resuming_from_the_shards_gives_the_uninterrupted_run_exactly(runs):
    whole, _, _ = load_shards(runs / "whole", "ckpt")
    resumed, state, _ = load_shards(runs / "second", "ckpt")
    first, _, _ = load_shards(runs / "first", "ckpt")
    assert state["step"] == 6 and whole.keys() == resumed.keys()
    worst = max((whole[k].double() - resumed[k].double()).abs().max().item() for k in whole if k != "rng.torch")
    assert worst == 0.0
    moved = max((whole[k] - first[k]).abs().max().item() for k in whole if k.startswith(("model.", "ema.", "opt.")))
    assert moved > 1e-4  # the last three steps changed the state: the equality above is not of two copies of step 3
    assert _rows(runs / "second" / "loss_dit.csv") == _rows(runs / "whole" / "loss_dit.csv")


def test_a_resume_without_optimiser_state_ramps_again_and_differs(runs):
    lean, state, _ = load_shards(runs / "lean_after", "ckpt")
    assert state["mode"] == "weights" and state["step"] == 6 and not lean  # the index alone
    rows, whole = _rows(runs / "lean_after" / "loss_dit.csv"), _rows(runs / "whole" / "loss_dit.csv")
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6] and rows[:3] == whole[:3]
    for (step, _, lr), (_, _, full_lr) in zip(rows[3:], whole[3:]):
        assert lr == pytest.approx(full_lr * (step - 3) / 300, rel=1e-3)  # fresh moments: the warm-up ramps again
    resumed, _, _ = load_shards(runs / "second", "weights")
    again, _, _ = load_shards(runs / "lean_after", "weights")
    assert max((resumed[k].float() - again[k].float()).abs().max().item() for k in resumed) > 0


def test_joined_weights_load_and_equal_the_ema(runs, tmp_path):
    dest = train_gpu.main(["join", str(runs / "whole"), "--to", str(tmp_path / "tiny_dit.safetensors")])
    model = load_weights(TinyDiT(DIT_SIZES["test"]), dest)
    tensors, _, _ = load_shards(runs / "whole", "ckpt")
    for k, v in model.state_dict().items():
        assert torch.equal(v, tensors[f"ema.{k}"].half().float()), k
    with safe_open(str(dest), "pt") as f:
        meta = f.metadata()
    assert meta["steps"] == "6" and "'width': 64" in meta["config"]


def _one_line_error(folder, match):
    with pytest.raises(ShardError, match=match) as e:
        load_shards(folder, "ckpt")
    assert "\n" not in str(e.value)


def test_a_bad_shard_set_is_one_clear_error(runs, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(runs / "whole", bad)
    (bad / "ckpt-03.safetensors").unlink()
    _one_line_error(bad, "ckpt-03.safetensors: missing")
    shutil.copyfile(runs / "first" / "ckpt-03.safetensors", bad / "ckpt-03.safetensors")
    _one_line_error(bad, "size or sha256 differs")  # a shard of another save
    shutil.copyfile(runs / "whole" / "ckpt-03.safetensors", bad / "ckpt-03.safetensors")
    shutil.copyfile(bad / "ckpt-01.safetensors", bad / "ckpt-99.safetensors")
    _one_line_error(bad, "ckpt-99.safetensors is not in ckpt.json")
    (bad / "ckpt-99.safetensors").unlink()
    (bad / "ckpt.json").write_text((bad / "ckpt.json").read_text()[:200])
    _one_line_error(bad, "not a JSON shard index")
    with pytest.raises(SystemExit, match="error: .*not 'decoder'"):
        train_gpu.main(["decoder", "--out", str(tmp_path / "o"), "--resume", str(runs / "whole"), "--device", "cpu"])


def test_the_full_checkpoint_is_kept_where_it_fits_what_a_gpu_machine_returns():
    tiny = sum(p.numel() for p in TinyDiT(DIT_SIZES["tiny"]).parameters())
    limit, files, total = 16 * MIB, 8, 64 * MIB
    # The tiny DiT: model, EMA and two Adam moments in fp32 are 200 MB, over 64 MiB: weights only.
    assert train_gpu.choose_mode(16 * tiny, 2 * tiny, limit, files, total) == "weights"
    # The VAE (3.1M values, no EMA): 37 MB of checkpoint and 6 MB of weights fit.
    assert train_gpu.choose_mode(12 * 3_091_187, 2 * 3_091_187, limit, files, total) == "full"
    # One shard each, two indexes, the loss CSV and the log: six files, and a MiB kept for the small ones.
    assert train_gpu.choose_mode(1, 1, limit, 6, total) == "full"
    assert train_gpu.choose_mode(1, 1, limit, 5, total) == "weights" and train_gpu.choose_mode(1, 1, limit, 6, MIB) == "weights"


def test_training_uses_bf16_autocast_on_a_gpu_and_the_cpu_by_default():
    from kinema.models.train_loop import default_device, train_autocast

    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a CPU-only torch warns that CUDA autocast is off
        ac = train_autocast("cuda")
    assert (ac.device, ac.fast_dtype) == ("cuda", torch.bfloat16)
    assert train_autocast().device == "cpu" and train_autocast(torch.device("cpu")).device == "cpu"


def test_the_vae_stage_resumes_exactly_with_torch_rng(tmp_path):
    """The VAE samples its latents with torch's generator: a resumed run must continue its stream too."""
    torch.set_num_threads(1)
    base = ["--steps", "100", "--batch", "1", "--checkpoint", "full", "--shard-mib", "4", "--device", "cpu", "--log-every", "100"]
    train_gpu.main(["vae", "--out", str(tmp_path / "whole"), "--max-steps", "2", *base])
    train_gpu.main(["vae", "--out", str(tmp_path / "first"), "--max-steps", "1", *base])
    train_gpu.main(["vae", "--out", str(tmp_path / "second"), "--resume", str(tmp_path / "first"), "--max-steps", "1", "--device", "cpu", "--shard-mib", "4"])
    whole, _, _ = load_shards(tmp_path / "whole", "ckpt")
    resumed, state, _ = load_shards(tmp_path / "second", "ckpt")
    assert state["step"] == 2 and not (tmp_path / "second" / "weights.json").exists()  # unfinished: no weights yet
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    first, _, _ = load_shards(tmp_path / "first", "ckpt")
    assert not torch.equal(first["rng.torch"], whole["rng.torch"])
    assert np.isfinite([r[1] for r in _rows(tmp_path / "second" / "loss_vae.csv")]).all()
