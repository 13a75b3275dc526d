"""A training run's whole state as tensors plus JSON, for `shards`: modules, optimiser, step and random generators.

`checkpoint_parts` flattens what `train_loop.save_checkpoint` pickles into named tensors (the
modules' states, the optimiser's per-parameter state, torch's generator states) and a JSON
state (step, the data rng's PCG64 state, the optimiser's settings, whatever the stage adds);
`restore_checkpoint` puts them back, so a resumed run takes exactly the steps an
uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import torch


def checkpoint_parts(modules: dict[str, torch.nn.Module], opt: torch.optim.Optimizer | None, step: int, rng: np.random.Generator, **extra):
    """(tensors, state): everything a resumed run continues from, the tensors in fp32 as trained."""
    tensors = {f"{key}.{k}": v for key, m in modules.items() for k, v in m.state_dict().items()}
    state = {"step": step, "rng": rng.bit_generator.state, "modules": sorted(modules), **extra}
    if opt is not None:
        sd = opt.state_dict()
        for pid, per in sd["state"].items():
            for k, v in per.items():
                if not torch.is_tensor(v):
                    raise TypeError(f"optimiser state {pid}.{k} is not a tensor ({type(v).__name__})")
                tensors[f"opt.{pid}.{k}"] = v
        state["opt_groups"] = sd["param_groups"]
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    return tensors, state


def restore_checkpoint(tensors: dict[str, torch.Tensor], state: dict, modules: dict[str, torch.nn.Module], opt: torch.optim.Optimizer | None, rng: np.random.Generator):
    """Load what `checkpoint_parts` gave into the fresh run's modules, optimiser and rngs (strict: a mismatch names its keys)."""
    if sorted(modules) != state.get("modules"):
        raise ValueError(f"checkpoint holds modules {state.get('modules')}, this stage trains {sorted(modules)}")
    for key, m in modules.items():
        own = {k[len(key) + 1 :]: v for k, v in tensors.items() if k.startswith(key + ".")}
        missing, extra = sorted(set(m.state_dict()) - set(own)), sorted(set(own) - set(m.state_dict()))
        if missing or extra:
            raise ValueError(f"checkpoint's {key} does not fit the model: missing {missing[:5]}, unexpected {extra[:5]}")
        m.load_state_dict(own)
    if opt is not None:
        if "opt_groups" not in state:
            raise ValueError("checkpoint holds no optimiser state")
        per: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, pid, name = k.split(".", 2)
                per.setdefault(int(pid), {})[name] = v
        groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in state["opt_groups"]]
        opt.load_state_dict({"state": per, "param_groups": groups})
    rng.bit_generator.state = state["rng"]
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])


__all__ = ["checkpoint_parts", "restore_checkpoint"]
