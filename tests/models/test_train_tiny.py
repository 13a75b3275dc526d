"""Training-batch helpers of the tiny family: windows cut from inside a clip and their known-start masks."""

import numpy as np
import torch

from kinema.models import train_tiny as tt


def test_inside_windows_start_on_a_four_frame_latent_and_keep_three():
    x0 = torch.arange(7.0).view(1, 1, 7, 1, 1).expand(2, 3, 7, 2, 2)  # latent index as value
    starts = set()
    rng = np.random.default_rng(0)
    for _ in range(200):
        w = tt.inside_window(rng, x0)
        assert w.shape[2] >= 3 and w.shape[:2] == (2, 3)
        first = int(w[0, 0, 0, 0, 0])
        assert torch.equal(w[0, 0, :, 0, 0], torch.arange(first, 7.0))  # a contiguous run to the end
        starts.add(first)
    assert starts == {1, 2, 3, 4}  # never latent 0 (the one-frame latent), all others reachable


def test_first_known_masks_cover_one_or_two_latents():
    rng = np.random.default_rng(1)
    m = tt.first_known_mask(rng, 64, 5)
    assert m.shape == (64, 1, 5, 1, 1)
    known = m[:, 0, :, 0, 0]
    k = known.sum(1)
    assert set(k.tolist()) == {1.0, 2.0}
    for row, n in zip(known, k):
        assert torch.equal(row, (torch.arange(5) < n).float())  # a prefix, nothing after it


def test_edge_loss_sees_edges_not_offsets():
    video = torch.zeros(1, 3, 1, 8, 8)
    plain, edged = tt.VAETrainConfig(object_weight=0.0), tt.VAETrainConfig(object_weight=0.0, edge_weight=2.0)
    offset = video + 0.1  # the same error everywhere: no gradient error
    assert torch.isclose(tt.recon_loss(offset, video, edged), tt.recon_loss(offset, video, plain))
    assert torch.isclose(tt.recon_loss(offset, video, plain), torch.tensor(0.1**2 + 0.1))
    stripes = video.clone()
    stripes[..., :, ::2] = 0.1  # columns alternate 0.1, 0: |d/dx| = 0.1 everywhere, d/dy = 0
    base = tt.recon_loss(stripes, video, plain)
    assert torch.isclose(base, torch.tensor((0.1**2 + 0.1) / 2))
    assert torch.isclose(tt.recon_loss(stripes, video, edged), base + 2.0 * 0.1)


def test_temporal_loss_sees_jumps_between_frames_not_offsets():
    video = torch.zeros(1, 3, 5, 4, 4)
    plain, timed = tt.VAETrainConfig(object_weight=0.0), tt.VAETrainConfig(object_weight=0.0, temporal_weight=3.0)
    offset = video + 0.1  # every frame off by the same amount: the motion is right
    assert torch.isclose(tt.recon_loss(offset, video, timed), tt.recon_loss(offset, video, plain))
    jump = video.clone()
    jump[:, :, 2:] = 0.1  # frames 2-4 off by 0.1: one of the 4 frame pairs jumps by 0.1
    base = tt.recon_loss(jump, video, plain)
    assert torch.isclose(base, torch.tensor((0.1**2 + 0.1) * 3 / 5))
    assert torch.isclose(tt.recon_loss(jump, video, timed), base + 3.0 * 0.1 / 4)


def test_training_numerics_follow_the_cpu_or_the_override(monkeypatch):
    from kinema.models import train_loop

    flags = next((ln for ln in open("/proc/cpuinfo") if ln.startswith("flags")), "").split()
    monkeypatch.delenv("KINEMA_TRAIN_BF16", raising=False)
    assert train_loop.bf16_is_fast() == ("avx512_bf16" in flags or "amx_bf16" in flags)
    for value, fast in (("1", True), ("0", False)):
        monkeypatch.setenv("KINEMA_TRAIN_BF16", value)
        assert train_loop.bf16_is_fast() is fast
        with train_loop.train_autocast():
            y = torch.ones(4, 4) @ torch.ones(4, 4)
        assert y.dtype == (torch.bfloat16 if fast else torch.float32)
