"""The child processes of wan_real_size.py, as code strings run with `python -c CODE CFG_JSON`.

Each prints one `RESULT {json}` line with its own peak RSS and CPU seconds. They share
_COMMON: the seeded random Wan2.1-1.3B transformer, the step's inputs (batch 2: prompt and
negative prompt) at cfg["latent"], the random LoRA.
"""

_COMMON = r"""
import json, resource, sys, time
from pathlib import Path
import numpy as np
cfg = json.loads(sys.argv[1])
def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def inputs():
    rng = np.random.default_rng(1)
    t, h, w = cfg["latent"]
    x = rng.standard_normal((2, 16, t, h, w), dtype=np.float32)
    text = (rng.standard_normal((2, cfg["tokens"], 4096), dtype=np.float32) * 0.1)
    text[1, 40:] = 0.0  # WanPipeline zero-pads the states past each prompt's length
    return {"latents": x, "timestep": np.full((2,), 0.7, np.float32), "text_embeds": text,
            "text_mask": np.ones((2, cfg["tokens"]), np.int64), "cond_latents": np.zeros_like(x),
            "cond_mask": np.zeros((2, 1, t, 1, 1), np.float32)}
def build_transformer():
    import torch
    from diffusers import WanTransformer3DModel
    torch.manual_seed(cfg["seed"])
    return WanTransformer3DModel(**cfg["model"]).eval()
def make_and_merge_lora(tr, rank):
    # A random rank-`rank` LoRA on every linear of every block, written in Wan's own key names
    # (as lightx2v's distillation LoRAs are), then read, planned and merged by kinema's export path.
    import torch
    from safetensors.torch import save_file
    from kinema.export.lora import LoraSpec
    from kinema.export.wan_lora import merge_wan_loras, plan_wan_loras, wan_to_diffusers
    g = torch.Generator().manual_seed(cfg["seed"] + 1)
    tensors = {}
    wan_names = [f"{w}.{x}" for w in ("self_attn", "cross_attn") for x in "qkvo"] + ["ffn.0", "ffn.2"]
    diffusers_name = wan_to_diffusers(len(tr.blocks))
    for i in range(len(tr.blocks)):
        for wan in wan_names:
            out_f, in_f = tr.get_submodule(diffusers_name[f"blocks.{i}.{wan}"]).weight.shape
            key = f"diffusion_model.blocks.{i}.{wan}"
            tensors[key + ".lora_A.weight"] = torch.randn(rank, in_f, generator=g) / in_f**0.5
            tensors[key + ".lora_B.weight"] = torch.randn(out_f, rank, generator=g) * 0.01
    path = cfg["work"] + "/lora.safetensors"
    save_file(tensors, path)
    n = sum(v.numel() for v in tensors.values())
    del tensors
    t0 = time.perf_counter()
    plans = plan_wan_loras([LoraSpec(Path(path), 1.0, "lora.safetensors")], cfg["model"])
    merge_wan_loras(tr, plans)
    return {"lora_rank": rank, "lora_params": n, "lora_modules": sum(len(p.deltas) for p in plans),
            "lora_read_merge_s": round(time.perf_counter() - t0, 1)}
def report(d):
    ru = resource.getrusage(resource.RUSAGE_SELF)  # CPU seconds: wall time alone misleads on a shared machine
    print("RESULT " + json.dumps({**d, "peak_rss_mib": round(rss_mib(), 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1)}), flush=True)
"""

_EXPORT = _COMMON + r"""
import torch
from kinema.export.onnx_graph import export_graph
from kinema.export.signatures import denoiser_spec
from kinema.models.wan import WanDenoiser
torch.set_num_threads(cfg["threads"])
t0 = time.perf_counter()
tr = build_transformer()
lora = {}
if cfg["lora_rank"]:
    lora = make_and_merge_lora(tr, cfg["lora_rank"])
den = WanDenoiser(tr).eval()
params = sum(p.numel() for p in den.parameters())
spec = denoiser_spec(atol=1e-3, rtol=1e-2)
def small(b, t, h, w, l, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 16, t, h, w, generator=g)
    return (x, torch.rand(b, generator=g), torch.randn(b, l, 4096, generator=g) * 0.1, torch.ones(b, l, dtype=torch.int64),
            torch.zeros_like(x), torch.zeros(b, 1, t, 1, 1))
built = time.perf_counter() - t0
built_rss = rss_mib()  # the model built (and any LoRA merged), before tracing
# as `kinema export wan` does: the weights are dropped once PyTorch's check outputs are known
entry = export_graph(den, spec, small(2, 2, 4, 6, 8, 0), small(1, 3, 6, 4, 11, 1), cfg["work"] + "/denoiser.onnx", release_module=True)
report({"stage": "export", "params": params, "build_s": round(built, 1), "peak_rss_before_trace_mib": round(built_rss, 1), **lora, "wall_s": round(time.perf_counter() - t0, 1),
        "max_abs_diff": entry["max_abs_diff"], "onnx_bytes": entry["bytes"] + (entry["external_data"] or {"bytes": 0})["bytes"],
        "external_data": entry["external_data"] is not None, "inputs": entry["inputs"]})
"""

