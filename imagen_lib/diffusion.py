"""Gaussian diffusion: noise schedules, the forward process, the loss, and three samplers.

Lessons 2a to 2c, 5 and 6. Everything here works on any denoiser: a callable that maps a noisy
batch x_t and timesteps t to the network's prediction (of the noise epsilon, or of v).
No network is imported, so the same code samples from a U-Net, an Efficient U-Net, or a
hand-written function in a test.

- Noise schedules: linear (Ho et al. 2020) and cosine (Nichol & Dhariwal 2021, Eq. 17).
- Forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) (Ho et al., Eq. 4).
- Training loss: mean squared error on epsilon (Ho et al., Eq. 14) or on
  v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022, Section 4).
- Classifier-free guidance (Ho & Salimans 2022; Imagen Section 2.2): with the text and
  without it in one batched forward pass, eps = eps_u + w (eps_c - eps_u); optionally
  only within an interval of timesteps, the plain conditional prediction elsewhere
  (Kynkaanniemi et al. 2024, "Applying Guidance in a Limited Interval").
- Thresholding of the predicted x_0 (Imagen Section 2.3): static clips to [-1, 1];
  dynamic picks s = max(1, p-th percentile of |x_0|) per sample, clips to [-s, s] and
  divides by s.
- The ideal denoiser for a finite set of images (the exact posterior mean), which lets
  lessons 2b, 2c and 5 sample and guide without any network.
- Samplers: ancestral (DDPM, Ho et al. Eq. 6-7, on any subsequence of timesteps as in
  Nichol & Dhariwal Section 4), DDIM (Song et al. 2021, Eq. 12) with any number of steps,
  and DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): deterministic like DDIM, with a
  second-order correction that costs no extra network call.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from imagen_lib.plumbing.setting_checks import (
    check_guidance_interval,
    check_guidance_weight,
    check_percentile,
)

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> prediction

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("eps", "v")
THRESHOLDINGS = ("none", "static", "dynamic")
SAMPLERS = ("ddpm", "ddim", "dpm++")


class NoiseSchedule:
    """The betas of a diffusion process and the products derived from them.

    Holds float64 tensors on the CPU; `at(values, t, like)` gathers one value per sample
    and shapes it (B, 1, 1, 1) on the device and dtype of `like`.
    """

    def __init__(self, kind: str = "cosine", timesteps: int = 1000):
        if kind not in SCHEDULES:
            raise ValueError(f"noise schedule must be one of {SCHEDULES}, got {kind!r}")
        if timesteps < 2:
            raise ValueError(f"a schedule needs at least 2 timesteps, got {timesteps}")
        self.kind = kind
        self.timesteps = timesteps
        self.betas = linear_betas(timesteps) if kind == "linear" else cosine_betas(timesteps)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)  # abar_t

    @staticmethod
    def at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        picked = values[t.cpu()].to(device=like.device, dtype=like.dtype)  # (B,)
        return picked.view(-1, *([1] * (like.dim() - 1)))  # (B, 1, 1, 1)


def linear_betas(timesteps: int) -> torch.Tensor:
    """Ho et al.'s linear schedule, from 1e-4 to 0.02 for 1000 steps (rescaled for others).

    Short schedules would push the rescaled betas to 1 and beyond; like the cosine
    schedule, they are capped at 0.999.
    """
    scale = 1000 / timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64).clamp(
        max=0.999
    )


def cosine_betas(timesteps: int, offset: float = 0.008) -> torch.Tensor:
    """Improved DDPM's cosine schedule (Eq. 17): abar_t = f(t) / f(0), betas capped at 0.999."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(max=0.999)


