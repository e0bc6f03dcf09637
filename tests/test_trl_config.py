"""TRL interoperability of DPOConfig: a ``trl.DPOConfig`` accepted (and refused field by field where there is no
counterpart), TRL's field names as keyword aliases, the ``HfArgumentParser`` round trip, the history's
``learning_rate``, and one β default."""

from __future__ import annotations

import math
import warnings

import pytest
from trainer_fixtures import tiny_model, word_tokenizer

pytest.importorskip("trl")
import trl  # noqa: E402
from transformers import HfArgumentParser  # noqa: E402

from dpo_teach.cli import build_parser  # noqa: E402
from dpo_teach.trainers import DPOConfig, DPOTrainer, train_dpo  # noqa: E402
from dpo_teach.trainers.dpo import TRL_NAMES  # noqa: E402

PAIRS = [
    {"prompt": "q :", "chosen": " good film", "rejected": " bad film"},
    {"prompt": "q a :", "chosen": " great", "rejected": " awful film was"},
] * 4
# our value and the same value as TRL would type it, one per aliased field
ALIAS_VALUES = {"lr": 3e-3, "epochs": 2, "batch_size": 4, "grad_accum": 2, "precompute_ref_logps": True}


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


def trl_config(tmp_path, **kw):
    """A CPU ``trl.DPOConfig`` (TRL refuses its bf16 default without a GPU), no checkpoints unless asked."""
    base = {"output_dir": str(tmp_path / "trl"), "use_cpu": True, "bf16": False, "save_strategy": "no"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return trl.DPOConfig(**{**base, **kw})


# ---------------------------------------------------------------- trl.DPOConfig
def test_from_trl_reads_every_mapped_field_under_our_name(tmp_path):
    t = trl_config(
        tmp_path,
        beta=0.3,
        learning_rate=2e-3,
        num_train_epochs=2,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        precompute_ref_log_probs=True,
        warmup_steps=3,
        lr_scheduler_type="constant",
        max_grad_norm=0.5,
        weight_decay=0.01,
        max_length=64,
        truncation_mode="keep_end",
        seed=7,
        loss_type=["ipo"],
        eval_strategy="steps",
        eval_steps=5,
        disable_tqdm=True,
    )
    expected = DPOConfig(
        beta=0.3, lr=2e-3, epochs=2, batch_size=4, grad_accum=2, precompute_ref_logps=True, warmup_steps=3,
        lr_scheduler_type="constant", max_grad_norm=0.5, weight_decay=0.01, max_length=64,
        truncation_mode="keep_end", seed=7, loss_type="ipo", eval_steps=5, output_dir=str(tmp_path / "trl"),
        progress=False, device="cpu",
    )  # fmt: skip
    assert DPOConfig.from_trl(t) == expected


def test_from_trl_keeps_trl_defaults_rather_than_ours(tmp_path):
    got = DPOConfig.from_trl(trl_config(tmp_path))
    defaults = trl_config(tmp_path)  # read TRL's values off the instance, not from memory
    assert (got.lr, got.epochs, got.batch_size, got.seed) == (
        defaults.learning_rate,
        int(defaults.num_train_epochs),
        defaults.per_device_train_batch_size,
        defaults.seed,
    )
    assert (
        got.lr_scheduler_type == defaults.lr_scheduler_type.value
        and got.truncation_mode == defaults.truncation_mode
    )


def test_trl_save_steps_carry_over_with_the_steps_strategy(tmp_path):
    got = DPOConfig.from_trl(trl_config(tmp_path, save_strategy="steps", save_steps=3))
    assert got.save_steps == 3 and got.output_dir == str(tmp_path / "trl")


def test_eval_steps_default_to_logging_steps_as_in_trl(tmp_path):
    got = DPOConfig.from_trl(trl_config(tmp_path, eval_strategy="steps", logging_steps=4))
    assert got.eval_steps == 4


def test_trainer_and_train_dpo_accept_a_trl_config_and_train_as_its_conversion(tmp_path, tok):
    t = trl_config(
        tmp_path, learning_rate=1e-3, per_device_train_batch_size=4, num_train_epochs=1, disable_tqdm=True
    )
    t.output_dir = None  # TRL fills in a folder; keep this test from writing a model
    ours = DPOConfig.from_trl(t)
    trainer = DPOTrainer(tiny_model(tok), tok, PAIRS, config=t)
    assert trainer.config == ours
    via_trl = train_dpo(tiny_model(tok), tok, PAIRS, config=t)
    direct = train_dpo(tiny_model(tok), tok, PAIRS, config=ours)
    assert len(via_trl) == len(direct) == 2
    for a, b in zip(via_trl, direct, strict=True):
        assert a["loss"] == b["loss"] and a["learning_rate"] == b["learning_rate"]


@pytest.mark.parametrize(
    "field, value",
    [("sync_ref_model", True), ("use_weighting", True), ("disable_dropout", False), ("ld_alpha", 0.5)],
)
def test_a_trl_field_without_counterpart_off_its_default_is_an_error_naming_it(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        DPOConfig.from_trl(trl_config(tmp_path, **{field: value}))


def test_a_bookkeeping_trl_field_is_ignored_with_a_warning_naming_it(tmp_path):
    with pytest.warns(UserWarning, match="run_name"):
        got = DPOConfig.from_trl(trl_config(tmp_path, run_name="my-run"))
    assert got == DPOConfig.from_trl(trl_config(tmp_path))


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"num_train_epochs": 1.5}, "num_train_epochs"),
        ({"warmup_steps": 0.1}, "warmup_steps"),
        ({"loss_type": ["sigmoid", "sft"]}, "loss_type"),
        ({"eval_strategy": "epoch"}, "eval_strategy"),
        ({"save_strategy": "epoch"}, "save_strategy"),
        ({"lr_scheduler_type": "cosine"}, "lr_scheduler_type"),
    ],
)
def test_trl_values_without_an_equivalent_here_are_errors_naming_the_field(tmp_path, kw, field):
    with pytest.raises(ValueError, match=field):
        DPOConfig.from_trl(trl_config(tmp_path, **kw))


