"""Tiny random Wan checkpoints for the tests, built in code: nothing is downloaded.

The configurations are diffusers' own test sizes for WanTransformer3DModel and
AutoencoderKLWan, a two-layer UMT5 encoder, and a Unigram tokenizer with a few dozen
pieces, saved the way a real Wan2.1-T2V-Diffusers folder is laid out.
"""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("a", "red", "ball", "blue", "cat", "dog", "running", "on", "the", "beach", "slowly", "green", "tree", "in", "snow")
MAX_TOKENS = 16  # the tests' max_sequence_length (Wan's is 512)


def tiny_tokenizer():
    """A transformers fast tokenizer over a UMT5-style Unigram model: <pad>=0, </s>=1, <unk>=2, ends with </s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    vocab += [(f"\u2581{w}", -2.0) for w in WORDS] + [(c, -4.0) for c in letters]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tiny_modules(seed: int = 0, *, wan22: bool = False):
    """(transformer, vae, text_encoder), random, fp32, eval; wan22 gives a Wan 2.2 TI2V-style residual VAE with patch 2."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    z = 12 if wan22 else 16
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=z, out_channels=z, text_dim=32,
        freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )
    if wan22:
        vae = AutoencoderKLWan(
            base_dim=4, decoder_base_dim=6, z_dim=z, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
            is_residual=True, patch_size=2, scale_factor_spatial=16, in_channels=12, out_channels=12,
            latents_mean=[0.1 * i for i in range(z)], latents_std=[1.0 + 0.1 * i for i in range(z)],
        )
    else:
        vae = AutoencoderKLWan(base_dim=3, z_dim=z, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
    cfg = UMT5Config(
        vocab_size=48, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    text_encoder = UMT5EncoderModel(cfg)
    return transformer.eval(), vae.eval(), text_encoder.eval()


def unipc(flow_shift: float = 3.0):
    """Wan's scheduler as its checkpoints configure it."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift, num_train_timesteps=1000)


def save_checkpoint(folder: Path, seed: int = 0, *, wan22: bool = False):
    """A WanPipeline of tiny random modules saved as a diffusers folder; returns the pipeline."""
    from diffusers import WanPipeline

    transformer, vae, text_encoder = tiny_modules(seed, wan22=wan22)
    pipe = WanPipeline(tokenizer=tiny_tokenizer(), text_encoder=text_encoder, transformer=transformer, vae=vae, scheduler=unipc(),
                       expand_timesteps=wan22)
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe


def diffusers_encode(vae, frames):
    """The condition WanImageToVideoPipeline makes of frames (B, F, H, W, 3) in [0, 1]: the posterior's mode, (mode - mean) / std."""
    c = vae.config
    mean = torch.tensor(c.latents_mean).view(1, c.z_dim, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(c.latents_std).view(1, c.z_dim, 1, 1, 1)
    with torch.no_grad():
        mode = vae.encode(frames.permute(0, 4, 1, 2, 3) * 2.0 - 1.0).latent_dist.mode()  # (B, z, t, h, w)
    return (mode - mean) * inv_std


def encoder_against_diffusers(pipe, vae, frames: int, h: int, w: int):
    """(the bundle's encoder graph, diffusers_encode) on one random clip (1, frames, h, w, 3), as NumPy arrays."""
    x = torch.rand(1, frames, h, w, 3, generator=torch.Generator().manual_seed(frames))
    (ours,) = pipe.session("encoder").run(None, {"frames": x.numpy()})
    return ours, diffusers_encode(vae, x).numpy()


def preview_against_decoder(pipe, spatial: int, clips: int = 4) -> dict:
    """RMSEs of latent->RGB maps on ShapesWorld clips the exporter did not fit on.

    The target is each latent cell's mean colour in the clip decoded by the bundle's own
    graphs (encoder, then the streaming decoder), averaged with explicit index lists.
    Keys: "stored" (the manifest's map), "best" (the least-squares map on these very cells),
    "constant" (one mean colour), "reversed" (the stored map with its channel order reversed).
    """
    import numpy as np

    from kinema.models.shapes_world import render, sample_spec
    from kinema.runtime.bundle.preview import PreviewMap, latent_rgb

    rng = np.random.default_rng(1234)  # the exporter fits on seed 0
    side = 8 * spatial
    videos = np.stack([render(sample_spec(rng, allow_heldout=True), 9, side, side, rng) for _ in range(clips)])
    (z,) = pipe.session("encoder").run(None, {"frames": videos.astype(np.float32) / 255.0})
    groups = [[0], [1, 2, 3, 4], [5, 6, 7, 8]]  # latent frame 0 <- frame 0, latent frame i <- frames 4i-3 .. 4i
    target = np.zeros((clips, 3, 8, 8, 3))
    for n in range(clips):
        frames = pipe.decode(z[n : n + 1])[0]
        for t, idx in enumerate(groups):
            for y in range(8):
                for x in range(8):
                    target[n, t, y, x] = frames[idx, spatial * y : spatial * (y + 1), spatial * x : spatial * (x + 1)].mean(axis=(0, 1, 2))
    stored = pipe.bundle.preview_map
    pred = np.stack([latent_rgb(zi, stored) for zi in z])
    wrong = np.stack([latent_rgb(zi, PreviewMap(stored.matrix[::-1].copy(), stored.bias)) for zi in z])
    cells = z.transpose(0, 2, 3, 4, 1).reshape(-1, z.shape[1])
    design = np.concatenate([cells, np.ones((len(cells), 1))], axis=1)
    flat = target.reshape(-1, 3)
    coef, *_ = np.linalg.lstsq(design, flat, rcond=None)
    rms = lambda d: float(np.sqrt(np.mean(d**2)))  # noqa: E731
    return {
        "stored": rms(pred.reshape(-1, 3) - flat),
        "best": rms(design @ coef - flat),
        "constant": rms(flat - flat.mean(axis=0)),
        "reversed": rms(wrong.reshape(-1, 3) - flat),
    }


def compare_checked(ref, quantized, tmp_path: Path, prompts: list[str], **kw) -> dict:
    """`kinema compare ref quantized` on plain prompts; its video PSNR checked against the two bundles run here.

    kw: generate's settings (frames, height, width, and steps unless the manifest's
    schedule is meant), passed to compare as options and to the pipelines as arguments.
    Returns the quantized bundle's entry of report.json.
    """
    import json

    import numpy as np

    from kinema.runtime import Pipeline
    from kinema.runtime.cli.main import main

    listing = tmp_path / "prompts.txt"
    listing.write_text("\n".join(prompts) + "\n")
    rep = tmp_path / "report"
    opts = [x for k, v in kw.items() for x in (f"--{k}", str(v))]
    assert main(["compare", str(ref), str(quantized), "-o", str(rep), "--prompts", str(listing), *opts,
                 "--detail-prompts", "1", "--no-cost", "--threads", "1", "-q"]) == 0
    first, q = json.loads((rep / "report.json").read_text())["bundles"]
    assert first["reference"] and q["adherence"] is None  # plain prompts are not scored
    a, b = Pipeline.from_bundle(ref), Pipeline.from_bundle(quantized)
    mse = np.mean([np.mean((a.generate(p, seed=0, **kw).frames.astype(np.float64) - b.generate(p, seed=0, **kw).frames) ** 2)
                   for p in prompts])
    assert abs(q["video"]["psnr_db"] - 10 * np.log10(255**2 / mse)) < 1e-3
    assert Path(quantized).name in (rep / "report.md").read_text()
    return q
