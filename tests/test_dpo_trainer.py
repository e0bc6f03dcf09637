"""DPOTrainer: the loss and metrics against an independent computation, every registry loss wired right,
gradient accumulation, precomputed reference log-probs, determinism, resume, save/load, and bad input."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from trainer_fixtures import tiny_model, word_tokenizer
from transformers import AutoModelForCausalLM

from dpo_teach.losses import LOSSES
from dpo_teach.trainers import DPOConfig, DPOTrainer, train_dpo

PAIRS = [
    {"prompt": "q :", "chosen": " good film", "rejected": " bad film"},
    {"prompt": "q a :", "chosen": " great", "rejected": " awful film was"},
    {"prompt": "q b :", "chosen": " fine film", "rejected": " bad"},
    {"prompt": "q c d :", "chosen": " the film was good", "rejected": " awful"},
] * 4
FAST = {"lr": 1e-3, "batch_size": 8, "epochs": 2, "progress": False}


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


def naive_logp(model, tok, prompt, completion, allowed=None, average=False):
    """log π(completion | prompt): one unpadded forward, log-softmax over the vocabulary (or ``allowed``)."""
    p = tok(prompt)["input_ids"]
    c = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    if allowed is not None:
        c = [t for t in c if t in allowed]  # EOS is not a choice of the restricted policy
    logits = model(torch.tensor([p + c])).logits[0, len(p) - 1 : -1].float()
    if allowed is None:
        logp = logits.log_softmax(-1)[torch.arange(len(c)), c]
    else:
        logp = logits[:, allowed].log_softmax(-1)[torch.arange(len(c)), [allowed.index(t) for t in c]]
    return (logp.mean() if average else logp.sum()), len(c)


def naive_logps(model, tok, rows, allowed=None, average=False):
    with torch.no_grad():
        out = {
            k: [naive_logp(model, tok, r["prompt"], r[k], allowed, average) for r in rows]
            for k in ("chosen", "rejected")
        }
    return {k: (torch.stack([v for v, _ in out[k]]), torch.tensor([n for _, n in out[k]])) for k in out}


def test_first_step_loss_and_metrics_match_the_dpo_formula(tok):
    beta = 0.5
    model = tiny_model(tok)
    ref = naive_logps(model.eval(), tok, PAIRS)  # the policy before training is the reference
    history = train_dpo(model, tok, PAIRS, beta=beta, lr=1e-3, batch_size=len(PAIRS), progress=False)
    (lw, _), (ll, _) = ref["chosen"], ref["rejected"]
    # at step 1 the policy equals π_ref: every log-ratio is 0, the loss is log 2, rewards 0
    assert history[0]["loss"] == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-6)
    assert history[0]["logps/chosen"] == pytest.approx(lw.mean().item(), rel=1e-5)
    assert history[0]["logps/rejected"] == pytest.approx(ll.mean().item(), rel=1e-5)
    assert history[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)


def test_loss_with_separate_reference_matches_the_formula_on_a_trained_policy(tok):
    beta, eps = 0.3, 0.1
    ref_model, policy = tiny_model(tok, seed=1).eval(), tiny_model(tok, seed=2).eval()
    pol, ref = naive_logps(policy, tok, PAIRS), naive_logps(ref_model, tok, PAIRS)
    rw = beta * (pol["chosen"][0] - ref["chosen"][0])
    rl = beta * (pol["rejected"][0] - ref["rejected"][0])
    expected = (-(1 - eps) * F.logsigmoid(rw - rl) - eps * F.logsigmoid(rl - rw)).mean()  # cDPO
    history = train_dpo(
        policy,
        tok,
        PAIRS,
        ref_model=ref_model,
        beta=beta,
        label_smoothing=eps,
        batch_size=len(PAIRS),
        progress=False,
    )
    h = history[0]
    assert h["loss"] == pytest.approx(expected.item(), rel=1e-5)
    assert h["rewards/chosen"] == pytest.approx(rw.mean().item(), rel=1e-4, abs=1e-6)
    assert h["rewards/rejected"] == pytest.approx(rl.mean().item(), rel=1e-4, abs=1e-6)
    assert h["rewards/margins"] == pytest.approx((rw - rl).mean().item(), rel=1e-4, abs=1e-6)
    assert h["rewards/accuracies"] == pytest.approx((rw > rl).float().mean().item())
    assert set(h) >= {"logits/chosen", "logits/rejected", "grad_norm", "learning_rate", "lr", "epoch", "step"}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_registry_loss_gets_the_right_inputs(tok, name):
    spec = LOSSES[name]
    ref_model, policy = tiny_model(tok, seed=1).eval(), tiny_model(tok, seed=2).eval()
    pol = naive_logps(policy, tok, PAIRS, average=spec.length_normalized)
    ref = naive_logps(ref_model, tok, PAIRS)
    if (
        name == "kto"
    ):  # unpaired: chosen rows desirable, rejected rows undesirable; z_ref from the nearest earlier row
        # with another prompt: the previous pair's rejected response (i - 1 for a chosen row, i - 2 for a rejected)
        rows = [
            {"prompt": r["prompt"], "completion": r[k], "label": k == "chosen"}
            for r in PAIRS
            for k in ("chosen", "rejected")
        ]
        with torch.no_grad():
            lp = lambda m, i, j: naive_logp(m, tok, rows[i]["prompt"], rows[j]["completion"])[0]  # noqa: E731
            n = len(rows)
            args = [
                torch.stack([lp(m, i, (i + s) % n) for i in range(n)])
                for s in (0,)
                for m in (policy, ref_model)
            ]
            kl = [torch.stack([lp(m, i, (i - 1 - i % 2) % n) for i in range(n)]) for m in (policy, ref_model)]
        labels = torch.tensor([r["label"] for r in rows])
        expected = spec(args[0], args[1], labels, kl[0], kl[1], beta=0.5)[0].mean()
        batch = len(rows)
    else:
        kw = {"beta": 0.5}
        if name == "ipo":
            kw.update(chosen_lengths=pol["chosen"][1], rejected_lengths=pol["rejected"][1])
        refs = (ref["chosen"][0], ref["rejected"][0]) if spec.needs_reference else ()
        expected = spec(pol["chosen"][0], pol["rejected"][0], *refs, **kw)[0].mean()
        batch = len(PAIRS)
    history = train_dpo(
        policy,
        tok,
        PAIRS,
        ref_model=ref_model if spec.needs_reference else None,
        loss_type=name,
        beta=0.5,
        batch_size=batch,
        progress=False,
    )
    assert history[0]["loss"] == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)


def test_allowed_token_ids_restrict_the_softmax(tok):
    allowed = tok.convert_tokens_to_ids(["good", "bad", "great", "awful", "fine", "the", "film", "was"])
    ref_model, policy = tiny_model(tok, seed=1).eval(), tiny_model(tok, seed=2).eval()
    pol, ref = naive_logps(policy, tok, PAIRS, allowed), naive_logps(ref_model, tok, PAIRS, allowed)
    h = 0.5 * ((pol["chosen"][0] - ref["chosen"][0]) - (pol["rejected"][0] - ref["rejected"][0]))
    history = train_dpo(
        policy,
        tok,
        PAIRS,
        ref_model=ref_model,
        beta=0.5,
        allowed_token_ids=allowed,
        batch_size=len(PAIRS),
        progress=False,
    )
    assert history[0]["loss"] == pytest.approx(-F.logsigmoid(h).mean().item(), rel=1e-5)


def test_grad_accumulation_equals_the_large_batch(tok):
    big = train_dpo(tiny_model(tok), tok, PAIRS, **{**FAST, "batch_size": 8})
    accumulated = train_dpo(tiny_model(tok), tok, PAIRS, **{**FAST, "batch_size": 4, "grad_accum": 2})
    assert len(big) == len(accumulated) == 4
    for a, b in zip(big, accumulated, strict=True):
        for key in ("loss", "rewards/margins", "logps/chosen", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key


def test_precomputed_reference_gives_the_same_run_and_drops_the_reference(tok):
    live = train_dpo(tiny_model(tok), tok, PAIRS, ref_model=tiny_model(tok), **FAST)
    trainer = DPOTrainer(
        tiny_model(tok), tok, PAIRS, ref_model=tiny_model(tok), precompute_ref_logps=True, **FAST
    )
    pre = trainer.train()
    assert trainer.ref_model is None
    for a, b in zip(live, pre, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["rewards/chosen"] == pytest.approx(b["rewards/chosen"], rel=1e-4, abs=1e-6)


def test_the_step_takes_the_reference_log_probs_it_is_given(tok):
    """dpo_step uses exactly the reference log-probs passed to it; preference_step computes them from ref_model,
    or reads the precomputed ones only when ref_model is None (and says how to fix a batch that has none)."""
    from dpo_teach.trainers.dpo_step import dpo_step, preference_step, reference_logps

    trainer = DPOTrainer(tiny_model(tok, seed=1), tok, PAIRS, ref_model=tiny_model(tok), beta=0.5, **FAST)
    batch = trainer.collate(trainer.train_data.examples[:4])
    ref = reference_logps(trainer.ref_model, batch, paired=True, forward_mode=trainer.config.forward_mode)
    with torch.no_grad():
        loss, metrics = dpo_step(trainer.policy, batch, trainer.config, **ref)
        policy_w = metrics["logps/chosen"]
        assert torch.allclose(metrics["rewards/chosen"], 0.5 * (policy_w - ref["ref_chosen_logps"]))
        shifted, shifted_metrics = dpo_step(trainer.policy, batch, trainer.config,
                                            ref["ref_chosen_logps"] + 1.0, ref["ref_rejected_logps"])  # fmt: skip
        assert torch.allclose(shifted_metrics["rewards/chosen"], metrics["rewards/chosen"] - 0.5)
        assert torch.equal(preference_step(trainer.policy, trainer.ref_model, batch, trainer.config)[0], loss)
        with pytest.raises(ValueError, match=r"no precomputed \['ref_chosen_logps', 'ref_rejected_logps'\]"):
            preference_step(trainer.policy, None, batch, trainer.config)
        stored = {
            **batch,
            **ref,
            "ref_chosen_logps": ref["ref_chosen_logps"] + 1.0,
        }  # read only without a model
        assert torch.equal(
            preference_step(trainer.policy, trainer.ref_model, stored, trainer.config)[0], loss
        )
        assert not torch.equal(preference_step(trainer.policy, None, stored, trainer.config)[0], loss)


def test_kto_has_its_own_step_and_logs_the_reference_point(tok):
    from dpo_teach.losses import kto_reference_point
    from dpo_teach.trainers.dpo_step import kto_step, reference_logps

    trainer = DPOTrainer(
        tiny_model(tok, seed=1), tok, PAIRS, ref_model=tiny_model(tok), loss_type="kto", **FAST
    )
    batch = trainer.collate(trainer.train_data.examples[:6])
    ref = reference_logps(trainer.ref_model, batch, paired=False)
    with torch.no_grad():
        loss, metrics = kto_step(trainer.policy, batch, trainer.config, **ref)
        kl_policy = trainer.policy(
            input_ids=batch["kl_input_ids"], attention_mask=batch["kl_attention_mask"]
        ).logits  # the mismatched pairs under the policy, scored the step's way
    from dpo_teach.logprobs import sequence_logps

    z_ref = kto_reference_point(sequence_logps(kl_policy, batch["kl_labels"]), ref["ref_kl_logps"])
    assert torch.allclose(metrics["kl"], z_ref[None], atol=1e-6)
    assert metrics["rewards/chosen"].numel() == int(batch["label"].sum())
    assert loss.ndim == 0 and bool(torch.isfinite(loss))


def test_reference_frozen_in_eval_mode_and_policy_dropout_off(tok):
    ref_model = tiny_model(tok)
    before = copy.deepcopy(ref_model.state_dict())
    policy = tiny_model(tok)
    trainer = DPOTrainer(policy, tok, PAIRS, ref_model=ref_model, **FAST)
    trainer.train()
    assert not ref_model.training and all(not p.requires_grad for p in ref_model.parameters())
    assert all(torch.equal(before[k], v) for k, v in ref_model.state_dict().items())
    assert all(m.p == 0 for m in policy.modules() if isinstance(m, torch.nn.Dropout))


def test_same_seed_same_metrics_and_another_seed_differs(tok):
    runs = [train_dpo(tiny_model(tok), tok, PAIRS, seed=s, **FAST) for s in (0, 0, 1)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


class Interrupt(Exception):
    pass


def test_interrupted_run_resumed_reaches_the_same_metrics_and_weights(tok, tmp_path):
    opts = {
        **FAST,
        "epochs": 3,
        "batch_size": 4,
        "warmup_steps": 3,
        "output_dir": str(tmp_path / "run"),
        "save_steps": 5,
    }
    full_model = tiny_model(tok)
    full = train_dpo(full_model, tok, PAIRS, **{**opts, "output_dir": str(tmp_path / "full")})

    def stop(metrics):
        if metrics["step"] == 7:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_dpo(tiny_model(tok), tok, PAIRS, callback=stop, **opts)
    resumed_model = tiny_model(tok)
    resumed = DPOTrainer(resumed_model, tok, PAIRS, **opts).train(
        resume_from_checkpoint=True
    )  # from checkpoint-5
    assert len(resumed) == len(full) == 12
    assert resumed == full  # every metric of every step, bit for bit
    for (name, a), b in zip(
        full_model.state_dict().items(), resumed_model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_resume_with_other_settings_is_rejected(tok, tmp_path):
    opts = {**FAST, "output_dir": str(tmp_path), "save_steps": 2}
    train_dpo(tiny_model(tok), tok, PAIRS, **opts)
    with pytest.raises(ValueError, match="beta"):
        DPOTrainer(tiny_model(tok), tok, PAIRS, **{**opts, "beta": 0.7}).train(
            resume_from_checkpoint=tmp_path / "checkpoint-2"
        )


def test_saved_model_loads_in_plain_transformers_with_the_same_logps(tok, tmp_path):
    model = tiny_model(tok)
    train_dpo(model, tok, PAIRS, output_dir=str(tmp_path), **FAST)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    a, b = naive_logps(model.eval(), tok, PAIRS), naive_logps(loaded.eval(), tok, PAIRS)
    torch.testing.assert_close(a["chosen"][0], b["chosen"][0], rtol=0, atol=1e-6)
    torch.testing.assert_close(a["rejected"][0], b["rejected"][0], rtol=0, atol=1e-6)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "tokenizer.json").exists()


def test_eval_split_metrics_equal_the_untrained_first_step(tok):
    seen = []
    trainer = DPOTrainer(
        tiny_model(tok),
        tok,
        PAIRS,
        eval_rows=PAIRS[:4],
        ref_model=tiny_model(tok, seed=5),
        batch_size=4,
        eval_steps=2,
        callback=seen.append,
        progress=False,
    )
    before = trainer.evaluate()
    history = trainer.train()
    first = DPOTrainer(
        tiny_model(tok), tok, PAIRS[:4], ref_model=tiny_model(tok, seed=5), batch_size=4, progress=False
    ).train()
    assert before["eval_loss"] == pytest.approx(first[0]["loss"], rel=1e-5)
    assert before["eval_rewards/margins"] == pytest.approx(first[0]["rewards/margins"], rel=1e-4)
    assert [("eval_loss" in h) for h in history] == [False, True, False, True]
    assert seen == history


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"beta": 0.0}, ValueError, "beta"),
        ({"beta": -0.1}, ValueError, "beta"),
        ({"beta": "0.1"}, TypeError, "beta"),
        ({"loss_type": "dpo++"}, ValueError, "unknown loss"),
        ({"epochs": 0}, ValueError, "epochs"),
        ({"batch_size": 2.0}, TypeError, "batch_size"),
        ({"grad_accum": 0}, ValueError, "grad_accum"),
        ({"lr": 0}, ValueError, "lr"),
        ({"label_smoothing": 0.1, "loss_type": "ipo"}, ValueError, "label_smoothing"),
        ({"label_smoothing": 0.5}, ValueError, "label_smoothing"),
        ({"loss_kwargs": {"gama": 1.0}, "loss_type": "simpo"}, ValueError, "gama"),
        ({"truncation_mode": "middle"}, ValueError, "truncation_mode"),
    ],
)
def test_bad_config_is_rejected(tok, kwargs, error, match):
    with pytest.raises(error, match=match):
        DPOTrainer(tiny_model(tok), tok, PAIRS, progress=False, **kwargs).train()


def test_empty_dataset_is_rejected(tok):
    with pytest.raises(ValueError, match="empty"):
        DPOTrainer(tiny_model(tok), tok, [])


def test_rows_of_the_wrong_type_are_rejected(tok):
    with pytest.raises(TypeError, match="list of dicts"):
        DPOTrainer(tiny_model(tok), tok, {"prompt": "q :", "chosen": " good", "rejected": " bad"})
    with pytest.raises(TypeError, match="row 0, field 'chosen' must be a str"):
        DPOTrainer(tiny_model(tok), tok, [{"prompt": "q :", "chosen": ["good"], "rejected": " bad"}])


def test_model_of_the_wrong_type_is_rejected(tok):
    with pytest.raises(TypeError, match="model"):
        DPOTrainer("gpt2", tok, PAIRS)


def test_config_object_and_keywords_together_are_rejected(tok):
    with pytest.raises(TypeError, match="either config"):
        DPOTrainer(tiny_model(tok), tok, PAIRS, config=DPOConfig(), beta=0.2)


def test_over_long_sequences_are_rejected_and_max_length_fixes_it(tok):
    long_pairs = [{"prompt": "q " * 50 + ":", "chosen": " good" * 20, "rejected": " bad"}]
    with pytest.raises(ValueError, match="max_length"):
        DPOTrainer(tiny_model(tok), tok, long_pairs)
    trainer = DPOTrainer(tiny_model(tok), tok, long_pairs, max_length=64, progress=False)
    assert trainer.train_data.prompts_truncated == 1 and trainer.train_data.completions_truncated == 0
