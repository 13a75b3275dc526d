"""Wan export: tiny random checkpoints built here, the bundle against diffusers, checkpoint errors."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kinema.export.wan import inspect_checkpoint, sampler_defaults
from kinema.models.wan import Nearest2x, WanDecoderPrefix, WanDecoderStep
from kinema.runtime import Pipeline
from kinema.runtime.cli.main import main
from kinema.runtime.errors import InputError
from kinema.runtime.video.core import Video

sys.path.insert(0, str(Path(__file__).parent))
from wan_tiny import WORDS, compare_checked, encoder_against_diffusers, preview_against_decoder, save_checkpoint, tiny_modules, tiny_tokenizer  # noqa: E402

PROMPT = "a red cat running on the beach"


def _stream(prefix, step, z):
    """Decode (B, C, T, h, w) one latent frame at a time with the wrappers; frames (B, F, H, W, 3)."""
    out = prefix(z[:, :, :1])
    frames, caches = [out[0]], out[1:]
    for i in range(1, z.shape[2]):
        out = step(z[:, :, i : i + 1], *caches)
        frames.append(out[0])
        caches = out[1:]
    return torch.cat(frames, dim=1)


def _diffusers_decode(vae, z):
    """WanPipeline's decode of normalised latents: frames (B, F, H, W, 3) in [0, 1]."""
    c = vae.config
    mean = torch.tensor(c.latents_mean).view(1, c.z_dim, 1, 1, 1)
    std = torch.tensor(c.latents_std).view(1, c.z_dim, 1, 1, 1)
    video = vae.decode(z * std + mean).sample  # (B, 3, F, H, W), clamped to [-1, 1]
    return ((video + 1.0) * 0.5).permute(0, 2, 3, 4, 1)


# ---------------------------------------------------------------------------------------
# Wrappers in PyTorch (no export): fast


