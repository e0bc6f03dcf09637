"""Checkpoints and output folders: nothing is unpickled, nothing trained is lost, nothing corrupt is resumed.

Fault injection against :mod:`dpo_teach.trainers.checkpoints` through :class:`DPOTrainer`: a planted pickle,
an output_dir that is a file or cannot be written, a second run into a used folder, a crash mid-write, a
flipped byte, a torn state file, a foreign ``checkpoint-best`` folder, and resuming on other data.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings

import pytest
import torch
from trainer_fixtures import tiny_model, word_tokenizer

from dpo_teach import seed
from dpo_teach.checksums import checksum_mismatches, folder_checksums
from dpo_teach.trainers import DPOConfig, DPOTrainer, train_dpo
from dpo_teach.trainers import checkpoints as K

PAIRS = [
    {"prompt": "q :", "chosen": " good film", "rejected": " bad film"},
    {"prompt": "q a :", "chosen": " great", "rejected": " awful film was"},
    {"prompt": "q b :", "chosen": " fine film", "rejected": " bad"},
    {"prompt": "q c d :", "chosen": " the film was good", "rejected": " awful"},
] * 4
# 16 pairs, batch 4, 2 epochs: 8 steps; a checkpoint every 2 steps
OPTS = {"lr": 1e-3, "batch_size": 4, "epochs": 2, "warmup_steps": 2, "save_steps": 2, "progress": False}


class Interrupt(Exception):
    pass


class Payload:
    """Unpickling this object opens (creates) ``marker``: proof that code from the file ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


@pytest.fixture(scope="module")
def full_run(tok, tmp_path_factory):
    """The uninterrupted run: its history and final weights."""
    model = tiny_model(tok)
    history = train_dpo(model, tok, PAIRS, **{**OPTS, "output_dir": str(tmp_path_factory.mktemp("full"))})
    return history, model.state_dict()


def interrupted_run(tok, out, at_step=7):
    """A run into ``out`` killed after step ``at_step`` (checkpoints 2, 4, 6 written)."""

    def stop(metrics):
        if metrics["step"] == at_step:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_dpo(tiny_model(tok), tok, PAIRS, callback=stop, **OPTS, output_dir=str(out))
    return out


def rewrite_manifest(checkpoint):
    """What an attacker with write access does after planting a file: make the manifest agree with it."""
    manifest = json.loads((checkpoint / K.MANIFEST).read_text())
    manifest["files"] = folder_checksums(checkpoint, exclude=(K.MANIFEST,))
    (checkpoint / K.MANIFEST).write_text(json.dumps(manifest))


def flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # inside the last tensor's data: the file still parses
    path.write_bytes(bytes(data))


def resume(tok, out, checkpoint=True, rows=PAIRS, **extra):
    model = tiny_model(tok)
    return model, DPOTrainer(model, tok, rows, **OPTS, output_dir=str(out), **extra).train(
        resume_from_checkpoint=checkpoint
    )


# ------------------------------------------------------------------------------------------ 1. no pickle
def test_planted_pickle_in_optimizer_file_is_refused_and_never_runs(tok, tmp_path):
    out = interrupted_run(tok, tmp_path / "run")
    marker = tmp_path / "marker"
    target = out / "checkpoint-6" / K.OPTIM_FILE
    torch.save({"optimizer": Payload(marker), "scheduler": {}}, target)
    rewrite_manifest(out / "checkpoint-6")
    with pytest.raises(ValueError, match=r"optimizer\.pt.*refused"):
        resume(tok, out, out / "checkpoint-6")
    assert not marker.exists()
    # the payload is live: loading the file the unsafe way runs it (so the test above can fail)
    torch.load(target, weights_only=False)
    assert marker.exists()


