"""ReviewsWorld: the grammar, the VADER reward, Bradley–Terry labels, and the reference model's samples."""

import math

import pytest
import torch
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from dpo_teach.cache import reference_model
from dpo_teach.models import tiny_gpt2
from dpo_teach.worlds import ReviewsWorld, is_grammatical
from dpo_teach.worlds.reviews import ADJECTIVES, NEGATIVE, POSITIVE

WORLD = ReviewsWorld()


def test_demonstrations_are_grammatical_and_of_mixed_sentiment():
    rows = WORLD.sft_rows(2000, seed=0)
    assert all(is_grammatical(r["prompt"] + r["completion"]) for r in rows)
    assert [r["prompt"] for r in rows[:9]] == WORLD.prompts + WORLD.prompts[:1]
    assert {w for r in rows for w in (r["prompt"] + r["completion"]).split()} == set(WORLD.vocabulary)
    rewards = torch.tensor([WORLD.true_reward(r["prompt"], r["completion"]) for r in rows])
    assert (
        0.25 < float((rewards > 0.15).double().mean()) < 0.75
        and float((rewards < -0.15).double().mean()) > 0.2
    )
    assert float(rewards.max()) > 2.0 and float(rewards.min()) < -2.0
    no_adverb = sum(len(r["completion"].split()) == 8 for r in rows) / 2000  # both adverbs absent: (1/6)^2
    assert abs(no_adverb - 1 / 36) < 4.5 * math.sqrt(1 / 36 * 35 / 36 / 2000)


@pytest.mark.parametrize(
    "text",
    [
        "review : the plot was very dull and the cast felt great .",
        "review : the music seemed good but the ending was not messy .",
        "  review :  the film felt   simple and the story was quite long .",
    ],
)
def test_grammatical_sentences(text):
    assert is_grammatical(text)


@pytest.mark.parametrize(
    "text",
    [
        "review : the plot was very dull and the cast felt great",  # no full stop
        "review : the plot was very very dull and the cast felt great .",  # two adverbs
        "review : the plot was dull and the cast felt .",  # missing adjective
        "review : the plot was dull and the acting cast felt great .",  # two nouns
        "review : the plot was dull and the cast felt amazing .",  # not in the vocabulary
        "the plot was dull and the cast felt great .",  # not a completion of a prompt
        "review : the plot was dull and the cast felt great . <eos>",
    ],
)
def test_ungrammatical_sentences(text):
    assert not is_grammatical(text)


def test_is_grammatical_bad_type():
    with pytest.raises(TypeError, match="text must be a str"):
        is_grammatical(["review", ":"])


def test_reward_is_scaled_vader_of_the_sentence():
    analyzer = SentimentIntensityAnalyzer()
    for r in WORLD.sft_rows(50, seed=3):
        sentence = (r["prompt"] + r["completion"]).removeprefix("review : ")
        expected = 3.0 * analyzer.polarity_scores(sentence)["compound"]
        assert math.isclose(WORLD.true_reward(r["prompt"], r["completion"]), expected, abs_tol=1e-12)
    assert (
        ReviewsWorld(reward_scale=1.0).true_reward("review : the film", " was good and the cast was fun .")
        < 1.0
    )


def test_reward_orders_positive_above_negative():
    positive = [
        f" was very {p} and the cast felt {q} ." for p, q in zip(POSITIVE, POSITIVE[1:], strict=False)
    ]
    negative = [
        f" was very {n} and the cast felt {m} ." for n, m in zip(NEGATIVE, NEGATIVE[1:], strict=False)
    ]
    worst_positive = min(WORLD.true_reward("review : the film", c) for c in positive)
    best_negative = max(WORLD.true_reward("review : the film", c) for c in negative)
    assert worst_positive > 1.5 and best_negative < -1.5
    # VADER's rules: negation flips, intensifiers strengthen, "but" weights the second clause
    r = lambda c: WORLD.true_reward("review : the plot", c)  # noqa: E731
    assert r(" was not good and the cast felt simple .") < 0 < r(" was good and the cast felt simple .")
    assert r(" was very good and the cast felt simple .") > r(" was good and the cast felt simple .")
    assert r(" was bad but the cast felt great .") > r(" was great but the cast felt bad .")


def test_bradley_terry_labels_match_sigmoid_of_reward_gap():
    rows = WORLD.preference_pairs(None, 12000, seed=1)
    chosen = torch.tensor([WORLD.true_reward(r["prompt"], r["chosen"]) for r in rows], dtype=torch.float64)
    rejected = torch.tensor(
        [WORLD.true_reward(r["prompt"], r["rejected"]) for r in rows], dtype=torch.float64
    )
    gap, higher_chosen = (chosen - rejected).abs(), (chosen > rejected).double()
    for lo, hi in [(0.05, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 7.0)]:
        inside = (gap >= lo) & (gap < hi)
        n = int(inside.sum())
        expected = torch.sigmoid(gap[inside]).mean()
        se = math.sqrt(float(expected * (1 - expected)) / n)
        assert n > 500 and abs(float(higher_chosen[inside].mean() - expected)) < 4.5 * se, (lo, hi, n)
    deterministic = WORLD.preference_pairs(None, 500, seed=1, deterministic=True)
    assert all(
        WORLD.true_reward(r["prompt"], r["chosen"]) >= WORLD.true_reward(r["prompt"], r["rejected"])
        for r in deterministic
    )


def test_untrained_model_is_ungrammatical_and_pairs_from_a_model():
    model = tiny_gpt2(WORLD.tokenizer, seed=0, **WORLD.model_config)
    samples = WORLD.samples(model, 2, seed=0)
    assert len(samples) == 16 and not any(s["grammatical"] for s in samples)
    rows = WORLD.preference_pairs(model, 8, seed=0)
    assert [set(r) for r in rows] == [{"prompt", "chosen", "rejected"}] * 8
    assert rows == WORLD.preference_pairs(model, 8, seed=0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"reward_scale": 0}, ValueError, "reward_scale"),
        ({"max_new_tokens": 5}, ValueError, "max_new_tokens"),
        ({"seed": 1.5}, TypeError, "seed"),
    ],
)
def test_bad_world_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ReviewsWorld(**kwargs)


def test_bad_policy_type():
    with pytest.raises(TypeError, match="policy must be a model or None"):
        WORLD.preference_pairs(torch.zeros(8, 3), 4)


@pytest.mark.slow
def test_reference_model_writes_grammatical_reviews_of_both_sentiments():
    model, _ = reference_model(WORLD, device="cpu", progress=False)
    rows = WORLD.generate(model, [i % 8 for i in range(400)], seed=0)
    words = {w for r in rows for w in (r["prompt"] + r["completion"]).split()}
    assert words <= set(WORLD.vocabulary)
    assert sum(r["grammatical"] for r in rows) / 400 >= 0.98 and all(r["finished"] for r in rows)
    adjectives = [w for r in rows for w in r["completion"].split() if w in ADJECTIVES]
    assert len(set(adjectives)) == len(ADJECTIVES)  # π_ref keeps the grammar's variety
    rewards = torch.tensor([r["reward"] for r in rows])
    assert float((rewards > 0.15).double().mean()) > 0.25 and float((rewards < -0.15).double().mean()) > 0.2
    metrics = WORLD.evaluate(model, model, n=64, seed=1)
    assert metrics["kl_to_ref"] == 0.0 and metrics["grammatical"] >= 0.9
