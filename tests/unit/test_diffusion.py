"""Tests of imagen_lib.diffusion.

Covered: schedules, forward process, loss, guidance, thresholding, samplers.

Where we can, each quantity is checked against an independent reference: a closed form
computed with the `math` module, a Monte-Carlo estimate, or a small example worked out
by hand in a comment. No neural network is involved: the denoisers here are
hand-written functions, which is exactly what the module was designed to accept.
"""

from __future__ import annotations

import math

import pytest
import torch

from imagen_lib import diffusion
from imagen_lib.diffusion import (
    NoiseSchedule,
    classifier_free_guidance,
    diffusion_loss,
    predict_x0_and_eps,
    q_sample,
    sampling_timesteps,
    threshold,
    training_target,
)

T = 50  # timesteps of the small schedules used by the samplers


def abar_of(schedule: NoiseSchedule, t: int) -> float:
    """abar_t as a Python float, for writing reference formulas with `math`."""
    return schedule.alphas_cumprod[t].item()


# ---------------------------------------------------------------------------------------
# Noise schedules and the forward process q(x_t | x_0)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("timesteps", [50, 1000])
def test_schedule_is_a_valid_decreasing_abar(kind, timesteps):
    """abar_t must start near 1, strictly decrease, and stay in (0, 1].

    It is a product of (1 - beta).
    """
    schedule = NoiseSchedule(kind, timesteps)
    abar = schedule.alphas_cumprod
    assert abar.shape == (timesteps,)
    assert (abar > 0).all() and (abar <= 1).all()
    assert (abar[1:] < abar[:-1]).all()
    assert ((schedule.betas > 0) & (schedule.betas <= 0.999)).all()
    # abar is the running product of alpha = 1 - beta, recomputed here with plain Python.
    product = 1.0
    for t in range(timesteps):
        product *= 1.0 - schedule.betas[t].item()
        assert abar[t].item() == pytest.approx(product, rel=1e-12)


@pytest.mark.parametrize("timesteps", [10, 20])
def test_linear_schedule_stays_valid_for_few_timesteps(timesteps):
    """NoiseSchedule accepts any timesteps >= 2, so every accepted schedule should be usable.

    linear_betas rescales Ho et al.'s 1e-4..0.02 by 1000 / timesteps; for 20 steps or fewer
    the last beta reaches 1 (or more), abar becomes 0 or negative, and sampling yields NaN.
    """
    schedule = NoiseSchedule("linear", timesteps)
    assert (schedule.betas < 1).all()
    assert (schedule.alphas_cumprod > 0).all()


def test_cosine_schedule_matches_closed_form():
    """Improved DDPM Eq. 17: abar(t) = f(t) / f(0).

    Here f(t) = cos^2(((t/T + s) / (1 + s)) * pi/2) and s = 0.008.

    The library's index t is the (t+1)-th step of the paper's grid 0..T, so alphas_cumprod[t]
    = f(t+1) / f(0). The last beta is capped at 0.999 (f(T) = 0 would make it exactly 1),
    so the closed form holds for every index but the last.
    """
    timesteps, s = 1000, 0.008
    schedule = NoiseSchedule("cosine", timesteps)

    def f(step: int) -> float:
        return math.cos((step / timesteps + s) / (1 + s) * math.pi / 2) ** 2

    for t in range(timesteps - 1):
        assert abar_of(schedule, t) == pytest.approx(f(t + 1) / f(0), rel=1e-9, abs=1e-15)
    assert schedule.betas[-1].item() == pytest.approx(0.999)  # the cap, where f(T) = 0
    assert (schedule.betas <= 0.999).all()


def test_bad_schedule_arguments_raise():
    with pytest.raises(ValueError, match="noise schedule must be one of"):
        NoiseSchedule("quadratic", 100)
    with pytest.raises(ValueError, match="at least 2 timesteps"):
        NoiseSchedule("cosine", 1)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("t", [0, 250, 999])
