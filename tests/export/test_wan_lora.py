"""LoRAs merged at `kinema export wan`: every key format against diffusers' own loader and fuse, errors in one line."""

from __future__ import annotations

import copy
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from kinema.export.lora import parse_lora_spec
from kinema.export.wan_lora import merge_wan_loras, plan_wan_loras
from kinema.runtime.cli.main import main
from kinema.runtime.errors import InputError

sys.path.insert(0, str(Path(__file__).parent))
from wan_tiny import compare_checked, save_checkpoint, tiny_modules  # noqa: E402

pytest.importorskip("peft")  # diffusers' LoRA loader, the reference

RANK = 4
# Modules a test LoRA changes: (diffusers name, Wan's name). Written out here, apart from export/wan_lora.py's table.
LINEARS = [
    ("blocks.0.attn1.to_q", "blocks.0.self_attn.q"),
    ("blocks.1.attn1.to_out.0", "blocks.1.self_attn.o"),
    ("blocks.0.attn2.to_k", "blocks.0.cross_attn.k"),
    ("blocks.1.attn2.to_v", "blocks.1.cross_attn.v"),
    ("blocks.0.ffn.net.0.proj", "blocks.0.ffn.0"),
    ("blocks.1.ffn.net.2", "blocks.1.ffn.2"),
    ("proj_out", "head.head"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
]
# Every projection of every block: musubi-tuner files carry them all (diffusers' musubi reader requires it).
ALL_BLOCK_LINEARS = [
    (f"blocks.{i}.{ours}.{b}", f"blocks_{i}_{wan}_{a}")
    for i in range(2) for ours, wan in (("attn1", "self_attn"), ("attn2", "cross_attn"))
    for a, b in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0"))
] + [(f"blocks.{i}.ffn.{b}", f"blocks_{i}_ffn_{a}") for i in range(2) for a, b in (("0", "net.0.proj"), ("2", "net.2"))]


@pytest.fixture(scope="module")
def base():
    return tiny_modules(0)[0]


def _pair(module, seed):
    """A random (down, up) pair of rank RANK whose product is of the size of the module's own weight."""
    g = torch.Generator().manual_seed(seed)
    out_f, in_f = module.weight.shape
    return torch.randn(RANK, in_f, generator=g) / in_f**0.5, torch.randn(out_f, RANK, generator=g) * 0.5 / RANK**0.5


def _write(path: Path, tensors: dict, metadata: dict | None = None) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def _lora_file(tmp_path: Path, base, fmt: str, seed: int = 0) -> Path:
    """A random LoRA for `base` in one of the formats users have, as its own tools write it."""
    mods = dict(base.named_modules())
    t = {}
    if fmt == "musubi":
        for i, (ours, wan) in enumerate(ALL_BLOCK_LINEARS):
            down, up = _pair(mods[ours], seed + i)
            t.update({f"lora_unet_{wan}.lora_down.weight": down, f"lora_unet_{wan}.lora_up.weight": up, f"lora_unet_{wan}.alpha": torch.tensor(2.0)})
        return _write(tmp_path / "musubi.safetensors", t)
    for i, (ours, wan) in enumerate(LINEARS):
        down, up = _pair(mods[ours], seed + i)
        if fmt == "peft":
            t.update({f"{ours}.lora_A.weight": down, f"{ours}.lora_B.weight": up})
        elif fmt == "wan":
            t.update({f"diffusion_model.{wan}.lora_A.weight": down, f"diffusion_model.{wan}.lora_B.weight": up})
        elif fmt in ("wan-alpha", "wan-diff"):
            t.update({f"diffusion_model.{wan}.lora_down.weight": down, f"diffusion_model.{wan}.lora_up.weight": up})
            if wan.startswith("blocks."):  # diffusers reads alpha in blocks only; elsewhere alpha is the rank
                t[f"diffusion_model.{wan}.alpha"] = torch.tensor(8.0)
        if fmt == "wan-diff":  # lightx2v-style bias deltas
            t[f"diffusion_model.{wan}.diff_b"] = torch.randn(mods[ours].bias.shape, generator=torch.Generator().manual_seed(100 + i)) * 0.1
    if fmt == "peft":  # as diffusers writes it: "transformer." keys, the PEFT config (lora_alpha 8 at rank 4) in the metadata
        from diffusers import WanPipeline

        WanPipeline.save_lora_weights(tmp_path, transformer_lora_layers=t, weight_name="peft.safetensors",
                                      transformer_lora_adapter_metadata={"r": RANK, "lora_alpha": 8, "target_modules": [o for o, _ in LINEARS]})
        return tmp_path / "peft.safetensors"
    return _write(tmp_path / f"{fmt}.safetensors", t)


def _diffusers_fused(base, files_scales):
    """diffusers' own reading of the files: WanPipeline.load_lora_weights, set_adapters, fuse_lora."""
    from diffusers import WanPipeline

    pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=copy.deepcopy(base), vae=None, scheduler=None)
    names = [f"l{i}" for i in range(len(files_scales))]
    for name, (f, _) in zip(names, files_scales):
        pipe.load_lora_weights(str(f), adapter_name=name)
    pipe.set_adapters(names, [s for _, s in files_scales])
    pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
    pipe.unload_lora_weights()  # the fused weights stay; the adapters go
    return pipe.transformer


