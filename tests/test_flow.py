"""Flow utilities: minibatch OT pairing, straightness, reflow pairs."""

import torch

from dmlib import diffusion, flow, samplers, schedules, toy


def test_ot_pairing_is_a_permutation_that_lowers_the_cost():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(64, 2, generator=g) + 3.0, torch.randn(64, 2, generator=g)
    paired = flow.ot_pairing(x0, eps)
    assert torch.equal(paired.sort(0).values, eps.sort(0).values)
    assert ((x0 - paired) ** 2).sum() < ((x0 - eps) ** 2).sum()
    # optimal: no single swap of two partners lowers the cost
    c = lambda a, b: ((a - b) ** 2).sum(-1)  # noqa: E731
    for i in range(0, 64, 7):
        for j in range(1, 64, 5):
            assert c(x0[i], paired[i]) + c(x0[j], paired[j]) <= c(x0[i], paired[j]) + c(x0[j], paired[i]) + 1e-5


def test_straightness_is_zero_for_straight_constant_speed_paths_only():
    a, b = torch.randn(10, 2), torch.randn(10, 2)
    s = torch.linspace(0, 1, 21)[:, None, None]
    straight = (1 - s) * a + s * b  # (21, 10, 2)
    assert abs(flow.straightness(straight)) < 1e-9
    bent = straight + torch.sin(torch.pi * s) * torch.tensor([0.0, 1.0])
    assert flow.straightness(bent) > 0.1


def test_linear_path_flow_with_the_exact_velocity_is_straight_for_a_point_mass():
    # Data at a single point: every conditional path is the marginal path, so trajectories are straight.
    gm = toy.GaussianMixture([[1.0, -1.0]], stds=torch.tensor([1e-3]))
    model = gm.denoiser(schedules.FlowSchedule(), "velocity")
    x_T = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _, traj = samplers.sample(model, x_T, schedules.FlowSchedule(), method="euler", n_steps=20, return_trajectory=True)
    assert flow.straightness(traj) < 1e-4


def test_reflow_pairs_shapes():
    gm = toy.GaussianMixture.eight_gaussians()
    model = gm.denoiser(schedules.FlowSchedule(), "velocity")
    x0, eps = flow.reflow_pairs(model, 16, schedules.FlowSchedule(), n_steps=10,
                                generator=torch.Generator().manual_seed(0))
    assert x0.shape == eps.shape == (16, 2)


def test_exact_mixture_velocity_equals_the_score_based_conversion():
    # Chapter 5's identity: the marginal velocity E[alpha' x_0 + sigma' eps | x_t], computed from
    # the exact posterior mean, equals the velocity converted from the exact score, to 1e-5.
    gm = toy.GaussianMixture([[-1.0, 0.0], [1.0, 0.5]], stds=torch.tensor([0.3, 0.5]), weights=[0.4, 0.6])
    path = schedules.FlowSchedule()
    g = torch.Generator().manual_seed(3)
    for t in (0.1, 0.5, 0.9):
        x_t = torch.randn(200, 2, generator=g, dtype=torch.float64) * 1.5
        velocity = gm.denoiser(path, "velocity")(x_t, t)
        from_score = diffusion.convert(gm.score(x_t, t, path), x_t, t, path, src="score", dst="velocity")
        torch.testing.assert_close(velocity, from_score, rtol=0, atol=1e-5)