def test_forward_process_mean_and_variance(kind, t):
    """Monte Carlo: q_sample with N(0, I) noise has mean sqrt(abar_t) x0 and variance 1 - abar_t.

    The forward process of Ho et al., Eq. 4.
    """
    schedule = NoiseSchedule(kind, 1000)
    n = 20_000
    x0 = torch.tensor([-1.0, -0.3, 0.0, 0.5, 1.0], dtype=torch.float64)  # five "pixels"
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(n, x0.numel(), generator=generator, dtype=torch.float64)
    x_t = q_sample(schedule, x0.expand(n, -1), torch.full((n,), t), noise)  # (n, 5)

    abar = abar_of(schedule, t)
    expected_mean = math.sqrt(abar) * x0
    expected_variance = 1 - abar
    # Standard errors: sd/sqrt(n) for a mean, var*sqrt(2/n) for a Gaussian's variance;
    # allow 5 of them.
    mean_tolerance = 5 * math.sqrt(expected_variance / n)
    variance_tolerance = 5 * expected_variance * math.sqrt(2 / n)
    assert torch.allclose(x_t.mean(0), expected_mean, atol=mean_tolerance)
    assert torch.allclose(
        x_t.var(0), torch.full_like(x0, expected_variance), atol=variance_tolerance
    )


def test_schedule_at_gathers_per_sample_and_broadcasts():
    """`at` picks one value per sample, shaped (B, 1, 1, 1) in the dtype of `like`."""
    schedule = NoiseSchedule("cosine", 100)
    like = torch.zeros(3, 2, 4, 4, dtype=torch.float32)
    picked = schedule.at(schedule.alphas_cumprod, torch.tensor([0, 10, 99]), like)
    assert picked.shape == (3, 1, 1, 1) and picked.dtype == torch.float32
    assert picked.flatten().tolist() == pytest.approx(
        [abar_of(schedule, t) for t in (0, 10, 99)], rel=1e-6
    )


# ---------------------------------------------------------------------------------------
# Training targets and their inversion
# ---------------------------------------------------------------------------------------


def test_v_target_matches_formula():
    """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans & Ho 2022), element by element."""
    schedule = NoiseSchedule("cosine", 100)
    torch.manual_seed(0)
    x0 = torch.rand(3, 1, 2, 2, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 40, 99])
    v = training_target(schedule, x0, t, noise, "v")
    for i in range(3):
        abar = abar_of(schedule, t[i].item())
        for x, e, got in zip(
            x0[i].flatten().tolist(), noise[i].flatten().tolist(), v[i].flatten().tolist()
        ):
            assert got == pytest.approx(math.sqrt(abar) * e - math.sqrt(1 - abar) * x, abs=1e-12)
    assert torch.equal(training_target(schedule, x0, t, noise, "eps"), noise)
    with pytest.raises(ValueError, match="prediction must be one of"):
        training_target(schedule, x0, t, noise, "x0")


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_predict_x0_and_eps_inverts_the_forward_process(prediction):
    """Given the true target, predict_x0_and_eps must recover the x0 and noise that made x_t.

    Float64 so the check is tight even at t = T-1, where eps-prediction divides by
    sqrt(abar) ~ 1e-3.
    """
    schedule = NoiseSchedule("cosine", 1000)
    torch.manual_seed(0)
    x0 = torch.rand(4, 3, 4, 4, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 1, 500, 999])
    x_t = q_sample(schedule, x0, t, noise)
    output = training_target(schedule, x0, t, noise, prediction)
    x0_hat, eps_hat = predict_x0_and_eps(schedule, x_t, t, output, prediction)
    assert torch.allclose(x0_hat, x0, atol=1e-9)
    assert torch.allclose(eps_hat, noise, atol=1e-9)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_diffusion_loss_is_zero_for_a_perfect_denoiser(prediction):
    """A denoiser that outputs exactly the training target has loss exactly 0."""
    schedule = NoiseSchedule("cosine", T)
    torch.manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    t = torch.randint(0, T, (4,))
    noise = torch.randn_like(x0)
    target = training_target(schedule, x0, t, noise, prediction)
    loss = diffusion_loss(lambda x_t, t_: target, schedule, x0, prediction, t=t, noise=noise)
    assert loss.item() == 0.0


