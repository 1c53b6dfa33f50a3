"""Meta-learning algorithms on a tiny model: exact gradients, first vs second order, adaptation itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgemeta.checkpoint import load_checkpoint, model_from_checkpoint, new_checkpoint
from edgemeta.corpus import Utterance
from edgemeta.meta_learning import (
    MAX_STEP_FACTOR,
    AdaptedPart,
    AlgorithmConfig,
    LearnedRates,
    adapt_head,
    encode_clips,
    inner_loop,
    query_loss_after_adaptation,
    task_loss,
    transcribe,
)
from edgemeta.model import SpeechRecognizer

TEXTS = ["ab", "ba", "abc", "cab", "a b", "bca"]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """One torch thread: these tiny models only lose time to threading on a shared 2-core machine; restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def utterances(speaker: str, count: int, seed: int = 0) -> list[Utterance]:
    """Noise clips of 0.3-0.4 s with short transcripts: enough for CTC, fast on a tiny model."""
    rng = np.random.default_rng(seed)
    return [
        Utterance((0.1 * rng.standard_normal(4800 + 800 * (i % 3))).astype(np.float32), TEXTS[i % len(TEXTS)], speaker, f"{speaker}/{i}")
        for i in range(count)
    ]


def _objective(model: SpeechRecognizer, rates: LearnedRates | float, config: AlgorithmConfig, clips: list[Utterance], k: int) -> torch.Tensor:
    """The episode's meta-objective: body once, inner loop on ``clips[:k]``, query loss on the rest."""
    part = AdaptedPart(model, config.scope)
    batch = encode_clips(part, clips)
    support, query = batch.rows(list(range(k))), batch.rows(list(range(k, len(clips))))
    return query_loss_after_adaptation(part, rates() if isinstance(rates, LearnedRates) else rates, support, query, config)[0]


def _directional_check(objective, tensors: list[torch.Tensor], gradients: list[torch.Tensor], seed: int, eps: float = 1e-6) -> tuple[float, float]:
    """``<∇f, v>`` from autograd and ``(f(x + εv) − f(x − εv)) / 2ε`` for a random direction ``v``."""
    generator = torch.Generator().manual_seed(seed)
    directions = [torch.randn(t.shape, generator=generator, dtype=t.dtype) for t in tensors]
    analytic = sum(float((g * v).sum()) for g, v in zip(gradients, directions))
    values = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for t, v in zip(tensors, directions):
                t.add_(sign * eps * v)
        values.append(objective().item())
        with torch.no_grad():
            for t, v in zip(tensors, directions):
                t.sub_(sign * eps * v)
    return analytic, (values[0] - values[1]) / (2 * eps)


@pytest.fixture
def double_model(tiny_model: SpeechRecognizer) -> SpeechRecognizer:
    return tiny_model.double()


def test_meta_sgd_gradients_match_finite_differences(double_model: SpeechRecognizer) -> None:
    """Exact (second-order) Meta-SGD: d(query loss after 2 steps)/d(λ, head init, body) against finite differences."""
    config = AlgorithmConfig("meta-sgd", inner_steps=2, scope="head")
    part = AdaptedPart(double_model)
    rates = LearnedRates({n: p.shape for n, p in part.params().items()}, 0.05, "softplus", torch.float64)
    clips = utterances("s", 4)
    objective = lambda: _objective(double_model, rates, config, clips, k=2)  # noqa: E731
    groups = {
        "rates": list(rates.parameters()),
        "head": list(double_model.head.parameters()),
        "body": [double_model.subsample.weight, double_model.gru.weight_hh_l0],
    }
    loss = objective()
    everything = [t for group in groups.values() for t in group]
    gradients = dict(zip(map(id, everything), torch.autograd.grad(loss, everything)))
    for seed, (name, tensors) in enumerate(groups.items()):
        analytic, numeric = _directional_check(objective, tensors, [gradients[id(t)] for t in tensors], seed)
        assert abs(analytic) > 1e-6, name
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-9), name


