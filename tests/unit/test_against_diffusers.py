"""Cross-checks of imagen_lib.diffusion against an independent implementation: diffusers.

micrograd checks its autograd against PyTorch's; here the noise schedules, the forward
process, the v target, the x_0 estimate, thresholding and one sampler step are checked
against Hugging Face diffusers' DDPMScheduler and DDIMScheduler, written by other people
from the same papers. If both give the same numbers from the same inputs, a slip in a
formula (a missing square root, abar_t where abar_prev belongs) would have to have been
made twice, the same way.

The module is skipped when diffusers is not installed: it is not a dependency of imagen_lib.

Conventions:
- diffusers builds its betas and alphas_cumprod in float32. `test_schedules_match` compares
  those with imagen_lib's float64 ones (they agree to float32 rounding). Every other test
  compares formulas, not schedules, so it hands diffusers imagen_lib's float64 schedule
  (`diffusers_scheduler` below): both sides then start from the same numbers, the inputs
  are float64, and anything beyond float64 rounding (RTOL, ATOL) is a real difference.
- Timesteps checked: 0 (the last denoising step), 1, 500 (the middle), 999 (pure noise).
- `scheduler.step` works on one timestep for the whole batch, so the step tests loop
  over timesteps; `add_noise` and `get_velocity` take one timestep per sample.
"""

from __future__ import annotations

import pytest
import torch

from imagen_lib.diffusion import (
    NoiseSchedule,
    ddim_step,
    ddpm_step,
    predict_x0_and_eps,
    q_sample,
    sample,
    sampling_timesteps,
    threshold,
    training_target,
)

diffusers = pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, DDPMScheduler  # noqa: E402  (after the skip, on purpose)

T = 1000  # the training schedule's length, as in Ho et al. and imagen_lib's default
SHAPE = (4, 1, 8, 8)  # a small batch of images
STEP_TIMESTEPS = [0, 1, 500, 999]  # one per sample where a batch takes a timestep per sample
# imagen_lib kind -> diffusers beta_schedule
DIFFUSERS_NAME = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
# imagen_lib prediction -> diffusers prediction_type
PREDICTION_TYPE = {"eps": "epsilon", "v": "v_prediction"}
RTOL, ATOL = 1e-12, 1e-12  # float64 rounding, with room for a few dozen operations
FLOAT32_EPS = torch.finfo(torch.float32).eps  # 2**-23, about 1.2e-7


