"""Crosscoder training and latent classification on synthetic paired activations, where the
ground truth (which dictionary atoms exist in which model) is known by construction."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from builtin_plugins.tracers.crosscoder_train import (  # noqa: E402
    CLASSES,
    CrosscoderTrainConfig,
    decode,
    encode,
    fvu,
    latent_classes,
    train_layer,
)


def synthetic_pair(n_tokens: int = 6000, d: int = 32, n_shared: int = 24, n_only: int = 4,
                   seed: int = 0):
    """Sparse codes over atoms: shared atoms write into both models (the intervention's copy
    slightly rotated), ``n_only`` atoms only into the intervention, ``n_only`` only into the
    base. Returns (xb, xi, atoms) with atoms = {"shared", "intervention", "base"} -> [m, d]."""
    g = torch.Generator().manual_seed(seed)
    n = n_shared + 2 * n_only
    atoms = torch.randn(n, d, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    active = (torch.rand(n_tokens, n, generator=g) < 0.06).float()
    codes = active * (0.5 + torch.rand(n_tokens, n, generator=g)) * 3
    shared = atoms[:n_shared]
    only_i = atoms[n_shared:n_shared + n_only]
    only_b = atoms[n_shared + n_only:]
    shared_i = shared + 0.05 * torch.randn(shared.shape, generator=g)
    xb = codes[:, :n_shared] @ shared + codes[:, n_shared + n_only:] @ only_b
    xi = codes[:, :n_shared] @ shared_i + codes[:, n_shared:n_shared + n_only] @ only_i
    noise = 0.01
    xb = xb + noise * torch.randn(xb.shape, generator=g)
    xi = xi + noise * torch.randn(xi.shape, generator=g)
    return xb, xi, {"shared": shared, "intervention": only_i, "base": only_b}


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    xb, xi, atoms = synthetic_pair()
    cfg = CrosscoderTrainConfig(d_sae=64, k=4, epochs=30, batch_size=128, lr=3e-3)
    state, metrics = train_layer(xb, xi, cfg, layer=0)
    return xb, xi, atoms, cfg, state, metrics


def _best_latent(state, atom, role):
    """The live latent whose decoder direction in ``role`` is closest to ``atom``."""
    W = state["W_dec"][role]
    cos = torch.nn.functional.cosine_similarity(W, atom[None], dim=-1)
    return int(cos.argmax()), float(cos.max())


def test_training_reconstructs_both_models_better_than_a_rank_k_projection(trained) -> None:
    xb, xi, _, cfg, state, metrics = trained
    # the bound is measured here: the best rank-k linear reconstruction (PCA) of each model,
    # the dense baseline with as many dimensions as the crosscoder has active latents
    for role, x in enumerate((xb, xi)):
        xc = x - x.mean(0)
        _, _, v = torch.linalg.svd(xc, full_matrices=False)
        proj = xc @ v[:cfg.k].T @ v[:cfg.k] + x.mean(0)
        f = encode(state, xb, xi)
        assert fvu(x, decode(state, f, role)) < fvu(x, proj)
    assert metrics["fvu_base"] < 0.5 and metrics["fvu_intervention"] < 0.5
    assert metrics["l0"] > 0


def test_exclusive_atoms_get_exclusive_latents_and_shared_atoms_shared(trained) -> None:
    _, _, atoms, _, state, metrics = trained
    classes = latent_classes(state)
    assert set(classes) <= set(CLASSES)
    found = {"intervention": 0, "base": 0}
    for kind, role, want in (("intervention", 1, "intervention-only"), ("base", 0, "base-only")):
        for atom in atoms[kind]:
            j, cos = _best_latent(state, atom, role)
            assert cos > 0.7  # the atom is represented
            # never mistaken for a shared concept: exclusive, or "changed" where BatchTopK
            # merged an intervention-only and a base-only atom into one latent
            assert classes[j] in (want, "changed")
            found[kind] += classes[j] == want
    assert found["intervention"] >= len(atoms["intervention"]) // 2
    assert found["base"] >= len(atoms["base"]) // 2
    shared_ok = 0
    for atom in atoms["shared"]:
        j, cos = _best_latent(state, atom, 0)
        shared_ok += cos > 0.9 and classes[j] == "shared"
    assert shared_ok >= 0.75 * len(atoms["shared"])
    counts = metrics["class_counts"]
    assert sum(counts.values()) == state["b_enc"].shape[0]


def test_latent_scaling_undoes_a_false_exclusive_latent(trained) -> None:
    """Copy a shared latent into a fake 'intervention-only' latent (base decoder zeroed):
    its decoder norms call it intervention-only, but the base model has the direction where
    it fires, so latent scaling gives nu near 1 and the latent is not intervention-only."""
    from builtin_plugins.tracers.crosscoder_train import latent_statistics

    xb, xi, atoms, cfg, state, _ = trained
    j, _ = _best_latent(state, atoms["shared"][0], 0)
    fake = {k: v.clone() for k, v in state.items()}
    fake["W_dec"][0, j] = 0.0  # the base side no longer writes it: norms say "intervention-only"
    stats = latent_statistics(fake, xb, xi, cfg)
    assert float(stats["rel_norm"][j]) > 1 - cfg.norm_threshold
    assert float(stats["nu"][j]) > cfg.nu_threshold
    assert CLASSES[int(stats["class_code"][j])] != "intervention-only"
    # a real intervention-only latent keeps a small nu
    k, _ = _best_latent(state, atoms["intervention"][0], 1)
    assert float(state["nu"][k]) < cfg.nu_threshold


def _many_rare_atoms(n_tokens: int = 8000, d: int = 64, n_atoms: int = 600):
    """More atoms than latents, with power-law frequencies (a few common, many rare), as in
    real activations: a dictionary too small for them all should keep every latent busy."""
    g = torch.Generator().manual_seed(0)
    atoms = torch.randn(n_atoms, d, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    freq = 0.2 / (1 + torch.arange(n_atoms).float()) ** 0.8
    codes = (torch.rand(n_tokens, n_atoms, generator=g) < freq).float()
    codes = codes * (0.5 + torch.rand(n_tokens, n_atoms, generator=g)) * 3
    atoms_i = atoms + 0.05 * torch.randn(atoms.shape, generator=g)
    return (codes @ atoms + 0.01 * torch.randn(n_tokens, d, generator=g),
            codes @ atoms_i + 0.01 * torch.randn(n_tokens, d, generator=g))


def test_auxk_revives_dead_latents_and_keeps_old_cache_keys() -> None:
    """AuxK (Gao et al. 2024): without it a tenth or more of the latents never fire here;
    with it (fewer) dead latents remain and reconstruction is no worse. Turning it off
    leaves the cache key of a crosscoder trained before the option existed unchanged."""
    import hashlib

    from builtin_plugins.tracers.crosscoder_train import crosscoder_key

    torch.set_num_threads(1)
    xb, xi = _many_rare_atoms()
    runs = {}
    for aux_k in (0, 32):
        cfg = CrosscoderTrainConfig(d_sae=256, k=8, epochs=8, batch_size=128, lr=3e-3,
                                    aux_k=aux_k, aux_dead_tokens=1000)
        runs[aux_k] = train_layer(xb, xi, cfg, layer=0)[1]
    off, on = runs[0], runs[32]
    assert off["aux_steps"] == 0 and on["aux_steps"] > 0
    assert off["class_counts"]["dead"] >= 20
    assert on["class_counts"]["dead"] <= off["class_counts"]["dead"] // 4
    assert on["fvu_base"] <= off["fvu_base"] + 0.005
    assert on["fvu_intervention"] <= off["fvu_intervention"] + 0.005

    plain = CrosscoderTrainConfig()
    legacy = plain.model_dump_json(exclude={"aux_k", "aux_coef", "aux_dead_tokens",
                                            "free_latents", "k_free", "delta_coef"})
    assert crosscoder_key("b", "i", plain) == hashlib.sha256(f"b|i|{legacy}".encode()).hexdigest()[:24]
    assert crosscoder_key("b", "i", CrosscoderTrainConfig(aux_k=32)) != crosscoder_key("b", "i", plain)
