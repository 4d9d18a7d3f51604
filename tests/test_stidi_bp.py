"""The STiDi-BP rule: targets, a step that lowers the error, displacement signs, locality."""

from __future__ import annotations

import math

import torch

from stidi.network import Network
from stidi.stidi_bp import RuleOptions, normalise, output_error, update_directions


def test_output_targets_follow_the_specification():
    T, gamma = 100, 10.0
    t = torch.tensor([[20.0, 25.0, 40.0, math.inf], [math.inf] * 4])
    labels = torch.tensor([2, 1])
    e = output_error(t, labels, T, gamma, forced_firing=True)
    # sample 0: t_min = 20; true class 2 aims at 20; class 0 (20) and 1 (25) fired before 30 -> 30;
    # class 3 never fired (forced to T = 100) and keeps its time.
    assert torch.allclose(e[0], torch.tensor([10.0, 5.0, -20.0, 0.0]) / T)
    # sample 1: no output fired: the true class aims at T - gamma, the others keep their time
    assert torch.allclose(e[1], torch.tensor([0.0, -10.0, 0.0, 0.0]) / T)


def test_decision_floor_pushes_early_decisions_later_and_leaves_late_ones():
    T, gamma = 100, 10.0
    t = torch.tensor([[20.0, 25.0, 40.0, math.inf], [70.0, 75.0, 90.0, 95.0]])
    labels = torch.tensor([0, 0])
    e = output_error(t, labels, T, gamma, forced_firing=True, floor=50.0)
    # sample 0 decided at 20 < 50: the reference is 50; the true class aims at 50, the
    # outputs that fire before 60 aim at 60, the silent one (forced to T) keeps its time
    assert torch.allclose(e[0], torch.tensor([30.0, 35.0, 20.0, 0.0]) / T)
    # sample 1 decided at 70 > 50: the floor changes nothing
    assert torch.equal(e[1], output_error(t[1:], labels[1:], T, gamma, forced_firing=True)[0])
    assert torch.equal(output_error(t, labels, T, gamma, True, floor=0.0), output_error(t, labels, T, gamma, True))


def test_split_targets_share_the_missed_margin():
    T, gamma = 100, 10.0
    t = torch.tensor([[20.0, 30.0, 50.0, math.inf], [20.0, 26.0, 60.0, 90.0], [20.0, 40.0, 50.0, 60.0]])
    labels = torch.tensor([2, 0, 0])
    e = output_error(t, labels, T, gamma, forced_firing=True, targets="split")
    # sample 0: the true class (50) misses the margin over class 0 (20) by v = 40: it aims at 30,
    # and the outputs before 40 aim at 40 -- the true class and class 0 each move by 20
    assert torch.allclose(e[0], torch.tensor([20.0, 10.0, -20.0, 0.0]) / T)
    # sample 1: the true class wins by 6 < γ: v = 4, it aims at 18 and class 1 at 28
    assert torch.allclose(e[1], torch.tensor([-2.0, 2.0, 0.0, 0.0]) / T)
    # sample 2: a win by γ or more needs no change
    assert torch.equal(e[2], torch.zeros(4))
    # the earliest-spike targets move the true class the whole way (to 20) and class 0 by γ
    assert torch.allclose(output_error(t, labels, T, gamma, True)[0], torch.tensor([10.0, 0.0, -30.0, 0.0]) / T)


def test_softmax_targets_descend_the_cross_entropy_in_spike_time():
    T, sigma = 100, 4.0
    t = torch.tensor([[20.0, 25.0, 40.0, math.inf], [math.inf] * 4, [30.0, 10.0, 50.0, 60.0]])
    labels = torch.tensor([2, 1, 1])
    e = output_error(t, labels, T, gamma=10.0, forced_firing=True, targets="softmax", temperature=sigma)
    # the displacement σ² · (−∂/∂t) of −log softmax(−t/σ)_y, silent outputs at T
    times = torch.where(torch.isfinite(t), t, torch.full_like(t, T)).requires_grad_(True)
    torch.nn.functional.cross_entropy(-times / sigma, labels, reduction="sum").backward()
    torch.testing.assert_close(e * T, -sigma ** 2 * times.grad)
    # the true class is pulled earlier, every other output pushed later; where no output fired,
    # the true class moves by σ (1 − 1/4)
    others = torch.ones_like(e, dtype=torch.bool)
    others[torch.arange(3), labels] = False
    assert (e[~others] < 0).all() and (e[others] > 0).all()
    assert math.isclose(e[1, 1].item() * T, -sigma * 0.75, rel_tol=1e-6)


