"""What a user's bad input gets: one row per case, each asserting the exception type, that the message names the
field (or file, or argument) at fault, and that it says how to fix it.

The second half covers the inputs that used to give *silently wrong* numbers: an empty prompt with a tokenizer
that adds no BOS (the first response token went unscored), and pairs that become identical only after
tokenisation or truncation.
"""

from __future__ import annotations

import copy
import json
import math
import re
import warnings

import pytest
import torch
from trainer_fixtures import WORDS, tiny_model, word_tokenizer
from transformers import GPT2Config, GPT2LMHeadModel

from dpo_teach import _validate as V
from dpo_teach import data as D
from dpo_teach import hub, logprobs, models
from dpo_teach.cache import reference_model
from dpo_teach.losses import dpo_loss, get_loss
from dpo_teach.trainers.dpo import DPOConfig, DPOTrainer
from dpo_teach.trainers.ppo import PPOConfig, train_ppo
from dpo_teach.trainers.reward import RewardModel, evaluate_reward_model, train_reward_model
from dpo_teach.trainers.rollouts import as_reward_fn, call_reward
from dpo_teach.trainers.sft import train_sft
from dpo_teach.worlds.sequences import SequenceWorld

PAIR = {"prompt": "q :", "chosen": " good film", "rejected": " bad film"}
PAIRS = [PAIR, {"prompt": "q a :", "chosen": " great", "rejected": " awful"}]
SFT_ROWS = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in PAIRS]
MESSAGES = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