def q_sample(
    schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0): sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise (Ho et al., Eq. 4)."""
    abar = schedule.at(schedule.alphas_cumprod, t, x0)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def training_target(
    schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, prediction: str
) -> torch.Tensor:
    """What the network should output: the noise, or v = sqrt(abar) eps - sqrt(1 - abar) x0."""
    if prediction == "eps":
        return noise
    if prediction == "v":
        abar = schedule.at(schedule.alphas_cumprod, t, x0)
        return abar.sqrt() * noise - (1 - abar).sqrt() * x0
    raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")


def diffusion_loss(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    prediction: str = "eps",
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """The simple loss: mean squared error between the denoiser's output and its target.

    t and noise are drawn uniformly / from N(0, I) when not given.
    """
    if t is None:
        t = torch.randint(0, schedule.timesteps, (x0.shape[0],), device=x0.device)
    if noise is None:
        noise = torch.randn_like(x0)
    x_t = q_sample(schedule, x0, t, noise)
    return F.mse_loss(
        denoise(x_t, t).float(), training_target(schedule, x0, t, noise, prediction).float()
    )


def predict_x0_and_eps(
    schedule: NoiseSchedule,
    x_t: torch.Tensor,
    t: torch.Tensor,
    output: torch.Tensor,
    prediction: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn the network's output into estimates of x_0 and of the noise."""
    abar = schedule.at(schedule.alphas_cumprod, t, x_t)
    if prediction == "eps":
        eps = output
        x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
    elif prediction == "v":
        x0 = abar.sqrt() * x_t - (1 - abar).sqrt() * output
        eps = (1 - abar).sqrt() * x_t + abar.sqrt() * output
    else:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    return x0, eps


def ideal_weights(
    images: torch.Tensor, schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """p(x_0 = x_i | x_t) when the data is exactly `images` (N, C, H, W), each equally likely.

    Then x_t is a Gaussian mixture, one component N(sqrt(abar_t) x_i, (1 - abar_t) I) per
    image, and Bayes' rule makes the weights a softmax over the images of
    -||x_t - sqrt(abar_t) x_i||^2 / (2 (1 - abar_t)). Returns (B, N) in float64.
    """
    data = images.flatten(1).double()  # (N, D), D = C * H * W
    abar = schedule.alphas_cumprod[t.cpu()].view(-1, 1)  # (B, 1), float64
    x = x_t.flatten(1).double().cpu()  # (B, D)
    squared_distances = ((x[:, None, :] - abar.sqrt()[:, :, None] * data[None]) ** 2).sum(-1)
    return torch.softmax(-squared_distances / (2 * (1 - abar)), dim=1)  # (B, N)


def ideal_denoiser(images: torch.Tensor, schedule: NoiseSchedule) -> Denoiser:
    """The best possible eps-prediction when the data is exactly `images` (lesson 2b).

    Under squared error the best guess of x_0 is the posterior mean, sum_i w_i x_i with the
    `ideal_weights`; the noise estimate follows from the forward process,
    eps = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t). A network trained with
    `diffusion_loss` on these images converges to it if it has unlimited capacity.
    """
    data = images.flatten(1).double()  # (N, D)

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = schedule.alphas_cumprod[t.cpu()].view(-1, 1)  # (B, 1), float64
        x0_hat = ideal_weights(images, schedule, x_t, t) @ data  # (B, D): the posterior mean
        eps_hat = (x_t.flatten(1).double().cpu() - abar.sqrt() * x0_hat) / (1 - abar).sqrt()
        return eps_hat.view_as(x_t).to(x_t.dtype).to(x_t.device)

    return denoise


def classifier_free_guidance(
    network: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    guidance_weight: float,
    interval: tuple[float, float] = (0.0, 1.0),
    timesteps: int = 1000,
) -> Denoiser:
    """Wrap `network(x_t, t, text_dropped)` into a guided denoiser (Ho & Salimans 2022).

    Each call runs the conditional and the unconditional branch in one forward pass of a
    doubled batch (text_dropped False for the first half, True for the second) and returns
    eps = eps_u + w (eps_c - eps_u), written as (1 - w) eps_u + w eps_c so that w = 1
    gives exactly the conditional and w = 0 exactly the unconditional prediction. At those
    two weights only the branch that counts is run, which halves the cost.

    interval (start, end): guide only at timesteps with start <= t / (timesteps - 1) <= end
    and return the plain conditional prediction (w = 1) elsewhere (Kynkaanniemi et al. 2024).
    Guidance near pure noise, where the digit's shape is chosen, pulls every sample of a
    prompt towards the same shape (less variety); near the clean end it changes little.
    The default (0, 1) guides at every step, as Imagen does. Samplers call the denoiser
    with one timestep for the whole batch, which is what the interval test reads.
    """
    guidance_weight = check_guidance_weight(guidance_weight)
    start, end = check_guidance_interval(interval)
    every_step = (start, end) == (0.0, 1.0)  # then no timestep is read (no device sync on a GPU)

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        batch = x_t.shape[0]
        guided = every_step or start <= t[0].item() / (timesteps - 1) <= end
        weight = guidance_weight if guided else 1.0
        if weight in (0, 1):
            text_dropped = torch.full((batch,), weight == 0, device=x_t.device)  # (B,)
            return network(x_t, t, text_dropped)
        text_dropped = torch.arange(2 * batch, device=x_t.device) >= batch  # (2B,)
        both = network(torch.cat([x_t, x_t]), torch.cat([t, t]), text_dropped)  # (2B, C, H, W)
        conditional, unconditional = both.chunk(2)
        return (1 - weight) * unconditional + weight * conditional

    return denoise


def threshold(x0: torch.Tensor, mode: str = "dynamic", percentile: float = 0.95) -> torch.Tensor:
    """Keep the predicted x_0 in range (Imagen Section 2.3).

    none: leave it. static: clip to [-1, 1]. dynamic: per sample, s = max(1, the
    `percentile` quantile of |x_0|); clip to [-s, s] and divide by s, so saturated pixels
    are pulled inwards instead of being flattened at the boundary.
    """
    if mode == "none":
        return x0
    if mode == "static":
        return x0.clamp(-1, 1)
    if mode == "dynamic":
        percentile = check_percentile(percentile)
        s = torch.quantile(x0.abs().flatten(1).float(), percentile, dim=1).clamp(min=1.0)  # (B,)
        s = s.to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))  # (B, 1, 1, 1)
        return torch.maximum(torch.minimum(x0, s), -s) / s
    raise ValueError(f"thresholding must be one of {THRESHOLDINGS}, got {mode!r}")