def test_per_step_rates_and_normalised_steps_have_exact_gradients(double_model: SpeechRecognizer) -> None:
    """Second-order Meta-SGD with the normalised rule and a factor per tensor and step: d(query loss after 3 steps)/d(λ, step
    factors, head init) against finite differences; each step's factors get their own, non-zero gradient."""
    config = AlgorithmConfig("meta-sgd", inner_steps=3, scope="head", update="normalized")
    part = AdaptedPart(double_model)
    rates = LearnedRates({n: p.shape for n, p in part.params().items()}, 0.01, "log", torch.float64, steps=3)
    with torch.no_grad():
        rates.step_raw.copy_(0.3 * torch.randn(rates.step_raw.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    clips = utterances("s", 4)
    objective = lambda: _objective(double_model, rates, config, clips, k=2)  # noqa: E731
    groups = {"rates": list(rates.raw), "step factors": [rates.step_raw], "head": list(double_model.head.parameters())}
    loss = objective()
    everything = [t for group in groups.values() for t in group]
    gradients = dict(zip(map(id, everything), torch.autograd.grad(loss, everything)))
    assert (gradients[id(rates.step_raw)].abs() > 0).all()
    for seed, (name, tensors) in enumerate(groups.items()):
        analytic, numeric = _directional_check(objective, tensors, [gradients[id(t)] for t in tensors], seed)
        assert abs(analytic) > 1e-6, name
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-9), name


def test_normalised_steps_move_each_tensor_by_its_rate_whatever_the_gradient_scale(tiny_model: SpeechRecognizer) -> None:
    """The normalised rule's move does not depend on the loss's scale (short clips' larger gradients); plain SGD's does."""
    from edgemeta.runtime.update_rule import adapt

    part = AdaptedPart(tiny_model)
    batch = encode_clips(part, utterances("s", 3))
    start = {n: p.detach().requires_grad_() for n, p in part.params().items()}
    moves = {}
    for rule in ("sgd", "normalized"):
        for scale in (1.0, 100.0):
            end = adapt(start, lambda at: scale * task_loss(part, at, batch), 0.01, 1, rule=rule)[0]
            moves[rule, scale] = {n: (end[n] - start[n]).detach() for n in start}
    for name in start:
        torch.testing.assert_close(moves["normalized", 1.0][name], moves["normalized", 100.0][name])
        torch.testing.assert_close(moves["sgd", 100.0][name], 100 * moves["sgd", 1.0][name])
        assert float(moves["normalized", 1.0][name].pow(2).mean().sqrt()) == pytest.approx(0.01, rel=1e-4)


def test_second_order_differs_from_first_order_by_the_hessian_term(double_model: SpeechRecognizer) -> None:
    """MAML with one step: ∇θ_second − ∇θ_first = −α H_support(θ) ∇L_query(θ'), and it is not small.

    Meta-SGD's λ-gradient, in contrast, is the same in both for one step (−∇L_support(θ) ⊙ ∇L_query(θ')).
    """
    alpha, clips = 0.3, utterances("s", 6)
    head = list(double_model.head.parameters())
    with torch.no_grad():
        part = AdaptedPart(double_model)
        batch = encode_clips(part, clips)
    support, query = batch.rows([0, 1, 2]), batch.rows([3, 4, 5])

    def head_gradient(method: str) -> list[torch.Tensor]:
        loss = query_loss_after_adaptation(part, alpha, support, query, AlgorithmConfig(method, inner_steps=1))[0]
        return list(torch.autograd.grad(loss, head))

    second, first = head_gradient("maml"), head_gradient("fomaml")
    params = part.params()
    adapted = inner_loop(part, params, alpha, support, 1)
    query_grad = torch.autograd.grad(task_loss(part, adapted, query), list(adapted.values()))
    support_grad = torch.autograd.grad(task_loss(part, params, support, twice_differentiable=True), head, create_graph=True)
    hessian_term = torch.autograd.grad(sum((g * q).sum() for g, q in zip(support_grad, query_grad)), head)
    difference = torch.cat([(s - f).flatten() for s, f in zip(second, first)])
    expected = torch.cat([(-alpha * h).flatten() for h in hessian_term])
    torch.testing.assert_close(difference, expected, rtol=1e-6, atol=1e-10)
    assert difference.norm() > 0.05 * torch.cat([s.flatten() for s in second]).norm()

    rates = LearnedRates({n: p.shape for n, p in params.items()}, alpha, dtype=torch.float64)
    lambda_grads = []
    for first_order in (False, True):
        loss = query_loss_after_adaptation(part, rates(), support, query, AlgorithmConfig("meta-sgd", 1, first_order=first_order))[0]
        lambda_grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(rates.parameters()))]))
    torch.testing.assert_close(lambda_grads[0], lambda_grads[1], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("parameterisation", ["log", "softplus"])
def test_learned_rates_start_at_init_stay_positive_and_bounded(parameterisation: str) -> None:
    rates = LearnedRates({"w": torch.Size([3, 2]), "b": torch.Size([2])}, 0.02, parameterisation, max_rate=0.5)
    for value in rates().values():
        torch.testing.assert_close(value, torch.full_like(value, 0.02))
    with torch.no_grad():
        for raw in rates.parameters():
            raw.sub_(50.0)
    assert all((value > 0).all() for value in rates().values())
    with torch.no_grad():
        for raw in rates.parameters():
            raw.add_(100.0)
    rates.bound_()
    for value in rates().values():
        torch.testing.assert_close(value, torch.full_like(value, 0.5))


def test_per_step_factors_start_at_one_and_stay_within_their_bounds() -> None:
    rates = LearnedRates({"w": torch.Size([3, 2]), "b": torch.Size([2])}, 0.02, steps=4)
    steps = rates()
    assert len(steps) == 4 and all(torch.equal(step["w"], rates.base_rates()["w"]) for step in steps)
    with torch.no_grad():
        rates.step_raw[0].add_(100.0)
        rates.step_raw[1].sub_(100.0)
    rates.bound_()
    factors = rates.step_scales()
    torch.testing.assert_close(factors["w"], torch.full((4,), MAX_STEP_FACTOR))
    torch.testing.assert_close(factors["b"], torch.full((4,), 1 / MAX_STEP_FACTOR))


def test_adaptation_lowers_the_support_loss(tiny_checkpoint) -> None:
    """adapt_head with the checkpoint's own steps and rates, then the loss on the same clips."""
    support = utterances("s", 4)
    checkpoint = load_checkpoint(tiny_checkpoint)
    adapted = adapt_head(checkpoint, support, rates={k: v * 20 for k, v in checkpoint["rates"].items()})
    assert set(adapted) == {n for n in checkpoint["model"] if n.startswith("head.")}
    model = model_from_checkpoint(checkpoint).eval()
    part = AdaptedPart(model)
    with torch.no_grad():
        batch = encode_clips(part, support)
        before = task_loss(part, part.params(), batch)
        after = task_loss(part, part.module_names(adapted), batch)
    assert after < 0.9 * before
    assert len(transcribe(model, support, adapted)) == len(support)


def test_adapting_a_bare_model_leaves_it_untouched(tiny_model: SpeechRecognizer) -> None:
    """adapt_head is functional: it returns a new head and never steps the model's own parameters.

    (That trainer and device reach the same head is tests/test_adaptation_parity.py.)
    """
    before = {name: p.detach().clone() for name, p in tiny_model.named_parameters()}
    adapted = adapt_head(tiny_model, utterances("s", 3), steps=3, rates=0.05)
    for name, value in tiny_model.named_parameters():
        assert torch.equal(value, before[name]), name
    assert all(not torch.equal(adapted[name], before[name]) for name in adapted)


def test_gru_and_head_scope_adapts_and_backpropagates_through_the_gru(tiny_model: SpeechRecognizer, tmp_path) -> None:
    part = AdaptedPart(tiny_model, "gru+head")
    assert {"gru.weight_ih_l0", "head.scale", "head.output.weight"} <= set(part.params())
    clips = utterances("s", 4)
    with torch.no_grad():  # the split reproduces the model's own forward
        batch = encode_clips(part, clips[:1])
        whole = tiny_model.head(tiny_model.body(torch.from_numpy(clips[0].audio)[None]))
        torch.testing.assert_close(part.logits(part.params(), batch), whole)
    loss = _objective(tiny_model, 0.05, AlgorithmConfig("maml", inner_steps=1, scope="gru+head"), clips, k=2)
    loss.backward()
    assert tiny_model.gru.weight_ih_l0.grad.abs().sum() > 0 and tiny_model.subsample.weight.grad.abs().sum() > 0
    checkpoint = new_checkpoint(tiny_model, "maml", 1, [], scalar_rate=0.05, provenance={"scope": "gru+head"})
    adapted = adapt_head(checkpoint, clips[:2])
    assert "gru.weight_hh_l0" in adapted and "head.scale" in adapted
