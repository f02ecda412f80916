"""The probability-flow ODE likelihood equals the exact log-density of a Gaussian mixture."""

import pytest
import torch

from dmlib import likelihood, schedules, toy

MIX = toy.GaussianMixture([[-1.0, 0.0], [1.0, 0.5]], stds=torch.tensor([0.5, 0.4]), weights=[0.4, 0.6])


@pytest.mark.parametrize("name,kind", [("linear", "eps"), ("cosine", "eps"), ("flow", "velocity")])
def test_ode_likelihood_matches_exact_log_density(name, kind):
    sched = schedules.get_schedule(name)
    x = MIX.sample(100, generator=torch.Generator().manual_seed(0)).double()
    ll = likelihood.ode_log_likelihood(MIX.denoiser(sched, kind), x, sched, n_steps=100, t_min=1e-3)
    exact = MIX.log_prob(x, 1e-3, sched)
    # Heun with 100 steps: measured max error 5e-3 (linear), 2e-3 (cosine), 4e-4 (flow)
    torch.testing.assert_close(ll, exact, rtol=0, atol=2e-2)


def test_ode_likelihood_check_fails_with_a_flipped_divergence(monkeypatch):
    # A test of the test: the wrong sign of the change-of-variables term is caught.
    orig = likelihood._velocity_and_divergence

    def flipped(*args):
        u, div = orig(*args)
        return u, -div

    monkeypatch.setattr(likelihood, "_velocity_and_divergence", flipped)
    sched = schedules.LinearSchedule()
    x = MIX.sample(50, generator=torch.Generator().manual_seed(1)).double()
    ll = likelihood.ode_log_likelihood(MIX.denoiser(sched), x, sched, n_steps=50)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(ll, MIX.log_prob(x, 1e-3, sched), rtol=0, atol=2e-2)


def test_bad_arguments():
    sched = schedules.LinearSchedule()
    with pytest.raises(ValueError, match="t_min"):
        likelihood.ode_log_likelihood(MIX.denoiser(sched), torch.zeros(3, 2), sched, t_min=0.0)
    with pytest.raises(ValueError, match="x must have shape"):
        likelihood.ode_log_likelihood(MIX.denoiser(sched), torch.zeros(3, 2, 2), sched)