def test_diffusion_loss_of_a_zero_denoiser_is_the_mean_squared_noise():
    """Predicting eps = 0 costs mean(eps^2): the MSE is taken against the noise itself."""
    schedule = NoiseSchedule("cosine", T)
    torch.manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.full((4,), 10)
    loss = diffusion_loss(
        lambda x_t, t_: torch.zeros_like(x_t), schedule, x0, "eps", t=t, noise=noise
    )
    assert loss.item() == pytest.approx(noise.pow(2).mean().item(), rel=1e-6)


# ---------------------------------------------------------------------------------------
# Classifier-free guidance
# ---------------------------------------------------------------------------------------


class ToyNetwork:
    """network(x, t, text_dropped): a different known function per branch; counts its calls."""

    def __init__(self):
        self.calls = []

    @staticmethod
    def conditional(x):
        return 2 * x + 1

    @staticmethod
    def unconditional(x):
        return -x + 0.25

    def __call__(self, x, t, text_dropped):
        self.calls.append((x.shape[0], text_dropped.clone()))
        dropped = text_dropped.view(-1, 1, 1, 1)
        return torch.where(dropped, self.unconditional(x), self.conditional(x))


def test_guidance_weight_one_is_conditional_and_zero_is_unconditional():
    """(1 - w) eps_u + w eps_c is exact at the ends, bit for bit.

    w = 1 gives eps_c, w = 0 gives eps_u.
    """
    torch.manual_seed(0)
    x = torch.randn(3, 1, 4, 4)
    t = torch.tensor([5, 6, 7])
    network = ToyNetwork()
    assert torch.equal(classifier_free_guidance(network, 1.0)(x, t), ToyNetwork.conditional(x))
    assert torch.equal(classifier_free_guidance(network, 0.0)(x, t), ToyNetwork.unconditional(x))
    # Only the branch that counts runs: one call on the undoubled batch each time.
    assert [(batch, dropped.tolist()) for batch, dropped in network.calls] == [
        (3, [False] * 3),
        (3, [True] * 3),
    ]


def test_guidance_extrapolates_and_batches_both_branches_in_one_call():
    """w = 3 gives eps_u + 3 (eps_c - eps_u); the network runs once on a doubled batch.

    The conditional half of the batch comes first, then the unconditional one.
    """
    torch.manual_seed(0)
    x = torch.randn(3, 1, 4, 4)
    t = torch.tensor([5, 6, 7])
    network = ToyNetwork()
    guided = classifier_free_guidance(network, 3.0)(x, t)
    eps_c, eps_u = ToyNetwork.conditional(x), ToyNetwork.unconditional(x)
    assert torch.allclose(guided, eps_u + 3 * (eps_c - eps_u), atol=1e-6)
    assert len(network.calls) == 1
    batch, text_dropped = network.calls[0]
    assert batch == 6
    assert text_dropped.tolist() == [False, False, False, True, True, True]


@pytest.mark.parametrize(
    "weight, message",
    [
        (-1.0, "must be between 0 and 100"),
        (float("nan"), "must be between 0 and 100"),
        (float("inf"), "must be between 0 and 100"),
    ],
)
def test_bad_guidance_weight_raises(weight, message):
    with pytest.raises(ValueError, match=message):
        classifier_free_guidance(ToyNetwork(), weight)


def test_non_numeric_guidance_weight_raises_type_error():
    with pytest.raises(TypeError, match="must be a number"):
        classifier_free_guidance(ToyNetwork(), "3")
    with pytest.raises(TypeError, match="must be a number"):
        classifier_free_guidance(ToyNetwork(), True)