def gaussians(count: int, seed: int = 0, scale: float = 1.0) -> list[torch.Tensor]:
    """`count` float64 tensors of shape SHAPE with N(0, scale^2) entries, from a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    return [
        scale * torch.randn(SHAPE, generator=generator, dtype=torch.float64) for _ in range(count)
    ]


def diffusers_scheduler(cls, kind: str, timesteps: int = T, **config):
    """imagen_lib's NoiseSchedule(kind) and a diffusers `cls` scheduler for the same schedule.

    Both in float64. diffusers builds the schedule itself, in float32; its tensors are then
    replaced by imagen_lib's float64 ones, after checking that they are the same numbers up
    to float32 rounding (test_schedules_match explains the tolerance).
    """
    schedule = NoiseSchedule(kind, timesteps)
    scheduler = cls(
        num_train_timesteps=timesteps,
        beta_schedule=DIFFUSERS_NAME[kind],
        beta_start=1e-4,
        beta_end=0.02,
        **config,
    )
    torch.testing.assert_close(
        scheduler.alphas_cumprod.double(), schedule.alphas_cumprod, rtol=2e-5, atol=0
    )
    scheduler.betas = schedule.betas.clone()
    scheduler.alphas = 1.0 - scheduler.betas
    scheduler.alphas_cumprod = schedule.alphas_cumprod.clone()
    # the "abar" before the first timestep, used by the last step
    if isinstance(scheduler, DDIMScheduler):
        one = torch.tensor(1.0, dtype=torch.float64)
        scheduler.final_alpha_cumprod = (
            one if scheduler.config.set_alpha_to_one else scheduler.alphas_cumprod[0]
        )
    return schedule, scheduler


def full(t: int) -> torch.Tensor:
    """The timestep t for every sample of the batch, as imagen_lib takes it."""
    return torch.full((SHAPE[0],), t, dtype=torch.long)


# ---------------------------------------------------------------------------------------
# 1. The noise schedules
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("timesteps", [1000, 100])
def test_schedules_match(kind, timesteps):
    """NoiseSchedule(kind).betas and .alphas_cumprod against DDPMScheduler's, for both schedules.

    They are the same schedule by construction, so only float32 rounding may separate them:
    - linear: both are evenly spaced betas from 1e-4 to 0.02 (Ho et al.). imagen_lib
      rescales both ends by 1000 / timesteps for other lengths (the 100-step smoke preset);
      diffusers does not, so it is given the rescaled ends.
    - cosine ("squaredcos_cap_v2", diffusers' `betas_for_alpha_bar`): both use Nichol &
      Dhariwal's f(t) = cos^2((t/T + s) / (1 + s) * pi/2) with the same offset s = 0.008,
      on the same grid t = 0, 1/T, ..., 1, and both cap each beta at max_beta = 0.999.
      imagen_lib writes beta_t = 1 - abar(t+1)/abar(t) with abar = f / f(0), diffusers
      beta_t = 1 - f(t+1)/f(t): f(0) cancels, so the betas are identical. Only the last one
      is capped (f(1) = 0 would make it 1), so the 0.999 cap is part of both schedules.
    - diffusers stores float32. Its betas are the float64 values rounded once (cosine: from
      Python floats, correctly rounded; linear: float32 linspace, within one unit in the
      last place), hence rtol = 2 float32 eps. alphas_cumprod is a float32 running product
      over up to 1000 factors, one rounding each (observed: at most 4e-7 relative), and at
      the cosine's capped last step 1 - float32(0.999) is 1.29e-5 away from 0.001 in
      relative terms: rtol = 2e-5 covers both, and is far below any real schedule
      difference (the offset s = 0.008 against none moves abar by more than 1e-2).
    - Tighter: imagen_lib's betas pushed through diffusers' own float32 arithmetic,
      cumprod(1 - float32(beta)), give diffusers' alphas_cumprod to a float32 rounding or two.
    """
    scale = 1000 / timesteps
    scheduler = DDPMScheduler(
        num_train_timesteps=timesteps,
        beta_schedule=DIFFUSERS_NAME[kind],
        beta_start=scale * 1e-4,
        beta_end=scale * 0.02,
    )
    schedule = NoiseSchedule(kind, timesteps)
    assert scheduler.betas.dtype == torch.float32  # the reason for the float32 tolerances below

    torch.testing.assert_close(
        scheduler.betas.double(), schedule.betas, rtol=2 * FLOAT32_EPS, atol=0
    )
    torch.testing.assert_close(
        scheduler.alphas_cumprod.double(), schedule.alphas_cumprod, rtol=2e-5, atol=0
    )
    same_arithmetic = torch.cumprod(1 - schedule.betas.float(), dim=0)
    torch.testing.assert_close(
        scheduler.alphas_cumprod, same_arithmetic, rtol=2 * FLOAT32_EPS, atol=0
    )
    if kind == "cosine":
        assert schedule.betas[-1].item() == 0.999 and scheduler.betas[-1].item() == pytest.approx(
            0.999, rel=FLOAT32_EPS
        )


# ---------------------------------------------------------------------------------------
# 2-3. The forward process and the v target
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_q_sample_matches_add_noise(kind):
    """q_sample(x0, t, noise) against DDPMScheduler.add_noise(x0, noise, t), a timestep per sample.

    Both are x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (Ho et al., Eq. 4), with the
    same abar_t gathered by index t: any difference would be a wrong index or power.
    """
    schedule, scheduler = diffusers_scheduler(DDPMScheduler, kind)
    x0, noise = gaussians(2)
    t = torch.tensor(STEP_TIMESTEPS)
    expected = scheduler.add_noise(x0, noise, t)
    torch.testing.assert_close(q_sample(schedule, x0, t, noise), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_v_target_matches_get_velocity(kind):
    """training_target(..., "v") against DDPMScheduler.get_velocity(x0, noise, t).

    One timestep per sample.

    Both are Salimans & Ho's v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0 (diffusers cites
    Imagen Video, Section 2.4): the same formula, in the same sign convention.
    """
    schedule, scheduler = diffusers_scheduler(DDPMScheduler, kind)
    x0, noise = gaussians(2)
    t = torch.tensor(STEP_TIMESTEPS)
    expected = scheduler.get_velocity(x0, noise, t)
    torch.testing.assert_close(
        training_target(schedule, x0, t, noise, "v"), expected, rtol=RTOL, atol=ATOL
    )


# ---------------------------------------------------------------------------------------
# 4. From the network's output to x_0
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("t", STEP_TIMESTEPS)
def test_predicted_x0_matches_pred_original_sample(kind, prediction, t):
    """predict_x0_and_eps's x_0 against DDPMScheduler.step's pred_original_sample.

    eps: x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) (Ho et al., Eq. 15);
    v: x0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v (Salimans & Ho). diffusers computes the
    same before it clips or thresholds, so both are switched off (clip_sample=False,
    thresholding=False). The output is any tensor (a network's guess), so it is random here.
    At t = 999 of the cosine schedule sqrt(abar_t) is 5e-5: the eps formula divides by it,
    which float64 survives (both sides do the same operations).
    """
    schedule, scheduler = diffusers_scheduler(
        DDPMScheduler,
        kind,
        prediction_type=PREDICTION_TYPE[prediction],
        clip_sample=False,
        thresholding=False,
    )
    x0, noise, output = gaussians(3)
    x_t = q_sample(schedule, x0, full(t), noise)
    expected = scheduler.step(
        output, t, x_t, generator=torch.Generator().manual_seed(1)
    ).pred_original_sample
    x0_estimate, _ = predict_x0_and_eps(schedule, x_t, full(t), output, prediction)
    torch.testing.assert_close(x0_estimate, expected, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------
# 5. Thresholding the predicted x_0
# ---------------------------------------------------------------------------------------


def thresholded_by_diffusers(x0: torch.Tensor, **config) -> torch.Tensor:
    """diffusers' clipping / thresholding of x0, through the public DDPMScheduler.step.

    With prediction_type="sample" the model output *is* the x_0 estimate, so step returns it
    as pred_original_sample after its step 3, "clip or threshold" (which for dynamic
    thresholding calls DDPMScheduler._threshold_sample).
    """
    scheduler = DDPMScheduler(prediction_type="sample", **config)
    x_t = torch.zeros_like(x0)
    return scheduler.step(
        x0, 500, x_t, generator=torch.Generator().manual_seed(1)
    ).pred_original_sample


def test_static_thresholding_matches_clip_sample():
    """threshold(x0, "static") against diffusers' clip_sample=True, clip_sample_range=1.0.

    Both clamp every pixel to [-1, 1]: one operation, so the results must be identical.
    """
    (x0,) = gaussians(1, scale=2.0)  # about a third of the pixels lie outside [-1, 1]
    expected = thresholded_by_diffusers(
        x0, clip_sample=True, clip_sample_range=1.0, thresholding=False
    )
    assert torch.equal(threshold(x0, "static"), expected)


@pytest.mark.parametrize("percentile", [0.9, 0.95, 0.995, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dynamic_thresholding_matches_diffusers(percentile, dtype):
    """threshold(x0, "dynamic", p) against diffusers' dynamic thresholding.

    diffusers is set to thresholding=True, dynamic_thresholding_ratio=p.

    Both follow Imagen Section 2.3: per sample, s = the p-quantile of |x0| (torch.quantile,
    linear interpolation, over all pixels and channels), s = max(s, 1), clip to [-s, s],
    divide by s. The samples are scaled 0.3, 1, 2 and 5, so some have s < 1 (plain
    clipping) and some s > 1 (rescaling).

    Differences, by construction:
    - diffusers also caps s at sample_max_value, whose default is 1.0: with it, "dynamic"
      thresholding is just clipping to [-1, 1]. imagen_lib does not cap s, so diffusers is
      given a sample_max_value far above any s here (1e6).
    - imagen_lib computes the quantile in float32 whatever x0's dtype (`.float()`, so that
      half precision works), diffusers in x0's own dtype (it upcasts only half precision).
      In float32 the two run the same operations and agree exactly. In float64 imagen_lib's
      s comes from float32-rounded pixels, interpolated and rounded in float32: a few
      float32 roundings (observed: at most 1 float32 eps, relative), hence rtol = 4 float32 eps.
    """
    (x0,) = gaussians(1)
    x0 = (x0 * torch.tensor([0.3, 1.0, 2.0, 5.0], dtype=torch.float64).view(-1, 1, 1, 1)).to(dtype)
    expected = thresholded_by_diffusers(
        x0,
        thresholding=True,
        dynamic_thresholding_ratio=percentile,
        sample_max_value=1e6,
        clip_sample=False,
    )
    got = threshold(x0, "dynamic", percentile)
    assert got.dtype == expected.dtype == dtype
    if dtype == torch.float32:
        assert torch.equal(got, expected)
    else:
        torch.testing.assert_close(got, expected, rtol=4 * FLOAT32_EPS, atol=0)


# ---------------------------------------------------------------------------------------
# 6-7. One sampler step
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("t", STEP_TIMESTEPS)
def test_ddpm_step_matches_diffusers(kind, t):
    """ddpm_step(x0, x_t, abar_t, abar_{t-1}, noise) against DDPMScheduler.step.

    On the full 1000-step schedule.

    Both draw x_{t-1} from the posterior q(x_{t-1} | x_t, x_0) (Ho et al., Eq. 6-7):
    mean = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0
           + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t,
    variance = beta_t (1 - abar_{t-1}) / (1 - abar_t) (diffusers' variance_type="fixed_small").
    The x_0 estimate is handed to diffusers directly (prediction_type="sample", no clipping),
    so this checks the step alone. At t = 0 diffusers takes abar_{-1} = 1 and adds no noise;
    imagen_lib's ddpm_step with abar_prev = 1 has variance 0 and mean exactly x0.

    The noise: diffusers draws its own, randn_tensor(shape, generator, dtype) =
    torch.randn(shape, generator=generator, dtype=dtype) for a CPU generator. A generator
    seeded the same way reproduces that draw for imagen_lib, so the whole sample (mean and
    standard deviation at once) is compared. Were the draw not reproduced, the outputs would
    differ by O(sqrt(variance)), and the test would fail, not pass by accident.
    """
    schedule, scheduler = diffusers_scheduler(
        DDPMScheduler,
        kind,
        prediction_type="sample",
        variance_type="fixed_small",
        clip_sample=False,
        thresholding=False,
    )
    x0, noise, x0_estimate = gaussians(3)
    x_t = q_sample(schedule, x0, full(t), noise)
    seed = 1234
    expected = scheduler.step(
        x0_estimate, t, x_t, generator=torch.Generator().manual_seed(seed)
    ).prev_sample
    step_noise = torch.randn(
        SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )

    abar_t = schedule.at(schedule.alphas_cumprod, full(t), x_t)
    abar_prev = (
        schedule.at(schedule.alphas_cumprod, full(t - 1), x_t) if t > 0 else torch.ones_like(abar_t)
    )
    got = ddpm_step(x0_estimate, x_t, abar_t, abar_prev, step_noise)
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)


DDIM_STEPS = 50
# Timesteps of the 50-step schedule whose next timestep is 20 earlier; 0 is the last step.
DDIM_TIMESTEPS = [999, 530, 20, 0]


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("t", DDIM_TIMESTEPS)
def test_ddim_step_matches_diffusers(kind, prediction, t):
    """One deterministic DDIM step (eta = 0) against DDIMScheduler.step, on 50 respaced steps.

    Both compute x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) eps (Song et al., Eq. 12,
    sigma = 0), with x0 and eps from the network's eps or v output (predict_x0_and_eps on
    imagen_lib's side, so its eps estimate for v is checked here too).

    Matching the timesteps:
    - imagen_lib's sampling_timesteps(1000, 50) round linspace(999, 0, 50): this is
      diffusers' timestep_spacing="linspace", checked first (diffusers' default "leading"
      gives 980, 960, ..., 0 instead).
    - DDIMScheduler.step cannot be told the previous timestep: it always steps back by
      num_train_timesteps // num_inference_steps = 20, while the linspace timesteps are 20 or
      21 apart. So only steps whose next timestep is exactly 20 earlier are fed identically
      (checked), and those are compared; on a gap of 21 (510 -> 489) diffusers would land
      on 490, which is not in its own list of timesteps (a diffusers limitation).
    - The last step, from t = 0: imagen_lib's sampler returns the x_0 estimate itself, which
      is ddim_step with abar_prev = 1. diffusers' set_alpha_to_one=True uses
      final_alpha_cumprod = 1 for the step below timestep 0: the same.
    """
    schedule, scheduler = diffusers_scheduler(
        DDIMScheduler,
        kind,
        prediction_type=PREDICTION_TYPE[prediction],
        clip_sample=False,
        thresholding=False,
        set_alpha_to_one=True,
        timestep_spacing="linspace",
    )
    scheduler.set_timesteps(DDIM_STEPS)
    timesteps = sampling_timesteps(T, DDIM_STEPS)
    assert scheduler.timesteps.tolist() == timesteps
    stride = T // DDIM_STEPS
    index = timesteps.index(t)
    t_prev = timesteps[index + 1] if index + 1 < len(timesteps) else None
    assert t_prev is None or t - t_prev == stride  # diffusers' step goes to t - stride

    x0, noise, output = gaussians(3)
    x_t = q_sample(schedule, x0, full(t), noise)
    expected = scheduler.step(output, t, x_t, eta=0.0).prev_sample

    x0_estimate, eps = predict_x0_and_eps(schedule, x_t, full(t), output, prediction)
    abar_t = schedule.at(schedule.alphas_cumprod, full(t), x_t)
    abar_prev = (
        torch.ones_like(abar_t)
        if t_prev is None
        else schedule.at(schedule.alphas_cumprod, full(t_prev), x_t)
    )
    got = ddim_step(x0_estimate, eps, abar_t, abar_prev, torch.zeros_like(x_t), eta=0.0)
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------
# A whole sampling run
# ---------------------------------------------------------------------------------------


@pytest.fixture
def float64_by_default():
    """Make float64 torch's default dtype for one test.

    imagen_lib's `sample` draws in the default dtype.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ddpm_sampling_matches_a_diffusers_loop(kind, float64_by_default):
    """imagen_lib's `sample` (DDPM, static thresholding) against a loop over DDPMScheduler.step.

    The steps above, wired together: timesteps 999 down to 0, the x_0 estimate clipped to
    [-1, 1] at each step (clip_sample=True), the last step returning x_0. Both draw x_T and
    then one noise tensor per step with t > 0 from the same CPU generator, in the same
    order, so with the same hand-written denoiser the two chains stay equal to float64
    rounding: the clipping keeps errors from growing over the 1000 steps (observed: 5e-15).
    """
    schedule, scheduler = diffusers_scheduler(
        DDPMScheduler,
        kind,
        prediction_type="epsilon",
        variance_type="fixed_small",
        clip_sample=True,
        clip_sample_range=1.0,
        thresholding=False,
    )

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A smooth stand-in for a network's eps prediction, t either per sample or a number."""
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        return 0.8 * torch.tanh(x) + 0.2 * torch.cos(t / 100 + x)

    seed = 7
    got = sample(
        denoise,
        schedule,
        SHAPE,
        prediction="eps",
        sampler="ddpm",
        thresholding="static",
        generator=torch.Generator().manual_seed(seed),
    )

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=generator, dtype=torch.float64)  # x_T, as `sample` draws it
    for t in scheduler.timesteps.tolist():  # 999, 998, ..., 0
        x = scheduler.step(denoise(x, t), t, x, generator=generator).prev_sample
    assert got.dtype == x.dtype == torch.float64
    torch.testing.assert_close(got, x, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("steps", [10, 25])
# inside diffusers, with numpy 2
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_dpm_solver_sampling_matches_a_diffusers_loop(kind, prediction, steps, float64_by_default):
    """imagen_lib's `sample` with "dpm++" against a loop over DPMSolverMultistepScheduler.step.

    Both are DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): x_0 predicted from the output,
    a first-order (DDIM) first step, then second-order steps that extrapolate x_0 from the
    previous step's estimate. diffusers is handed imagen_lib's timesteps (sampling_timesteps,
    as custom timesteps) and set to solver_order=2, algorithm_type="dpmsolver++", no
    thresholding. Its last step goes from the last timestep (0) to sigma = 0 at first order
    (final_sigmas_type="zero"), which returns that step's x_0 estimate: what imagen_lib's
    sampler returns after its last network call. So the same denoiser gives the same chain.

    Precision: diffusers rounds its sigmas to float32 (they are checked against imagen_lib's
    schedule and replaced by float64 ones, as `diffusers_scheduler` does for the schedule),
    and its `step` casts x_t to float32 before updating it, on purpose. So the chains agree
    to float32 rounding relative to the images' scale: within 2e-6 of the largest pixel
    (observed: at most 3.6e-7). A wrong coefficient, such as extrapolating x_0 by 1/r
    instead of 1/(2r), moves the result by 1.4e-5 (eps, cosine: the first estimate divides
    by sqrt(abar_999) = 5e-5 and dwarfs the rest) to 0.9 (v, linear) of that scale.
    """
    from diffusers import DPMSolverMultistepScheduler

    schedule, scheduler = diffusers_scheduler(
        DPMSolverMultistepScheduler,
        kind,
        prediction_type=PREDICTION_TYPE[prediction],
        solver_order=2,
        algorithm_type="dpmsolver++",
        thresholding=False,
        final_sigmas_type="zero",
        lower_order_final=True,
    )
    timesteps = sampling_timesteps(T, steps)
    scheduler.set_timesteps(timesteps=timesteps)
    abar = schedule.alphas_cumprod[timesteps]
    # diffusers' sigmas, in float64
    sigmas = torch.cat([((1 - abar) / abar).sqrt(), torch.zeros(1, dtype=torch.float64)])
    # diffusers stores them in float32
    torch.testing.assert_close(scheduler.sigmas.double(), sigmas, rtol=2 * FLOAT32_EPS, atol=0)
    scheduler.sigmas = sigmas

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """A smooth stand-in for a network's output, with t either per sample or a number."""
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        return 0.8 * torch.tanh(x) + 0.2 * torch.cos(t / 100 + x)

    seed = 7
    got = sample(
        denoise,
        schedule,
        SHAPE,
        prediction=prediction,
        sampler="dpm++",
        steps=steps,
        thresholding="none",
        generator=torch.Generator().manual_seed(seed),
    )

    # x_T, as `sample` draws it
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    for t in scheduler.timesteps.tolist():
        x = scheduler.step(denoise(x, t), t, x).prev_sample
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, x.double(), rtol=0, atol=2e-6 * x.abs().max().item())
