"""What a method costs to run, counted from the objects themselves: parameters held, settings, lines of code.

Chapter 08 compares DPO with the RLHF pipeline on these counts. A line of code is a source line that is not
blank, not a comment and not part of a docstring (module, class or function), so that the count measures what a
reader has to follow, not how much the module explains itself. The code a method needs is every module of the
package its trainer imports, directly or through another module (:func:`package_modules`), so that two methods
are counted the same way whichever file a helper function happens to live in. Its settings (:func:`knobs`) are
the fields of its config (or keyword options of its training function) minus :data:`NOT_KNOBS`.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import textwrap
import types

import torch


def _docstring_lines(tree: ast.AST) -> set[int]:
    """Line numbers (1-based) covered by the docstring of every module, class and function in ``tree``."""
    lines = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list) or not body:
            continue
        first = body[0]
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
        ):
            lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def code_lines(module_or_source) -> int:
    """Lines of code in a module (or a source string): not blank, not a ``#`` comment, not in a docstring."""
    if isinstance(module_or_source, types.ModuleType):
        source = inspect.getsource(module_or_source)
    elif isinstance(module_or_source, str):
        source = module_or_source
    else:
        raise TypeError(
            f"module_or_source must be a module or a source string, got {type(module_or_source).__name__}; "
            "pass e.g. dpo_teach.trainers.dpo."
        )
    source = textwrap.dedent(source)
    docstrings = _docstring_lines(ast.parse(source))
    return sum(
        1
        for number, line in enumerate(source.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#") and number not in docstrings
    )


def parameter_count(*modules: torch.nn.Module) -> int:
    """Parameters held by ``modules`` together, each module counted in full (a model held twice counts twice)."""
    for module in modules:
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"every argument must be a torch.nn.Module, got {type(module).__name__}.")
    return sum(p.numel() for module in modules for p in module.parameters())


def _module_file(name: str) -> str | None:
    """Path of the plain module (not a package ``__init__``) called ``name``, or None if there is none."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # "pkg.module.attribute": the parent is not a package
        return None
    if (
        spec is None
        or not spec.origin
        or not spec.origin.endswith(".py")
        or spec.origin.endswith("__init__.py")
    ):
        return None
    return spec.origin


def _imported_names(name: str) -> set[str]:
    """Modules that module ``name`` imports anywhere in its file (top level or inside a function)."""
    with open(_module_file(name), encoding="utf-8") as file:
        tree = ast.parse(file.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name(
                "." * node.level + (node.module or ""), name.rpartition(".")[0]
            )
            found.add(base)  # from pkg.module import f; from pkg import module: both name a module below
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {n for n in found if _module_file(n)}


def package_modules(module: types.ModuleType) -> dict[str, int]:
    """``{module name: code_lines}`` for ``module`` and every module of its top-level package that it imports,
    directly or through one another (the transitive closure), sorted by name. Package ``__init__`` files are left
    out: here they only re-export. Modules of other packages (torch, transformers) are not counted.
    """
    if not isinstance(module, types.ModuleType) or _module_file(module.__name__) is None:
        raise TypeError(
            f"module must be a plain module of a package, got {module!r}; pass e.g. dpo_teach.trainers.dpo."
        )
    package = module.__name__.split(".")[0]
    seen, todo = set(), [module.__name__]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(n for n in _imported_names(name) if n.split(".")[0] == package)
    return {name: code_lines(importlib.import_module(name)) for name in sorted(seen)}


#: Settings that are not knobs of the method: where and how it runs (device, progress, seed, checkpoints,
#: evaluation, memory-saving ways to compute the same gradient), the shape of the data (lengths, alphabet), and
#: fields that select a different method (the loss and its options).
NOT_KNOBS = frozenset(
    {
        "device", "progress", "seed", "callback", "output_dir", "overwrite_output_dir", "save_steps", "eval_steps",
        "grad_accum", "precompute_ref_logps", "forward_mode",
        "max_length", "max_prompt_length", "truncation_mode", "allowed_token_ids", "max_new_tokens", "stop_token_id",
        "loss_type", "label_smoothing", "loss_kwargs",
    }
)  # fmt: skip


def knobs(settings) -> list[str]:
    """The knobs of a method, in declaration order: the fields of a config dataclass (class or instance), or the
    keyword options of a training function (its parameters that have a default), minus :data:`NOT_KNOBS`.
    """
    if dataclasses.is_dataclass(settings):
        names = [f.name for f in dataclasses.fields(settings)]
    elif callable(settings):
        names = [
            p.name
            for p in inspect.signature(settings).parameters.values()
            if p.default is not inspect.Parameter.empty
        ]
    else:
        raise TypeError(
            f"settings must be a config dataclass or a training function, got {type(settings).__name__}; "
            "pass e.g. dpo_teach.trainers.DPOConfig or dpo_teach.trainers.train_sft."
        )
    return [name for name in names if name not in NOT_KNOBS]


__all__ = ["NOT_KNOBS", "code_lines", "knobs", "package_modules", "parameter_count"]
