"""Test helper: official MGM model inputs (one -200 per image) -> ours (N image-token ids per image).

Used to feed the tensors the official code produced (tests/fixtures) to our model; the package itself
never needs it (our processor writes N image-token ids from the start).
"""

from __future__ import annotations

import torch

from minigemini.model.constants import IGNORE_INDEX
from minigemini.model.convert import MGM_IMAGE_TOKEN_INDEX


def expand_mgm_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None,
                      image_token_id: int, tokens_per_image: int,
                      pad_token_id: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """MGM inputs (one -200 per image, right padded) -> ours (N image-token ids per image, right padded):
    (input_ids, attention_mask, labels or None)."""
    rows_ids, rows_labels = [], []
    for b in range(input_ids.shape[0]):
        valid = attention_mask[b].bool()
        ids = input_ids[b][valid]
        lab = labels[b][valid] if labels is not None else torch.full_like(ids, IGNORE_INDEX)
        pieces_ids: list[int] = []
        pieces_lab: list[int] = []
        for tok, lb in zip(ids.tolist(), lab.tolist()):
            if tok == MGM_IMAGE_TOKEN_INDEX:
                pieces_ids += [image_token_id] * tokens_per_image
                pieces_lab += [IGNORE_INDEX] * tokens_per_image
            else:
                pieces_ids.append(tok)
                pieces_lab.append(lb)
        rows_ids.append(pieces_ids)
        rows_labels.append(pieces_lab)
    width = max(len(r) for r in rows_ids)
    out_ids = torch.full((len(rows_ids), width), pad_token_id, dtype=torch.long)
    out_lab = torch.full((len(rows_ids), width), IGNORE_INDEX, dtype=torch.long)
    out_mask = torch.zeros((len(rows_ids), width), dtype=torch.long)
    for b, (ids, lab) in enumerate(zip(rows_ids, rows_labels)):
        out_ids[b, : len(ids)] = torch.tensor(ids)
        out_lab[b, : len(lab)] = torch.tensor(lab)
        out_mask[b, : len(ids)] = 1
    return out_ids, out_mask, (out_lab if labels is not None else None)
