"""dpo_teach.costs: lines of code and parameters, against counts made by hand."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

from dpo_teach import costs

SOURCE = '''"""A module docstring
over two lines."""

import math  # a comment after code counts as code


def f(x):
    """One-line docstring."""
    # a comment line
    y = x + 1

    return math.sqrt(y)


class A:
    """Class docstring,
    two lines."""

    value = "not a docstring"
'''


def test_code_lines_by_hand():
    # code: "import math", "def f(x):", "y = x + 1", "return ...", "class A:", "value = ..." = 6
    assert costs.code_lines(SOURCE) == 6


def test_code_lines_of_a_module_agrees_with_its_source():
    import dpo_teach.costs as module

    text = open(module.__file__).read()
    assert costs.code_lines(module) == costs.code_lines(text) > 0


def test_parameter_count_counts_each_module_in_full():
    layer = torch.nn.Linear(3, 2)  # 3·2 weights + 2 biases
    assert costs.parameter_count(layer) == 8
    assert costs.parameter_count(layer, layer) == 16


TOY_PACKAGE = {  # module -> source; a imports b at the top and c lazily (relatively); b imports c; d is unused
    "__init__.py": "from toypkg import d  # a package __init__ only re-exports: not scanned, not counted\n",
    "a.py": "from toypkg import b\n\n\ndef f():\n    from .c import g\n\n    return g() + b.h()\n",
    "b.py": '"""Doc."""\nimport json\nfrom toypkg.c import g\n\n\ndef h():\n    return g()\n',
    "c.py": "def g():\n    return 1\n",
    "d.py": "x = 1\n",
}


def test_package_modules_is_the_transitive_closure_of_imports(tmp_path, monkeypatch):
    (tmp_path / "toypkg").mkdir()
    for name, source in TOY_PACKAGE.items():
        (tmp_path / "toypkg" / name).write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    import toypkg.a

    # lines by hand: a: import, def, from, return = 4; b: import json, from, def, return = 4; c: def, return = 2
    assert costs.package_modules(toypkg.a) == {"toypkg.a": 4, "toypkg.b": 4, "toypkg.c": 2}
    for name in [n for n in sys.modules if n.split(".")[0] == "toypkg"]:  # a fresh import in other tests
        monkeypatch.delitem(sys.modules, name)


def test_package_modules_of_the_dpo_trainer_includes_its_losses():
    import dpo_teach.losses
    import dpo_teach.trainers.dpo

    found = costs.package_modules(dpo_teach.trainers.dpo)
    assert {"dpo_teach.trainers.dpo", "dpo_teach.losses", "dpo_teach.trainers.dpo_step"} <= set(found)
    assert found["dpo_teach.losses"] == costs.code_lines(dpo_teach.losses)


def test_knobs_of_a_config_and_of_a_function():
    @dataclasses.dataclass
    class Config:
        lr: float = 1.0
        device: str = "cpu"
        beta: float = 0.1
        seed: int = 0

    def train(model, rows, *, epochs=1, progress=True, batch_size=8):
        return model, rows, epochs, progress, batch_size

    assert costs.knobs(Config) == costs.knobs(Config()) == ["lr", "beta"]
    assert costs.knobs(train) == ["epochs", "batch_size"]


@pytest.mark.parametrize(("call", "error"), [(lambda: costs.code_lines(3), TypeError),
                                             (lambda: costs.parameter_count("model"), TypeError),
                                             (lambda: costs.package_modules("dpo_teach.trainers.dpo"), TypeError),
                                             (lambda: costs.package_modules(__import__("dpo_teach")), TypeError),
                                             (lambda: costs.knobs(3), TypeError)])  # fmt: skip
def test_bad_input(call, error):
    with pytest.raises(error, match="must be"):
        call()
