"""SequenceWorld: enumeration, exact evaluation, rewards, Bradley–Terry sampling, data-pipeline consistency."""

import math

import pytest
import torch

from dpo_teach.data import PreferenceCollator, tokenize_preference
from dpo_teach.logprobs import concatenated_forward
from dpo_teach.models import tiny_gpt2
from dpo_teach.trainers.sft import train_sft
from dpo_teach.worlds import SequenceWorld

FIXED = SequenceWorld()
VARIABLE = SequenceWorld(variable_length=True)
WORLDS = pytest.mark.parametrize("world", [FIXED, VARIABLE], ids=["fixed", "variable"])


def _model(world, seed=0):
    return tiny_gpt2(world.tokenizer, seed=seed, **world.model_config)


def _trained(world):
    """A briefly SFT-trained model (weights far from the initialisation)."""
    model = _model(world, seed=1)
    train_sft(
        model,
        world.tokenizer,
        world.sft_rows(1024, seed=1),
        batch_size=32,
        lr=1e-2,
        allowed_token_ids=world.allowed_token_ids,
        device="cpu",
        progress=False,
    )
    return model


def test_sizes_and_texts():
    assert len(FIXED.responses) == 8**3 == len(set(FIXED.responses))
    assert len(VARIABLE.responses) == 1 + 8 + 64 + 512 == len(set(VARIABLE.responses))
    assert VARIABLE.responses[0] == " ." and " a b ." in VARIABLE.responses and " a b c" in VARIABLE.responses
    for world in (FIXED, VARIABLE):
        assert all(r.startswith(" ") for r in world.responses) and all(p.endswith(":") for p in world.prompts)
        ids = world.tokenizer(world.prompts[3] + world.responses[-1])["input_ids"]
        assert world.tokenizer.unk_token_id not in ids and ids[0] == world.tokenizer.bos_token_id


@WORLDS
def test_probabilities_sum_to_one_random_model(world):
    logps = world.logprobs(_model(world))
    assert logps.shape == (8, len(world.responses))
    torch.testing.assert_close(logps.exp().sum(-1), torch.ones(8), atol=1e-5, rtol=0)


@pytest.mark.slow
@WORLDS
def test_probabilities_sum_to_one_trained_model(world):
    model = _trained(world)
    logps = world.logprobs(model)
    torch.testing.assert_close(logps.exp().sum(-1), torch.ones(8), atol=1e-5, rtol=0)
    kl_to_uniform = math.log(len(world.responses)) + float((logps.exp() * logps).sum(-1).mean())
    assert kl_to_uniform > 0.3  # trained: far from the near-uniform initialisation


@WORLDS
def test_logprobs_equal_chain_rule_by_hand(world):
    """log π(y|x) = Σ_t log softmax(logits_t[allowed])[y_t], one sequence at a time, no batching or masking."""
    model = _model(world, seed=2)
    table = world.logprobs(model)
    allowed = world.allowed_token_ids
    for p, n in [(0, 0), (3, 7), (7, len(world.responses) - 1), (5, 100)]:
        prompt = world.tokenizer(world.prompts[p])["input_ids"]
        response = world.tokenizer(world.responses[n], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt + response])).logits[0].double()
        total = 0.0
        for t, token in enumerate(response):
            restricted = torch.log_softmax(logits[len(prompt) + t - 1, allowed], -1)
            total += float(restricted[allowed.tolist().index(token)])
        assert math.isclose(float(table[p, n]), total, abs_tol=1e-5)


