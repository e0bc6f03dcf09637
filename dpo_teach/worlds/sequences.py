"""The enumerable sequences world: every response of every prompt can be listed, so everything is exact.

Prompts ``"p0 :" … "p7 :"``; a response is ``length`` words from an alphabet of ``alphabet_size`` letters
(``" c a f"``), so a prompt has ``alphabet_size ** length`` responses (8³ = 512 by default). The policy of a
language model in this world is its next-token distribution renormalised over the alphabet (:mod:`dpo_teach.logprobs`), so
the probabilities of the enumerated responses sum to exactly 1 for any model, trained or not.

**Variable length** (``variable_length=True``): a response is 0…L words; a shorter one ends with the stop word
``"."`` (``" c a ."``; the empty response is ``" ."``), a full-length one ends there (``" c a f"``). The
alphabet then includes ``"."``. After L words nothing is scored: the EOS that :mod:`dpo_teach.data` appends to
every completion lies outside the alphabet and is labelled -100 — a forced end that no policy chooses. A separate
stop word (rather than EOS) keeps the forced end unscored without the data pipeline knowing L, and lets the
policy stop even before the first word, which is why the empty response is enumerated. Σ_y π(y|x) = 1 again.

**The hidden reward** (per prompt p, from ``seed``): r(p, y) = s_p [Σ_t u_p[t, y_t] + w Σ_t v_p[y_t, y_{t+1}]]
+ ``length_bonus`` · |y|, with standard-normal tables u (a preferred word per position) and v (pairs of adjacent
words), centred so that a uniformly random response of any length has mean content reward 0, and s_p scaling the
full-length content rewards of prompt p to standard deviation ``reward_scale``: rewards lie in about [−3, 3], so
Bradley–Terry preferences σ(r1 − r2) range from coin flips to near-certain.

**Demonstrations** come from a fixed random *demonstrator*: per prompt and position, a categorical over the
alphabet with standard-normal logits times ``demo_sharpness`` (variable length: first a length uniform on
1…L). It ignores the reward, so π_ref (SFT on it) is far from uniform and far from π*.
"""

from __future__ import annotations

import itertools
import string

import torch

from dpo_teach import theory
from dpo_teach._validate import check_normalised
from dpo_teach.collate import pad_sequences
from dpo_teach.models import build_word_tokenizer
from dpo_teach.worlds.base import World, check_count, score_batch

STOP = "."


