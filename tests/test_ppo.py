"""PPO: GAE and the clipped losses against hand-written formulas, the rollout plumbing on a toy model, bad
input, and the acceptance test on the sequences world (true reward and learned reward model, evaluated
exactly with ``world.evaluate``)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from dpo_teach.models import build_word_tokenizer, tiny_gpt2
from dpo_teach.trainers.ppo import clipped_policy_loss, clipped_value_loss, gae, train_ppo, whiten

# ---- the maths ---------------------------------------------------------------------------------------


def _gae_by_sums(rewards, values, gamma, lam):
    """A_t = Σ_k (γλ)^k δ_{t+k} over one episode (python floats), δ_t = r_t + γ V_{t+1} − V_t, V_T = 0."""
    T = len(rewards)
    v = [*values, 0.0]
    deltas = [rewards[t] + gamma * v[t + 1] - v[t] for t in range(T)]
    adv = [sum((gamma * lam) ** k * deltas[t + k] for k in range(T - t)) for t in range(T)]
    return adv, [a + values[t] for t, a in enumerate(adv)]


def test_gae_matches_the_sum_formula_on_padded_episodes():
    gamma, lam = 0.9, 0.8
    episodes = [  # (start column, rewards, values) of each row's response inside a width-7 batch
        (2, [0.1, -0.2, 1.5], [0.3, 0.2, 0.9]),
        (1, [0.0, 0.4, -0.3, 0.2, 2.0], [-0.1, 0.5, 0.0, 0.7, 1.1]),
        (4, [3.0], [0.25]),
    ]
    rewards, values, mask = torch.zeros(3, 7), torch.full((3, 7), 9.0), torch.zeros(3, 7, dtype=torch.bool)
    for b, (s, r, v) in enumerate(episodes):
        rewards[b, s : s + len(r)] = torch.tensor(r)
        values[b, s : s + len(v)] = torch.tensor(v)  # values outside the mask (9.0) must be ignored
        mask[b, s : s + len(r)] = True
    adv, ret = gae(rewards, values, mask, gamma, lam)
    for b, (s, r, v) in enumerate(episodes):
        want_adv, want_ret = _gae_by_sums(r, v, gamma, lam)
        torch.testing.assert_close(adv[b, s : s + len(r)], torch.tensor(want_adv))
        torch.testing.assert_close(ret[b, s : s + len(r)], torch.tensor(want_ret))
    assert (adv[~mask] == 0).all() and (ret[~mask] == 0).all()


def test_gae_with_lambda_one_and_gamma_one_is_the_return_minus_the_value():
    rewards = torch.tensor([[0.5, -1.0, 2.0]])
    values = torch.tensor([[0.3, 0.1, -0.4]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), 1.0, 1.0)
    reward_to_go = torch.tensor([[1.5, 1.0, 2.0]])
    torch.testing.assert_close(ret, reward_to_go)
    torch.testing.assert_close(adv, reward_to_go - values)


def test_clipped_policy_loss_matches_the_formula_and_its_gradient():
    eps = 0.2
    old = torch.zeros(1, 6)
    ratios = [1.5, 0.5, 1.1, 1.5, 0.5, 0.9]
    advs = [1.0, 1.0, -2.0, -1.0, -1.0, 0.5]
    logps = torch.tensor([ratios]).log().requires_grad_(True)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]], dtype=torch.float32)  # the last token is padding
    loss, stats = clipped_policy_loss(logps, old, torch.tensor([advs]), mask, eps)
    terms = [
        max(-a * r, -a * min(max(r, 1 - eps), 1 + eps)) for r, a in zip(ratios[:5], advs[:5], strict=True)
    ]
    assert loss.item() == pytest.approx(sum(terms) / 5)
    # clipped where the ratio left [1−ε, 1+ε] in the direction the advantage favours: tokens 0 and 4
    assert stats["policy/clipfrac"].item() == pytest.approx(2 / 5)
    assert stats["policy/approxkl"].item() == pytest.approx(
        sum(0.5 * math.log(r) ** 2 for r in ratios[:5]) / 5
    )
    loss.backward()
    # d/dlogρ of −Aρ/5 is −Aρ/5 on unclipped tokens; zero on clipped ones and on padding
    want = [0.0 if i in (0, 4, 5) else -advs[i] * ratios[i] / 5 for i in range(6)]
    torch.testing.assert_close(logps.grad, torch.tensor([want]))


def test_clipped_value_loss_matches_the_formula():
    eps = 0.2
    values, old, returns = (
        torch.tensor([[1.0, 0.0, 0.5]]),
        torch.tensor([[0.5, 0.1, 0.5]]),
        torch.tensor([[2.0, -1.0, 0.0]]),
    )
    loss, stats = clipped_value_loss(values, old, returns, torch.ones(1, 3), eps)
    want = []
    for v, o, r in zip(values[0].tolist(), old[0].tolist(), returns[0].tolist(), strict=True):
        vc = o + min(max(v - o, -eps), eps)
        want.append(max((v - r) ** 2, (vc - r) ** 2))
    assert loss.item() == pytest.approx(0.5 * sum(want) / 3)
    assert stats["val/clipfrac"].item() == pytest.approx(1 / 3)  # token 0: clipped to 0.7, farther from 2.0


def test_whiten_over_the_mask():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 4.0, -50.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]], dtype=torch.float32)
    out = whiten(x, mask)
    kept = torch.tensor([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(out[:, :2].flatten(), (kept - kept.mean()) / kept.std(), rtol=1e-5, atol=1e-5)
    assert (out[:, 2] == 0).all()


# ---- the trainer on a toy model -----------------------------------------------------------------------

WORDS = ["q", "r", ":", "a", "b", "c"]


@pytest.fixture(scope="module")
def toy():
    tok = build_word_tokenizer(WORDS)
    allowed = torch.tensor(tok.convert_tokens_to_ids(["a", "b", "c"]))
    return tok, allowed


def _count_a(prompts, responses):
    return torch.tensor([float(r.split().count("a")) for r in responses])


def _run(toy, reward=_count_a, **kw):
    tok, allowed = toy
    model = tiny_gpt2(tok, n_layer=1, n_embd=32, n_head=2, seed=0)
    options = dict(steps=3, batch_size=16, mini_batch_size=8, ppo_epochs=2, max_new_tokens=3, progress=False)
    options["allowed_token_ids"] = allowed
    options.update(kw)
    return model, train_ppo(model, tok, ["q :", "r q :"], reward, **options)


def test_rollouts_respect_the_alphabet_and_first_kl_is_zero(toy):
    seen = []

    def reward(prompts, responses):
        seen.extend(zip(prompts, responses, strict=True))
        return _count_a(prompts, responses)

    _, history = _run(toy, reward)
    assert len(seen) == 3 * 16 and {p for p, _ in seen} == {"q :", "r q :"}
    assert all(len(y.split()) == 3 and set(y.split()) <= {"a", "b", "c"} for _, y in seen)
    assert history[0]["objective/kl"] == pytest.approx(0.0, abs=1e-6)  # π_θ = π_ref before the first update
    first_scores = _count_a(None, [y for _, y in seen[:16]]).mean().item()
    assert history[0]["objective/scores"] == pytest.approx(first_scores)
    for h in history:
        assert h["objective/rlhf_reward"] == pytest.approx(
            h["objective/scores"] - 0.05 * h["objective/kl"], abs=1e-5
        )


def test_stop_token_ends_a_response_and_is_scored(toy):
    tok, allowed = toy
    with_stop = torch.cat([allowed, torch.tensor([tok.eos_token_id])])
    seen = []

    def reward(prompts, responses):
        seen.extend(responses)
        return _count_a(prompts, responses)

    _run(toy, reward, allowed_token_ids=with_stop, max_new_tokens=6, steps=2)
    lengths = [len(y.split()) for y in seen]
    assert min(lengths) < 6  # EOS (p ≈ 1/4 per token) ended some responses early


def test_same_seed_same_history_and_a_different_seed_differs(toy):
    _, h1 = _run(toy, seed=3)
    _, h2 = _run(toy, seed=3)
    _, h3 = _run(toy, seed=4)
    assert h1 == h2
    assert h1 != h3


def test_a_copy_of_a_frozen_reference_still_trains(toy):
    tok, allowed = toy
    ref = tiny_gpt2(tok, n_layer=1, n_embd=32, n_head=2).requires_grad_(False)  # as a trainer leaves π_ref
    policy = copy.deepcopy(ref)
    train_ppo(
        policy,
        tok,
        ["q :"],
        _count_a,
        ref_model=ref,
        steps=1,
        batch_size=8,
        mini_batch_size=8,
        max_new_tokens=2,
        allowed_token_ids=allowed,
        progress=False,
    )
    changed = [not torch.equal(p, q) for p, q in zip(policy.parameters(), ref.parameters(), strict=True)]
    assert all(changed[:3]) and sum(changed) > len(changed) // 2


def test_ppo_raises_a_toy_reward(toy):
    tok, _ = toy
    model, history = _run(toy, steps=25, lr=3e-3, kl_coef=0.0)
    assert history[-1]["objective/scores"] > history[0]["objective/scores"] + 0.8


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("mini_batch_size", 32, ValueError),
        ("gamma", 1.5, ValueError),
        ("lr", -1.0, ValueError),
        ("ppo_epochs", 0, ValueError),
        ("steps", 2.5, TypeError),
        ("kl_coef", -0.1, ValueError),
    ],
)
def test_bad_config_values(toy, field, value, error):
    with pytest.raises(error, match=field):
        _run(toy, **{field: value})


def test_bad_prompts(toy):
    tok, allowed = toy
    with pytest.raises(TypeError, match="prompts"):
        train_ppo(tiny_gpt2(tok), tok, "q :", _count_a, allowed_token_ids=allowed, progress=False)


def test_reward_not_callable(toy):
    with pytest.raises(TypeError, match="reward must be"):
        _run(toy, reward=3.0)


def test_reward_with_the_wrong_shape(toy):
    with pytest.raises(ValueError, match="finite scores"):
        _run(toy, reward=lambda p, y: torch.zeros(len(y), 2))


def test_reward_of_the_wrong_type(toy):
    with pytest.raises(TypeError, match="float tensor"):
        _run(toy, reward=lambda p, y: "good")


def test_unknown_config_field(toy):
    with pytest.raises(TypeError, match="kl_penalty"):
        _run(toy, kl_penalty=0.1)


# ---- acceptance on the sequences world ----------------------------------------------------------------


@pytest.fixture(scope="module")
def world_and_ref():
    from dpo_teach.cache import reference_model
    from dpo_teach.worlds.sequences import SequenceWorld

    world = SequenceWorld()
    ref, _ = reference_model(world, device="cpu", progress=False)
    return world, ref, world.logprobs(ref)


BETA = 0.5
PPO_SETTINGS = dict(
    steps=50, batch_size=128, mini_batch_size=64, ppo_epochs=2, lr=1e-3, vf_coef=0.5, kl_coef=BETA
)


def _ppo_on_world(world, ref, reward):
    policy = copy.deepcopy(ref)
    train_ppo(
        policy,
        world.tokenizer,
        world.prompts,
        reward,
        ref_model=ref,
        max_new_tokens=world.length,
        allowed_token_ids=world.allowed_token_ids,
        device="cpu",
        progress=False,
        **PPO_SETTINGS,
    )
    return policy


@pytest.mark.slow
def test_ppo_with_the_true_reward_raises_it_at_bounded_kl(world_and_ref):
    world, ref, ref_logps = world_and_ref
    before = world.evaluate(ref, ref_logps, BETA)

    def true_reward(prompts, responses):
        return torch.tensor([world.true_reward(p, y) for p, y in zip(prompts, responses, strict=True)])

    after = world.evaluate(_ppo_on_world(world, ref, true_reward), ref_logps, BETA)
    optimum = world.evaluate(world.optimal_policy(BETA, ref_logps), ref_logps, BETA)
    objective = lambda e: e["expected_reward"] - BETA * e["kl_to_ref"]
    assert after["expected_reward"] > before["expected_reward"] + 1.0
    assert after["kl_to_ref"] < 2.0
    # PPO optimises the objective that π*_β maximises: it closes most of the gap to it
    assert objective(after) - objective(before) > 0.6 * (objective(optimum) - objective(before))
    assert after["kl_to_optimal"] < 0.5 * before["kl_to_optimal"]


@pytest.mark.slow
def test_ppo_with_a_learned_reward_model_raises_the_true_reward_at_bounded_kl(world_and_ref):
    from dpo_teach.trainers.reward import RewardModel, train_reward_model

    world, ref, ref_logps = world_and_ref
    reward_model = RewardModel(copy.deepcopy(ref))
    train_reward_model(
        reward_model,
        world.tokenizer,
        world.preference_pairs(ref, n=2000, seed=1),
        epochs=4,
        lr=3e-4,
        device="cpu",
        progress=False,
    )
    before = world.evaluate(ref, ref_logps, BETA)
    after = world.evaluate(_ppo_on_world(world, ref, reward_model), ref_logps, BETA)
    assert after["expected_reward"] > before["expected_reward"] + 0.3
    assert after["kl_to_ref"] < 1.5
