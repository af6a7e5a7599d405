"""Gradio import: ``import gradio`` without the type-stub writer that runs inside it.

Kept apart from the page (web.py) because it reaches into Gradio's import machinery, which
has nothing to do with what the page shows or how it answers.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from typing import Any


def import_gradio() -> Any:
    """``import gradio``, without the type-stub writer that runs inside it: half its import time.

    Each component class Gradio defines at import reads and parses its own source and
    renders a Jinja template to keep a ``.pyi`` stub for IDEs up to date
    (``gradio.component_meta.create_or_modify_pyi``): about half of ``import gradio`` (the
    bench report measures the server's start), for stubs the installed wheel already ships. When this process
    imports Gradio first, that writer is replaced by a no-op as its module loads; a
    process that imported Gradio already keeps it as it is.
    """
    if "gradio" not in sys.modules:
        finder = _StubWriterOff()
        sys.meta_path.insert(0, finder)
        try:
            import gradio  # noqa: F401 - loaded here, returned below
        finally:
            sys.meta_path.remove(finder)
    return sys.modules["gradio"]


class _StubWriterOff(importlib.abc.MetaPathFinder):
    """Finds ``gradio.component_meta`` as usual and loads it with ``create_or_modify_pyi`` off."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "gradio.component_meta":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_without_stub_writer(module: Any) -> None:
            exec_module(module)
            if callable(getattr(module, "create_or_modify_pyi", None)):
                module.create_or_modify_pyi = _no_stubs

        loader.exec_module = exec_without_stub_writer  # this spec's own loader instance
        return spec


def _no_stubs(*_args: Any, **_kwargs: Any) -> None:
    """Stand-in for Gradio's .pyi writer."""