@pytest.mark.parametrize("bad", [{"beta": 0.1}, DPOConfig()])
def test_from_trl_refuses_anything_but_a_trl_config(bad):
    with pytest.raises(TypeError, match="trl.DPOConfig"):
        DPOConfig.from_trl(bad)


def test_the_trainer_names_both_accepted_config_types(tok):
    with pytest.raises(TypeError, match="trl.DPOConfig"):
        DPOTrainer(tiny_model(tok), tok, PAIRS, config={"beta": 0.1})


# ---------------------------------------------------------------- TRL's names as keywords
@pytest.mark.parametrize("theirs, ours", sorted(TRL_NAMES.items()))
def test_trl_names_are_keyword_aliases_of_ours(theirs, ours):
    assert DPOConfig(**{theirs: ALIAS_VALUES[ours]}) == DPOConfig(**{ours: ALIAS_VALUES[ours]})
    assert getattr(DPOConfig(**{theirs: ALIAS_VALUES[ours]}), ours) == ALIAS_VALUES[ours]


@pytest.mark.parametrize("theirs, ours", sorted(TRL_NAMES.items()))
def test_both_names_of_one_field_is_an_error_naming_both(theirs, ours):
    with pytest.raises(TypeError, match=f"{ours}=.*{theirs}="):
        DPOConfig(**{theirs: ALIAS_VALUES[ours], ours: ALIAS_VALUES[ours]})


def test_trainer_and_train_dpo_keywords_take_trl_names(tok):
    kw = {"learning_rate": 1e-3, "per_device_train_batch_size": 4, "num_train_epochs": 1, "progress": False}
    assert DPOTrainer(tiny_model(tok), tok, PAIRS, **kw).config == DPOConfig(lr=1e-3, batch_size=4, epochs=1,
                                                                             progress=False)  # fmt: skip
    with pytest.raises(TypeError, match="batch_size=.*per_device_train_batch_size="):
        train_dpo(tiny_model(tok), tok, PAIRS, batch_size=4, **kw)


# ---------------------------------------------------------------- HfArgumentParser
@pytest.mark.parametrize(
    "argv, kw",
    [
        ([], {}),
        (["--beta", "0.2", "--lr", "0.001", "--epochs", "2"], {"beta": 0.2, "lr": 1e-3, "epochs": 2}),
        (["--learning_rate", "0.001", "--per_device_train_batch_size", "4"], {"lr": 1e-3, "batch_size": 4}),
        (
            ["--precompute_ref_log_probs", "--gradient_accumulation_steps", "2"],
            {"precompute_ref_logps": True, "grad_accum": 2},
        ),  # fmt: skip
        (
            ["--loss_type", "simpo", "--loss_kwargs", '{"gamma": 0.5}'],
            {"loss_type": "simpo", "loss_kwargs": {"gamma": 0.5}},
        ),  # fmt: skip
        (
            ["--allowed_token_ids", "3", "5", "--max_grad_norm", "0.5"],
            {"allowed_token_ids": [3, 5], "max_grad_norm": 0.5},
        ),  # fmt: skip
        (
            ["--no_progress", "--max_length", "64", "--device", "cpu"],
            {"progress": False, "max_length": 64, "device": "cpu"},
        ),  # fmt: skip
    ],
)
def test_hf_argument_parser_round_trip(argv, kw):
    (parsed,) = HfArgumentParser(DPOConfig).parse_args_into_dataclasses(argv, look_for_args_file=False)
    expected = DPOConfig(**kw)
    assert parsed == expected and parsed.spec == expected.spec
    assert parsed.to_dict() == expected.to_dict()


def test_loss_kwargs_that_are_not_json_are_an_error_naming_the_field():
    with pytest.raises(ValueError, match="loss_kwargs"):
        DPOConfig(loss_type="simpo", loss_kwargs="gamma=1")


# ---------------------------------------------------------------- history and β
def test_history_logs_learning_rate_as_the_linear_schedule(tok):
    # 8 pairs, batch 2, 2 epochs: 8 steps; warm-up lr·(t+1)/(w+1) for t < w, then linear decay lr·(T−t)/(T−w)
    lr, w, total = 1e-3, 2, 8
    history = train_dpo(tiny_model(tok), tok, PAIRS, learning_rate=lr, batch_size=2, epochs=2, warmup_steps=w,
                        lr_scheduler_type="linear", progress=False)  # fmt: skip
    expected = [lr * (t + 1) / (w + 1) if t < w else lr * (total - t) / (total - w) for t in range(total)]
    assert len(history) == total
    for h, want in zip(history, expected, strict=True):
        assert math.isclose(h["learning_rate"], want, rel_tol=1e-9, abs_tol=1e-15)
        assert h["lr"] == h["learning_rate"]  # chapter 06 reads "lr"


def test_one_beta_default_for_the_config_the_cli_and_trl():
    trl_beta = next(f.default for f in trl.DPOConfig.__dataclass_fields__.values() if f.name == "beta")
    parser = build_parser()
    cli = {name: parser.parse_args([name]).beta for name in ("dpo", "demo")}
    assert DPOConfig().beta == trl_beta == cli["dpo"] == cli["demo"]