def test_guidance_interval_guides_inside_and_is_plain_conditioning_outside():
    """Guidance applies inside its interval; outside it, plain conditioning.

    With interval (0.3, 0.8) of a 1000-step schedule, t = 300..799 is guided (one doubled
    call) and t = 200 or 900 gives exactly the conditional prediction (one undoubled call);
    the bounds are inclusive.
    """
    torch.manual_seed(0)
    x = torch.randn(2, 1, 4, 4)
    eps_c, eps_u = ToyNetwork.conditional(x), ToyNetwork.unconditional(x)
    for step, inside in ((200, False), (300, True), (500, True), (799, True), (900, False)):
        network = ToyNetwork()
        out = classifier_free_guidance(network, 3.0, interval=(0.3, 0.8), timesteps=1000)(
            x, torch.full((2,), step)
        )
        expected = eps_u + 3 * (eps_c - eps_u) if inside else eps_c
        assert torch.allclose(out, expected, atol=1e-6), step
        assert [batch for batch, _ in network.calls] == [4 if inside else 2], step
    # (0, 1), the default, guides at every step, the clean end and pure noise included.
    for step in (0, 999):
        assert torch.allclose(
            classifier_free_guidance(ToyNetwork(), 3.0, (0, 1))(x, torch.full((2,), step)),
            eps_u + 3 * (eps_c - eps_u),
            atol=1e-6,
        )


@pytest.mark.parametrize(
    "interval, error, message",
    [
        ((0.8, 0.3), ValueError, "start <= end"),
        ((-0.1, 0.5), ValueError, "0 <= start"),
        ((0.2, 1.5), ValueError, "end <= 1"),
        ((0.2, float("nan")), ValueError, "0 <= start <= end <= 1"),
        ((0.3,), TypeError, "two numbers"),
        ("0.3 0.8", TypeError, "two numbers"),
        ((True, 0.5), TypeError, "two numbers"),
    ],
)
def test_bad_guidance_interval_raises(interval, error, message):
    with pytest.raises(error, match=message):
        classifier_free_guidance(ToyNetwork(), 3.0, interval=interval)


# ---------------------------------------------------------------------------------------
# Thresholding of the predicted x0
# ---------------------------------------------------------------------------------------

# One sample of four pixels. Worked by hand:
#   |x| = [0.5, 2.0, 3.0, 4.0] (already sorted).
#   torch.quantile with linear interpolation puts the q-quantile at position q * (n - 1).
#   q = 0.5: position 1.5, halfway between 2.0 and 3.0, so s = 2.5 (> 1, so it is used).
#   Clip to [-2.5, 2.5]: [0.5, -2.0, 2.5, -2.5]; divide by 2.5: [0.2, -0.8, 1.0, -1.0].
OUT_OF_RANGE = torch.tensor([[[[0.5, -2.0], [3.0, -4.0]]]])  # (1, 1, 2, 2)
EXPECTED_AT_HALF = torch.tensor([[[[0.2, -0.8], [1.0, -1.0]]]])


def test_dynamic_threshold_hand_worked_example():
    assert torch.allclose(threshold(OUT_OF_RANGE, "dynamic", 0.5), EXPECTED_AT_HALF, atol=1e-6)


def test_dynamic_threshold_second_percentile():
    """q = 0.95: position 0.95 * 3 = 2.85, so s = 3.0 + 0.85 * (4.0 - 3.0) = 3.85.

    Only -4.0 is beyond s: clipped to -3.85, then everything is divided by 3.85.
    """
    s = 3.85
    expected = torch.tensor([[[[0.5 / s, -2.0 / s], [3.0 / s, -1.0]]]])
    assert torch.allclose(threshold(OUT_OF_RANGE, "dynamic", 0.95), expected, atol=1e-6)