def test_batch_max_normalisation_keeps_the_samples_proportions():
    e = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    n = normalise(e, "batch_max")
    assert torch.allclose(n, e / 5.0)
    # the peak is agreed over the processes of a data-parallel step: a larger one elsewhere wins
    assert torch.allclose(normalise(e, "batch_max", agree=lambda p: torch.maximum(p, torch.tensor([10.0], dtype=p.dtype))), e / 10.0)
    assert torch.equal(normalise(torch.zeros(0, 2), "batch_max"), torch.zeros(0, 2))


def test_l2_normalisation_is_per_sample():
    e = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    n = normalise(e, "l2")
    assert torch.allclose(n[0], torch.tensor([0.6, 0.8])) and torch.equal(n[1], e[1])
    assert torch.equal(normalise(e, "none"), e)


def _toy_dense_net(seed: int = 0, T: int = 64, output_firing: float = 0.6, tau: float = math.inf) -> tuple[Network, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    net = Network("20-12-4", input_shape=(20,), T=T, tau=tau, thresholds=1.0)
    t_in = torch.randint(0, T // 2, (16, 20), generator=g).float()
    net.initialise(t_in, [0.6, output_firing], g)
    labels = torch.randint(0, 4, (16,), generator=g)
    return net, t_in, labels


def _output_loss(net: Network, t_in: torch.Tensor, target: torch.Tensor) -> float:
    t = net.trace(t_in).times[-1].clamp(max=net.T)
    return float(0.5 * ((t - target) ** 2).sum())


def test_one_update_step_lowers_the_output_error():
    """Gradient descent on ½Σ(t − target)² under the linear approximation: the error shrinks,
    and a step the other way raises it. Every output fires before T here: a silent neuron
    that starts firing jumps from T to its new time, a jump no gradient step accounts for."""
    opts = RuleOptions(gamma=8.0)
    for sign, expect_lower in ((+1.0, True), (-1.0, False)):
        net, t_in, labels = _toy_dense_net()
        with torch.no_grad():
            net.weights[-1].abs_()  # excitatory outputs: every one of them fires
        assert torch.isfinite(net.trace(t_in).times[-1]).all()
        trace = net.trace(t_in)
        t_out = trace.times[-1].clamp(max=net.T)
        target = t_out + net.T * output_error(trace.times[-1], labels, net.T, opts.gamma, True)
        before = _output_loss(net, t_in, target)
        G = update_directions(net, trace, labels, opts)
        with torch.no_grad():
            net.weights[-1] -= sign * 0.02 * net.weights[-1].std() * G[-1] / G[-1].abs().max()
        after = _output_loss(net, t_in, target)
        assert (after < before) == expect_lower, (sign, before, after)


def test_hidden_displacement_moves_the_output_toward_its_target():
    """A hidden neuron feeding a too-late true class with a positive weight is told to fire earlier,
    and firing earlier does make the output fire earlier."""
    T = 64
    net = Network("2-2-1", input_shape=(2,), T=T, tau=math.inf, thresholds=[0.5, 0.5])
    with torch.no_grad():
        net.weights[0].copy_(torch.tensor([[4.0, 0.0], [0.0, 4.0]]))
        net.weights[1].copy_(torch.tensor([[2.0, -1.0]]))
    t_in = torch.tensor([[0.0, 0.0]])
    trace = net.trace(t_in)
    hidden, out = trace.times[1], trace.times[2]
    assert torch.isfinite(out).all() and hidden[0, 0] < out[0, 0]
    # one output class: it is the true class; force it to be "late" with a target earlier than it fired
    delta = torch.tensor([[-1.0]]) * out / 0.5  # e < 0 (fire earlier) times t/θ
    from stidi.kernels import vectorised

    shift = vectorised.displacement(hidden.clamp(max=T), out, delta, net.weights[1], "mask", T, net.tau)
    assert shift[0, 0] < 0  # positive weight: fire earlier
    assert shift[0, 1] > 0  # negative weight: fire later
    earlier = hidden.clone()
    earlier[0, 0] -= 4
    moved = vectorised.spike_times(earlier, net.weights[1], 0.5, T, net.tau)
    assert moved[0, 0] < out[0, 0]


def test_updates_are_local_no_chain_across_layers():
    """The update of layer l depends only on its own spikes, weights and the error handed to it:
    changing the weights of the layer two above, while the displacement reaching layer l stays the
    same, leaves layer l's update unchanged; and autograd is never involved."""
    net, t_in, labels = _toy_dense_net()
    trace = net.trace(t_in)
    G = update_directions(net, trace, labels, RuleOptions())
    assert all(not g.requires_grad and g.grad_fn is None for g in G)
    assert all(not w.requires_grad for w in net.weights)
    # Scaling the top layer's weights scales the displacement reaching layer 0 by the same factor;
    # L2 normalisation of the error handed down removes it, so layer 0's update is unchanged
    # even though the top layer (and so the whole chain above) changed.
    with torch.no_grad():
        net.weights[-1] *= 3.0
    G2 = update_directions(net, trace, labels, RuleOptions())
    assert torch.allclose(G[0], G2[0], atol=1e-6)
    assert torch.allclose(G[-1], G2[-1])  # the top layer's update depends on spikes, not its weights
    # Without normalisation the displacement carries the top weights' scale: layer 0 sees 3x.
    G3 = update_directions(net, trace, labels, RuleOptions(error_norm="none"))
    with torch.no_grad():
        net.weights[-1] /= 3.0
    G4 = update_directions(net, trace, labels, RuleOptions(error_norm="none"))
    assert torch.allclose(G3[0], 3.0 * G4[0], rtol=1e-4, atol=1e-6)


def test_rule_options_change_the_update():
    """Each option matters (with the ramp PSP, ε' is the mask divided by T, so the gate
    options differ only for a finite τ)."""
    net, t_in, labels = _toy_dense_net(seed=3, tau=8.0)
    trace = net.trace(t_in)
    base = update_directions(net, trace, labels, RuleOptions())
    for opts in (RuleOptions(latency_derivative="unit"), RuleOptions(displacement_gate="slope"), RuleOptions(gamma=0.0)):
        other = update_directions(net, trace, labels, opts)
        assert any(not torch.allclose(a, b) for a, b in zip(base, other)), opts


def test_revival_asks_only_silent_hidden_neurons_to_fire_and_only_earlier():
    net, t_in, _ = _toy_dense_net(seed=2, output_firing=1.0)
    with torch.no_grad():
        net.weights[0][:4] = -1.0  # hidden neurons 0..3 can never fire
        net.weights[1].abs_()
        net.weights[1][:, :4] = 0.0
        net.weights[1][3, :4] = 1.0  # ... and would excite class 3 only
    trace = net.trace(t_in)
    assert not torch.isfinite(trace.times[1][:, :4]).any()
    labels = torch.full((t_in.shape[0],), 3)
    late = trace.times[-1][:, 3] > trace.times[-1].min(dim=1).values  # class 3 should have fired earlier
    assert late.any()
    plain = update_directions(net, trace, labels, RuleOptions(gamma=8.0))
    revived = update_directions(net, trace, labels, RuleOptions(gamma=8.0, revival=0.5))
    assert torch.equal(plain[0][:4], torch.zeros_like(plain[0][:4]))  # dead neurons learn nothing under the plain rule
    # revival: their update raises their weights (Δw = −η G, so G < 0 where the input fired), never lowers them
    assert (revived[0][:4] <= 0).all() and (revived[0][:4] < 0).any()
    assert torch.equal(plain[1], revived[1])  # the output layer's own update is untouched
    # a silent neuron whose displacement would say "fire later" is left alone
    with torch.no_grad():
        net.weights[1][3, :4] = -1.0
    assert torch.equal(update_directions(net, trace, labels, RuleOptions(gamma=8.0, revival=0.5))[0][:4], plain[0][:4])