def _kinema_merged(base, files_scales, **kw):
    specs = [parse_lora_spec(f"{f}:{s}") for f, s in files_scales]
    plans = plan_wan_loras(specs, dict(base.config), **kw)
    model = copy.deepcopy(base)
    merge_wan_loras(model, plans)
    return model, plans


def _outputs(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 16, 3, 6, 4, generator=g)
    text = torch.randn(2, 9, 32, generator=g)
    with torch.no_grad():
        return model(x, torch.tensor([937, 250]), text, return_dict=False)[0]


def _max_param_diff(a, b) -> float:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    assert pa.keys() == pb.keys()
    with torch.no_grad():
        return max(float((pa[k] - pb[k]).abs().max()) for k in pa)


@pytest.mark.parametrize("fmt,scale", [("peft", 0.7), ("wan", 1.0), ("wan-alpha", 1.3), ("wan-diff", 0.8), ("musubi", 0.5)])
def test_lora_merge_equals_diffusers_fuse(base, tmp_path, fmt, scale):
    f = _lora_file(tmp_path, base, fmt)
    ours, plans = _kinema_merged(base, [(f, scale)])
    ref = _diffusers_fused(base, [(f, scale)])
    assert not plans[0].unmatched and len(plans[0].deltas) == (len(ALL_BLOCK_LINEARS) if fmt == "musubi" else len(LINEARS))
    y0, y, y_ref = _outputs(base), _outputs(ours), _outputs(ref)
    assert float((y_ref - y0).abs().max()) > 0.05  # the LoRA changes the output
    assert _max_param_diff(ours, ref) < 1e-5  # measured 0.0: the same fp32 product and sum
    assert float((y - y_ref).abs().max()) < 1e-5  # measured 0.0


def test_two_loras_applied_in_order_equal_diffusers_adapters(base, tmp_path):
    a, b = _lora_file(tmp_path, base, "wan", seed=0), _lora_file(tmp_path, base, "wan-alpha", seed=50)
    ours, _ = _kinema_merged(base, [(a, 0.6), (b, -0.4)])
    ref = _diffusers_fused(base, [(a, 0.6), (b, -0.4)])
    assert _max_param_diff(ours, ref) < 1e-5
    assert float((_outputs(ours) - _outputs(ref)).abs().max()) < 1e-5


