"""benchmarks/gpu_dpo.py runs (tiny shapes, CPU, two steps) so that it cannot rot between GPU sessions."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_dpo.py"


def test_gpu_benchmark_runs_tiny_on_cpu(capsys):
    spec = importlib.util.spec_from_file_location("gpu_dpo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.run(
        ["--tiny", "--steps", "2", "--warmup", "1", "--device", "cpu", "--peak-tflops", "1.0"]
    )
    assert math.isclose(result["first_loss"], math.log(2), abs_tol=1e-5)  # the policy starts equal to π_ref
    assert result["tokens_per_s"] > 0 and 0 < result["mfu"] < 1
    assert "tokens/s" in capsys.readouterr().out
