"""python -m dpo_teach: help texts, sft and dpo on a local model and data files, bad arguments, the demo."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch
from trainer_fixtures import tiny_model, word_tokenizer
from transformers import AutoModelForCausalLM

from dpo_teach.cli import COMMANDS, LOSS_NAMES, build_parser, main

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
    assert "5/5" not in out  # the on-policy step runs only when asked


@pytest.mark.slow
def test_demo_can_continue_on_policy_with_rloo(capsys):
    argv = [
        "demo",
        "--pairs",
        "64",
        "--epochs",
        "1",
        "--eval-samples",
        "32",
        "--quiet",
        "--on-policy",
        "rloo",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "5/5  RLOO" in out and out.count("expected true reward") == 2


# ---------------------------------------------------------------------- help: fast, plain text, one line each


def test_help_loads_no_torch_and_reads_as_plain_text():
    """--help answers without importing torch or transformers (the slow part of a start-up)."""
    code = (
        "import sys\nfrom dpo_teach.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    assert "``" not in out and ":func:" not in out  # no raw reST in what the reader sees
    for command, line in COMMANDS.items():
        assert command in out and line.split(":")[0] in " ".join(out.split())


def test_the_loss_choices_are_the_registry():
    from dpo_teach.losses import LOSSES

    assert tuple(sorted(LOSSES)) == LOSS_NAMES


@pytest.mark.parametrize("command", ["sft", "dpo", "demo"])
def test_every_command_has_a_one_line_description(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert COMMANDS[command] in " ".join(out.split()) and "\n" not in COMMANDS[command]


# ---------------------------------------------------------------------- input errors: one line, exit status 2


@pytest.fixture
def files(tmp_path, local_model):
    good = tmp_path / "pairs.jsonl"
    good.write_text("\n".join(json.dumps(r) for r in PAIRS))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PAIRS[0]) + "\n" + json.dumps(PAIRS[1]) + "\n{oops\n")
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((local_model / "config.json").read_text())
    return {"good": good, "bad": bad, "dir": tmp_path, "model": local_model, "no_weights": no_weights}


INPUT_ERRORS = [
    ("data is a directory", ["dpo", "--model", "{model}", "--data", "{dir}"], r"is a directory"),
    ("data missing", ["sft", "--model", "{model}", "--data", "{dir}/nope.json"], r"no file at"),
    ("bad jsonl line", ["dpo", "--model", "{model}", "--data", "{bad}"], r"bad\.jsonl, line 3"),
    ("model without weights", ["dpo", "--model", "{no_weights}", "--data", "{good}"], r"no weights"),
    ("mistyped model", ["dpo", "--model", "dpo-teach-nobody/gtp2", "--data", "{good}"], r"--allow-download"),
    (
        "zero epochs",
        ["dpo", "--model", "{model}", "--data", "{good}", "--epochs", "0"],
        r"epochs must be an int > 0, got 0",
    ),
    (
        "negative beta",
        ["dpo", "--model", "{model}", "--data", "{good}", "--beta", "-1"],
        r"beta must be a finite number > 0, got -1\.0",
    ),
    (
        "sft --out is a file",
        ["sft", "--model", "{model}", "--data", "{dir}/sft.json", "--out", "{good}"],
        r"output_dir .*is an existing file; pass a folder",
    ),  # fmt: skip
    (
        "sft --out holds a model",
        ["sft", "--model", "{model}", "--data", "{dir}/sft.json", "--out", "{model}"],
        r"already holds another run.*overwrite",
    ),  # fmt: skip
    (
        "dpo --out holds a model",
        ["dpo", "--model", "{model}", "--data", "{good}", "--out", "{model}"],
        r"already holds another run.*overwrite",
    ),  # fmt: skip
    (
        "sft rows for dpo",
        ["dpo", "--model", "{model}", "--data", "{dir}/sft.json"],
        r"missing field 'chosen'",
    ),
]


@pytest.mark.parametrize(
    ("argv", "expected"), [c[1:] for c in INPUT_ERRORS], ids=[c[0] for c in INPUT_ERRORS]
)
def test_input_errors_are_one_line_and_exit_2(argv, expected, files, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    (tmp_path / "sft.json").write_text(json.dumps([{"prompt": "q", "completion": " a"}]))
    assert main([a.format(**files) for a in argv] + ["--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert re.search(expected, err), err


def test_an_input_error_prints_no_traceback_from_the_command_line(files):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "dpo_teach",
            "dpo",
            "--model",
            str(files["model"]),
            "--data",
            str(files["dir"]),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith("error: data path") and len(run.stderr.strip().splitlines()) == 1


def test_a_real_bug_still_shows_its_traceback(files, monkeypatch):
    """A TypeError from a broken call inside the package is a bug, not bad input: it propagates."""
    from dpo_teach import cli, data

    monkeypatch.setattr(cli, "cmd_dpo", lambda args: data.pad_sequences([[1]], None, 0))
    with pytest.raises(TypeError):
        main(["dpo", "--model", str(files["model"]), "--data", str(files["good"])])


def test_one_beta_default_everywhere():
    """`dpo_teach dpo`, `dpo_teach demo` and DPOConfig start from the same β."""
    from dpo_teach.trainers.dpo import DPOConfig

    parser = build_parser()
    for command in ("dpo", "demo"):
        args = parser.parse_args([command])
        assert args.beta == DPOConfig().beta, command
