"""The absorbed mining (K/V folded into query and output) equals MGM's direct K/V formula, gradients included."""

from __future__ import annotations

import torch

from minigemini.model.mining import PatchInfoMining


def test_absorbed_mining_matches_direct_formula_and_gradients() -> None:
    torch.manual_seed(0)
    mining = PatchInfoMining(lr_dim=24, hr_dim=20)
    for p in mining.parameters():  # non-trivial LN affine and biases
        torch.nn.init.normal_(p, std=0.3)
    lr = torch.randn(2, 16, 24, requires_grad=True)
    hr = (torch.randn(2, 20, 12, 12) * 2 + 1).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = mining.mine(lr, hr)
    ref = mining.mine_reference(lr, hr)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(out)
    grads = torch.autograd.grad((out * weights).sum(), [lr, hr, *mining.parameters()])
    grads_ref = torch.autograd.grad((ref * weights).sum(), [lr, hr, *mining.parameters()])
    names = ["lr", "hr"] + [n for n, _ in mining.named_parameters()]
    for name, g, r in zip(names, grads, grads_ref):
        assert g is not None, f"{name} got no gradient (DDP / ZeRO expect one for every trainable parameter)"
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5, msg=name)
    assert grads[names.index("key.1.bias")].abs().max() == 0  # softmax ignores it: exactly zero


def test_absorbed_mining_under_bf16_autocast_is_close() -> None:
    torch.manual_seed(0)
    mining = PatchInfoMining(lr_dim=32, hr_dim=24)
    lr, hr = torch.randn(1, 9, 32), torch.randn(1, 24, 12, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mining(lr, hr)
    torch.testing.assert_close(out.float(), mining(lr, hr), rtol=0.05, atol=0.05)
