"""The interface every world shares: prompts, a hidden true reward, demonstrations, and preference data.

A *world* is where the truth is known. It owns

* ``prompts`` (strings ending on a word boundary; completions start with a space, so ``prompt + completion``
  is the full text), a ``tokenizer`` and ``allowed_token_ids`` (the world's alphabet, or None; see *the world's policy* in :mod:`dpo_teach.logprobs`);
* ``true_reward(prompt, response)`` — the reward r(x, y) that preferences are generated from;
* ``sft_rows(n, seed)`` — demonstrations (``prompt``/``completion`` rows) to train π_ref by SFT;
* ``preference_pairs(policy, n, seed)`` — two responses sampled from ``policy`` for a prompt drawn uniformly,
  labelled by the Bradley–Terry model with the true reward,

      P(y1 ≻ y2 | x) = σ(r(x, y1) − r(x, y2))            (DPO paper, Eq. 1),

  or, with ``deterministic=True``, by the larger reward (a fair coin on exact ties). Rows are in TRL's format
  (``prompt``, ``chosen``, ``rejected``); :meth:`World.kto_dataset` unpairs the *same* comparisons into KTO's
  ``prompt``/``completion``/``label`` rows, so DPO and KTO can be compared on identical feedback;
* ``evaluate(policy, ref, beta)`` — the policy measured against the truth: KL to the reference, expected reward,
  and (with β) the objective; exact where the world can enumerate its responses (the bandit's tables, the
  sequences world), a Monte Carlo estimate otherwise (reviews). :class:`~dpo_teach.worlds.BanditWorld` keeps its
  tables rather than a tokenizer, but takes ``preference_pairs``, ``kto_dataset`` and ``evaluate`` in this
  order too;
* ``config()`` (what the reference model depends on, hashed by :mod:`dpo_teach.cache`), ``model_config`` (the
  :func:`~dpo_teach.models.tiny_gpt2` size) and ``sft_config`` (the :func:`~dpo_teach.trainers.sft.train_sft`
  settings that turn the demonstrations into π_ref).

Every sampler takes ``seed`` and draws from its own ``torch.Generator``, so the global RNG is untouched.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import datasets
import torch

from dpo_teach._validate import is_int
from dpo_teach.logprobs import forward_logps
from dpo_teach.rows import unpair


def check_count(name: str, value, minimum: int = 1) -> int:
    """Return ``value`` if it is an int ≥ ``minimum``; else raise naming ``name``."""
    if not is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}.")
    if value < minimum:
        raise ValueError(f"{name}={value} must be ≥ {minimum}.")
    return value


def check_seed(seed) -> torch.Generator:
    """A fresh CPU ``torch.Generator`` seeded with ``seed`` (an int)."""
    if not is_int(seed):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}; pass e.g. seed=0.")
    return torch.Generator().manual_seed(seed)


class World(ABC):
    """Abstract base of the worlds; subclasses fill in the abstract methods and attributes."""

    name: str
    seed: int
    prompts: list[str]
    tokenizer: object
    allowed_token_ids: torch.Tensor | None
    model_config: dict
    sft_config: dict

    @abstractmethod
    def config(self) -> dict:
        """A JSON-serialisable description of everything that defines the world (for cache keys)."""

    @abstractmethod
    def evaluate(self, policy, ref, beta) -> dict:
        """Metrics of ``policy`` against ``ref`` (its KL to it, E[r], ...) at ``beta`` (module docstring)."""

    @abstractmethod
    def true_reward(self, prompt: str, response: str) -> float:
        """The hidden reward r(x, y) of ``response`` (a completion string) to ``prompt``."""

    @abstractmethod
    def sft_rows(self, n: int, seed: int = 0) -> list[dict]:
        """``n`` demonstrations ``{"prompt", "completion"}`` from the world's demonstration distribution."""

    @abstractmethod
    def _sample_pairs(self, policy, prompt_index: torch.Tensor, generator: torch.Generator):
        """Two different-if-possible responses per prompt index, sampled from ``policy``.

        Returns ``(first, second, r_first, r_second)``: two lists of completion strings and two float64
        tensors of their true rewards.
        """

    def preference_pairs(
        self, policy=None, n: int = 1000, seed: int = 0, deterministic: bool = False
    ) -> list[dict]:
        """``n`` rows ``{"prompt", "chosen", "rejected"}``: x uniform over prompts, y1, y2 ~ ``policy``(·|x).

        ``policy``: a model, or None for the world's demonstration distribution (SequenceWorld also takes a
        ``[P, N]`` table of log-probs). Labels: Bradley–Terry, chosen = y1 with probability σ(r1 − r2);
        ``deterministic=True``: chosen = the higher-reward response.
        """
        check_count("n", n)
        generator = check_seed(seed)
        prompt_index = torch.randint(len(self.prompts), (n,), generator=generator)
        first, second, r1, r2 = self._sample_pairs(policy, prompt_index, generator)
        coin = torch.rand(n, generator=generator, dtype=torch.float64)
        if deterministic:
            first_wins = (r1 > r2) | ((r1 == r2) & (coin < 0.5))
        else:
            first_wins = coin < torch.sigmoid(r1 - r2)
        rows = []
        for i, p in enumerate(prompt_index.tolist()):
            win, lose = (first[i], second[i]) if first_wins[i] else (second[i], first[i])
            rows.append({"prompt": self.prompts[p], "chosen": win, "rejected": lose})
        return rows

    def preference_dataset(self, policy=None, n: int = 1000, seed: int = 0, deterministic: bool = False):
        """:meth:`preference_pairs` as a ``datasets.Dataset`` with columns ``prompt``, ``chosen``, ``rejected``."""
        return datasets.Dataset.from_list(self.preference_pairs(policy, n, seed, deterministic))

    def kto_dataset(self, policy=None, n: int = 1000, seed: int = 0, deterministic: bool = False):
        """The same ``n`` comparisons as :meth:`preference_dataset` (same arguments), unpaired: ``2n`` rows
        ``{"prompt", "completion", "label"}``, label True for the chosen and False for the rejected response."""
        return datasets.Dataset.from_list(unpair(self.preference_pairs(policy, n, seed, deterministic)))

    def prompt_index(self, prompt: str) -> int:
        """The position of ``prompt`` in ``prompts`` (ValueError naming the prompts if it is not one)."""
        try:
            return self.prompts.index(prompt)
        except ValueError:
            raise ValueError(
                f"prompt {prompt!r} is not one of this world's prompts {self.prompts}."
            ) from None


@torch.no_grad()
def score_batch(model, batch: dict, allowed_token_ids=None, batch_size: int = 4096) -> torch.Tensor:
    """log π(y | x) under ``model`` for every row of a :func:`dpo_teach.collate.pad_sequences` batch: float32
    ``[B]`` on the CPU.

    Rows are scored in chunks of ``batch_size`` by :func:`dpo_teach.logprobs.forward_logps`, without gradients
    (the model's train/eval mode is left as it is; the book's models have dropout off).
    """
    out = []
    for start in range(0, batch["input_ids"].shape[0], batch_size):
        chunk = {k: v[start : start + batch_size] for k, v in batch.items()}
        logps = forward_logps(
            model,
            chunk["input_ids"],
            chunk["attention_mask"],
            chunk["labels"],
            allowed_token_ids=allowed_token_ids,
        )
        out.append(logps.float().cpu())
    return torch.cat(out)