def test_reward_table_matches_formula():
    world = SequenceWorld(seed=4)
    y = torch.tensor(world.responses_words)  # [N, 3]
    content = world.unary[:, torch.arange(3), y].sum(-1) + 0.5 * (
        world.pairwise[:, y[:, 0], y[:, 1]] + world.pairwise[:, y[:, 1], y[:, 2]]
    )
    expected = content / content.std(-1, keepdim=True)
    torch.testing.assert_close(world.reward_table.double(), expected, atol=1e-5, rtol=0)
    # centred tables: mean content 0 per prompt; std 1 (reward_scale); roughly in [-3.5, 3.5]
    torch.testing.assert_close(world.reward_table.mean(-1), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(world.reward_table.std(-1), torch.ones(8), atol=1e-5, rtol=0)
    assert 2.0 < float(world.reward_table.abs().max()) < 4.5


def test_length_bonus_adds_per_word():
    plain, bonus = SequenceWorld(variable_length=True), SequenceWorld(variable_length=True, length_bonus=0.7)
    diff = bonus.reward_table - plain.reward_table
    torch.testing.assert_close(diff, 0.7 * plain.response_lengths.float().expand(8, -1), atol=1e-5, rtol=0)
    assert plain.true_reward("p2 :", " b c .") == float(
        plain.reward_table[2, plain.responses.index(" b c .")]
    )


def test_optimal_policy_equals_brute_force():
    world, beta = FIXED, 0.5
    ref = world.logprobs(_model(world, seed=3))
    fast = world.optimal_policy(beta, ref)
    for p in range(8):
        weights = [math.exp(float(ref[p, n]) + float(world.reward_table[p, n]) / beta) for n in range(512)]
        z = sum(weights)
        for n in (0, 17, 300, 511):
            assert math.isclose(math.exp(float(fast[p, n])), weights[n] / z, rel_tol=1e-5)


def test_evaluate_against_brute_force_and_at_the_optimum():
    world, beta = FIXED, 0.5
    ref = world.logprobs(_model(world, seed=3))
    policy = world.logprobs(_model(world, seed=4))
    opt = world.optimal_policy(beta, ref).float()
    got = world.evaluate(policy, ref, beta)
    p, q, r = policy.double().exp(), opt.double().exp(), world.reward_table.double()
    kl_opt = sum(float((p[i] * (p[i].log() - q[i].log())).sum()) for i in range(8)) / 8
    kl_ref = sum(float((p[i] * (policy[i].double() - ref[i].double())).sum()) for i in range(8)) / 8
    assert math.isclose(got["kl_to_optimal"], kl_opt, rel_tol=1e-4)
    assert math.isclose(got["kl_to_ref"], kl_ref, rel_tol=1e-4)
    assert math.isclose(got["expected_reward"], float((p * r).sum()) / 8, rel_tol=1e-4, abs_tol=1e-6)
    at_opt = world.evaluate(opt, ref, beta)
    assert at_opt["kl_to_optimal"] < 1e-5 and at_opt["implicit_reward_corr"] > 1 - 1e-5
    assert got["implicit_reward_corr"] < 0.5  # an unrelated random model does not look like the reward


def _bt_check(rows, world):
    """Bin pairs by |r1 − r2|; in each bin the rate at which the higher-reward response is chosen must equal
    the mean of σ(|r1 − r2|) within 4.5 binomial standard errors (false alarm < 1e-4 per bin)."""
    chosen = torch.tensor([world.true_reward(r["prompt"], r["chosen"]) for r in rows], dtype=torch.float64)
    rejected = torch.tensor(
        [world.true_reward(r["prompt"], r["rejected"]) for r in rows], dtype=torch.float64
    )
    gap, higher_chosen = (chosen - rejected).abs(), (chosen > rejected).double()
    edges = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 100.0], dtype=torch.float64)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (gap >= lo) & (gap < hi)
        n = int(inside.sum())
        assert n > 300
        expected = torch.sigmoid(gap[inside]).mean()
        se = math.sqrt(float(expected * (1 - expected)) / n)
        assert abs(float(higher_chosen[inside].mean() - expected)) < 4.5 * se, (lo, hi, n)


def test_bradley_terry_labels_match_sigmoid_of_reward_gap():
    _bt_check(FIXED.preference_pairs(None, 30000, seed=11), FIXED)