def default_steps(sampler: str, timesteps: int) -> int:
    """The steps `sample` takes when given none: every timestep for DDPM, 50 for the others."""
    return timesteps if sampler == "ddpm" else min(50, timesteps)


def sampling_timesteps(total: int, steps: int) -> list[int]:
    """`steps` timesteps from total-1 down to 0, evenly spaced (Improved DDPM's respacing)."""
    if not 1 <= steps <= total:
        raise ValueError(f"number of sampling steps must be between 1 and {total}, got {steps}")
    return torch.linspace(total - 1, 0, steps).round().long().unique_consecutive().tolist()


def ddpm_step(
    x0: torch.Tensor,
    x_t: torch.Tensor,
    abar_t: torch.Tensor,
    abar_prev: torch.Tensor,
    noise: torch.Tensor,
) -> torch.Tensor:
    """One ancestral step: draw x_prev from the posterior q(x_prev | x_t, x_0) (Ho et al., Eq. 6-7).

    The step from t to t_prev may skip timesteps (a respaced schedule), so its share of
    signal power kept is abar_t / abar_prev and its beta is one minus that. (Ho et al. call
    the share alpha_t; in these lessons alpha_t is sqrt(abar_t), so it is named `kept`.)
    """
    kept = abar_t / abar_prev
    beta = 1 - kept
    mean = (abar_prev.sqrt() * beta * x0 + kept.sqrt() * (1 - abar_prev) * x_t) / (1 - abar_t)
    beta_tilde = beta * (1 - abar_prev) / (1 - abar_t)  # the posterior's variance
    return mean + beta_tilde.sqrt() * noise


def ddim_step(
    x0: torch.Tensor,
    eps: torch.Tensor,
    abar_t: torch.Tensor,
    abar_prev: torch.Tensor,
    noise: torch.Tensor,
    eta: float,
) -> torch.Tensor:
    """One DDIM step (Song et al. 2021, Eq. 12); eta = 0 is deterministic, 1 is ancestral-like."""
    # eta times the ancestral step's standard deviation sqrt(beta_tilde) (Song et al. call it sigma)
    noise_std = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).sqrt()
    direction = (1 - abar_prev - noise_std**2).clamp(min=0).sqrt() * eps
    return abar_prev.sqrt() * x0 + direction + noise_std * noise


def log_snr(abar: torch.Tensor) -> torch.Tensor:
    """The log signal-to-noise ratio lambda = log(alpha / sigma) = log(sqrt(abar / (1 - abar)))."""
    return 0.5 * (abar.log() - (1 - abar).log())