class SequenceWorld(World):
    """Fixed- or variable-length word sequences with an exact optimum; see the module docstring."""

    name = "sequences"

    def __init__(
        self,
        n_prompts: int = 8,
        length: int = 3,
        alphabet_size: int = 8,
        *,
        variable_length: bool = False,
        length_bonus: float = 0.0,
        pair_weight: float = 0.5,
        reward_scale: float = 1.0,
        demo_sharpness: float = 1.0,
        seed: int = 0,
    ):
        check_count("n_prompts", n_prompts)
        check_count("length", length)
        check_count("alphabet_size", alphabet_size, 2)
        check_count("seed", seed, 0)
        if alphabet_size > 26:
            raise ValueError(f"alphabet_size={alphabet_size} must be ≤ 26 (the words are the letters a…z).")
        n_responses = (
            sum(alphabet_size**k for k in range(length + 1)) if variable_length else alphabet_size**length
        )
        if n_prompts * n_responses > 200_000:
            raise ValueError(
                f"n_prompts · responses = {n_prompts * n_responses} is too many to enumerate exactly; "
                "lower length or alphabet_size (≤ 200 000 sequences)."
            )
        for name, value in (
            ("length_bonus", length_bonus),
            ("pair_weight", pair_weight),
            ("reward_scale", reward_scale),
            ("demo_sharpness", demo_sharpness),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise TypeError(f"{name} must be a number, got {value!r}.")
        if reward_scale <= 0:
            raise ValueError(f"reward_scale={reward_scale} must be > 0 (the std of the full-length rewards).")
        self.n_prompts, self.length, self.alphabet_size = n_prompts, length, alphabet_size
        self.variable_length, self.length_bonus, self.pair_weight = (
            bool(variable_length),
            float(length_bonus),
            float(pair_weight),
        )
        self.reward_scale, self.demo_sharpness, self.seed = float(reward_scale), float(demo_sharpness), seed
        self.alphabet = list(string.ascii_lowercase[:alphabet_size])
        self.prompts = [f"p{i} :" for i in range(n_prompts)]
        self.tokenizer = build_word_tokenizer(
            [*(p.split()[0] for p in self.prompts), ":", *self.alphabet, STOP]
        )
        words = self.alphabet + ([STOP] if self.variable_length else [])
        self.allowed_token_ids = torch.tensor(self.tokenizer.convert_tokens_to_ids(words), dtype=torch.long)
        lengths = range(length + 1) if self.variable_length else [length]
        self.responses_words = [y for k in lengths for y in itertools.product(range(alphabet_size), repeat=k)]
        self.responses = [self._text(y) for y in self.responses_words]
        self._index = {r: i for i, r in enumerate(self.responses)}
        self.response_lengths = torch.tensor([len(y) for y in self.responses_words])
        generator = torch.Generator().manual_seed(seed)
        self.unary = torch.randn(n_prompts, length, alphabet_size, generator=generator, dtype=torch.float64)
        self.pairwise = torch.randn(
            n_prompts, alphabet_size, alphabet_size, generator=generator, dtype=torch.float64
        )
        self.demo_logits = demo_sharpness * torch.randn(n_prompts, length, alphabet_size, generator=generator)
        self.unary -= self.unary.mean(-1, keepdim=True)
        self.pairwise -= self.pairwise.mean((-2, -1), keepdim=True)
        self.reward_table = self._rewards().float()
        self.demonstrator_logps = self._demonstrator_logps()
        self.model_config = {"n_layer": 2, "n_embd": 64, "n_head": 4, "n_positions": 4 + length + 2}
        self.sft_config = {"n_rows": 16384, "epochs": 1, "batch_size": 64, "lr": 2e-3, "warmup_steps": 20}
        self._batch = None

    def config(self) -> dict:
        keys = (
            "n_prompts",
            "length",
            "alphabet_size",
            "variable_length",
            "length_bonus",
            "pair_weight",
            "reward_scale",
            "demo_sharpness",
            "seed",
        )
        return {"world": self.name, **{k: getattr(self, k) for k in keys}}

    def _text(self, words: tuple[int, ...]) -> str:
        tokens = [self.alphabet[w] for w in words]
        if self.variable_length and len(words) < self.length:
            tokens.append(STOP)
        return " " + " ".join(tokens)

    def _rewards(self) -> torch.Tensor:
        """The [P, N] float64 reward table (the formula of the module docstring), by a loop over responses."""
        content = torch.zeros(self.n_prompts, len(self.responses_words), dtype=torch.float64)
        for n, y in enumerate(self.responses_words):
            for t, v in enumerate(y):
                content[:, n] += self.unary[:, t, v]
            for t in range(len(y) - 1):
                content[:, n] += self.pair_weight * self.pairwise[:, y[t], y[t + 1]]
        full = self.response_lengths == self.length
        scale = self.reward_scale / content[:, full].std(-1, keepdim=True)
        return scale * content + self.length_bonus * self.response_lengths.double()

    def _demonstrator_logps(self) -> torch.Tensor:
        """[P, N] float32 log-probs of the demonstrator (length uniform on 1…L when variable)."""
        word_logps = torch.log_softmax(self.demo_logits.double(), -1)  # [P, L, V]
        out = torch.zeros(self.n_prompts, len(self.responses_words), dtype=torch.float64)
        for n, y in enumerate(self.responses_words):
            for t, v in enumerate(y):
                out[:, n] += word_logps[:, t, v]
        if self.variable_length:
            out = torch.where(
                self.response_lengths > 0, out - torch.log(torch.tensor(float(self.length))), -torch.inf
            )
        return out.float()

    def true_reward(self, prompt: str, response: str) -> float:
        key = " " + " ".join(response.split())
        if key not in self._index:
            raise ValueError(
                f"response {response!r} is not a response of this world; responses look like "
                f"{self.responses[-1]!r} (words from {self.alphabet})."
            )
        return float(self.reward_table[self.prompt_index(prompt), self._index[key]])

    def sft_rows(self, n: int, seed: int = 0) -> list[dict]:
        """``n`` demonstrations; row i uses prompt i mod P, its response drawn from the demonstrator."""
        check_count("n", n)
        generator = torch.Generator().manual_seed(seed)
        prompt_index = torch.arange(n) % self.n_prompts
        rows = [None] * n
        for p in range(self.n_prompts):
            where = (prompt_index == p).nonzero().flatten()
            if where.numel() == 0:
                continue
            picks = torch.multinomial(
                self.demonstrator_logps[p].exp(), where.numel(), replacement=True, generator=generator
            )
            for i, y in zip(where.tolist(), picks.tolist(), strict=True):
                rows[i] = {"prompt": self.prompts[p], "completion": self.responses[y]}
        return rows

    # ---- exact evaluation -------------------------------------------------------------------------------
    def logprobs(self, model, batch_size: int = 4096) -> torch.Tensor:
        """log π_θ(y|x) for every prompt and every enumerated response: float32 ``[P, N]`` (rows sum to 1 in
        probability). One batch of P·N sequences, scored in chunks of ``batch_size`` rows, without gradients."""
        if self._batch is None:
            prompt_ids = [self.tokenizer(p)["input_ids"] for p in self.prompts]
            response_ids = [self.tokenizer(r, add_special_tokens=False)["input_ids"] for r in self.responses]
            self._batch = pad_sequences(
                [p for p in prompt_ids for _ in response_ids], response_ids * self.n_prompts, 0
            )
        logps = score_batch(model, self._batch, self.allowed_token_ids, batch_size)
        return logps.view(self.n_prompts, len(self.responses))

    def optimal_policy(self, beta: float, ref_logps: torch.Tensor) -> torch.Tensor:
        """log π*_β(y|x) = log π_ref(y|x) + r(x, y)/β − log Z(x), ``[P, N]`` (:func:`dpo_teach.theory.optimal_policy`)."""
        return theory.optimal_policy(self._table("ref_logps", ref_logps), self.reward_table, beta)

    def evaluate(self, model, ref_logps: torch.Tensor, beta: float) -> dict:
        """Exact metrics of ``model`` (or a ``[P, N]`` log-prob table), averaged over prompts uniformly.

        * ``kl_to_optimal`` = KL(π_θ ‖ π*_β), ``kl_to_ref`` = KL(π_θ ‖ π_ref) (nats), ``expected_reward`` = E_π_θ[r];
        * ``implicit_reward_corr``: the Pearson correlation between the implicit reward r̂ = β log π_θ/π_ref and
          the true reward r over all P·N (prompt, response) pairs, each *centred per prompt* (over the N
          responses, uniformly) and then pooled. Centring removes the per-prompt constant β log Z(x) by which
          r̂ may differ from r (Theorem 1 of the paper), so the correlation is exactly 1 at π_θ = π*_β.
          Responses to which π_θ or π_ref gives probability 0 (log-prob −inf, e.g. the empty response of the
          variable-length world) have no implicit reward and are left out of it; KL(π_θ ‖ π_ref) is +inf when
          π_θ puts mass where π_ref has none.
        """
        logps = self._policy_table(model)
        ref_logps = self._table("ref_logps", ref_logps)
        optimal = self.optimal_policy(beta, ref_logps)
        corr = self._centred_correlation(logps, ref_logps, beta)
        return {
            "kl_to_optimal": float(theory.kl_divergence(logps, optimal).mean()),
            "kl_to_ref": float(theory.kl_divergence(logps, ref_logps).mean()),
            "expected_reward": float(theory.expected_reward(logps, self.reward_table).mean()),
            "implicit_reward_corr": float(corr),
        }

    def _centred_correlation(self, logps, ref_logps, beta) -> torch.Tensor:
        """Pearson correlation of r̂ = β log π_θ/π_ref with r over the entries where both log-probs are finite,
        each centred per prompt over those entries (see :meth:`evaluate`)."""
        scored = torch.isfinite(logps) & torch.isfinite(ref_logps)  # [P, N]
        count = scored.sum(-1, keepdim=True).clamp(min=1).double()
        implicit = torch.where(scored, beta * (logps.double() - ref_logps.double()), 0.0)
        reward = torch.where(scored, self.reward_table.double(), 0.0)
        a = torch.where(scored, implicit - implicit.sum(-1, keepdim=True) / count, 0.0)
        b = torch.where(scored, reward - reward.sum(-1, keepdim=True) / count, 0.0)
        return (a * b).sum() / ((a * a).sum() * (b * b).sum()).sqrt()

    def _table(self, name: str, table) -> torch.Tensor:
        shape = (self.n_prompts, len(self.responses))
        if (
            not isinstance(table, torch.Tensor)
            or tuple(table.shape) != shape
            or not table.is_floating_point()
        ):
            raise ValueError(
                f"{name} must be a float tensor of log-probs with shape {list(shape)} (prompts × "
                f"responses), e.g. world.logprobs(model); got {getattr(table, 'shape', type(table))}."
            )
        check_normalised(name, table)
        return table.cpu()

    def _policy_table(self, policy) -> torch.Tensor:
        if policy is None:
            return self.demonstrator_logps
        if isinstance(policy, torch.Tensor):
            return self._table("policy", policy)
        if isinstance(policy, torch.nn.Module):
            return self.logprobs(policy)
        raise TypeError(
            "policy must be a model, a [P, N] log-prob tensor or None (the demonstrator), got "
            f"{type(policy).__name__}."
        )

    def _sample_pairs(self, policy, prompt_index, generator):
        """y1 ~ π(·|x); y2 ~ π(·|x) conditioned on y2 ≠ y1 (identical pairs carry no preference), unless π puts
        all its mass on y1, where y2 = y1."""
        probs = self._policy_table(policy).double().exp()
        first = torch.zeros_like(prompt_index)
        second = torch.zeros_like(prompt_index)
        for p in range(self.n_prompts):
            where = (prompt_index == p).nonzero().flatten()
            if where.numel() == 0:
                continue
            y1 = torch.multinomial(probs[p], where.numel(), replacement=True, generator=generator)
            others = probs[p].repeat(where.numel(), 1)
            others[torch.arange(where.numel()), y1] = 0.0
            alone = others.sum(-1) <= 1e-12 * probs[p].sum()
            others[alone, y1[alone]] = 1.0
            first[where], second[where] = y1, torch.multinomial(others, 1, generator=generator)[:, 0]
        rewards = self.reward_table.double()
        return (
            [self.responses[i] for i in first.tolist()],
            [self.responses[i] for i in second.tolist()],
            rewards[prompt_index, first],
            rewards[prompt_index, second],
        )