def test_dynamic_threshold_leaves_in_range_samples_unchanged():
    """Inside [-1, 1], s = max(1, quantile) = 1, so clipping and dividing by s change nothing."""
    torch.manual_seed(0)
    inside = torch.rand(1, 1, 2, 2) * 2 - 1
    assert torch.equal(threshold(inside, "dynamic", 0.5), inside)
    assert torch.equal(threshold(inside, "dynamic", 1.0), inside)


def test_dynamic_threshold_is_per_sample():
    """Each sample gets its own s: the out-of-range one is rescaled, the in-range one untouched."""
    inside = torch.tensor([[[[0.1, -0.9], [0.3, 1.0]]]])
    batch = torch.cat([OUT_OF_RANGE, inside])  # (2, 1, 2, 2)
    result = threshold(batch, "dynamic", 0.5)
    assert torch.allclose(result[:1], EXPECTED_AT_HALF, atol=1e-6)
    assert torch.equal(result[1:], inside)


def test_static_threshold_clamps_and_none_is_identity():
    x = torch.tensor([[[[-3.0, 0.5], [2.0, -0.25]]]])
    assert torch.equal(threshold(x, "static"), torch.tensor([[[[-1.0, 0.5], [1.0, -0.25]]]]))
    assert threshold(x, "none") is x
    with pytest.raises(ValueError, match="thresholding must be one of"):
        threshold(x, "soft")


@pytest.mark.parametrize("percentile", [0.0, 1.5, -0.1, float("nan")])
def test_bad_percentile_raises(percentile):
    with pytest.raises(ValueError, match=r"percentile must be in \(0, 1\]"):
        threshold(OUT_OF_RANGE, "dynamic", percentile)
    with pytest.raises(ValueError, match="percentile"):
        diffusion.sample(
            lambda x, t: x, NoiseSchedule("cosine", T), (1, 1, 2, 2), percentile=percentile
        )


# ---------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("total", [50, 1000])
def test_sampling_timesteps_are_distinct_and_decreasing(total):
    """Every step count from 2 to T gives exactly that many distinct timesteps, T-1 down to 0."""
    assert sampling_timesteps(total, 1) == [total - 1]
    for steps in range(2, total + 1, 1 if total <= 50 else 37):
        timesteps = sampling_timesteps(total, steps)
        assert len(timesteps) == steps
        assert timesteps[0] == total - 1 and timesteps[-1] == 0
        assert all(later < earlier for earlier, later in zip(timesteps, timesteps[1:]))
    assert sampling_timesteps(total, total) == list(range(total - 1, -1, -1))


@pytest.mark.parametrize("steps", [0, -3, T + 1])
def test_bad_step_count_raises(steps):
    with pytest.raises(ValueError, match=f"between 1 and {T}"):
        sampling_timesteps(T, steps)
    with pytest.raises(ValueError, match="number of sampling steps"):
        diffusion.sample(lambda x, t: x, NoiseSchedule("cosine", T), (1, 1, 2, 2), steps=steps)


def test_bad_sampler_name_raises():
    with pytest.raises(ValueError, match="sampler must be one of"):
        diffusion.sample(lambda x, t: x, NoiseSchedule("cosine", T), (1, 1, 2, 2), sampler="euler")


def toy_denoiser(x, t):
    """Any fixed function of (x_t, t) will do for determinism tests."""
    return 0.5 * x + 0.001 * t.view(-1, 1, 1, 1)


def test_ddim_eta_zero_is_reproducible_from_a_seed():
    """DDIM with eta = 0 draws noise only once (x_T).

    Same seed, same samples; another seed, others.
    """
    schedule = NoiseSchedule("cosine", T)

    def run(seed):
        generator = torch.Generator().manual_seed(seed)
        return diffusion.sample(
            toy_denoiser, schedule, (2, 1, 4, 4), sampler="ddim", steps=10, generator=generator
        )

    assert torch.equal(run(0), run(0))
    assert not torch.allclose(run(0), run(1))