@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (2, 4, 6, 6), (1, 8, 1, 9)])
def test_nearest2x_equals_nearest_exact(shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    ref = torch.nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact")(x)
    assert torch.equal(Nearest2x()(x), ref)


def test_export_attention_is_diffusers_attention_bit_for_bit():
    """WanDenoiser's attention processor (rotary pairs stacked, not written to strided slots) gives diffusers' transformer output exactly."""
    from diffusers.models.transformers.transformer_wan import WanAttnProcessor

    from kinema.models.wan import WanDenoiser

    ref, _, _ = tiny_modules(seed=3)
    ours, _, _ = tiny_modules(seed=3)
    g = torch.Generator().manual_seed(0)
    x, t, text = torch.randn(2, 16, 3, 6, 4, generator=g), torch.tensor([250.0, 900.0]), torch.randn(2, 7, 32, generator=g)
    WanDenoiser(ours)
    assert sum(type(m.processor).__name__ == "WanExportAttention" for m in ours.modules() if hasattr(m, "processor")) == 4  # 2 blocks x (self, cross)
    assert all(isinstance(m.processor, WanAttnProcessor) for m in ref.modules() if type(m).__name__ == "WanAttention")
    with torch.no_grad():
        assert torch.equal(ours(x, t, text, return_dict=False)[0], ref(x, t, text, return_dict=False)[0])


@pytest.mark.parametrize("wan22", [False, True], ids=["wan2.1-vae", "wan2.2-vae"])
def test_streaming_decoder_wrappers_equal_diffusers_decode(wan22):
    """Explicit caches, one latent frame per call, against diffusers' own decode (its Python-side cache)."""
    _, vae, _ = tiny_modules(1, wan22=wan22)
    prefix, step = WanDecoderPrefix(vae).eval(), WanDecoderStep.build(vae).eval()
    z = torch.randn(1, vae.config.z_dim, 4, 3, 5, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, ref = _stream(prefix, step, z), _diffusers_decode(vae, z)
    assert ours.shape == ref.shape == (1, 13, 3 * vae.config.scale_factor_spatial, 5 * vae.config.scale_factor_spatial, 3)
    assert float(ref.std()) > 0.01
    assert float((ours - ref).abs().max()) < 1e-5  # measured 0.0 (same ops, same order)


def test_decoding_all_frames_at_once_is_not_the_same():
    """Why the decoder streams: one call over the whole latent clip gives other frames than diffusers' decode."""
    _, vae, _ = tiny_modules(1)
    z = torch.randn(1, 16, 3, 3, 5, generator=torch.Generator().manual_seed(3))
    c = vae.config
    with torch.no_grad():
        ref = _diffusers_decode(vae, z)
        x = vae.post_quant_conv(z * torch.tensor(c.latents_std).view(1, 16, 1, 1, 1) + torch.tensor(c.latents_mean).view(1, 16, 1, 1, 1))
        whole = vae.decoder(x).clamp(-1, 1)  # no cache: every temporal upsampler doubles every frame
    assert whole.shape[2] != ref.shape[1] or float((whole - ref).abs().max()) > 1e-3


# ---------------------------------------------------------------------------------------
# Checkpoint folders: one clear line, before any weight loads


def _index(folder: Path, **fields):
    index = {"_class_name": "WanPipeline", "_diffusers_version": "0.42.1", "transformer_2": [None, None], "boundary_ratio": None}
    index.update(fields)
    (folder / "model_index.json").write_text(json.dumps(index))


@pytest.fixture(scope="module")
def fake_checkpoint(tmp_path_factory):
    """A tiny random Wan checkpoint folder, for the checks that stop before loading weights."""
    src = tmp_path_factory.mktemp("wan-configs") / "Wan-tiny"
    save_checkpoint(src)
    return src


def _copy(fake_checkpoint, tmp_path) -> Path:
    dst = tmp_path / "ck"
    shutil.copytree(fake_checkpoint, dst)
    return dst


def test_inspect_reads_a_wan_folder(fake_checkpoint):
    ck = inspect_checkpoint(fake_checkpoint)
    assert ck.variant == "wan2.1-t2v"
    assert ck.transformer["_class_name"] == "WanTransformer3DModel" and ck.vae["z_dim"] == 16
    assert sampler_defaults(ck.scheduler) == {"prediction": "flow", "schedule": "flow", "sampler": "unipc", "shift": 3.0}


@pytest.mark.parametrize(
    "breakage,message",
    [
        ("not_a_folder", r"is not a folder; expected a Wan text-to-video checkpoint in diffusers format"),
        ("no_index", r"has no model_index.json, so it is not a Wan text-to-video checkpoint"),
        ("other_pipeline", r"is a 'StableDiffusionPipeline' folder, not a Wan pipeline"),
        ("missing_vae", r"is missing the vae/ component folder; a Wan diffusers checkpoint has scheduler/, transformer/, vae/, text_encoder/, tokenizer/"),
        ("no_weights", r"text_encoder/ has no weights \(\*.safetensors or \*.bin\)"),
        ("no_tokenizer_files", r"tokenizer/ has neither tokenizer.json nor spiece.model"),
        ("i2v_pipeline", r"is WanImageToVideoPipeline: image-to-video .* is an unsupported variant"),
        ("two_experts", r"has two transformers \(transformer_2 / boundary_ratio, Wan 2.2 A14B\): an unsupported variant"),
        ("image_dim", r"the transformer takes image embeddings \(image_dim=1280\): image-to-video is an unsupported variant"),
        ("scheduler", r"scheduler 'DDIMScheduler' is an unsupported variant; expected UniPCMultistepScheduler or FlowMatchEulerDiscreteScheduler"),
    ],
)
def test_bad_checkpoints_get_one_line(fake_checkpoint, tmp_path, breakage, message, capsys):
    ck = _copy(fake_checkpoint, tmp_path)
    if breakage == "not_a_folder":
        ck = tmp_path / "nothing-here"
    elif breakage == "no_index":
        (ck / "model_index.json").unlink()
    elif breakage == "other_pipeline":
        _index(ck, _class_name="StableDiffusionPipeline")
    elif breakage == "missing_vae":
        shutil.rmtree(ck / "vae")
    elif breakage == "no_weights":
        for f in (ck / "text_encoder").glob("*.safetensors"):
            f.unlink()
    elif breakage == "no_tokenizer_files":
        (ck / "tokenizer" / "tokenizer.json").unlink()
    elif breakage == "i2v_pipeline":
        _index(ck, _class_name="WanImageToVideoPipeline")
    elif breakage == "two_experts":
        _index(ck, transformer_2=["diffusers", "WanTransformer3DModel"], boundary_ratio=0.875)
    elif breakage == "image_dim":
        cfg = json.loads((ck / "transformer" / "config.json").read_text())
        (ck / "transformer" / "config.json").write_text(json.dumps({**cfg, "image_dim": 1280}))
    elif breakage == "scheduler":
        (ck / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDIMScheduler"}))
    with pytest.raises(InputError, match=message):
        inspect_checkpoint(ck)
    out = tmp_path / "bundle"
    assert main(["export", "wan", "--checkpoint", str(ck), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("kinema export: error: "), err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]


def test_cli_export_wan_option_errors(fake_checkpoint, tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["export", "wan", "--out", str(out)]) == 2
    assert "export wan needs --checkpoint DIR" in capsys.readouterr().err
    assert main(["export", "wan", "--checkpoint", str(fake_checkpoint), "--out", str(out), "--recipe", "int3"]) == 2
    assert "recipe 'int3' is unknown; choose one of" in capsys.readouterr().err
    assert not out.exists()


def test_converted_tokenizer_matches_transformers(fake_checkpoint, tmp_path):
    """The bundle's tokenizer.json, padded and truncated as the runtime does, gives WanPipeline's ids and mask."""
    from tokenizers import Tokenizer

    from kinema.export.wan import convert_tokenizer

    pad = convert_tokenizer(fake_checkpoint / "tokenizer", tmp_path / "tokenizer.json")
    assert pad == 0
    ours = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    ours.enable_truncation(8)
    ours.enable_padding(length=8, pad_id=pad)
    ref = tiny_tokenizer()
    prompts = [PROMPT, "", " ".join(WORDS), "zebra xylophone"]
    enc = ref(prompts, padding="max_length", max_length=8, truncation=True, add_special_tokens=True, return_attention_mask=True)
    got = ours.encode_batch(prompts)
    assert [e.ids for e in got] == enc.input_ids
    assert [e.attention_mask for e in got] == enc.attention_mask
    assert enc.input_ids[0][-1] != 0 and enc.input_ids[1][:2] == [1, 0]  # truncated with </s> kept; empty prompt is </s> + pads


def test_sampler_defaults_follow_the_scheduler_config():
    euler = {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 5.0}
    assert sampler_defaults(euler)["sampler"] == "euler" and sampler_defaults(euler)["shift"] == 5.0
    other_unipc = {"_class_name": "UniPCMultistepScheduler", "prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 8.0, "solver_order": 3}
    assert sampler_defaults(other_unipc) == {"prediction": "flow", "schedule": "flow", "sampler": "euler", "shift": 8.0}
    with pytest.raises(InputError, match="prediction_type='epsilon'.*an unsupported variant"):
        sampler_defaults({"_class_name": "UniPCMultistepScheduler", "prediction_type": "epsilon"})


# ---------------------------------------------------------------------------------------
# Exported bundle against diffusers: one export per module (slow: tracing 4 graphs)


@pytest.fixture(scope="module")
def wan_export(tmp_path_factory):
    """(checkpoint folder, bundle folder), the bundle written by `kinema export wan`."""
    root = tmp_path_factory.mktemp("wan")
    ck = root / "Wan-tiny-T2V-Diffusers"
    save_checkpoint(ck, seed=0)
    out = root / "bundle"
    assert main(["export", "wan", "--checkpoint", str(ck), "--out", str(out)]) == 0
    return ck, out


@pytest.fixture(scope="module")
def reference(wan_export):
    from diffusers import WanPipeline

    return WanPipeline.from_pretrained(wan_export[0], local_files_only=True)


@pytest.mark.slow
def test_denoiser_graph_has_no_strided_rotary_writes(wan_export):
    """The exporter turns diffusers' strided rotary writes into ScatterND between whole-tensor transposes; WanExportAttention leaves none."""
    import onnx

    ops = [n.op_type for n in onnx.load(str(wan_export[1] / "denoiser.onnx"), load_external_data=False).graph.node]
    assert "ScatterND" not in ops and ops.count("MatMul") > 0


def test_manifest_records_wan_rules_and_dynamic_axes(wan_export):
    m = json.loads((wan_export[1] / "manifest.json").read_text())
    assert m["family"] == "wan" and m["model"]["variant"] == "wan2.1-t2v"
    assert m["sampler"] == {"prediction": "flow", "schedule": "flow", "sampler": "unipc", "shift": 3.0, "steps": 50, "guidance": 5.0, "negative_prompt": ""}
    v = m["video"]
    assert (v["frame_multiple"], v["frame_offset"], v["size_multiple"], v["fps"], v["frames"], v["height"], v["width"]) == (4, 1, 16, 16.0, 81, 480, 832)
    assert m["conditioning"] == {"text": True, "cond_latents": False, "negative_prompt": True}  # Wan 2.1 was not trained with known frames
    assert m["components"]["encoder"]["outputs"][0]["shape"][:2] == ["B", 16]
    assert m["tokenizer"]["max_length"] == 512 and m["tokenizer"]["pad_id"] == 0
    den = {i["name"]: i["shape"] for i in m["components"]["denoiser"]["inputs"]}
    assert den["latents"] == ["B", 16, "T", "H", "W"] and den["text_embeds"] == ["B", "L", 32] and den["timestep"] == ["B"]
    step = m["components"]["decoder_step"]["inputs"]
    assert len(step) == 1 + len(m["decoder"]["caches"]) == 25
    assert all(s["shape"][0] == "B" and isinstance(s["shape"][3], str) for s in step)


@pytest.mark.slow
def test_prompts_are_cleaned_as_the_wan_pipeline_cleans_them(wan_export, reference):
    """Messy prompts (entities, runs of whitespace) give WanPipeline's own prompt embeddings."""
    from kinema.runtime.engine.prompt_text import clean_prompt

    pipe = Pipeline.from_bundle(wan_export[1])
    assert pipe.bundle.spec.tokenizer.clean == "unescape-whitespace"
    words = WORDS[:4]
    prompts = [f"  {words[0]}\n\t{words[1]}   {words[2]}  ", f"{words[0]} &amp;amp; {words[3]}", " ".join(words)]
    assert clean_prompt(prompts[0], "unescape-whitespace") == " ".join(words[:3])
    ours, mask = pipe.encode_text(prompts)
    with torch.no_grad():
        ref = reference._get_t5_prompt_embeds(prompts, max_sequence_length=ours.shape[1], device="cpu", dtype=torch.float32)
    assert np.abs(ours * mask[..., None] - ref.numpy()).max() < 1e-4
    tok = pipe.tokenizer()
    assert tok.encode(prompts[1]).ids != tok.encode(clean_prompt(prompts[1], "unescape-whitespace")).ids  # cleaning changes the tokens


@pytest.mark.slow
@pytest.mark.parametrize("batch,length,n_real", [(1, 512, 9), (3, 7, 4)])
def test_text_encoder_matches_umt5(wan_export, reference, batch, length, n_real):
    pipe = Pipeline.from_bundle(wan_export[1])
    ids = torch.randint(2, 48, (batch, length), generator=torch.Generator().manual_seed(length))
    mask = torch.zeros(batch, length, dtype=torch.int64)
    mask[:, :n_real] = 1
    (ours,) = pipe.session("text_encoder").run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    with torch.no_grad():
        ref = reference.text_encoder(ids, mask).last_hidden_state * mask[..., None]
    assert float(ref.abs().max()) > 0.1
    assert np.abs(ours - ref.numpy()).max() < 1e-4  # measured 0.9e-6 .. 1.2e-6


@pytest.mark.slow
@pytest.mark.parametrize("batch,t,h,w,length", [(1, 3, 8, 10, 512), (2, 5, 6, 4, 9)])
def test_denoiser_matches_wan_transformer(wan_export, reference, batch, t, h, w, length):
    pipe = Pipeline.from_bundle(wan_export[1])
    g = torch.Generator().manual_seed(t)
    x = torch.randn(batch, 16, t, h, w, generator=g)
    sigma = torch.rand(batch, generator=g)
    text = torch.randn(batch, length, 32, generator=g)
    feeds = {
        "latents": x.numpy(), "timestep": sigma.numpy(), "text_embeds": text.numpy(),
        "text_mask": np.ones((batch, length), np.int64), "cond_latents": np.zeros_like(x.numpy()),
        "cond_mask": np.zeros((batch, 1, t, 1, 1), np.float32),
    }
    (ours,) = pipe.session("denoiser").run(None, feeds)
    with torch.no_grad():  # WanPipeline hands the transformer int64 timesteps: floor(sigma * 1000)
        ref = reference.transformer(x, (sigma * 1000).long(), text, return_dict=False)[0]
    assert ours.shape == (batch, 16, t, h, w)
    assert np.abs(ours - ref.numpy()).max() < 1e-4  # measured 2.0e-6 .. 2.7e-6


@pytest.mark.slow
@pytest.mark.parametrize("t,h,w", [(3, 8, 10), (5, 6, 4)])
def test_streaming_decoder_graphs_match_diffusers_decode(wan_export, reference, t, h, w):
    pipe = Pipeline.from_bundle(wan_export[1])
    z = torch.randn(1, 16, t, h, w, generator=torch.Generator().manual_seed(h))
    ours = pipe.decode(z.numpy())
    with torch.no_grad():
        ref = _diffusers_decode(reference.vae, z).numpy()
    assert ours.shape == ref.shape == (1, 4 * t - 3, 8 * h, 8 * w, 3)
    assert np.abs(ours - ref).max() < 1e-4  # measured 1.2e-7


@pytest.mark.slow
@pytest.mark.parametrize("frames,h,w", [(1, 48, 80), (9, 64, 40)])
def test_encoder_graph_matches_diffusers_encode(wan_export, reference, frames, h, w):
    """At shapes other than the traced (2, 5, 16, 24): an image and a 9-frame clip."""
    ours, ref = encoder_against_diffusers(Pipeline.from_bundle(wan_export[1]), reference.vae, frames, h, w)
    assert ours.shape == ref.shape == (1, 16, (frames - 1) // 4 + 1, h // 8, w // 8)
    assert ref.std() > 0.05
    assert np.abs(ours - ref).max() < 1e-4  # measured 1.2e-7 / 2.1e-7


@pytest.mark.slow
def test_video_matches_wan_pipeline(wan_export, reference):
    """Same initial latents, same UniPC schedule: the runtime's video against WanPipeline's, within 2/255."""
    pipe = Pipeline.from_bundle(wan_export[1])
    kw = dict(frames=9, height=64, width=80, steps=6, guidance=5.0)
    st = pipe.check_inputs(PROMPT, seed=3, **kw)
    assert st.sampler == "unipc" and st.shift == 3.0  # the checkpoint's scheduler defaults
    ours = pipe.run(st).frames  # (9, 64, 80, 3) uint8
    ref = reference(
        prompt=PROMPT, negative_prompt="", height=64, width=80, num_frames=9, num_inference_steps=6, guidance_scale=5.0,
        latents=torch.from_numpy(pipe.initial_noise(st)), output_type="np",
    ).frames[0]
    ref8 = Video.from_float(ref, 16.0, {}).frames
    assert ours.shape == ref8.shape == (9, 64, 80, 3)
    assert ours.std() > 5  # a picture, not a constant
    diff = np.abs(ours.astype(int) - ref8.astype(int))
    assert diff.max() <= 2, f"max abs pixel difference {diff.max()}/255 > 2/255"  # measured 0/255


@pytest.mark.slow
def test_int8_recipe_on_the_wan_bundle(wan_export, tmp_path):
    """What `export wan --recipe int8` runs after the export: the wan preset resolves, probes stay small, the bundle runs."""
    from kinema.quantize.quantize_bundle import quantize_bundle

    out = quantize_bundle(wan_export[1], tmp_path / "int8", "int8")
    q = json.loads((out / "manifest.json").read_text())["quantization"]
    assert q["float_nodes"]["denoiser"] > 0 and q["float_nodes"]["text_encoder"] > 0
    assert q["measured"]["denoiser"]["sqnr_db"]["prediction"] > 10  # measured 53.5 dB (text encoder 37.4 dB)
    video = Pipeline.from_bundle(out).generate(PROMPT, frames=5, height=64, width=64, steps=2, seed=0)
    assert video.frames.shape == (5, 64, 64, 3)
    # `kinema compare` end to end on the Wan bundle and its int8 quantization (plain prompts: no ShapesWorld rows)
    q = compare_checked(wan_export[1], out, tmp_path, [PROMPT, " ".join(WORDS[:3])], frames=5, height=64, width=64, steps=2)
    assert q["components"]["denoiser"]["sqnr_db"]["prediction"] > 10


@pytest.mark.slow
def test_preview_map_follows_the_bundles_own_decoder(wan_export):
    """The exported latent->RGB map on clips it was not fitted on, and the step callback's lazy preview."""
    from kinema.runtime.bundle.preview import latent_preview

    pipe = Pipeline.from_bundle(wan_export[1])
    assert pipe.bundle.preview_map.matrix.shape == (16, 3)
    r = preview_against_decoder(pipe, spatial=8)
    # measured: stored 0.0038, best 0.0037, constant 0.0163, reversed 0.104
    assert r["stored"] <= 1.10 * r["best"] and r["stored"] < 0.5 * r["constant"] and r["constant"] < r["reversed"], r
    seen = []
    pipe.generate(PROMPT, frames=5, height=64, width=64, steps=2, seed=0, callback=lambda p: seen.append((p["denoised"].copy(), p["preview"]())))
    assert len(seen) == 2
    for denoised, img in seen:
        assert img.shape == (2, 8, 8, 3) and np.array_equal(img, latent_preview(denoised, pipe.bundle.preview_map))
