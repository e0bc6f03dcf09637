"""Re-execute the book's notebooks in place, top to bottom, in chapter order (``make execute``).

    python tools/execute_book.py                       # every book/NN_*.ipynb
    python tools/execute_book.py book/02_optimal.ipynb # just these

Each notebook runs in a fresh kernel of *this* Python environment (whatever kernelspec a user has
installed elsewhere), with its own folder as working directory, exactly as nbval runs it in ``make test``.
Its wall time is printed so that the README's run-time column can be refreshed from the output.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import ipykernel.kernelspec
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from traitlets import default

BOOK = Path(__file__).resolve().parent.parent / "book"
KERNEL_NAME = "python3"  # the kernelspec name every chapter stores (tests/test_notebooks.py checks it)


class CurrentEnvKernelSpecs(KernelSpecManager):
    """Resolve ``python3`` to an ipykernel of the running interpreter, never a user-level kernelspec."""

    def get_kernel_spec(self, kernel_name):
        if kernel_name == KERNEL_NAME:
            return self.kernel_spec_class(
                resource_dir=ipykernel.kernelspec.RESOURCES, **ipykernel.kernelspec.get_kernel_dict()
            )
        return super().get_kernel_spec(kernel_name)


class CurrentEnvKernelManager(AsyncKernelManager):
    """nbclient creates (and shuts down) one of these per notebook."""

    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self):
        return CurrentEnvKernelSpecs(data_dir=self.data_dir)


def execute(path: Path, timeout: int = 600) -> float:
    """Execute ``path`` in place; return its wall time in seconds. Raises on the first failing cell."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=KERNEL_NAME,
        kernel_manager_class=CurrentEnvKernelManager,
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,  # per-cell timestamps would change the file on every run
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every book/*.ipynb, in order")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(BOOK.glob("*.ipynb"))
    if not paths:
        parser.error(f"no notebooks found in {BOOK}")
    missing = [str(p) for p in paths if not p.is_file() or p.suffix != ".ipynb"]
    if missing:
        parser.error(f"not a notebook file: {', '.join(missing)}")
    total = 0.0
    for path in paths:
        print(f"{path.name:<40}", end="", flush=True)
        seconds = execute(path.resolve(), args.timeout)
        total += seconds
        print(f"{seconds:8.1f} s")
    print(f"{'total':<40}{total:8.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
