"""The reviews world: the DPO paper's IMDb sentiment experiment in miniature.

Prompts are the start of a movie review, ``"review : the plot"``; a completion finishes the sentence from a
small grammar::

    review : the <noun> | <verb> [<adverb>] <adjective> <and|but> the <noun> <verb> [<adverb>] <adjective> .

(``|`` marks where the prompt ends.) The true reward is the *sentiment* of the sentence: ``reward_scale`` × the
VADER compound score in [−1, 1] (Hutto & Gilbert, 2014, "VADER: A Parsimonious Rule-based Model for Sentiment
Analysis of Social Media Text"), computed on the sentence after ``"review :"``.

Why VADER: the paper's reward is a real sentiment classifier, not something the authors chose to make DPO look
good. VADER is the closest thing that runs offline in microseconds: a lexicon of ~7,500 words whose valences
were rated by human annotators, plus validated rules for negation ("not good" is negative), intensifiers
("very good" > "good"), and contrast ("…, but …" weights the second clause more). It ships its lexicon inside
the ``vaderSentiment`` package, so nothing is downloaded. An invented word list would make the reward
whatever we wanted it to be; VADER's rules also make the optimum non-trivial (an adverb can help or hurt).

Demonstrations draw every slot uniformly (the adverb is absent one time in six), so their sentiment is
mixed and π_ref (SFT on them) writes positive and negative reviews alike — DPO has something to change.
There is no enumeration here (millions of sentences): metrics are Monte Carlo estimates from samples.
"""

from __future__ import annotations

import functools
import re

import torch
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from dpo_teach._validate import check_positive
from dpo_teach.collate import pad_sequences
from dpo_teach.models import build_word_tokenizer, sample_token_ids
from dpo_teach.worlds.base import World, check_count, check_seed, score_batch

NOUNS = ("film", "plot", "acting", "music", "story", "ending", "cast", "script")
VERBS = ("was", "felt", "seemed")
ADVERBS = ("very", "really", "quite", "somewhat", "not")
POSITIVE = ("good", "great", "wonderful", "brilliant", "beautiful", "fun", "clever", "funny")
NEGATIVE = ("bad", "boring", "awful", "dull", "weak", "terrible", "messy", "poor")
NEUTRAL = ("long", "slow", "simple")
ADJECTIVES = POSITIVE + NEGATIVE + NEUTRAL
CONJUNCTIONS = ("and", "but")
PREFIX = "review :"
_CLAUSE = rf"(?:{'|'.join(VERBS)}) (?:(?:{'|'.join(ADVERBS)}) )?(?:{'|'.join(ADJECTIVES)})"
_SENTENCE = re.compile(
    rf"{PREFIX} the (?:{'|'.join(NOUNS)}) {_CLAUSE} (?:{'|'.join(CONJUNCTIONS)}) the (?:{'|'.join(NOUNS)}) {_CLAUSE} \."
)


@functools.lru_cache(maxsize=1)
def _analyzer() -> SentimentIntensityAnalyzer:
    return SentimentIntensityAnalyzer()


@functools.lru_cache(maxsize=200_000)
def sentiment(sentence: str) -> float:
    """VADER's compound score of ``sentence``, in [−1, 1] (> 0.05 is conventionally positive)."""
    return float(_analyzer().polarity_scores(sentence)["compound"])