class Ctx:
    """What the rows need, built per test: a tiny GPT-2 with its word tokenizer, and a scratch folder."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.tok = word_tokenizer()
        self.model = tiny_model(self.tok)

    def file(self, name: str, text: str | bytes):
        path = self.tmp / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return path

    def saved_model(self, *, weights=True, tokenizer=True, config=True):
        path = self.tmp / "model"
        self.model.save_pretrained(path)
        if tokenizer:
            self.tok.save_pretrained(path)
        if not weights:
            (path / "model.safetensors").unlink()
        if not config:
            (path / "config.json").unlink()
        return path

    def small_vocab_model(self):
        return GPT2LMHeadModel(GPT2Config(vocab_size=len(self.tok) - 3, n_layer=1, n_embd=16, n_head=2))

    def dpo(self, **kw):
        rows = kw.pop("rows", PAIRS)
        return DPOTrainer(kw.pop("model", self.model), kw.pop("tok", self.tok), rows, progress=False, **kw)


def logits_labels(vocab=8, length=4, batch=2):
    labels = torch.randint(0, vocab, (batch, length))
    labels[:, 0] = -100
    return torch.randn(batch, length, vocab), labels


class NoSpecials:
    """A tokenizer that adds no BOS and has neither BOS nor EOS (a stripped-down custom tokenizer)."""

    bos_token_id = eos_token_id = pad_token_id = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [5 + len(w) for w in text.split()]}


def ppo(ctx, **kw):
    reward = kw.pop("reward", lambda prompts, responses: torch.zeros(len(responses)))
    prompts = kw.pop("prompts", ["q :", "q a :"])
    ref = kw.pop("ref_model", None)
    kw = {"steps": 1, "batch_size": 2, "mini_batch_size": 2, "max_new_tokens": 4, "progress": False, **kw}
    return train_ppo(ctx.model, ctx.tok, prompts, reward, ref_model=ref, **kw)


# (id, call(ctx), exception type, what names the field, what says the fix)
CASES = [
    # ------------------------------------------------------------------ rows and files (dpo_teach.data)
    ("kind", lambda c: D.load_rows(PAIRS, "pairs"), ValueError, r"kind='pairs'", r"one of"),
    ("no rows", lambda c: D.load_preference_rows([]), ValueError, r"dataset is empty", r"at least one row"),
    ("row not a dict", lambda c: D.load_preference_rows(["q"]), TypeError, r"row 0", r"must be a dict"),
    ("missing field", lambda c: D.load_preference_rows([{"prompt": "q", "chosen": "a"}]), ValueError,
     r"row 0 is missing field 'rejected'", r"rows need"),
    ("field not str", lambda c: D.load_preference_rows([{**PAIR, "chosen": 3}]), TypeError,
     r"field 'chosen'", r"must be a str"),
    ("empty response", lambda c: D.load_preference_rows([{**PAIR, "rejected": "  "}]), ValueError,
     r"field 'rejected' is empty", r"at least one token"),
    ("kto label not bool", lambda c: D.load_kto_rows([{"prompt": "q", "completion": "a", "label": 1}]),
     TypeError, r"field 'label'", r"bool \(True = desirable\)"),
    ("conversational rows, no chat template", lambda c: D.tokenize_preference(D.load_preference_rows(
        [{"prompt": MESSAGES[:1], "chosen": MESSAGES[1:], "rejected": [{**MESSAGES[1], "content": "bye"}]}]),
        c.tok), ValueError, r"conversational .* no chat_template", r"set tokenizer\.chat_template"),
    ("source type", lambda c: D.load_preference_rows(42), TypeError, r"rows must be",
     r"\.json/\.jsonl path or a datasets\.Dataset"),
    ("missing file", lambda c: D.load_preference_rows(c.tmp / "nope.jsonl"), ValueError, r"nope\.jsonl",
     r"pass an existing \.json/\.jsonl path"),
    ("data is a directory", lambda c: D.load_preference_rows(c.tmp), ValueError, r"is a directory",
     r"pass one \.json or \.jsonl file"),
    ("csv file", lambda c: D.load_preference_rows(c.file("rows.csv", "prompt,chosen,rejected\nq,a,b\n")),
     ValueError, r"rows\.csv.*suffix '\.csv'", r"load_dataset\('csv'"),
    ("json lines in .json", lambda c: D.load_preference_rows(c.file("rows.json", f"{json.dumps(PAIR)}\n" * 2)),
     ValueError, r"rows\.json.*holds JSON Lines", r"rename it to 'rows\.jsonl'"),
    ("jsonl bad line 3", lambda c: D.load_preference_rows(
        c.file("rows.jsonl", f"{json.dumps(PAIR)}\n\n{{'prompt': 1}}\n")), ValueError,
     r"rows\.jsonl, line 3, column 2", r"one complete JSON object"),
    ("json syntax", lambda c: D.load_preference_rows(c.file("rows.json", "[\n{\"prompt\": }\n]")), ValueError,
     r"rows\.json, line 2, column 12: not valid JSON", r"fix the file there"),
    ("json not a list", lambda c: D.load_preference_rows(c.file("rows.json", json.dumps(PAIR))), TypeError,
     r"rows\.json.*must hold a JSON list", r"one object per line in a \.jsonl file"),
    ("not utf-8", lambda c: D.load_preference_rows(c.file("rows.jsonl", json.dumps(PAIR).encode("utf-16"))),
     ValueError, r"rows\.jsonl.*is not UTF-8", r"re-save it as UTF-8"),
    ("file row error names the line", lambda c: D.load_preference_rows(
        c.file("rows.jsonl", "\n".join([json.dumps(PAIR), "", json.dumps({"prompt": "q", "chosen": "a"})]))),
     ValueError, r"row 1 \(.*rows\.jsonl, line 3\) is missing field 'rejected'", r"rows need"),
    ("truncation_mode", lambda c: D.tokenize_preference(PAIRS, c.tok, truncation_mode="middle"), ValueError,
     r"truncation_mode='middle'", r"must be one of"),
    ("max_length", lambda c: D.tokenize_preference(PAIRS, c.tok, max_length=1), ValueError,
     r"max_length=1", r"int ≥ 2"),
    ("max_prompt_length positive", lambda c: D.tokenize_preference(PAIRS, c.tok, max_prompt_length=0),
     ValueError, r"max_prompt_length=0", r"pass e\.g\. max_prompt_length="),
    ("max_prompt_length vs max_length", lambda c: D.tokenize_preference(
        PAIRS, c.tok, max_length=4, max_prompt_length=4), ValueError, r"max_prompt_length=4",
     r"must be < max_length=4"),
    ("tokenizer without eos", lambda c: D.encode_completion(
        type("T", (NoSpecials,), {})(), "a b"), ValueError, r"no eos_token", r"set tokenizer\.eos_token"),
    ("empty prompt, no bos or eos", lambda c: D.encode_prompt(NoSpecials(), ""), ValueError,
     r"prompt '' encodes to no token", r"set tokenizer\.bos_token"),
    # ------------------------------------------------------------------ tokenizers and models (dpo_teach.models)
    ("words empty", lambda c: models.build_word_tokenizer([]), ValueError, r"words", r"non-empty list"),
    ("words repeated", lambda c: models.build_word_tokenizer(["a", "a"]), ValueError,
     r"repeated or reserved entries \['a'\]", r"list each word once"),
    ("word with space", lambda c: models.build_word_tokenizer(["a b"]), ValueError, r"words \['a b'\]",
     r"without spaces"),
    ("tiny_gpt2 type", lambda c: models.tiny_gpt2("gpt2"), TypeError, r"tokenizer_or_vocab_size",
     r"a tokenizer or an int"),
    ("tiny_gpt2 heads", lambda c: models.tiny_gpt2(c.tok, n_embd=30, n_head=4), ValueError, r"n_embd=30",
     r"divisible by n_head=4"),
    ("tiny_gpt2 layers", lambda c: models.tiny_gpt2(c.tok, n_layer=0), ValueError, r"n_layer=0",
     r"must be a positive int"),
    ("tiny_gpt2 dropout", lambda c: models.tiny_gpt2(c.tok, dropout=1.0), ValueError, r"dropout=1\.0",
     r"0 turns it off"),
    ("load name type", lambda c: models.load_causal_lm(None), TypeError, r"name_or_path",
     r"a Hub name such as 'gpt2'"),
    ("load a file", lambda c: models.load_causal_lm(c.file("model.safetensors", b"")), ValueError,
     r"model\.safetensors.*not a directory", r"written by save_pretrained"),
    ("model folder without weights", lambda c: models.load_causal_lm(c.saved_model(weights=False)), ValueError,
     r"model directory .* has a config\.json but no weights", r"model\.save_pretrained\(dir\)"),
    ("model folder without config", lambda c: models.load_causal_lm(c.saved_model(config=False)), ValueError,
     r"model directory .* has no config\.json", r"save_pretrained\(dir\)"),
    ("model folder without tokenizer", lambda c: models.load_causal_lm(c.saved_model(tokenizer=False)),
     ValueError, r"model directory .* has no loadable tokenizer", r"tokenizer\.save_pretrained\(dir\)"),
    ("mistyped hub name", lambda c: models.load_causal_lm("dpo-teach-nobody/gtp2"), models.OfflineModelError,
     r"'dpo-teach-nobody/gtp2'.*not in the local Hugging Face cache", r"local_files_only=False"),
    ("local_files_only type", lambda c: models.load_causal_lm("gpt2", local_files_only="no"), TypeError,
     r"local_files_only", r"True or False"),
    ("sample max_new_tokens", lambda c: models.sample_token_ids(c.model, [[1]], max_new_tokens=0,
     eos_token_id=2), ValueError, r"max_new_tokens=0", r"must be a positive int"),
    ("sample temperature", lambda c: models.sample_token_ids(c.model, [[1]], max_new_tokens=1, eos_token_id=2,
     temperature=-1.0), ValueError, r"temperature=-1\.0", r"0 = greedy"),
    # ------------------------------------------------------------------ log-probs (dpo_teach.logprobs)
    ("logits type", lambda c: logprobs.sequence_logps([[0.0]], torch.zeros(1, 2, dtype=torch.long)), TypeError,
     r"logits must be a floating torch\.Tensor", r"model\(\.\.\.\)\.logits"),
    ("labels dtype", lambda c: logprobs.sequence_logps(torch.randn(1, 3, 5), torch.zeros(1, 3)), TypeError,
     r"labels must be an integer torch\.Tensor", r"-100 where ignored"),
    ("labels shape", lambda c: logprobs.sequence_logps(torch.randn(1, 3, 5), torch.zeros(1, 4, dtype=torch.long)),
     ValueError, r"labels shape \[1, 4\]", r"not shifted"),
    ("labels out of vocab", lambda c: logprobs.sequence_logps(torch.randn(1, 3, 5), torch.tensor([[-100, 9, 1]])),
     ValueError, r"labels must be -100 or token ids in \[0, 5\)", r"found other values"),
    ("no response token", lambda c: logprobs.sequence_logps(torch.randn(1, 3, 5), torch.full((1, 3), -100)),
     ValueError, r"rows \[0\] of labels have no response token", r"lengthen max_length"),
    ("allowed empty (logprobs)", lambda c: logprobs.sequence_logps(*logits_labels(), allowed_token_ids=[]),
     ValueError, r"allowed_token_ids must be a non-empty", r"world\.allowed_token_ids"),
    ("allowed out of range (logprobs)", lambda c: logprobs.sequence_logps(
        *logits_labels(), allowed_token_ids=[0, 99]), ValueError, r"allowed_token_ids must lie in \[0, 8\)",
     r"the logits' vocabulary"),
    ("allowed repeated (logprobs)", lambda c: logprobs.sequence_logps(
        *logits_labels(), allowed_token_ids=list(range(8)) + [1]), ValueError,
     r"allowed_token_ids contains repeated ids", r"pass each allowed token once"),
    ("allowed type (logprobs)", lambda c: logprobs.sequence_logps(*logits_labels(), allowed_token_ids="abc"),
     TypeError, r"allowed_token_ids must be a 1-D LongTensor", r"world\.allowed_token_ids"),
    ("batch type", lambda c: logprobs.concatenated_forward(c.model, [1]), TypeError, r"batch must be a dict",
     r"with keys"),
    ("batch keys", lambda c: logprobs.concatenated_forward(c.model, {"chosen_input_ids": 1}), ValueError,
     r"batch is missing \['chosen_attention_mask'", r"see dpo_teach\.data"),
    # ------------------------------------------------------------------ trainer entry points (DPO, SFT, reward)
    ("dpo tokenizer is a string", lambda c: c.dpo(tok="gpt2"), TypeError,
     r"tokenizer must be a tokenizer object, got the str 'gpt2'", r"AutoTokenizer\.from_pretrained"),
    ("dpo tokenizer is not one", lambda c: c.dpo(tok=object()), TypeError,
     r"tokenizer must be a transformers tokenizer", r"the tokenizer that belongs to the model"),
    ("dpo ref_model is the policy", lambda c: c.dpo(ref_model=c.model), ValueError,
     r"ref_model is the same object as the model", r"ref_model=copy\.deepcopy\(model\)"),
    ("dpo vocabulary too small", lambda c: c.dpo(model=c.small_vocab_model()), ValueError,
     rf"tokenizer has {len(WORDS) + 4} tokens but the model's vocabulary has only {len(WORDS) + 1}",
     r"resize_token_embeddings"),
    ("dpo allowed empty", lambda c: c.dpo(allowed_token_ids=[]), ValueError, r"allowed_token_ids is empty",
     r"world\.allowed_token_ids"),
    ("dpo allowed out of range", lambda c: c.dpo(allowed_token_ids=[4, 5, 500]), ValueError,
     r"allowed_token_ids has ids \[500\] outside the model's vocabulary", r"convert_tokens_to_ids"),
    ("dpo allowed repeated", lambda c: c.dpo(allowed_token_ids=[4, 4]), ValueError,
     r"allowed_token_ids contains repeated ids", r"list each allowed token once"),
    ("dpo model type", lambda c: c.dpo(model="gpt2"), TypeError, r"model must be a transformers causal LM",
     r"causal LM"),
    ("dpo config type", lambda c: DPOTrainer(c.model, c.tok, PAIRS, config={"beta": 0.1}), TypeError,
     r"config must be a DPOConfig", r"DPOConfig"),
    ("dpo config and options", lambda c: DPOTrainer(c.model, c.tok, PAIRS, config=DPOConfig(), beta=0.2),
     TypeError, r"config=DPOConfig\(\.\.\.\) or keyword options", r"not both"),
    ("dpo beta", lambda c: DPOConfig(beta=-1.0), ValueError, r"beta must be a finite number > 0, got -1\.0",
     r"pass e\.g\. beta=0\.1"),
    ("dpo loss name", lambda c: DPOConfig(loss_type="dpo++"), ValueError, r"unknown loss 'dpo\+\+'",
     r"'sigmoid', also 'dpo', is DPO"),
    ("dpo label_smoothing", lambda c: DPOConfig(loss_type="ipo", label_smoothing=0.1), ValueError,
     r"label_smoothing applies to 'sigmoid'", r"not 'ipo'"),
    ("dpo loss_kwargs", lambda c: DPOConfig(loss_type="simpo", loss_kwargs={"gama": 1}), ValueError,
     r"loss_kwargs \['gama'\]", r"it accepts"),
    ("dpo scheduler", lambda c: DPOConfig(lr_scheduler_type="cosine"), ValueError,
     r"lr_scheduler_type='cosine'", r"'constant' or 'linear'"),
    ("dpo too long for positions", lambda c: c.dpo(rows=[{**PAIR, "chosen": " a" * 80}]), ValueError,
     r"longest tokenised sequence has \d+ tokens but the model accepts at most 64", r"pass max_length≤64"),
    ("dpo beta overflows the gradient", lambda c: c.dpo(beta=1e30, batch_size=2).train(), ValueError,
     r"gradient norm at step 1 is (inf|nan).*beta=1e\+30", r"use a smaller beta"),
    ("sft tokenizer is a string", lambda c: train_sft(c.model, "gpt2", SFT_ROWS, progress=False), TypeError,
     r"tokenizer must be a tokenizer object", r"load_causal_lm"),
    ("sft vocabulary too small", lambda c: train_sft(c.small_vocab_model(), c.tok, SFT_ROWS, progress=False),
     ValueError, r"model's vocabulary has only", r"resize_token_embeddings"),
    ("sft allowed empty", lambda c: train_sft(c.model, c.tok, SFT_ROWS, allowed_token_ids=[], progress=False),
     ValueError, r"allowed_token_ids is empty", r"world\.allowed_token_ids"),
    ("sft epochs", lambda c: train_sft(c.model, c.tok, SFT_ROWS, epochs=0), ValueError,
     r"epochs must be an int > 0, got 0", r"pass e\.g\. epochs=1"),
    ("reward lm type", lambda c: RewardModel("gpt2"), TypeError, r"lm must be a transformers causal LM",
     r"a copy of π_ref"),
    ("reward model type", lambda c: train_reward_model(c.model, c.tok, PAIRS), TypeError,
     r"reward_model must be a dpo_teach\.trainers\.reward\.RewardModel", r"RewardModel\(copy\.deepcopy"),
    ("reward tokenizer is a string", lambda c: train_reward_model(RewardModel(c.model), "gpt2", PAIRS),
     TypeError, r"tokenizer must be a tokenizer object", r"AutoTokenizer"),
    ("reward score lengths", lambda c: RewardModel(c.model).score(c.tok, ["q :"], []), ValueError,
     r"got 1 prompts but 0 responses", r"one per prompt"),
    ("reward score tokenizer", lambda c: RewardModel(c.model).score("gpt2", ["q :"], [" a"]), TypeError,
     r"tokenizer must be a tokenizer object", r"AutoTokenizer"),
    # ------------------------------------------------------------------ PPO and rollouts
    ("ppo positions", lambda c: ppo(c, max_new_tokens=100), ValueError,
     r"longest prompt has 4 tokens and max_new_tokens=100, but the model has only 64 positions",
     r"max_new_tokens≤60"),
    ("ppo stop_token_id", lambda c: ppo(c, stop_token_id=10_000), ValueError,
     r"stop_token_id=10000 is outside the model's vocabulary", r"tokenizer\.eos_token_id"),
    ("ppo stop_token_id type", lambda c: ppo(c, stop_token_id="<eos>"), TypeError,
     r"stop_token_id must be an int token id", r"convert_tokens_to_ids"),
    ("ppo no stop token", lambda c: train_ppo(c.model, _without_eos(c.tok), ["q :"], lambda p, r: 0, steps=1),
     ValueError, r"stop_token_id is None and the tokenizer has no eos_token", r"set tokenizer\.eos_token"),
    ("ppo ref_model is the policy", lambda c: ppo(c, ref_model=c.model), ValueError,
     r"ref_model is the same object", r"copy\.deepcopy"),
    ("ppo tokenizer is a string", lambda c: train_ppo(c.model, "gpt2", ["q :"], lambda p, r: 0), TypeError,
     r"tokenizer must be a tokenizer object", r"AutoTokenizer"),
    ("ppo allowed out of range", lambda c: ppo(c, allowed_token_ids=[4, 1000]), ValueError,
     r"allowed_token_ids has ids \[1000\]", r"convert_tokens_to_ids"),
    ("ppo prompts", lambda c: ppo(c, prompts="q :"), TypeError, r"prompts must be a non-empty list of strings",
     r"world\.prompts"),
    ("ppo mini batch", lambda c: PPOConfig(batch_size=4, mini_batch_size=8), ValueError, r"mini_batch_size=8",
     r"must be ≤ batch_size=4"),
    ("ppo config and options", lambda c: train_ppo(c.model, c.tok, ["q"], len, config=PPOConfig(), steps=1),
     TypeError, r"config=PPOConfig\(\.\.\.\) or keyword options", r"not both"),
    ("reward not callable", lambda c: as_reward_fn(3, c.tok), TypeError, r"reward must be a RewardModel",
     r"callable \(prompts, responses\)"),
    ("reward wrong shape", lambda c: call_reward(lambda p, r: torch.zeros(3), ["q"], ["a"]), ValueError,
     r"reward\(prompts, responses\) must return 1 finite scores", r"shape \[1\]"),
    # ------------------------------------------------------------------ the reference-model cache
    ("cache entry is a file", lambda c: _cache_entry_is_a_file(c), ValueError, r"cache entry .* is a file",
     r"delete that file or choose another cache folder"),
    ("cache not writable", lambda c: reference_model(SequenceWorld(), cache_dir=c.file("f", "") / "cache"),
     ValueError, r"cache folder .* is not writable", r"\$DPO_TEACH_CACHE"),
    ("cache train_fn", lambda c: reference_model(SequenceWorld(), cache_dir=c.tmp, train_fn=3), TypeError,
     r"train_fn must be callable", r"like dpo_teach\.trainers\.sft\.train_sft"),
    ("cache world", lambda c: reference_model("sequences", cache_dir=c.tmp), TypeError,
     r"world must be a dpo_teach world", r"SequenceWorld"),
    # ------------------------------------------------------------------ tensors, numbers, losses
    ("tensor type", lambda c: dpo_loss([0.0], *[torch.zeros(1)] * 3), TypeError,
     r"policy_chosen_logps must be a torch\.Tensor", r"torch\.tensor\(\.\.\., dtype=torch\.float32\)"),
    ("tensor dtype", lambda c: V.check_tensor("x", torch.zeros(1, dtype=torch.long)), TypeError,
     r"x must have a floating dtype", r"x\.float\(\)"),
    ("tensor nan", lambda c: dpo_loss(torch.tensor([math.nan]), *[torch.zeros(1)] * 3), ValueError,
     r"policy_chosen_logps contains NaN", r"check the masking"),
    ("tensor shapes", lambda c: dpo_loss(torch.zeros(2), *[torch.zeros(1)] * 3), ValueError,
     r"shapes differ: policy_chosen_logps\[2\]", r"all of the same shape"),
    ("not normalised", lambda c: V.check_normalised("log_pi", torch.zeros(3)), ValueError,
     r"log_pi is not normalised", r"torch\.log_softmax"),
    ("positive", lambda c: V.check_positive("beta", 0.0), ValueError, r"beta must be a finite number > 0",
     r"pass e\.g\. beta=0\.1"),
    ("positive type", lambda c: V.check_positive("beta", True), TypeError, r"beta must be a positive number",
     r"pass e\.g\. beta=0\.1"),
    ("label smoothing", lambda c: V.check_label_smoothing(0.5), ValueError, r"label_smoothing must be in",
     r"Use 0\.0 for plain DPO"),
    ("loss registry", lambda c: get_loss("dpo-ipo"), ValueError, r"unknown loss 'dpo-ipo'", r"choose one of"),
    ("grad norm", lambda c: V.check_grad_norm(math.inf, 3), ValueError, r"gradient norm at step 3 is inf",
     r"lower the learning rate"),
    # ------------------------------------------------------------------ Hub formats (dpo_teach.hub)
    ("dialogue without marker", lambda c: hub.split_dialogue_pair("Human: a", "Human: b"), ValueError,
     r"share no '\\n\\nAssistant:' marker", r"differ in the last answer only"),
    ("dialogue types", lambda c: hub.split_dialogue_pair(["a"], "b"), TypeError,
     r"chosen and rejected must be str dialogues", r"str"),
    ("message role", lambda c: hub.render_messages([{"role": "bot", "content": "x"}]), ValueError,
     r"message 0 has role 'bot'", r"expected one of"),
    ("hub row index", lambda c: hub.preference_rows([{"chosen": "x"}]), ValueError, r"row 0: ",
     r"pass skip_invalid=True"),
    ("bpe vocab size", lambda c: hub.train_bpe_tokenizer(["a b"], vocab_size=10), ValueError,
     r"vocab_size=10", r"must be an int > 256"),
    ("tiny model architecture", lambda c: hub.save_tiny_causal_lm(c.tok, c.tmp, architecture="bert"),
     ValueError, r"architecture='bert'", r"'gpt2' or 'llama'"),
]  # fmt: skip


def _without_eos(tokenizer):
    tokenizer.eos_token = None
    return tokenizer


def _cache_entry_is_a_file(ctx):
    from dpo_teach.cache import cache_path

    world = SequenceWorld()
    cache_path(world, ctx.tmp).write_text("not a folder")
    return reference_model(world, cache_dir=ctx.tmp)


@pytest.mark.parametrize(("call", "error", "field", "fix"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(call, error, field, fix, tmp_path, monkeypatch):
    monkeypatch.setenv(
        "HF_HOME", str(tmp_path / "hf")
    )  # an empty Hub cache: nothing is found, nothing fetched
    ctx = Ctx(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with hub.no_network() as attempts, pytest.raises(error) as info:
            call(ctx)
    message = str(info.value)
    assert re.search(field, message, re.S), f"field {field!r} not named in: {message}"
    assert re.search(fix, message, re.S), f"fix {fix!r} not given in: {message}"
    assert not attempts, attempts


def test_case_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


# ---------------------------------------------------------------------- inputs that are accepted as they are


def test_an_unwritable_cache_is_found_before_sft_runs(tmp_path):
    (tmp_path / "f").write_text("")  # a file where the cache folder's parent should be
    calls = []
    with pytest.raises(ValueError, match="not writable"):
        reference_model(
            SequenceWorld(), cache_dir=tmp_path / "f" / "c", train_fn=lambda *a, **k: calls.append(a)
        )
    assert calls == []  # SFT never started


def test_a_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(r) for r in PAIRS).encode())
    assert D.load_preference_rows(path) == PAIRS


def test_a_mistyped_hub_name_fails_at_once_without_the_network(tmp_path, monkeypatch):
    """Offline by default: no DNS look-up, no connection (the old behaviour waited on the network)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with hub.no_network() as attempts, pytest.raises(models.OfflineModelError, match="--allow-download"):
        models.load_causal_lm("dpo-teach-nobody/gtp2")
    assert attempts == []