_QUANTIZE = _COMMON + r"""
import onnx
from pathlib import Path
from kinema.quantize.quantize_bundle import ComponentPlan, apply_recipe, resolve_nodes
from kinema.export.wan import TOOLS
from kinema.quantize.recipes import describe, float_nodes, preset
t0 = time.perf_counter()
name = cfg["variant"]
recipe = preset(name, TOOLS["float_groups"]).for_component("denoiser")
src = Path(cfg["work"]) / "denoiser.onnx"
keep = resolve_nodes(onnx.load(str(src), load_external_data=False).graph, float_nodes(recipe), src.name)
dst = Path(cfg["work"]) / name / "denoiser.onnx"
apply_recipe(ComponentPlan(recipe, keep), src, dst, external_data=True)
size = sum(p.stat().st_size for p in dst.parent.iterdir())
report({"stage": "quantize", "variant": name, "recipe": describe(recipe), "float_nodes": len(keep),
        "wall_s": round(time.perf_counter() - t0, 1), "onnx_bytes": size})
"""

_TIME_ORT = _COMMON + r"""
import onnxruntime as ort
from kinema.runtime.engine.sessions import open_session
from pathlib import Path
feeds = inputs()
path = Path(cfg["work"]) / ("denoiser.onnx" if cfg["variant"] == "fp32" else cfg["variant"] + "/denoiser.onnx")
t0 = time.perf_counter()
s = open_session(path, "cpu", cfg["threads"])
load = time.perf_counter() - t0
out = s.run(None, feeds)[0]
times = []
for _ in range(cfg["steps"]):
    t0 = time.perf_counter(); out = s.run(None, feeds)[0]; times.append(time.perf_counter() - t0)
ref_path = Path(cfg["work"]) / ("fp32_out_%dx%dx%d.npy" % tuple(cfg["latent"]))  # the ONNX fp32 output at this size
if cfg["variant"] == "fp32":
    np.save(ref_path, out)
ref = np.load(ref_path) if ref_path.exists() else None
sqnr = None if ref is None or cfg["variant"] == "fp32" else float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref.astype(np.float64) - out) ** 2)))
report({"stage": "time", "variant": "onnx-" + cfg["variant"], "latent": cfg["latent"], "load_s": round(load, 1), "step_s": times, "sqnr_db_vs_onnx_fp32": sqnr})
"""

_TIME_TORCH = _COMMON + r"""
import torch
torch.set_num_threads(cfg["threads"])
dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[cfg["variant"]]
feeds = inputs()
t0 = time.perf_counter()
if cfg["variant"] == "bf16":
    # as a user loads it: from a bf16 checkpoint (the same weights, written by _CHECKPOINT), so
    # the process never holds the fp32 model; from_pretrained keeps _keep_in_fp32_modules in fp32
    from diffusers import WanTransformer3DModel
    tr = WanTransformer3DModel.from_pretrained(cfg["work"] + "/bf16", torch_dtype=torch.bfloat16).eval()
else:
    tr = build_transformer()
load = time.perf_counter() - t0
x = torch.from_numpy(feeds["latents"]).to(dtype)
t = torch.floor(torch.from_numpy(feeds["timestep"]) * 1000)
text = torch.from_numpy(feeds["text_embeds"]).to(dtype)
times = []
with torch.no_grad():
    out = tr(x, t, text, return_dict=False)[0]
    for _ in range(cfg["steps"]):
        t0 = time.perf_counter(); out = tr(x, t, text, return_dict=False)[0]; times.append(time.perf_counter() - t0)
from pathlib import Path
ref_path = Path(cfg["work"]) / ("fp32_out_%dx%dx%d.npy" % tuple(cfg["latent"]))  # the ONNX fp32 output at this size
o = out.float().numpy()
sqnr = None
if ref_path.exists():
    ref = np.load(ref_path).astype(np.float64)
    sqnr = float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - o) ** 2), 1e-30)))
report({"stage": "time", "variant": "torch-" + cfg["variant"], "latent": cfg["latent"], "load_s": round(load, 1), "step_s": times, "sqnr_db_vs_onnx_fp32": sqnr,
        "torch": torch.__version__})
"""

