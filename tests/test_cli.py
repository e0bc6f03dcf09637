"""python -m dpo_teach: help texts, sft and dpo on a local model and data files, bad arguments, the demo."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from trainer_fixtures import tiny_model, word_tokenizer
from transformers import AutoModelForCausalLM

from dpo_teach.cli import main

PAIRS = [
    {"prompt": "q :", "chosen": " good film", "rejected": " bad film"},
    {"prompt": "q a :", "chosen": " great", "rejected": " awful"},
] * 4


@pytest.fixture
def local_model(tmp_path):
    tok = word_tokenizer()
    model = tiny_model(tok)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_module_entry_point_prints_help():
    out = subprocess.run(
        [sys.executable, "-m", "dpo_teach", "--help"], capture_output=True, text=True, check=True
    )
    assert "sft" in out.stdout and "dpo" in out.stdout and "demo" in out.stdout


@pytest.mark.parametrize("command", ["sft", "dpo", "demo"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--seed" in capsys.readouterr().out


def test_dpo_on_a_local_model_and_jsonl_file_saves_a_loadable_model(local_model, tmp_path, capsys):
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in PAIRS))
    out = tmp_path / "dpo"
    assert (
        main(
            [
                "dpo",
                "--model",
                str(local_model),
                "--data",
                str(data),
                "--out",
                str(out),
                "--batch-size",
                "4",
                "--quiet",
            ]
        )
        == 0
    )
    assert "sigmoid: 2 steps" in capsys.readouterr().out
    trained, start = (
        AutoModelForCausalLM.from_pretrained(out),
        AutoModelForCausalLM.from_pretrained(local_model),
    )
    assert any(
        not torch.equal(a, b)
        for a, b in zip(trained.state_dict().values(), start.state_dict().values(), strict=True)
    )


def test_sft_on_a_local_model_and_json_file(local_model, tmp_path, capsys):
    data = tmp_path / "rows.json"
    data.write_text(json.dumps([{"prompt": r["prompt"], "completion": r["chosen"]} for r in PAIRS]))
    assert (
        main(
            [
                "sft",
                "--model",
                str(local_model),
                "--data",
                str(data),
                "--out",
                str(tmp_path / "sft"),
                "--quiet",
            ]
        )
        == 0
    )
    assert "SFT: 1 steps" in capsys.readouterr().out
    assert (tmp_path / "sft" / "model.safetensors").exists()


def test_model_without_data_is_a_usage_error(local_model):
    with pytest.raises(SystemExit) as exit_info:
        main(["dpo", "--model", str(local_model)])
    assert exit_info.value.code == 2


def test_unknown_loss_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        main(["dpo", "--loss", "dpo++"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_end_to_end(capsys):
    assert main(["demo", "--pairs", "64", "--epochs", "1", "--eval-samples", "32", "--quiet"]) == 0
    out = capsys.readouterr().out
    for part in ("1/4", "2/4", "3/4", "4/4", "expected true reward", "KL(π_θ ‖ π_ref)"):
        assert part in out