def test_reward_model_scores_with_a_tokenizer_without_pad(tmp_path):
    """GPT-2's tokenizer has no pad token: scoring pads with EOS, as training does, and padding is masked."""
    tok = hub.train_bpe_tokenizer([r["prompt"] + r["chosen"] for r in PAIRS] * 3, vocab_size=300)
    assert tok.pad_token_id is None
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_layer=1, n_embd=16, n_head=2)).eval()
    rm = RewardModel(lm)
    together = rm.score(tok, ["q :", "q a :"], [" good film", " great"])
    alone = torch.cat([rm.score(tok, ["q :"], [" good film"]), rm.score(tok, ["q a :"], [" great"])])
    torch.testing.assert_close(together, alone)
    assert set(evaluate_reward_model(rm, tok, PAIRS)) == {"loss", "accuracy", "margin"}


def test_ppo_with_a_reward_model_and_a_tokenizer_without_pad():
    tok = hub.train_bpe_tokenizer([r["prompt"] + r["chosen"] for r in PAIRS] * 3, vocab_size=300)
    policy = models.tiny_gpt2(tok, n_positions=32)
    rm = RewardModel(copy.deepcopy(policy))
    history = train_ppo(policy, tok, ["q :"], rm, steps=1, batch_size=2, mini_batch_size=2, max_new_tokens=3,
                        progress=False)  # fmt: skip
    assert math.isfinite(history[0]["objective/scores"])