def test_full_weight_diffs_add_scaled_deltas(base, tmp_path):
    """`.diff` keys (full weight deltas, norms included), which diffusers' loader leaves out: against W + scale * diff."""
    g = torch.Generator().manual_seed(7)
    targets = {"blocks.0.self_attn.q": "blocks.0.attn1.to_q.weight", "blocks.1.norm3": "blocks.1.norm2.weight",
               "blocks.0.cross_attn.norm_k": "blocks.0.attn2.norm_k.weight", "patch_embedding": "patch_embedding.weight",
               "blocks.1.modulation": "blocks.1.scale_shift_table"}
    params = dict(base.named_parameters())
    diffs = {wan: torch.randn(params[ours].shape, generator=g) * 0.1 for wan, ours in targets.items()}
    f = _write(tmp_path / "diffs.safetensors", {f"diffusion_model.{k}.diff": v for k, v in diffs.items()})
    ours, _ = _kinema_merged(base, [(f, 0.5)])
    got = dict(ours.named_parameters())
    for wan, name in targets.items():
        assert float((got[name] - (params[name] + 0.5 * diffs[wan])).detach().abs().max()) < 1e-6
    changed = {n for n in params if not torch.equal(params[n], got[n])}
    assert changed == set(targets.values())


def test_peft_keys_without_prefix_and_with_alpha_keys(base, tmp_path):
    """diffusers' names without `transformer.`, per-module `.alpha`: the same merge as the PEFT file diffusers loads."""
    f = _lora_file(tmp_path, base, "peft")
    from safetensors.torch import load_file

    t = {k.removeprefix("transformer."): v for k, v in load_file(str(f)).items()}
    t.update({k.replace(".lora_A.weight", ".alpha"): torch.tensor(8.0) for k in list(t) if k.endswith(".lora_A.weight")})
    g = _write(tmp_path / "plain.safetensors", t)
    ours, _ = _kinema_merged(base, [(g, 0.7)])
    ref = _diffusers_fused(base, [(f, 0.7)])
    assert _max_param_diff(ours, ref) < 1e-5


# ---------------------------------------------------------------------------------------
# Bad LoRAs: one line naming the value and the rule, exit code 2, before any weight loads


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wan-lora") / "Wan-tiny"
    save_checkpoint(folder)
    return folder


