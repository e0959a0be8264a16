"""Forwarding only the images an objective uses: which images each objective's loss depends on, by hand,
and that dropping the others changes no error, no loss and no gradient (issue 15: DPO on K = 4 ranked
images forwarded all four and used two)."""

from __future__ import annotations

import pytest
import torch

from models.objectives import OBJECTIVES, images_used, objective_loss
from models.parametrization import Parametrization, predict
from models.preference_batch import adapters_disabled, denoise_errors

PHI = [[1.0, 0.5, 0.0, 0.25], [0.0, 1.0, 1.0, 0.5]]  # group 2 ties at the top: the first best wins
TAU = [[1, 2, 4, 3], [4, 1, 2, 3]]


@pytest.mark.parametrize(
    ("objective", "want"),
    [
        ("dpo", [[1, 0, 1, 0], [1, 1, 0, 0]]),  # best over worst
        ("rankdpo", [[1, 1, 1, 1], [1, 1, 1, 1]]),  # every ordered pair
        ("sft", [[1, 0, 0, 0], [0, 1, 0, 0]]),  # the best only
        ("rwr", [[1, 1, 0, 1], [0, 1, 1, 1]]),  # all but the worst (weight phi - min phi = 0)
    ],
)
def test_the_images_each_objective_uses_by_hand(objective: str, want: list[list[int]]) -> None:
    phi, tau = torch.tensor(PHI), torch.tensor(TAU)
    used = images_used(OBJECTIVES.get(objective), phi, tau, torch.ones_like(tau, dtype=torch.bool))
    assert used.tolist() == [[bool(v) for v in row] for row in want]


def test_a_padding_slot_is_never_used() -> None:
    phi, tau = torch.tensor(PHI), torch.tensor(TAU)
    mask = torch.tensor([[True, True, False, True], [True, True, True, True]])
    assert images_used(OBJECTIVES.get("rankdpo"), phi, tau, mask).tolist()[0] == [True, True, False, True]
    assert images_used(OBJECTIVES.get("dpo"), phi, tau, mask).tolist()[0] == [True, False, False, True]


def _denoiser_and_batch() -> tuple:
    from diffusers import DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        norm_num_groups=8,
        cross_attention_dim=16,
        attention_head_dim=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    )
    gen = torch.Generator().manual_seed(1)
    lat = torch.randn(2, 4, 4, 8, 8, generator=gen)  # (B, K, C, h, w)
    cond = {"encoder_hidden_states": torch.randn(2, 5, 16, generator=gen)}
    t, noise = torch.tensor([100, 700]), torch.randn(2, 4, 8, 8, generator=gen)
    return unet, Parametrization.from_scheduler(DDPMScheduler()), lat, cond, t, noise


def test_all_images_used_is_the_plain_batched_forward_bit_for_bit() -> None:
    unet, param, lat, cond, t, noise = _denoiser_and_batch()
    got = denoise_errors(unet, param, lat, cond, t, noise, torch.ones(2, 4, dtype=torch.bool))
    # By hand: all B x K images in one batch, row-major, each group's noise, timestep and caption repeated K times.
    x_t, target = param.noisy_and_target(lat.flatten(0, 1), noise.repeat_interleave(4, 0), t.repeat_interleave(4))
    cond_k = {"encoder_hidden_states": cond["encoder_hidden_states"].repeat_interleave(4, 0)}
    pred = predict(unet, x_t, param.model_timestep(t.repeat_interleave(4)), cond_k)
    want = ((pred - target) ** 2).mean(dim=(1, 2, 3)).view(2, 4)
    assert torch.equal(got, want)


def test_dpo_on_the_used_images_has_the_loss_and_gradient_of_all_four() -> None:
    unet, param, lat, cond, t, noise = _denoiser_and_batch()
    obj, phi, tau = OBJECTIVES.get("dpo"), torch.tensor(PHI), torch.tensor(TAU)
    mask = torch.ones_like(tau, dtype=torch.bool)
    ref = denoise_errors(unet, param, lat, cond, t, noise).detach() * 1.01  # any fixed reference errors
    results = []
    for used in (None, images_used(obj, phi, tau, mask)):
        unet.zero_grad()
        err = denoise_errors(unet, param, lat, cond, t, noise, used)
        loss, _ = objective_loss(obj, err, ref, phi, tau, mask, beta=1000.0)
        loss.backward()
        results.append((err.detach(), loss.detach(), [p.grad.clone() for p in unet.parameters()]))
    (err_all, loss_all, grad_all), (err_used, loss_used, grad_used) = results
    kept = images_used(obj, phi, tau, mask)
    assert (err_used[~kept] == 0).all()  # not forwarded
    # The same images in a batch of 4 instead of 8: equal up to the CPU kernels' float rounding.
    torch.testing.assert_close(err_used[kept], err_all[kept], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(loss_used, loss_all, rtol=1e-5, atol=1e-7)
    for a, b in zip(grad_used, grad_all):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_adapters_disabled_is_diffusers_disable_adapters_and_restores_them() -> None:
    from peft import LoraConfig

    unet, param, lat, cond, t, noise = _denoiser_and_batch()
    args = (param, lat, cond, t, noise)
    base = denoise_errors(unet, *args)
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights="gaussian", target_modules=["to_q", "to_v"]))
    for p in unet.parameters():  # gaussian init leaves lora_B at 0: move it so the adapters change the output
        if p.requires_grad:
            p.data.add_(0.1)
    tuned = denoise_errors(unet, *args)
    assert not torch.equal(tuned, base)
    with adapters_disabled(unet):
        assert torch.equal(denoise_errors(unet, *args), base)
    unet.disable_adapters()  # diffusers' own switch gives the same reference
    assert torch.equal(denoise_errors(unet, *args), base)
    unet.enable_adapters()
    assert torch.equal(denoise_errors(unet, *args), tuned)  # and both switch back on
    with pytest.raises(RuntimeError), adapters_disabled(unet):
        raise RuntimeError("a failing reference pass")
    assert torch.equal(denoise_errors(unet, *args), tuned)  # on again after an error inside


def test_adapters_disabled_refuses_a_model_without_adapters() -> None:
    unet = _denoiser_and_batch()[0]
    with pytest.raises(ValueError, match="UNet2DConditionModel has no LoRA adapters to disable"):
        with adapters_disabled(unet):
            pass