def oracle_denoiser(schedule: NoiseSchedule, x0: torch.Tensor, prediction: str = "eps"):
    """A denoiser that knows the answer x0, so it can return the exact noise (or v) in x_t.

    From x_t = sqrt(abar) x0 + sqrt(1 - abar) eps:  eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar).
    Records every x_t and t it is called with.
    """
    seen = []

    def denoise(x_t, t):
        seen.append((x_t.clone(), t.clone()))
        abar = schedule.at(schedule.alphas_cumprod, t, x_t)
        eps = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
        return eps if prediction == "eps" else abar.sqrt() * eps - (1 - abar).sqrt() * x0

    denoise.seen = seen
    return denoise


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize(
    "sampler, steps",
    [("ddpm", None), ("ddpm", 7), ("ddim", 10), ("ddim", T), ("dpm++", 10), ("dpm++", 25)],
)
def test_samplers_recover_x0_from_an_oracle(sampler, steps, prediction):
    """If the denoiser always knows x0, every sampler must end exactly on x0."""
    schedule = NoiseSchedule("cosine", T)
    torch.manual_seed(0)
    x0 = torch.rand(2, 1, 4, 4) * 2 - 1
    denoise = oracle_denoiser(schedule, x0, prediction)
    generator = torch.Generator().manual_seed(1)
    result = diffusion.sample(
        denoise,
        schedule,
        x0.shape,
        prediction=prediction,
        sampler=sampler,
        steps=steps,
        thresholding="none",
        generator=generator,
    )
    assert torch.allclose(result, x0, atol=1e-4)
    assert len(denoise.seen) == (steps or T)


def test_ddim_with_an_oracle_follows_the_forward_process():
    """DDIM (eta = 0) keeps the noise direction fixed: with the true x0, each x_t it visits is
    sqrt(abar_t) x0 + sqrt(1 - abar_t) eps for one and the same eps (Song et al. 2021, Eq. 12)."""
    schedule = NoiseSchedule("cosine", T)
    torch.manual_seed(0)
    x0 = torch.rand(2, 1, 4, 4) * 2 - 1
    denoise = oracle_denoiser(schedule, x0)
    diffusion.sample(
        denoise,
        schedule,
        x0.shape,
        sampler="ddim",
        steps=10,
        thresholding="none",
        generator=torch.Generator().manual_seed(1),
    )
    first_x, first_t = denoise.seen[0]
    abar = abar_of(schedule, first_t[0].item())
    eps = (first_x - math.sqrt(abar) * x0) / math.sqrt(1 - abar)
    for x_t, t in denoise.seen[1:]:
        abar = abar_of(schedule, t[0].item())
        assert torch.allclose(x_t, math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps, atol=1e-4)


def test_dpm_solver_step_without_an_earlier_estimate_is_the_ddim_step():
    """DPM-Solver++'s step with x_0 held constant (its first step) is DDIM's with eta = 0.

    The same step, rewritten in lambda.
    """
    schedule = NoiseSchedule("cosine", T)
    generator = torch.Generator().manual_seed(0)
    x_t, x0 = torch.randn(2, 4, 1, 4, 4, generator=generator, dtype=torch.float64)
    for t, t_prev in [(T - 1, T - 5), (25, 24), (3, 0)]:
        abar_t, abar_prev = (schedule.alphas_cumprod[step].view(1, 1, 1, 1) for step in (t, t_prev))
        eps = (x_t - abar_t.sqrt() * x0) / (1 - abar_t).sqrt()
        expected = diffusion.ddim_step(x0, eps, abar_t, abar_prev, torch.zeros_like(x_t), eta=0.0)
        torch.testing.assert_close(
            diffusion.dpm_solver_step(x_t, x0, abar_t, abar_prev), expected, rtol=1e-12, atol=1e-12
        )