def dpm_solver_step(
    x_t: torch.Tensor,
    x0: torch.Tensor,
    abar_t: torch.Tensor,
    abar_prev: torch.Tensor,
    x0_earlier: torch.Tensor | None = None,
    abar_earlier: torch.Tensor | None = None,
) -> torch.Tensor:
    """One DPM-Solver++(2M) step from t to t_prev (Lu et al. 2022, "DPM-Solver++", Algorithm 2).

    Written in lambda = log(alpha / sigma), the probability-flow ODE that DDIM follows has
    the exact solution x_prev = (sigma_prev / sigma_t) x_t + alpha_prev * integral of
    e^(-(lambda_prev - lambda)) x0(lambda) over the step (Lu et al., Eq. 9). Taking the x_0
    estimate as constant over the step gives alpha_prev (1 - e^-h) x0 with h = lambda_prev -
    lambda_t: that is DDIM exactly. The 2M solver instead lets x_0 change linearly in lambda,
    at the slope measured between the previous step's estimate (x0_earlier, made at
    abar_earlier) and this one, which raises the order from one to two for free: the
    earlier estimate was computed anyway. Without an earlier estimate (the first step) it
    is the DDIM step.
    """
    lambda_t, lambda_prev = log_snr(abar_t), log_snr(abar_prev)
    h = lambda_prev - lambda_t  # > 0: each step moves towards less noise
    if x0_earlier is not None:
        # the previous step's size, relative to this one
        ratio = (lambda_t - log_snr(abar_earlier)) / h
        x0 = x0 + (x0 - x0_earlier) / (2 * ratio)  # x_0 extrapolated to the middle of the step
    sigma_ratio = ((1 - abar_prev) / (1 - abar_t)).sqrt()
    return sigma_ratio * x_t + abar_prev.sqrt() * (1 - torch.exp(-h)) * x0


@torch.no_grad()
def sample(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    prediction: str = "eps",
    sampler: str = "ddim",
    steps: int | None = None,
    eta: float = 0.0,
    thresholding: str = "dynamic",
    percentile: float = 0.95,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    progress: bool | str = False,
    on_step: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Run the reverse process from pure noise and return x_0 of the given shape.

    sampler: "ddpm" (ancestral), "ddim" or "dpm++" (DPM-Solver++(2M), deterministic). steps:
    how many denoising steps (default: every timestep for DDPM, 50 for the others). All
    noise is drawn on the CPU from `generator`, so a seed gives the same samples on every
    device. `on_step(t, x_t, x0)`, if given, sees every step's input and its (thresholded)
    estimate of x_0, to watch sampling unfold.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if thresholding not in THRESHOLDINGS:
        raise ValueError(f"thresholding must be one of {THRESHOLDINGS}, got {thresholding!r}")
    check_percentile(percentile)
    if eta != 0 and sampler != "ddim":
        raise ValueError(
            f"eta only applies to the ddim sampler (got eta={eta} with {sampler!r}): leave it at 0"
        )
    if steps is None:
        steps = default_steps(sampler, schedule.timesteps)
    timesteps = sampling_timesteps(schedule.timesteps, steps)

    def gaussian() -> torch.Tensor:
        return torch.randn(shape, generator=generator).to(device)

    x = gaussian()  # x_T ~ N(0, I)
    # dpm++: the last step's x_0 and abar
    earlier: tuple[torch.Tensor, torch.Tensor] | tuple[None, None] = (None, None)
    description = progress if isinstance(progress, str) else f"{sampler} sampling"
    for i, step in enumerate(tqdm(timesteps, desc=description, disable=not progress, leave=False)):
        t = torch.full((shape[0],), step, device=device, dtype=torch.long)
        x0, eps = predict_x0_and_eps(schedule, x, t, denoise(x, t), prediction)
        abar_t = schedule.at(schedule.alphas_cumprod, t, x)
        if thresholding != "none":
            x0 = threshold(x0, thresholding, percentile)
            # Re-derive eps from the thresholded x_0, so that every sampler steps with one estimate.
            eps = (x - abar_t.sqrt() * x0) / (1 - abar_t).sqrt()
        if on_step is not None:
            on_step(step, x, x0)
        if i == len(timesteps) - 1:
            break  # the last step lands on x_0 itself
        t_prev = torch.full_like(t, timesteps[i + 1])
        abar_prev = schedule.at(schedule.alphas_cumprod, t_prev, x)
        if sampler == "ddpm":
            x = ddpm_step(x0, x, abar_t, abar_prev, gaussian())
        elif sampler == "ddim":
            x = ddim_step(
                x0, eps, abar_t, abar_prev, gaussian() if eta > 0 else torch.zeros_like(x), eta
            )
        else:
            x, earlier = dpm_solver_step(x, x0, abar_t, abar_prev, *earlier), (x0, abar_t)
    return x0