_TIME_CLIP = _COMMON + r"""
# One clip's denoising at cfg["clip_latent"]: the distilled schedule (4 steps, no guidance: one
# batch-1 call per step) run whole, against guided steps (one batch-2 call each) timed one by one.
import onnxruntime as ort
from kinema.runtime.engine.sessions import open_session
t, h, w = cfg["clip_latent"]
rng = np.random.default_rng(2)
path = Path(cfg["work"]) / ("denoiser.onnx" if cfg["variant"] == "fp32" else cfg["variant"] + "/denoiser.onnx")
s = open_session(path, "cpu", cfg["threads"])
from kinema.export.distilled import PRESETS
texts = {b: rng.standard_normal((b, cfg["tokens"], 4096), dtype=np.float32) * 0.1 for b in (1, 2)}  # drawn once, outside the timing
def feeds(x, sigma):
    b = len(x)
    return {"latents": x, "timestep": np.full((b,), sigma, np.float32), "text_embeds": texts[b],
            "text_mask": np.ones((b, cfg["tokens"]), np.int64), "cond_latents": np.zeros_like(x),
            "cond_mask": np.zeros((b, 1, t, 1, 1), np.float32)}
x0 = rng.standard_normal((1, 16, t, h, w), dtype=np.float32)
s.run(None, feeds(x0, 1.0))  # warm-up
d = PRESETS["lightx2v-4step"]  # the runtime's sigmas for it: shift * s / (1 + (shift - 1) * s), s = timestep / 1000
sigmas = [d.shift * (t / 1000) / (1 + (d.shift - 1) * (t / 1000)) for t in d.timesteps] + [0.0]
t0 = time.perf_counter()
x = x0
for a, b in zip(sigmas[:-1], sigmas[1:]):
    v = s.run(None, feeds(x, a))[0]
    x = x + (b - a) * v
distilled = time.perf_counter() - t0
x2 = np.concatenate([x0, x0])
s.run(None, feeds(x2, 1.0))  # warm-up at batch 2
guided = []
for i in range(cfg["guided_timed"]):
    t0 = time.perf_counter()
    v = s.run(None, feeds(x2, 1.0 - 0.02 * i))[0]
    v = v[1:] + 5.0 * (v[:1] - v[1:])
    guided.append(time.perf_counter() - t0)
whole = {}
if cfg.get("guided_whole"):
    # the 50 guided steps run whole: Euler on Wan's shift-5 flow sigmas, one batch-2 call and the guidance mix per step
    n = cfg["guided_whole"]
    u = np.linspace(1.0, 0.0, n + 1)[:-1]
    gs = [float(v) for v in 5.0 * u / (1 + 4.0 * u)] + [0.0]  # Python floats: the latents stay float32
    t0 = time.perf_counter()
    xg = x0
    for a, b in zip(gs[:-1], gs[1:]):
        v = s.run(None, feeds(np.concatenate([xg, xg]), a))[0]
        xg = xg + (b - a) * (v[1:] + 5.0 * (v[:1] - v[1:]))
    whole = {"guided_steps_run_whole": n, "guided_whole_s": round(time.perf_counter() - t0, 2), "guided_finite": bool(np.isfinite(xg).all())}
report({"stage": "clip", "variant": "onnx-" + cfg["variant"], "latent": [t, h, w], "distilled_4_steps_s": round(distilled, 2),
        "guided_step_s": [round(g, 2) for g in guided], "finite": bool(np.isfinite(x).all()), **whole})
"""

_CHECKPOINT = _COMMON + r"""
# The transformer's weights (the same seeded ones) saved as a bf16 diffusers checkpoint, for torch-bf16.
import torch
tr = build_transformer()
if cfg["lora_rank"]:
    make_and_merge_lora(tr, cfg["lora_rank"])
tr.to(torch.bfloat16).save_pretrained(cfg["work"] + "/bf16")
report({"stage": "checkpoint"})
"""