def _cli_error(args, capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("kinema export: error: "), err
    return err


def test_unmatched_keys_are_one_line_naming_them(base, checkpoint, tmp_path, capsys, monkeypatch):
    f = _lora_file(tmp_path, base, "wan")
    t = dict(__import__("safetensors.torch", fromlist=["load_file"]).load_file(str(f)))
    t["diffusion_model.blocks.7.self_attn.q.lora_A.weight"] = torch.zeros(RANK, 24)
    t["diffusion_model.blocks.7.self_attn.q.lora_B.weight"] = torch.zeros(24, RANK)
    bad = _write(tmp_path / "bad.safetensors", t)

    def no_loading(*a, **k):
        raise AssertionError("weights loaded before the LoRA was checked")

    monkeypatch.setattr("kinema.export.wan.load_checkpoint", no_loading)
    out = tmp_path / "bundle"
    err = _cli_error(["export", "wan", "--checkpoint", str(checkpoint), "--out", str(out), "--lora", f"{bad}:0.5"], capsys)
    assert "bad.safetensors: 2 key(s) match no module of the transformer" in err
    assert "diffusion_model.blocks.7.self_attn.q.lora_A.weight" in err and "--lora-ignore-unmatched" in err
    assert not out.exists()


def test_ignore_unmatched_merges_the_rest_and_warns_the_count(base, tmp_path, caplog):
    f = _lora_file(tmp_path, base, "wan")
    t = dict(__import__("safetensors.torch", fromlist=["load_file"]).load_file(str(f)))
    t["diffusion_model.img_emb.proj.1.lora_A.weight"] = torch.zeros(RANK, 8)
    t["diffusion_model.something.else"] = torch.zeros(3)
    g = _write(tmp_path / "extra.safetensors", t)
    with caplog.at_level(logging.WARNING, logger="kinema"):
        ours, plans = _kinema_merged(base, [(g, 1.0)], ignore_unmatched=True)
    assert plans[0].unmatched == ("diffusion_model.img_emb.proj.1.lora_A.weight", "diffusion_model.something.else")
    assert [r.getMessage() for r in caplog.records] == [
        "kinema: warning: --lora-ignore-unmatched: 2 LoRA key(s) match no module of the transformer and were left out"]
    ref, _ = _kinema_merged(base, [(f, 1.0)])
    assert _max_param_diff(ours, ref) == 0.0


def _bad_file(tmp_path: Path, base, kind: str) -> str:
    if kind == "scale":
        return f"{_lora_file(tmp_path, base, 'wan')}:abc"
    if kind == "missing":
        return str(tmp_path / "nowhere.safetensors")
    if kind == "not_safetensors":
        p = tmp_path / "lora.safetensors"
        p.write_bytes(b"PK\x03\x04 a zip file, not a safetensors one" * 4)
        return str(p)
    if kind == "shapes":
        return str(_write(tmp_path / "shapes.safetensors", {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(RANK, 24),
                                                            "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(24, RANK + 1)}))
    if kind == "half":
        return str(_write(tmp_path / "half.safetensors", {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(RANK, 24)}))
    if kind == "diff_shape":
        return str(_write(tmp_path / "diff.safetensors", {"diffusion_model.blocks.0.ffn.0.diff_b": torch.zeros(5)}))
    raise ValueError(kind)


@pytest.mark.parametrize("kind,message", [
    ("scale", r"--lora '.*wan.safetensors:abc': the scale 'abc' is not a number; write FILE or FILE:SCALE"),
    ("missing", r"--lora '.*nowhere.safetensors': .* is not a file; expected a LoRA .safetensors file"),
    ("not_safetensors", r"lora.safetensors is not a safetensors file \(.*\); a LoRA must be .safetensors"),
    ("shapes", r"blocks.0.self_attn.q lora_A \(4, 24\) and lora_B \(24, 5\) do not fit blocks.0.attn1.to_q.weight \(24, 24\)"),
    ("half", r"blocks.0.self_attn.q has lora_A/lora_down without its pair"),
    ("diff_shape", r"blocks.0.ffn.0 diff_b \(5,\) does not fit blocks.0.ffn.net.0.proj.bias \(32,\)"),
])
def test_bad_lora_values_are_one_line_and_exit_2(base, checkpoint, tmp_path, capsys, kind, message):
    value = _bad_file(tmp_path, base, kind)
    out = tmp_path / "bundle"
    err = _cli_error(["export", "wan", "--checkpoint", str(checkpoint), "--out", str(out), "--lora", value], capsys)
    import re

    assert re.search(message, err), err
    assert not out.exists()


def test_lora_options_belong_to_export_wan(tmp_path, capsys):
    err = _cli_error(["export", "tiny", "--out", str(tmp_path / "b"), "--lora", "x.safetensors"], capsys)
    assert "--lora: options of `export wan`, not of `export tiny`" in err


# ---------------------------------------------------------------------------------------
# The merged transformer traced: the export check at an untraced shape, and the graph against diffusers


def test_merged_denoiser_graph_matches_pytorch_and_diffusers(base, tmp_path):
    from kinema.export.onnx_graph import export_components
    from kinema.export.wan_graphs import denoiser_graph
    import onnxruntime as ort

    f = _lora_file(tmp_path, base, "wan-diff")
    ours, _ = _kinema_merged(base, [(f, 0.8)])
    comps = export_components(tmp_path, [denoiser_graph(ours, 1000, 16, 2)])  # checked at B=1 T=3 6x4 after tracing at B=2 T=2 4x6
    check = comps["denoiser"]
    assert check["max_abs_diff"] < 1e-4  # measured 6.1e-6
    ref = _diffusers_fused(base, [(f, 0.8)])
    sess = ort.InferenceSession(str(tmp_path / check["file"]), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(5)
    x, text, sigma = torch.randn(1, 16, 5, 8, 6, generator=g), torch.randn(1, 7, 32, generator=g), torch.tensor([0.6251])
    feeds = {"latents": x.numpy(), "timestep": sigma.numpy(), "text_embeds": text.numpy(), "text_mask": np.ones((1, 7), np.int64),
             "cond_latents": np.zeros_like(x.numpy()), "cond_mask": np.zeros((1, 1, 5, 1, 1), np.float32)}
    (got,) = sess.run(None, feeds)
    with torch.no_grad():
        want = ref(x, (sigma * 1000).long(), text, return_dict=False)[0].numpy()
    assert np.abs(got - want).max() < 1e-4  # measured 4.1e-6 (outputs up to 3.1)


@pytest.mark.slow
def test_cli_export_records_loras_and_the_distilled_schedule(base, checkpoint, tmp_path, capsys):
    """`kinema export wan --lora A:0.8 --lora B --distilled lightx2v-4step`: the manifest's record, the bundle's denoiser."""
    from kinema.export.lora import sha256_of
    from kinema.runtime import Pipeline

    a, b = _lora_file(tmp_path, base, "wan-diff"), _lora_file(tmp_path, base, "peft", seed=30)
    out = tmp_path / "bundle"
    assert main(["export", "wan", "--checkpoint", str(checkpoint), "--out", str(out), "--lora", f"{a}:0.8", "--lora", str(b),
                 "--distilled", "lightx2v-4step"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["loras"] == [{"file": "wan-diff.safetensors", "sha256": sha256_of(a), "scale": 0.8, "ignored_keys": 0},
                          {"file": "peft.safetensors", "sha256": sha256_of(b), "scale": 1.0, "ignored_keys": 0}]
    assert m["sampler"]["timesteps"] == [1000.0, 750.0, 500.0, 250.0]
    assert (m["sampler"]["steps"], m["sampler"]["shift"], m["sampler"]["guidance"], m["sampler"]["sampler"]) == (4, 5.0, 1.0, "euler")
    assert main(["info", str(out)]) == 0
    assert f"lora       wan-diff.safetensors at scale 0.8 (sha256 {sha256_of(a)[:12]}...)" in capsys.readouterr().out
    pipe = Pipeline.from_bundle(out)
    from diffusers import WanTransformer3DModel

    ref = _diffusers_fused(WanTransformer3DModel.from_pretrained(checkpoint / "transformer"), [(a, 0.8), (b, 1.0)])
    g = torch.Generator().manual_seed(6)
    x, text, sigma = torch.randn(1, 16, 3, 6, 8, generator=g), torch.randn(1, 11, 32, generator=g), torch.tensor([0.9375])
    feeds = {"latents": x.numpy(), "timestep": sigma.numpy(), "text_embeds": text.numpy(), "text_mask": np.ones((1, 11), np.int64),
             "cond_latents": np.zeros_like(x.numpy()), "cond_mask": np.zeros((1, 1, 3, 1, 1), np.float32)}
    (got,) = pipe.session("denoiser").run(None, feeds)
    with torch.no_grad():
        want = ref(x, (sigma * 1000).long(), text, return_dict=False)[0].numpy()
    assert np.abs(got - want).max() < 1e-4
    assert [s for s in pipe.sigmas(pipe.check_inputs("a red ball"))] == pytest.approx([1.0, 0.9375, 2.5 / 3, 0.625, 0.0], abs=1e-12)
    # The merged fp32 bundle against its int8 quantization, sampled on the distilled schedule the manifest carries.
    from kinema.quantize.quantize_bundle import quantize_bundle

    q8 = quantize_bundle(out, tmp_path / "int8", "int8")
    q = compare_checked(out, q8, tmp_path, ["a red ball", "a blue cat"], frames=5, height=64, width=64)
    assert q["components"]["denoiser"]["sqnr_db"]["prediction"] > 10 and q["video"]["psnr_db"] > 10