def test_planted_pickle_in_the_rng_state_is_refused_and_never_runs(tok, tmp_path):
    out = interrupted_run(tok, tmp_path / "run")
    marker = tmp_path / "marker"
    state_file = out / "checkpoint-6" / K.STATE_FILE
    state = json.loads(state_file.read_text())
    state["rng"]["torch"] = seed._encode_tensor(Payload(marker))
    state_file.write_text(json.dumps(state))
    rewrite_manifest(out / "checkpoint-6")
    with pytest.raises(ValueError, match=r"trainer_state\.json.*refused"):
        resume(tok, out, out / "checkpoint-6")
    assert not marker.exists()


def test_a_planted_file_without_a_matching_manifest_fails_its_checksum(tok, tmp_path):
    out = interrupted_run(tok, tmp_path / "run")
    torch.save(
        {"optimizer": Payload(tmp_path / "marker"), "scheduler": {}}, out / "checkpoint-6" / K.OPTIM_FILE
    )
    with pytest.raises(K.CorruptCheckpoint, match=r"optimizer\.pt does not match its checksum"):
        resume(tok, out, out / "checkpoint-6")
    assert not (tmp_path / "marker").exists()


# ------------------------------------------------------------------------------------------ 2. the destination
def no_step_runs(tok, **kwargs):
    """Train with ``kwargs`` expecting a failure; returns the metrics logged (should be none) and whether the
    weights moved."""
    model, seen = tiny_model(tok), []
    resume_from = kwargs.pop("resume", None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises((ValueError, TypeError)) as info:
        DPOTrainer(model, tok, PAIRS, **{**OPTS, **kwargs}, callback=seen.append).train(
            resume_from_checkpoint=resume_from
        )
    moved = any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    return info.value, seen, moved


def test_output_dir_that_is_a_file_is_refused_before_any_step(tok, tmp_path):
    (tmp_path / "file.txt").write_text("mine")
    err, seen, moved = no_step_runs(tok, output_dir=str(tmp_path / "file.txt"))
    assert "is an existing file" in str(err) and "pass a folder" in str(err)
    assert seen == [] and not moved and (tmp_path / "file.txt").read_text() == "mine"


def test_output_dir_under_a_file_is_refused_before_any_step(tok, tmp_path):
    (tmp_path / "file.txt").write_text("mine")
    err, seen, moved = no_step_runs(tok, output_dir=str(tmp_path / "file.txt" / "sub"))
    assert "lies under" in str(err) and "file.txt" in str(err)
    assert seen == [] and not moved


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into a 0o500 folder regardless"
)
def test_output_dir_without_write_permission_is_refused_before_any_step(tok, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        err, seen, moved = no_step_runs(tok, output_dir=str(locked / "run"))
    finally:
        locked.chmod(0o700)
    assert "cannot be written" in str(err) and seen == [] and not moved


def test_a_failed_write_probe_is_reported_as_unwritable(tok, tmp_path, monkeypatch):
    """The same branch for root, which no permission bit stops: the probe file cannot be created."""

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(K.tempfile, "NamedTemporaryFile", refuse)
    err, seen, moved = no_step_runs(tok, output_dir=str(tmp_path / "run"))
    assert "cannot be written (PermissionError" in str(err) and seen == [] and not moved


@pytest.mark.parametrize("left_behind", ["checkpoints", "final model only"])
def test_second_run_into_a_used_output_dir_is_refused(tok, tmp_path, left_behind):
    out = tmp_path / "run"
    save_steps = {"save_steps": 2 if left_behind == "checkpoints" else None}
    train_dpo(tiny_model(tok), tok, PAIRS, **{**OPTS, **save_steps}, output_dir=str(out))
    weights = (out / "model.safetensors").read_bytes()
    err, seen, _ = no_step_runs(tok, output_dir=str(out), **save_steps)
    assert "already holds another run" in str(err) and "overwrite_output_dir=True" in str(err)
    assert seen == [] and (out / "model.safetensors").read_bytes() == weights


def test_overwrite_output_dir_replaces_the_earlier_run_and_its_checkpoints(tok, tmp_path):
    out = tmp_path / "run"
    train_dpo(tiny_model(tok), tok, PAIRS, **OPTS, output_dir=str(out))
    assert [p.name for p in K.numbered_checkpoints(out)] == [
        "checkpoint-8",
        "checkpoint-6",
        "checkpoint-4",
        "checkpoint-2",
    ]
    model = tiny_model(tok, seed=1)
    train_dpo(model, tok, PAIRS, **{**OPTS, "save_steps": 3}, output_dir=str(out), overwrite_output_dir=True)
    assert [p.name for p in K.numbered_checkpoints(out)] == ["checkpoint-6", "checkpoint-3"]
    from safetensors.torch import load_file

    saved = load_file(out / "model.safetensors")
    assert all(torch.equal(saved[k], model.state_dict()[k]) for k in saved)


def test_resuming_from_elsewhere_into_a_used_output_dir_is_refused(tok, tmp_path):
    source = interrupted_run(tok, tmp_path / "source")
    used = tmp_path / "used"
    train_dpo(tiny_model(tok), tok, PAIRS, **OPTS, output_dir=str(used))
    err, seen, _ = no_step_runs(tok, output_dir=str(used), resume=source / "checkpoint-6")
    assert "already holds another run" in str(err) and seen == []


def test_a_crash_while_writing_leaves_no_checkpoint_and_keeps_the_old_one(tok, tmp_path):
    model = tiny_model(tok)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    state = {"step": 1, "position": 1, "history": [], "config": {}, "data": "x"}

    class DiskFull:
        def state_dict(self):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        K.save_checkpoint(
            tmp_path / "checkpoint-1", model=model, optimizer=DiskFull(), scheduler=scheduler, state=state
        )
    assert list(tmp_path.iterdir()) == []  # neither checkpoint-1 nor a temporary folder
    K.save_checkpoint(
        tmp_path / "checkpoint-1", model=model, optimizer=optimizer, scheduler=scheduler, state=state
    )
    with pytest.raises(OSError, match="No space"):
        K.save_checkpoint(
            tmp_path / "checkpoint-1",
            model=model,
            optimizer=DiskFull(),
            scheduler=scheduler,
            state={**state, "step": 9},
        )
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-1"]
    assert K.read_checkpoint(tmp_path / "checkpoint-1")["step"] == 1


# ------------------------------------------------------------------------------------------ 3. integrity
def test_resume_from_latest_after_a_kill_is_bit_identical(tok, tmp_path, full_run):
    out = interrupted_run(tok, tmp_path / "run")
    model, history = resume(tok, out)  # checkpoint-6
    assert history == full_run[0]
    assert all(torch.equal(v, full_run[1][k]) for k, v in model.state_dict().items())


def test_flipped_byte_in_the_weights_is_detected(tok, tmp_path):
    out = interrupted_run(tok, tmp_path / "run")
    flip_last_byte(out / "checkpoint-6" / "model.safetensors")
    with pytest.raises(K.CorruptCheckpoint, match=r"model\.safetensors does not match its checksum"):
        resume(tok, out, out / "checkpoint-6")


@pytest.mark.parametrize(
    "fault",
    [
        "flipped weight byte",
        "torn state",
        "torn state, manifest rewritten",
        "no manifest",
        "planted extra file",
    ],
)
def test_latest_falls_back_to_the_previous_intact_checkpoint(tok, tmp_path, full_run, fault):
    out = interrupted_run(tok, tmp_path / "run")
    newest = out / "checkpoint-6"
    if fault == "flipped weight byte":
        flip_last_byte(newest / "model.safetensors")
    elif fault.startswith("torn state"):
        text = (newest / K.STATE_FILE).read_text()
        (newest / K.STATE_FILE).write_text(text[: len(text) // 2])
        if "rewritten" in fault:
            rewrite_manifest(newest)
    elif fault == "no manifest":
        (newest / K.MANIFEST).unlink()
    else:
        shutil.copy(newest / "model.safetensors", newest / "model-00002-of-00002.safetensors")
    with pytest.raises(K.CorruptCheckpoint, match="checkpoint-6"):
        resume(tok, out, newest)  # named explicitly, it must be intact
    with pytest.warns(RuntimeWarning, match="checkpoint-6.*Falling back"):
        model, history = resume(tok, out)  # from checkpoint-4, and still the uninterrupted run exactly
    assert history == full_run[0]
    assert all(torch.equal(v, full_run[1][k]) for k, v in model.state_dict().items())


def test_no_intact_checkpoint_at_all_is_a_clear_error(tok, tmp_path):
    out = interrupted_run(tok, tmp_path / "run")
    for checkpoint in K.numbered_checkpoints(out):
        flip_last_byte(checkpoint / "model.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match="holds no intact checkpoint-N"):
            resume(tok, out)


def test_folders_with_other_names_are_not_checkpoints(tok, tmp_path, full_run):
    out = interrupted_run(tok, tmp_path / "run")
    shutil.copytree(out / "checkpoint-2", out / "checkpoint-best")
    (out / "checkpoint-99.tmp").mkdir()
    (out / "checkpoint-50").write_text("a file, not a folder")
    assert K.latest_checkpoint(out).name == "checkpoint-6"
    _, history = resume(tok, out)
    assert history == full_run[0]


def test_resuming_on_other_data_is_refused(tok, tmp_path):
    out = interrupted_run(tok, tmp_path / "run")
    swapped = [{**r, "chosen": r["rejected"], "rejected": r["chosen"]} for r in PAIRS]
    with pytest.raises(ValueError, match="trained on other data"):
        resume(tok, out, rows=swapped)


def test_data_fingerprint_sees_one_token_and_ignores_added_reference_logps():
    examples = [{"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4]}]
    same = [{**examples[0], "ref_chosen_logps": -1.5}]
    other = [{**examples[0], "rejected_ids": [5]}]
    assert K.data_fingerprint(examples) == K.data_fingerprint(same) != K.data_fingerprint(other)
    kto = [{"prompt_ids": [1], "completion_ids": [3], "label": True}]
    assert K.data_fingerprint(kto) != K.data_fingerprint([{**kto[0], "label": False}])


def test_manifest_checksums_are_sha256_of_the_bytes(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("hello")
    sums = folder_checksums(tmp_path)
    assert sums == {
        "a.bin": hashlib.sha256(b"abc").hexdigest(),
        "sub/b.txt": hashlib.sha256(b"hello").hexdigest(),
    }
    assert checksum_mismatches(tmp_path, sums) == []
    (tmp_path / "a.bin").write_bytes(b"abd")
    (tmp_path / "sub" / "b.txt").unlink()
    (tmp_path / "c").write_text("new")
    assert checksum_mismatches(tmp_path, sums) == [
        "a.bin does not match its checksum",
        "sub/b.txt is missing",
        "c is not in the manifest",
    ]


# ------------------------------------------------------------------------------------------ 4. settings that do nothing
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"save_steps": 2}, ValueError, r"save_steps=2 .*output_dir is None; pass output_dir"),
        (
            {"overwrite_output_dir": "yes", "output_dir": "x"},
            TypeError,
            "overwrite_output_dir must be True or False",
        ),
    ],
)
def test_config_without_its_counterpart_is_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        DPOConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "resume_from", "error", "match"),
    [
        ({"eval_steps": 2}, None, ValueError, r"eval_steps=2 .*no eval_rows.*pass eval_rows"),
        ({}, True, ValueError, r"resume_from_checkpoint=True .*output_dir is None; pass output_dir"),
        ({"output_dir": 123}, None, TypeError, "output_dir must be a folder path"),
        ({"output_dir": "OUT"}, "OUT/nowhere", ValueError, "is not a folder; pass a checkpoint-N folder"),
    ],
)
def test_trainer_settings_that_cannot_work_are_rejected(tok, tmp_path, kwargs, resume_from, error, match):
    fix = {k: str(tmp_path / v) if v == "OUT" else v for k, v in kwargs.items()}
    if isinstance(resume_from, str):
        resume_from = str(tmp_path / resume_from)
    with pytest.raises(error, match=match):
        DPOTrainer(tiny_model(tok), tok, PAIRS, progress=False, **fix).train(
            resume_from_checkpoint=resume_from
        )