def test_deterministic_labels_and_distinct_pairs():
    rows = VARIABLE.preference_pairs(None, 2000, seed=1, deterministic=True)
    for r in rows:
        assert r["chosen"] != r["rejected"]
        assert VARIABLE.true_reward(r["prompt"], r["chosen"]) >= VARIABLE.true_reward(
            r["prompt"], r["rejected"]
        )


def test_pairs_follow_the_policy_without_repeats():
    """π(·|x) = (0.5, 0.3, 0.2) on three responses: unordered pairs drawn as y1 ~ π, y2 ~ π(·|y2 ≠ y1)."""
    probs = torch.full((8, 512), 1e-30, dtype=torch.float64)
    probs[:, :3] = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    table = (probs / probs.sum(-1, keepdim=True)).log().float()
    rows = FIXED.preference_pairs(table, 8000, seed=2)
    names = FIXED.responses[:3]
    expected = {  # P({a, b}) = π_a π_b / (1 − π_a) + π_b π_a / (1 − π_b)
        frozenset(names[:2]): 0.5 * 0.3 / 0.5 + 0.3 * 0.5 / 0.7,
        frozenset(names[::2]): 0.5 * 0.2 / 0.5 + 0.2 * 0.5 / 0.8,
        frozenset(names[1:]): 0.3 * 0.2 / 0.7 + 0.2 * 0.3 / 0.8,
    }
    for pair, p in expected.items():
        freq = sum(frozenset((r["chosen"], r["rejected"])) == pair for r in rows) / len(rows)
        assert abs(freq - p) < 4.5 * math.sqrt(p * (1 - p) / len(rows))
    per_prompt = torch.tensor(
        [sum(r["prompt"] == x for r in rows) for x in FIXED.prompts], dtype=torch.float64
    )
    assert ((per_prompt / 8000 - 1 / 8).abs() < 4.5 * math.sqrt(1 / 8 * 7 / 8 / 8000)).all()  # x uniform


def test_pairs_are_seeded_and_datasets_agree():
    a, b = FIXED.preference_pairs(None, 50, seed=3), FIXED.preference_pairs(None, 50, seed=3)
    assert a == b and a != FIXED.preference_pairs(None, 50, seed=4)
    ds = FIXED.preference_dataset(None, 50, seed=3)
    assert ds.column_names == ["prompt", "chosen", "rejected"] and ds.to_list() == a
    kto = FIXED.kto_dataset(None, 50, seed=3)
    assert len(kto) == 100 and kto.column_names == ["prompt", "completion", "label"]
    assert kto[0] == {"prompt": a[0]["prompt"], "completion": a[0]["chosen"], "label": True}
    assert kto[1] == {"prompt": a[0]["prompt"], "completion": a[0]["rejected"], "label": False}


def test_sft_rows_follow_the_demonstrator():
    rows = FIXED.sft_rows(16000, seed=0)
    assert [r["prompt"] for r in rows[:9]] == FIXED.prompts + FIXED.prompts[:1]
    first_word = (
        torch.tensor(
            [
                [
                    sum(r["prompt"] == x and r["completion"].split()[0] == w for r in rows)
                    for w in FIXED.alphabet
                ]
                for x in FIXED.prompts
            ],
            dtype=torch.float64,
        )
        / 2000
    )
    expected = torch.softmax(FIXED.demo_logits[:, 0].double(), -1)  # the demonstrator's first-word marginal
    assert ((first_word - expected).abs() < 4.5 * (expected * (1 - expected) / 2000).sqrt() + 1e-9).all()


