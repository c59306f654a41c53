"""Designated shared latents (tied decoders, Dual-K BatchTopK, the delta loss) on a synthetic
narrow fine-tune: the intervention adds one new direction wherever one "trigger" atom fires,
and every shared atom drifts a little, as a LoRA moves everything a little."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from builtin_plugins.tracers.crosscoder_train import (  # noqa: E402
    CrosscoderTrainConfig,
    crosscoder_key,
    encode,
    latent_classes,
    train_layer,
)


def narrow_pair(seed: int, n_tokens: int = 8000, d: int = 32, n_atoms: int = 40, drift: float = 0.01):
    """(xb, xi, new): shared sparse atoms (the intervention's copy drifted by ``drift``), and
    in the intervention ``0.8 * code_0 * new`` added wherever atom 0 fires (8 % of tokens)."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(n_atoms + 1, d, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    shared, new = atoms[:n_atoms], atoms[n_atoms]
    active = (torch.rand(n_tokens, n_atoms, generator=g) < 0.08).float()
    codes = active * (0.5 + torch.rand(n_tokens, n_atoms, generator=g)) * 3
    xb = codes @ shared
    xi = codes @ (shared + drift * torch.randn(shared.shape, generator=g))
    xi = xi + 0.8 * codes[:, :1] * new[None]
    xb = xb + 0.01 * torch.randn(xb.shape, generator=g)
    xi = xi + 0.01 * torch.randn(xi.shape, generator=g)
    return xb, xi, new


def _train(seed: int, **options):
    torch.set_num_threads(1)
    xb, xi, new = narrow_pair(seed)
    cfg = CrosscoderTrainConfig(d_sae=64, k=4, epochs=30, batch_size=128, lr=3e-3, seed=seed, **options)
    state, metrics = train_layer(xb, xi, cfg, layer=0)
    return xb, xi, new, cfg, state, metrics


def _carrier(state, new):
    """(index, class, cosine) of the latent whose decoder difference points most along ``new``."""
    diff = state["W_dec"][1] - state["W_dec"][0]
    cos = torch.nn.functional.cosine_similarity(diff, new[None], dim=-1)
    j = int(cos.argmax())
    return j, latent_classes(state)[j], float(cos[j])


def test_tied_decoders_stay_tied_and_each_group_keeps_its_own_budget() -> None:
    xb, xi, _, cfg, state, metrics = _train(0, free_latents=8, k_free=1)
    n_tied = cfg.d_sae - cfg.free_latents
    W = state["W_dec"]
    # tied in each model's normalised units: the exported rows differ only by the models' scales
    cos = torch.nn.functional.cosine_similarity(W[0, :n_tied], W[1, :n_tied], dim=-1)
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5)
    ratio = W[1, :n_tied].norm(dim=1) / W[0, :n_tied].norm(dim=1)
    assert float(ratio.max() - ratio.min()) < 1e-4
    assert state["tied"][:n_tied].eq(1).all() and state["tied"][n_tied:].eq(0).all()
    assert set(latent_classes(state)[:n_tied]) <= {"shared", "dead"}
    assert len(set(state["threshold"].tolist())) == 2 and isinstance(metrics["threshold"], list)
    f = encode(state, xb, xi)
    free_l0 = float((f[:, n_tied:] > 0).sum(-1).float().mean())
    tied_l0 = float((f[:, :n_tied] > 0).sum(-1).float().mean())
    assert 0.3 < free_l0 < 2.5 and 1.5 < tied_l0 < 5.0  # k_free = 1 and k - k_free = 3 per token
    assert 0 <= metrics["fvu_delta"] < 1


def test_a_narrow_change_lands_in_a_free_latent_classified_changed() -> None:
    """Over four seeds: a plain crosscoder reconstructs the change but writes it into a latent
    whose two decoders still point alike (classified shared on every seed here); with designated
    shared latents and the delta loss the latent carrying it is free and classified changed or
    intervention-only on at least three (measured: seeds 0, 1 and 3; seed 2 stays shared)."""
    plain, free = [], []
    for seed in range(4):
        *_, new, _, state, _ = _train(seed)
        plain.append(_carrier(state, new))
        _, _, new, cfg, state, _ = _train(seed, free_latents=8, k_free=1)
        free.append(_carrier(state, new) + (cfg.d_sae - cfg.free_latents,))
    assert all(c > 0.95 for _, _, c in plain) and all(cls == "shared" for _, cls, _ in plain)
    hits = [cls in ("changed", "intervention-only") and j >= n_tied and c > 0.95
            for j, cls, c, n_tied in free]
    assert sum(hits) >= 3, free


def test_options_only_with_free_latents_and_old_keys_unchanged() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="free_latents > 0"):
        CrosscoderTrainConfig(delta_coef=2.0)
    with pytest.raises(ValidationError, match="free_latents > 0"):
        CrosscoderTrainConfig(k_free=2)
    with pytest.raises(ValidationError, match="both groups need latents"):
        CrosscoderTrainConfig(d_sae=64, k=4, free_latents=64)
    with pytest.raises(ValidationError, match="both groups need latents"):
        CrosscoderTrainConfig(d_sae=64, k=4, free_latents=8, k_free=4)
    plain = CrosscoderTrainConfig()
    assert CrosscoderTrainConfig(**plain.model_dump()) == plain  # a dump validates again
    assert "free_latents" not in plain.identity()
    on = CrosscoderTrainConfig(free_latents=64, k_free=2)
    assert crosscoder_key("b", "i", on) != crosscoder_key("b", "i", plain)
    assert on.identity()["k_free"] == 2