# ---------------------------------------------------------------------- silently wrong before: empty prompts


def bpe_tokenizer():
    """GPT-2's format: byte-level BPE, no BOS added, ``<|endoftext|>`` as BOS, EOS and unknown."""
    return hub.train_bpe_tokenizer([" good film", " bad film", " great", " awful"] * 4, vocab_size=290)


@pytest.mark.parametrize("kind", ["bpe", "word"])
def test_an_empty_prompt_scores_every_response_token(kind):
    """An empty prompt starts with BOS (else EOS), so the first response token is predicted by a real position:
    the summed log-prob equals log_softmax read by hand at every response token, the first included."""
    tok = bpe_tokenizer() if kind == "bpe" else word_tokenizer()
    start = tok.bos_token_id
    model = models.tiny_gpt2(tok, seed=3)
    rows = [{"prompt": "", "chosen": " good film", "rejected": " bad"}]
    example = D.tokenize_preference(rows, tok)[0]
    assert example["prompt_ids"] == [start]
    batch = D.PreferenceCollator(tok)([example])
    assert int(logprobs.response_lengths(batch["chosen_labels"])[0]) == len(example["chosen_ids"])
    with torch.no_grad():
        out = logprobs.concatenated_forward(model, batch)
        ids = torch.tensor([[start, *example["chosen_ids"]]])
        by_hand = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
        by_hand = by_hand.gather(-1, ids[0, 1:, None]).sum()
    torch.testing.assert_close(out.chosen_logps[0], by_hand)


