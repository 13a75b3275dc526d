"""The tiny family's committed weights: where they live, and saving and loading them (safetensors).

Separate from training so that loading a model (the exporter, benchmarks) does not import
the training code.
"""

from __future__ import annotations

from pathlib import Path

import torch

DATA_DIR = Path(__file__).resolve().parent / "data"
VAE_WEIGHTS = DATA_DIR / "tiny_vae.safetensors"
DIT_WEIGHTS = DATA_DIR / "tiny_dit.safetensors"


def save_weights(module: torch.nn.Module, path: Path, meta: dict):
    """Write the module's state as fp16 safetensors with `meta` as metadata, atomically."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(weights_state(module), str(tmp), metadata={k: str(v) for k, v in meta.items()})
    tmp.replace(path)


def weights_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors `save_weights` writes: the module's state on the CPU, floats as fp16."""
    # fp16 on disk halves what the repository carries; the models load them back into fp32.
    return {k: v.detach().cpu().contiguous().half() if v.is_floating_point() else v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def load_weights(module: torch.nn.Module, path: Path):
    """Strict load that names missing, unexpected and mis-shaped keys."""
    from safetensors.torch import load_file

    return load_state(module, load_file(str(path)), str(path))


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str):
    """`load_weights` from tensors already read (`source` names them in the error)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or extra or shapes:
        raise ValueError(f"{source}: weights do not fit the model: missing {missing[:5]}, unexpected {extra[:5]}, shapes {shapes[:5]}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
    return module


__all__ = ["DATA_DIR", "DIT_WEIGHTS", "VAE_WEIGHTS", "load_state", "load_weights", "save_weights", "weights_state"]