def gaussian_data_errors(
    sampler: str, step_counts: list[int], mean: float = 0.3, std: float = 0.2
) -> list[float]:
    """RMS distance from the exact sample, when every pixel of the data is N(mean, std^2).

    For Gaussian data the ideal x_0 estimate is linear in x_t and the sampling ODE keeps
    z = (x_t - alpha_t mean) / sqrt(alpha_t^2 std^2 + sigma_t^2) fixed, so where it takes
    x_T is known in closed form: an independent reference for the samplers' accuracy.
    """
    schedule = NoiseSchedule("cosine", 1000)  # a full-length schedule: 640 steps must fit
    abar = schedule.alphas_cumprod

    def x0_estimate(x_t, abar_t):
        alpha, sigma = abar_t.sqrt(), (1 - abar_t).sqrt()
        return mean + alpha * std**2 / (alpha**2 * std**2 + sigma**2) * (x_t - alpha * mean)

    def denoise(x_t, t):
        abar_t = schedule.at(abar, t, x_t)
        return (x_t - abar_t.sqrt() * x0_estimate(x_t, abar_t)) / (1 - abar_t).sqrt()

    shape = (64, 1, 4, 4)
    # the x_T `sample` draws from seed 1
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(1)).double()

    def spread(a):
        return (a * std**2 + 1 - a).sqrt()

    x_last = abar[0].sqrt() * mean + spread(abar[0]) * (x_T - abar[-1].sqrt() * mean) / spread(
        abar[-1]
    )
    exact = x0_estimate(x_last, abar[0])
    errors = []
    for steps in step_counts:
        generator = torch.Generator().manual_seed(1)
        result = diffusion.sample(
            denoise,
            schedule,
            shape,
            sampler=sampler,
            steps=steps,
            thresholding="none",
            generator=generator,
        )
        errors.append((result.double() - exact).pow(2).mean().sqrt().item())
    return errors


def test_dpm_solver_is_second_order_and_ddim_first_order():
    """Doubling the steps divides DDIM's error by about 2 and DPM-Solver++(2M)'s by about 4,
    measured against the exact solution for Gaussian data (in the many-steps regime where
    the orders show; observed ratios: DDIM 1.98 and 1.83, DPM-Solver++ 4.1 and 3.8)."""
    step_counts = [160, 320, 640]
    ddim, dpm = (
        gaussian_data_errors("ddim", step_counts),
        gaussian_data_errors("dpm++", step_counts),
    )
    for coarse, fine in zip(ddim, ddim[1:]):
        assert 1.7 < coarse / fine < 2.3
    for coarse, fine in zip(dpm, dpm[1:]):
        assert 3.3 < coarse / fine < 4.7
    assert dpm[-1] < ddim[-1] / 5


def test_eta_is_only_for_ddim():
    with pytest.raises(ValueError, match="eta only applies to the ddim sampler"):
        diffusion.sample(
            toy_denoiser, NoiseSchedule("cosine", T), (1, 1, 2, 2), sampler="dpm++", eta=0.5
        )