@WORLDS
def test_world_table_equals_data_pipeline_logps(world):
    """Rows → dpo_teach.data → concatenated_forward give the same log π as the enumeration (EOS/stop handling)."""
    model = _model(world, seed=5)
    table = world.logprobs(model)
    rows = world.preference_pairs(None, 64, seed=6)
    data = tokenize_preference(rows, world.tokenizer)
    batch = PreferenceCollator(world.tokenizer.pad_token_id, world.allowed_token_ids)(data.examples)
    with torch.no_grad():
        out = concatenated_forward(model, batch, allowed_token_ids=world.allowed_token_ids)
    for i, r in enumerate(rows):
        p = world.prompt_index(r["prompt"])
        assert math.isclose(
            float(out.chosen_logps[i]), float(table[p, world.responses.index(r["chosen"])]), abs_tol=1e-5
        )
        assert math.isclose(
            float(out.rejected_logps[i]), float(table[p, world.responses.index(r["rejected"])]), abs_tol=1e-5
        )


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"alphabet_size": 1}, ValueError, "alphabet_size"),
        ({"alphabet_size": 27}, ValueError, "alphabet_size"),
        ({"length": 0}, ValueError, "length"),
        ({"length": 6}, ValueError, "enumerate"),
        ({"n_prompts": 2.5}, TypeError, "n_prompts"),
        ({"reward_scale": 0.0}, ValueError, "reward_scale"),
        ({"length_bonus": "big"}, TypeError, "length_bonus"),
        ({"seed": "0"}, TypeError, "seed"),
    ],
)
def test_bad_world_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        SequenceWorld(**kwargs)


def test_unknown_prompt_or_response():
    with pytest.raises(ValueError, match="not a response"):
        FIXED.true_reward("p0 :", " a b z")
    with pytest.raises(ValueError, match="not one of this world's prompts"):
        FIXED.true_reward("q0 :", " a b c")


def test_bad_tables_and_policies():
    with pytest.raises(ValueError, match=r"shape \[8, 512\]"):
        FIXED.evaluate(FIXED.demonstrator_logps, torch.zeros(8, 10), 0.5)
    with pytest.raises(ValueError, match="not normalised"):
        FIXED.optimal_policy(0.5, torch.zeros(8, 512))
    with pytest.raises(TypeError, match="policy must be"):
        FIXED.preference_pairs("pi_ref", 10)
    with pytest.raises(ValueError, match="n=0"):
        FIXED.preference_pairs(None, 0)
    with pytest.raises(ValueError, match="beta"):
        FIXED.optimal_policy(-1.0, FIXED.demonstrator_logps)


def test_evaluate_accepts_minus_inf_tables():
    """The variable-length world gives the empty response probability 0: evaluate(None, ref, β) works on it, the
    correlation leaves those entries out (1 at π*), and the KLs agree with a brute-force sum over the rest."""
    world = SequenceWorld(n_prompts=2, length=2, alphabet_size=3, seed=0, variable_length=True)
    ref = world.demonstrator_logps
    assert bool(torch.isinf(ref).any())
    beta = 0.5
    star = world.optimal_policy(beta, ref)
    at_star = world.evaluate(star, ref, beta)
    assert at_star["implicit_reward_corr"] == pytest.approx(1.0, abs=1e-9)
    assert at_star["kl_to_optimal"] == pytest.approx(0.0, abs=1e-6)
    policy = torch.log_softmax(
        ref + 0.3 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(0)), -1
    )
    got = world.evaluate(policy, ref, beta)
    finite = torch.isfinite(ref)
    kl = [sum(math.exp(p) * (p - q) for p, q, f in zip(pr.tolist(), qr.tolist(), fr.tolist(), strict=True) if f)
          for pr, qr, fr in zip(policy, ref, finite, strict=True)]  # fmt: skip
    assert got["kl_to_ref"] == pytest.approx(sum(kl) / len(kl), rel=1e-5)
    a, b = [], []  # the correlation by hand: centre per prompt over the finite entries, then pool
    for x in range(world.n_prompts):
        keep = finite[x]
        imp, r = beta * (policy[x] - ref[x])[keep].double(), world.reward_table[x][keep].double()
        a.append(imp - imp.mean())
        b.append(r - r.mean())
    a, b = torch.cat(a), torch.cat(b)
    expected = float((a * b).sum() / ((a * a).sum() * (b * b).sum()).sqrt())
    assert got["implicit_reward_corr"] == pytest.approx(expected, rel=1e-9)
    assert math.isnan(world.evaluate(None, ref, beta)["implicit_reward_corr"])  # r̂ ≡ 0: undefined, no error
