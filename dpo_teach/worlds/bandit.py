"""The bandit world of Part I: X prompts, K named responses, a reference policy and a true reward - a table.

Everything the derivation chapters talk about is a small tensor here: π_ref is ``ref_logps`` ``[X, K]``,
the true reward r(x, y) is ``rewards`` ``[X, K]``, the optimum π*_β is one call (:meth:`optimal_policy`).
Shapes are always ``[X, K]``, also for one prompt (then ``world.ref_logps[0]`` is the distribution), so the
same code runs on one prompt or many; the tables are float64 so that exact comparisons (1e-6) are meaningful.
Comparisons are sampled from a policy and labelled by Bradley–Terry with the true reward,
P(y1 ≻ y2 | x) = σ(r(x, y1) − r(x, y2)), so the DPO paper's assumptions hold exactly.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from datasets import Dataset

from dpo_teach import theory
from dpo_teach._validate import check_finite, check_normalised, check_tensor, is_int
from dpo_teach.rows import unpair

# Neutral names: the rewards are random, so no name should suggest a good or a bad answer.
RESPONSE_NAMES = tuple(
    "apple banana cherry date elderberry fig grape kiwi lemon mango nectarine orange papaya quince raspberry "
    "strawberry".split()
)


class Comparisons(NamedTuple):
    """n sampled comparisons: ``prompt``, ``winner``, ``loser`` are long tensors ``[n]`` of indices."""

    prompt: torch.Tensor
    winner: torch.Tensor
    loser: torch.Tensor


class BanditWorld:
    """X prompts × K responses with a reference policy π_ref and a true reward r, all explicit tensors.

    Args:
        n_responses: K ≥ 2. The first 16 get readable names (``RESPONSE_NAMES``), later ones ``"response 16"``, ...
        n_prompts: X ≥ 1. Prompts are ``"prompt 0:"``, ...; a completion is ``" " + name`` (prompt + completion is the text).
        seed: draws π_ref = softmax(N(0, 1) logits) and r ~ N(0, reward_scale²) unless given explicitly.
        rewards, ref_logps: optional ``[X, K]`` tensors (or ``[K]`` for one prompt) to set the world by hand;
            ``ref_logps`` are normalised over responses (log_softmax) so any logits work.
        reward_scale: the standard deviation of the random rewards.
    """

    allowed_token_ids = None  # a table, not a language model: no tokens

    def __init__(
        self, n_responses=6, n_prompts=1, seed=0, *, rewards=None, ref_logps=None, reward_scale=1.0
    ) -> None:
        for name, value, low in (("n_responses", n_responses, 2), ("n_prompts", n_prompts, 1)):
            if not is_int(value):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}.")
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}.")
        if not isinstance(reward_scale, (int, float)) or not reward_scale > 0:
            raise ValueError(f"reward_scale must be a number > 0, got {reward_scale!r}.")
        gen = torch.Generator().manual_seed(seed)
        shape = (n_prompts, n_responses)
        ref_logits = torch.randn(shape, generator=gen, dtype=torch.float64)
        random_rewards = reward_scale * torch.randn(shape, generator=gen, dtype=torch.float64)
        self.ref_logps = torch.log_softmax(self._table("ref_logps", ref_logps, shape, ref_logits), dim=-1)
        self.rewards = self._table("rewards", rewards, shape, random_rewards)
        self.seed = seed
        self.responses = [
            RESPONSE_NAMES[k] if k < len(RESPONSE_NAMES) else f"response {k}" for k in range(n_responses)
        ]
        self.prompts = [f"prompt {x}:" for x in range(n_prompts)]

    @staticmethod
    def _table(name, value, shape, default) -> torch.Tensor:
        if value is None:
            return default
        check_finite(name, check_tensor(name, value))
        value = value.to(torch.float64)
        if value.dim() == 1 and shape[0] == 1:
            value = value.unsqueeze(0)
        if tuple(value.shape) != shape:
            raise ValueError(
                f"{name} must have shape [n_prompts, n_responses] = {list(shape)}, got {list(value.shape)}."
            )
        return value.clone()

    @property
    def n_prompts(self) -> int:
        return len(self.prompts)

    @property
    def n_responses(self) -> int:
        return len(self.responses)

    def completion(self, k: int) -> str:
        """The completion string of response ``k``: a space, then its name."""
        return " " + self.responses[k]

    def true_reward(self, prompt: str, response: str) -> float:
        """r(x, y) for a prompt string and a response name (or completion string with its leading space)."""
        if prompt not in self.prompts:
            raise ValueError(f"unknown prompt {prompt!r}; this world's prompts are {self.prompts}.")
        if response.strip() not in self.responses:
            raise ValueError(f"unknown response {response!r}; this world's responses are {self.responses}.")
        return float(self.rewards[self.prompts.index(prompt), self.responses.index(response.strip())])

    def optimal_policy(self, beta: float) -> torch.Tensor:
        """log π*_β ``[X, K]`` = log π_ref + r/β − log Z (:func:`dpo_teach.theory.optimal_policy`)."""
        return theory.optimal_policy(self.ref_logps, self.rewards, beta)

    def _policy(self, policy_logps) -> torch.Tensor:
        if policy_logps is None:
            return self.ref_logps
        check_tensor("policy_logps", policy_logps)
        if policy_logps.dim() == 1 and self.n_prompts == 1:
            policy_logps = policy_logps.unsqueeze(0)
        if tuple(policy_logps.shape) != tuple(self.rewards.shape):
            raise ValueError(
                f"policy_logps must have shape {list(self.rewards.shape)}, got {list(policy_logps.shape)}."
            )
        return check_normalised("policy_logps", policy_logps.detach().double())

    def sample_comparisons(
        self, n: int, seed: int = 0, policy_logps=None, deterministic=False
    ) -> Comparisons:
        """n comparisons: x uniform over prompts, y1 ≠ y2 drawn from ``policy_logps`` (default π_ref).

        y1 ~ π(·|x), then y2 ~ π(·|x) conditioned on y2 ≠ y1. The winner is y1 with probability
        σ(r(x, y1) − r(x, y2)) (Bradley–Terry); ``deterministic=True`` makes the higher-reward response win
        (ties go to y1). Reproducible for a ``seed``.
        """
        if not is_int(n) or n < 1:
            raise ValueError(f"n must be a positive int (the number of comparisons), got {n!r}.")
        probs = self._policy(policy_logps).exp()
        gen = torch.Generator().manual_seed(seed)
        x = torch.randint(self.n_prompts, (n,), generator=gen)
        y1 = torch.multinomial(probs[x], 1, generator=gen).squeeze(-1)
        others = probs[x].scatter(-1, y1[:, None], 0.0)
        if bool((others.sum(-1) <= 0).any()):
            raise ValueError(
                "the policy puts all its mass on one response, so no pair of distinct responses exists."
            )
        y2 = torch.multinomial(others, 1, generator=gen).squeeze(-1)
        r1, r2 = self.rewards[x, y1], self.rewards[x, y2]
        if deterministic:
            first_wins = r1 >= r2
        else:
            first_wins = torch.rand(n, generator=gen, dtype=torch.float64) < theory.bradley_terry_prob(r1, r2)
        return Comparisons(x, torch.where(first_wins, y1, y2), torch.where(first_wins, y2, y1))

    def preference_pairs(
        self, policy=None, n: int | None = None, seed=0, deterministic=False, *, policy_logps=None
    ) -> list[dict]:
        """:meth:`sample_comparisons` as TRL rows ``{"prompt", "chosen", "rejected"}`` (strings), in the order of
        the :class:`~dpo_teach.worlds.base.World` contract: ``policy`` a ``[X, K]`` table of log-probs (None or
        ``policy_logps=``: π_ref), ``n`` (default 1000), ``seed``, ``deterministic``.

        The bandit's older order ``preference_pairs(n, seed=0, policy_logps=None, deterministic=False)`` — an
        int first — still works, so chapters written against it run unchanged.
        """
        if is_int(policy):  # the older order (n, seed, policy_logps, deterministic): shift the arguments back
            logps = seed if isinstance(seed, torch.Tensor) else policy_logps
            policy, n, seed = logps, policy, (seed if n is None else n)
        elif policy is None:
            policy = policy_logps
        c = self.sample_comparisons(1000 if n is None else n, seed, policy, deterministic)
        return [
            {"prompt": self.prompts[x], "chosen": self.completion(w), "rejected": self.completion(l)}
            for x, w, l in zip(c.prompt.tolist(), c.winner.tolist(), c.loser.tolist(), strict=True)
        ]

    def preference_dataset(
        self, policy=None, n=None, seed=0, deterministic=False, *, policy_logps=None
    ) -> Dataset:
        """:meth:`preference_pairs` (same arguments) as a ``datasets.Dataset``: columns prompt / chosen / rejected."""
        return Dataset.from_list(
            self.preference_pairs(policy, n, seed, deterministic, policy_logps=policy_logps)
        )

    def kto_dataset(self, policy=None, n=None, seed=0, deterministic=False, *, policy_logps=None) -> Dataset:
        """Unpaired KTO rows (prompt / completion / label) of the same comparisons as :meth:`preference_dataset`
        (same arguments): each winner labelled True, then its loser labelled False (2n rows)."""
        pairs = self.preference_pairs(policy, n, seed, deterministic, policy_logps=policy_logps)
        return Dataset.from_list(unpair(pairs))

    def sft_rows(self, n: int, seed: int = 0) -> list[dict]:
        """n demonstrations ``{"prompt", "completion"}`` with x uniform and y ~ π_ref(·|x)."""
        if not is_int(n) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}.")
        gen = torch.Generator().manual_seed(seed)
        x = torch.randint(self.n_prompts, (n,), generator=gen)
        y = torch.multinomial(self.ref_logps.exp()[x], 1, generator=gen).squeeze(-1)
        return [
            {"prompt": self.prompts[i], "completion": self.completion(k)}
            for i, k in zip(x.tolist(), y.tolist(), strict=True)
        ]

    def evaluate(self, policy_logps, ref_logps=None, beta: float | None = None) -> dict:
        """Exact metrics of a tabular policy ``[X, K]``, averaged over prompts: ``kl_to_optimal`` KL(π‖π*_β),
        ``kl_to_ref`` KL(π‖π_ref), ``expected_reward`` E_π[r] and ``objective`` E_π[r] − β KL(π‖π_ref).

        ``evaluate(policy, ref, beta)`` as every world (``ref``: a ``[X, K]`` reference table, None for the
        world's π_ref, which π*_β is then taken against too); the two-argument ``evaluate(policy, beta)``
        measures against the world's π_ref.
        """
        if beta is None:  # evaluate(policy, beta)
            ref_logps, beta = None, ref_logps
        policy = self._policy(policy_logps)
        if ref_logps is None:
            ref, optimal = self.ref_logps, self.optimal_policy(beta)
        else:
            ref = self._policy(ref_logps)
            optimal = theory.optimal_policy(ref, self.rewards, beta)
        return {
            "kl_to_optimal": float(theory.kl_divergence(policy, optimal).mean()),
            "kl_to_ref": float(theory.kl_divergence(policy, ref).mean()),
            "expected_reward": float(theory.expected_reward(policy, self.rewards).mean()),
            "objective": float(theory.rlhf_objective(policy, ref, self.rewards, beta).mean()),
        }

    def __repr__(self) -> str:
        return f"BanditWorld(n_responses={self.n_responses}, n_prompts={self.n_prompts}, seed={self.seed})"