@pytest.mark.parametrize("t, t_prev", [(30, 29), (40, 20)])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim_eta1"])
def test_one_stochastic_step_keeps_the_forward_marginal(sampler, t, t_prev):
    """Monte Carlo: if x_t ~ q(x_t | x0) and a step samples x_prev given the true x0, then
    x_prev ~ q(x_prev | x0) = N(sqrt(abar_prev) x0, 1 - abar_prev), also across skipped steps.

    That is what the posterior q(x_prev | x_t, x0) (Ho et al., Eq. 6-7) and DDIM with eta = 1
    are built to do; a wrong coefficient in ddpm_step or ddim_step breaks it.
    """
    schedule = NoiseSchedule("cosine", T)
    n = 20_000
    generator = torch.Generator().manual_seed(0)
    x0 = torch.tensor([-0.8, 0.0, 0.6], dtype=torch.float64).expand(n, -1)
    eps = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    x_t = q_sample(schedule, x0, torch.full((n,), t), eps)
    abar_t = torch.tensor(abar_of(schedule, t), dtype=torch.float64)
    abar_prev = torch.tensor(abar_of(schedule, t_prev), dtype=torch.float64)
    fresh = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    if sampler == "ddpm":
        x_prev = diffusion.ddpm_step(x0, x_t, abar_t, abar_prev, fresh)
    else:
        x_prev = diffusion.ddim_step(x0, eps, abar_t, abar_prev, fresh, eta=1.0)
    expected_variance = 1 - abar_prev.item()
    assert torch.allclose(
        x_prev.mean(0),
        math.sqrt(abar_prev.item()) * x0[0],
        atol=5 * math.sqrt(expected_variance / n),
    )
    assert torch.allclose(
        x_prev.var(0),
        torch.full((3,), expected_variance, dtype=torch.float64),
        atol=5 * expected_variance * math.sqrt(2 / n),
    )


def test_ddpm_step_matches_the_posterior_of_ho_et_al():
    """For adjacent steps, ddpm_step's mean and variance equal Ho et al.'s Eq. 7.

    Written with beta_t:
        mean = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0
               + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t,
        variance = beta_t (1 - abar_{t-1}) / (1 - abar_t).
    """
    schedule = NoiseSchedule("linear", 1000)
    t = 300
    beta = schedule.betas[t].item()
    abar_t, abar_prev = abar_of(schedule, t), abar_of(schedule, t - 1)
    x0, x_t = torch.tensor([0.7], dtype=torch.float64), torch.tensor([-0.2], dtype=torch.float64)
    args = (
        x0,
        x_t,
        torch.tensor(abar_t, dtype=torch.float64),
        torch.tensor(abar_prev, dtype=torch.float64),
    )
    mean = diffusion.ddpm_step(*args, noise=torch.zeros(1, dtype=torch.float64)).item()
    with_unit_noise = diffusion.ddpm_step(*args, noise=torch.ones(1, dtype=torch.float64)).item()
    expected_mean = (math.sqrt(abar_prev) * beta / (1 - abar_t)) * 0.7 + (
        math.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar_t)
    ) * -0.2
    expected_variance = beta * (1 - abar_prev) / (1 - abar_t)
    assert mean == pytest.approx(expected_mean, rel=1e-9)
    assert (with_unit_noise - mean) ** 2 == pytest.approx(expected_variance, rel=1e-9)


def test_ideal_denoiser_is_the_posterior_mean_of_a_gaussian_mixture():
    """Against an independent reference: Bayes' rule with torch.distributions' densities."""
    schedule = NoiseSchedule("cosine", 100)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(5, 1, 2, 2, generator=generator) * 2 - 1  # 5 "training images", D = 4
    x_t = torch.randn(3, 1, 2, 2, generator=generator)
    t = torch.tensor([10, 50, 90])
    eps_hat = diffusion.ideal_denoiser(images, schedule)(x_t, t)
    for b in range(3):
        abar = schedule.alphas_cumprod[t[b]]
        component = torch.distributions.Normal(
            abar.sqrt() * images.flatten(1).double(), (1 - abar).sqrt()
        )
        log_likelihood = component.log_prob(x_t[b].flatten().double()).sum(-1)  # (5,)
        weights = torch.softmax(log_likelihood, dim=0)  # equal priors
        torch.testing.assert_close(
            diffusion.ideal_weights(images, schedule, x_t[b : b + 1], t[b : b + 1])[0], weights
        )
        x0_mean = weights @ images.flatten(1).double()
        eps = (x_t[b].flatten().double() - abar.sqrt() * x0_mean) / (1 - abar).sqrt()
        torch.testing.assert_close(eps_hat[b].flatten().double(), eps, atol=1e-5, rtol=1e-5)
