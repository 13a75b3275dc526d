"""Streaming causal decoder: latent frames in, pixel frames out, the decoder's caches carried between pushes.

A causal video VAE decodes latent frame j from latent frames <= j only, so a clip of any
length (and a long video made window by window) decodes through one stream with flat
memory: the prefix graph takes the first latent frame(s), the step graph one latent frame
plus the caches it and the prefix left.
"""

from __future__ import annotations

import numpy as np


class StreamingDecoder:
    """`push(latents)` -> float frames (B, t', H, W, 3) in [0, 1] for the latent frames pushed so far, or None."""

    def __init__(self, pipe):
        dec = pipe.bundle.spec.decoder
        self._prefix = pipe.session("decoder_prefix")
        self._step = pipe.session("decoder_step")
        self._caches = [{"input": c.input, "output": c.output} for c in dec.caches]
        self._n0 = dec.prefix_latent_frames
        self._pending: list[np.ndarray] = []  # latent frames waiting for the prefix graph
        self._state: dict | None = None

    @property
    def started(self) -> bool:
        return self._state is not None

    def push(self, latents: np.ndarray) -> np.ndarray | None:
        """Decode latent frames (B, C, t, H, W) that follow the ones pushed before."""
        out = []
        for i in range(latents.shape[2]):
            frames = self._push_one(np.ascontiguousarray(latents[:, :, i : i + 1], dtype=np.float32))
            if frames is not None:
                out.append(frames)
        return np.concatenate(out, axis=1) if out else None

    def _push_one(self, latent: np.ndarray) -> np.ndarray | None:  # latent (B, C, 1, H, W)
        if self._state is None:
            self._pending.append(latent)
            if len(self._pending) < self._n0:
                return None
            first = np.concatenate(self._pending, axis=2)
            self._pending = []
            names = [o.name for o in self._prefix.get_outputs()]
            self._state = dict(zip(names, self._prefix.run(None, {"latents": first})))
            return self._state["frames"]
        feeds = {"latents": latent}
        feeds.update({c["input"]: self._state[c["output"]] for c in self._caches})
        names = [o.name for o in self._step.get_outputs()]
        self._state = dict(zip(names, self._step.run(None, feeds)))
        return self._state["frames"]