def test_empty_prompts_in_sft_and_the_reward_model_start_with_eos_for_gpt2_style_tokenizers():
    tok = bpe_tokenizer()
    sft = D.tokenize_sft([{"prompt": "", "completion": " great"}], tok)[0]
    assert sft["prompt_ids"] == [tok.eos_token_id]
    lm = models.tiny_gpt2(tok, seed=1)
    rm = RewardModel(lm)
    with torch.no_grad():
        ids = torch.tensor([[tok.eos_token_id, *D.encode_completion(tok, " great")]])
        direct = rm(ids, torch.ones_like(ids))
    torch.testing.assert_close(rm.score(tok, [""], [" great"]), direct)


def test_a_non_empty_prompt_is_tokenised_as_before():
    """The start token is added only when the prompt encodes to nothing (the book's numbers depend on it)."""
    for tok in (bpe_tokenizer(), word_tokenizer()):
        for prompt in ("q :", " good", "x"):
            assert D.encode_prompt(tok, prompt) == list(tok(prompt)["input_ids"])


def test_pairs_identical_after_truncation_are_counted_and_warned_about():
    tok = word_tokenizer()
    rows = [
        {
            "prompt": "q :",
            "chosen": " good film was fine",
            "rejected": " good film was bad",
        },  # equal once cut
        {"prompt": "q :", "chosen": " good zebra", "rejected": " good yak"},  # unknown words: both <unk>
        {"prompt": "q :", "chosen": " good", "rejected": " bad"},
        {"prompt": "q :", "chosen": " fine", "rejected": " fine"},  # identical strings: load_rows warns
    ]
    with pytest.warns(UserWarning, match=r"2 of 4 preference pairs .* identical token ids") as caught:
        out = D.tokenize_preference(rows, tok, max_length=5, max_prompt_length=2)
    assert out.identical_pairs == 2 and len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert D.tokenize_preference(rows[2:3], tok).identical_pairs == 0
