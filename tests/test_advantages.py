"""oar.group_advantages against a hand computation (docs/algorithm.md §1)."""
import numpy as np
import pytest
import torch

import oar_kernels as oar


def numpy_advantages(r, G, scale, eps):
    r = np.asarray(r, dtype=np.float64).reshape(-1, G)
    centred = r - r.mean(axis=1, keepdims=True)
    if scale == "group":
        std = r.std(axis=1, ddof=1, keepdims=True)
    elif scale == "batch":
        std = r.reshape(-1).std(ddof=1)
    else:
        return centred.reshape(-1)
    return (centred / (std + eps)).reshape(-1)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("G", [2, 4, 8])
def test_matches_numpy(scale, G):
    gen = torch.Generator().manual_seed(G)
    r = torch.randint(0, 2, (G * 5,), generator=gen).float()
    r[G:] += torch.rand(G * 4, generator=gen)  # continuous rewards too
    got = oar.group_advantages(r, G, scale=scale)
    assert got.dtype == torch.float32 and got.shape == r.shape
    np.testing.assert_allclose(got.numpy(), numpy_advantages(r.numpy(), G, scale, 1e-4), rtol=1e-5, atol=1e-6)


def test_equal_rewards_give_zero_not_nan():
    r = torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0])
    a = oar.group_advantages(r, 4)
    assert torch.isfinite(a).all()
    assert torch.equal(a[:8], torch.zeros(8))
    assert (a[8:] != 0).all()
    assert torch.equal(oar.group_advantages(torch.ones(4), 2, scale="batch"), torch.zeros(4))


def test_integer_and_bool_rewards():
    r = torch.tensor([1, 0, 0, 0])
    torch.testing.assert_close(oar.group_advantages(r, 4), oar.group_advantages(r.float(), 4))
    torch.testing.assert_close(oar.group_advantages(r.bool(), 2), oar.group_advantages(r.float(), 2))


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="rewards"):
        oar.group_advantages(torch.ones(5), 2)
    with pytest.raises(ValueError, match="rewards"):
        oar.group_advantages(torch.ones(2, 2), 2)
    with pytest.raises(ValueError, match="rewards"):
        oar.group_advantages(torch.tensor([1.0, float("nan")]), 2)
    with pytest.raises(ValueError, match="rewards"):
        oar.group_advantages([1.0, 0.0], 2)
    with pytest.raises(ValueError, match="group_size"):
        oar.group_advantages(torch.ones(4), 1)
    with pytest.raises(ValueError, match="group_size"):
        oar.group_advantages(torch.ones(4), 2.0)
    with pytest.raises(ValueError, match="scale"):
        oar.group_advantages(torch.ones(4), 2, scale="std")
    with pytest.raises(ValueError, match="eps"):
        oar.group_advantages(torch.ones(4), 2, eps=0)