_PARTS = _COMMON + r"""
# The clip's two other graphs at real size, seeded random weights, for the end-to-end figure:
# - Wan 2.1's VAE decoder (diffusers' default AutoencoderKLWan config) as the streaming prefix
#   and step graphs every Wan bundle carries (fp32), decoding the clip's latent as the runtime does,
#   timed against diffusers' own decode of it, rounds interleaved;
# - UMT5-XXL's text encoder (24 identical layers, 5.7B parameters: 22.8 GB in fp32, more than this
#   machine holds) exported at 1 and at 2 layers, int8 by the preset, timed at Wan's 512 tokens;
#   24 layers cost t1 + 23 (t2 - t1). Its vocabulary is cut to 32128 rows: the embedding is a row
#   lookup whose cost does not depend on the row count.
import torch
from diffusers import AutoencoderKLWan
from transformers import UMT5Config, UMT5EncoderModel
from kinema.export.onnx_graph import export_components
from kinema.export.wan import TOOLS
from kinema.export.wan_graphs import decoder_graphs, text_encoder_graph
from kinema.quantize.quantize_bundle import ComponentPlan, apply_recipe, resolve_nodes
from kinema.quantize.recipes import float_nodes, preset
from kinema.runtime.bundle.manifest import Cache, Decoder
from kinema.runtime.engine.decode import StreamingDecoder
from kinema.runtime.engine.sessions import open_session
from types import SimpleNamespace
import onnx
torch.set_num_threads(cfg["threads"])
work = Path(cfg["work"]) / "parts"
out = {"stage": "parts"}
def median_time(fn, n):
    fn()  # warm-up
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), [round(t, 3) for t in ts]
torch.manual_seed(cfg["seed"] + 7)
vae = AutoencoderKLWan().eval()
t0 = time.perf_counter()
comps = export_components(work / "vae", decoder_graphs(vae, 16))
out["decoder_export_s"] = round(time.perf_counter() - t0, 1)
out["decoder_params"] = sum(p.numel() for p in vae.decoder.parameters()) + sum(p.numel() for p in vae.post_quant_conv.parameters())
sessions = {n: open_session(work / "vae" / f"{n}.onnx", "cpu", cfg["threads"]) for n in ("decoder_prefix", "decoder_step")}
# the runtime's own streaming decoder over these two graphs, given what a bundle's manifest would say of them
spec = Decoder(caches=[Cache(i["name"], "next_" + i["name"]) for i in comps["decoder_step"]["inputs"][1:]])
pipe = SimpleNamespace(bundle=SimpleNamespace(spec=SimpleNamespace(decoder=spec)), session=sessions.__getitem__)
t, h, w = cfg["clip_latent"]
lat = np.random.default_rng(3).standard_normal((1, 16, t, h, w), dtype=np.float32)
def decode():
    return StreamingDecoder(pipe).push(lat)
video = decode()
out["decoded_shape"] = list(video.shape)
# diffusers' own decode of the same latent (fp32, as WanPipeline runs its VAE), rounds interleaved with kinema's
mean, std = (torch.tensor(getattr(vae.config, k)).view(1, 16, 1, 1, 1) for k in ("latents_mean", "latents_std"))
def decode_torch():
    with torch.no_grad():
        x = vae.decode(torch.from_numpy(lat) * std + mean).sample
    return ((x.clamp(-1, 1).permute(0, 2, 3, 4, 1) + 1) * 0.5).numpy()
ref = decode_torch()  # also its warm-up
out["max_abs_diff_vs_diffusers"] = float(np.abs(ref - video).max())
runs, runs_torch = [], []
for _ in range(cfg.get("decode_rounds", 2)):
    t0 = time.perf_counter(); decode(); runs.append(round(time.perf_counter() - t0, 3))
    t0 = time.perf_counter(); decode_torch(); runs_torch.append(round(time.perf_counter() - t0, 3))
out["decode_s"], out["decode_runs_s"] = float(np.median(runs)), runs
out["diffusers_decode_s"], out["diffusers_decode_runs_s"] = float(np.median(runs_torch)), runs_torch
del sessions, pipe, vae
recipe = preset("int8", TOOLS["float_groups"]).for_component("text_encoder")
L = cfg["tokens"]
te = {}
for layers in (1, 2):
    torch.manual_seed(cfg["seed"] + 8)
    c = UMT5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=layers, num_heads=64, relative_attention_num_buckets=32,
                   relative_attention_max_distance=128, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    folder = work / f"umt5_{layers}"
    export_components(folder, [text_encoder_graph(UMT5EncoderModel(c).eval(), release=True)])
    src = folder / "text_encoder.onnx"
    keep = resolve_nodes(onnx.load(str(src), load_external_data=False).graph, float_nodes(recipe), src.name)
    apply_recipe(ComponentPlan(recipe, keep), src, folder / "int8" / "text_encoder.onnx", external_data=True)
    s = open_session(folder / "int8" / "text_encoder.onnx", "cpu", cfg["threads"])
    for b in (1, 2):
        ids = np.random.default_rng(b).integers(2, 32128, (b, L)).astype(np.int64)
        mask = np.zeros((b, L), np.int64)
        mask[:, :40] = 1  # a 40-token prompt padded to 512, as WanPipeline pads
        te[(layers, b)] = median_time(lambda: s.run(None, {"input_ids": ids, "attention_mask": mask}), 3)[0]
    del s
for b in (1, 2):
    out[f"text_encoder_b{b}_1_layer_s"] = round(te[(1, b)], 3)
    out[f"text_encoder_b{b}_2_layers_s"] = round(te[(2, b)], 3)
    out[f"text_encoder_b{b}_24_layers_s"] = round(te[(1, b)] + 23 * (te[(2, b)] - te[(1, b)]), 2)
report(out)
"""