def is_grammatical(text: str) -> bool:
    """True if ``text`` (a full review, prompt + completion, e.g. ``"review : the plot was very dull and the
    cast felt great ."``) is a sentence of the grammar; whitespace differences are ignored."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str (prompt + completion), got {type(text).__name__}.")
    return _SENTENCE.fullmatch(" ".join(text.split())) is not None


class ReviewsWorld(World):
    """Review sentences from a grammar, rewarded by their VADER sentiment; see the module docstring."""

    name = "reviews"

    def __init__(self, *, reward_scale: float = 3.0, max_new_tokens: int = 16, seed: int = 0):
        check_count("seed", seed, 0)
        check_count("max_new_tokens", max_new_tokens, 11)
        if (
            isinstance(reward_scale, bool)
            or not isinstance(reward_scale, (int, float))
            or not reward_scale > 0
        ):
            raise ValueError(
                f"reward_scale={reward_scale!r} must be a number > 0 (reward = scale · VADER compound)."
            )
        self.reward_scale, self.max_new_tokens, self.seed = float(reward_scale), max_new_tokens, seed
        self.prompts = [f"{PREFIX} the {noun}" for noun in NOUNS]
        self.vocabulary = ["review", ":", "the", ".", *NOUNS, *VERBS, *ADVERBS, *ADJECTIVES, *CONJUNCTIONS]
        self.tokenizer = build_word_tokenizer(self.vocabulary)
        self.allowed_token_ids = None
        self.model_config = {"n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 24}
        self.sft_config = {"n_rows": 32768, "epochs": 1, "batch_size": 256, "lr": 1e-2, "warmup_steps": 10}
        self._prompt_ids = [self.tokenizer(p)["input_ids"] for p in self.prompts]

    def config(self) -> dict:
        return {
            "world": self.name,
            "reward_scale": self.reward_scale,
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
            "vocabulary": self.vocabulary,
        }

    def true_reward(self, prompt: str, response: str) -> float:
        """``reward_scale`` · VADER compound of the review (prompt + response, without ``"review :"``)."""
        if not isinstance(prompt, str) or not isinstance(response, str):
            raise TypeError("prompt and response must be strings (a prompt of this world and a completion).")
        text = " ".join((prompt + response).split())
        return self.reward_scale * sentiment(text.removeprefix(PREFIX).strip())

    def _grammar_completions(self, n: int, generator: torch.Generator) -> list[str]:
        """``n`` completions with every slot drawn uniformly (the adverb slot includes "no adverb")."""
        slots = (VERBS, (*ADVERBS, ""), ADJECTIVES, CONJUNCTIONS, NOUNS, VERBS, (*ADVERBS, ""), ADJECTIVES)
        u = torch.rand(n, len(slots), generator=generator, dtype=torch.float64)
        out = []
        for row in u.tolist():
            verb, adverb, adjective, conj, noun, verb2, adverb2, adjective2 = (
                options[int(x * len(options))] for x, options in zip(row, slots, strict=True)
            )
            words = (verb, adverb, adjective, conj, "the", noun, verb2, adverb2, adjective2, ".")
            out.append(" " + " ".join(w for w in words if w))
        return out

    def sft_rows(self, n: int, seed: int = 0) -> list[dict]:
        """``n`` demonstrations from the grammar (every slot uniform); row i uses prompt i mod 8."""
        check_count("n", n)
        completions = self._grammar_completions(n, check_seed(seed))
        return [
            {"prompt": self.prompts[i % len(self.prompts)], "completion": c}
            for i, c in enumerate(completions)
        ]

    def generate(self, model, prompt_index, seed: int = 0, temperature: float = 1.0) -> list[dict]:
        """One sampled review per entry of ``prompt_index`` (ints into ``prompts``): rows with ``prompt``,
        ``completion``, ``reward``, ``grammatical`` and ``finished`` (ended with EOS within ``max_new_tokens``).
        Tokens are decoded as they are, special ones included, so a malformed sample is visibly ungrammatical."""
        prompt_index = [int(i) for i in prompt_index]
        ids = sample_token_ids(
            model,
            [self._prompt_ids[i] for i in prompt_index],
            max_new_tokens=self.max_new_tokens,
            eos_token_id=self.tokenizer.eos_token_id,
            temperature=temperature,
            seed=seed,
        )
        rows = []
        for i, new in zip(prompt_index, ids, strict=True):
            finished = bool(new) and new[-1] == self.tokenizer.eos_token_id
            words = self.tokenizer.convert_ids_to_tokens(new[:-1] if finished else new)
            prompt, completion = self.prompts[i], " " + " ".join(words)
            rows.append(
                {
                    "prompt": prompt,
                    "completion": completion,
                    "reward": self.true_reward(prompt, completion),
                    "grammatical": is_grammatical(prompt + completion),
                    "finished": finished,
                    "ids": new,
                }
            )
        return rows

    def samples(self, model, n_per_prompt: int = 1, seed: int = 0, temperature: float = 1.0) -> list[dict]:
        """``n_per_prompt`` reviews for every prompt (for "samples before and after" tables); see :meth:`generate`."""
        check_count("n_per_prompt", n_per_prompt)
        rows = self.generate(
            model, [i for i in range(len(self.prompts)) for _ in range(n_per_prompt)], seed, temperature
        )
        return [{k: r[k] for k in ("prompt", "completion", "reward", "grammatical")} for r in rows]

    def evaluate(self, model, ref_model, beta: float | None = None, *, n: int = 512, seed: int = 0) -> dict:
        """Monte Carlo estimates from ``n`` samples y ~ π_θ (prompts cycled uniformly), with standard errors:

        * ``expected_reward`` ≈ E[r(x, y)] and ``expected_reward_se``;
        * ``kl_to_ref`` ≈ KL(π_θ ‖ π_ref) = E_{y~π_θ}[log π_θ(y|x) − log π_ref(y|x)] (sequence level, full
          vocabulary, EOS included) and ``kl_to_ref_se``;
        * ``grammatical``: the fraction of samples that are sentences of the grammar;
        * with ``beta`` (the World contract's ``evaluate(policy, ref, beta)``): ``objective`` ≈
          E[r] − β KL(π_θ ‖ π_ref), the RLHF objective.
        """
        check_count("n", n)
        rows = self.generate(model, [i % len(self.prompts) for i in range(n)], seed)
        batch = pad_sequences(
            [self._prompt_ids[self.prompt_index(r["prompt"])] for r in rows], [r["ids"] for r in rows], 0
        )
        log_ratio = (score_batch(model, batch) - score_batch(ref_model, batch)).double()
        rewards = torch.tensor([r["reward"] for r in rows], dtype=torch.float64)
        out = {
            "expected_reward": float(rewards.mean()),
            "expected_reward_se": float(rewards.std() / n**0.5) if n > 1 else float("nan"),
            "kl_to_ref": float(log_ratio.mean()),
            "kl_to_ref_se": float(log_ratio.std() / n**0.5) if n > 1 else float("nan"),
            "grammatical": sum(r["grammatical"] for r in rows) / n,
        }
        if beta is not None:
            out["objective"] = out["expected_reward"] - check_positive("beta", beta) * out["kl_to_ref"]
        return out

    def _sample_pairs(self, policy, prompt_index, generator):
        """Two reviews per prompt from ``policy`` (a model; None: the grammar). A second review identical to the
        first is re-drawn (up to 3 times; a pair still identical after that stays, and is labelled by a coin)."""
        n = prompt_index.numel()
        if policy is None:
            first, second = self._grammar_completions(n, generator), self._grammar_completions(n, generator)
        elif isinstance(policy, torch.nn.Module):

            def draw(idx):
                seed = int(torch.randint(2**62, (1,), generator=generator))
                return [r["completion"] for r in self.generate(policy, prompt_index[idx].tolist(), seed)]

            first, second = draw(torch.arange(n)), draw(torch.arange(n))
            for _ in range(3):
                same = [i for i in range(n) if first[i] == second[i]]
                if not same:
                    break
                for i, text in zip(same, draw(torch.tensor(same)), strict=True):
                    second[i] = text
        else:
            raise TypeError(f"policy must be a model or None (the grammar), got {type(policy).__name__}.")
        prompts = [self.prompts[i] for i in prompt_index.tolist()]
        r1 = torch.tensor(
            [self.true_reward(p, y) for p, y in zip(prompts, first, strict=True)], dtype=torch.float64
        )
        r2 = torch.tensor(
            [self.true_reward(p, y) for p, y in zip(prompts, second, strict=True)], dtype=torch.float64
        )
        return first, second, r1, r2
