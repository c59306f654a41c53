"""Where a sequence starts, for the interventions that must leave its first position alone."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def test_first_positions_follow_left_padding_and_vanish_once_a_sequence_continues() -> None:
    from transformers import DynamicCache

    from builtin_plugins.tracers._intervene import first_positions

    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 1, 1]])
    assert first_positions({"attention_mask": mask}).tolist() == [2, 0, 1]
    assert first_positions({}).tolist() == [0]
    empty = DynamicCache()  # generation's first call: a cache, nothing in it yet
    assert first_positions({"attention_mask": mask, "past_key_values": empty}).tolist() == [2, 0, 1]
    cache = DynamicCache()
    cache.update(torch.zeros(3, 1, 4, 2), torch.zeros(3, 1, 4, 2), layer_idx=0)
    assert first_positions({"attention_mask": mask, "past_key_values": cache}) is None


def test_keep_first_positions_resets_only_each_rows_first_position() -> None:
    from builtin_plugins.tracers._intervene import keep_first_positions

    current = torch.arange(24, dtype=torch.float32).reshape(2, 4, 3)
    new = torch.zeros_like(current)
    kept = keep_first_positions(current, new, torch.tensor([2, 0]))
    assert torch.equal(kept[0, 2], current[0, 2]) and torch.equal(kept[1, 0], current[1, 0])
    kept[0, 2] = 0.0
    kept[1, 0] = 0.0
    assert torch.equal(kept, new)  # nothing else touched, and ``new`` itself left as it was
    assert keep_first_positions(current, new, None) is new
    assert torch.equal(keep_first_positions(current, new, torch.tensor([1])),
                       torch.where(torch.arange(4)[None, :, None] == 1, current, new))
