"""Gradio import: the stub writer is off only when we import Gradio first, and events still wire."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.parametrize("gradio_first", [False, True])
def test_gradio_is_imported_without_its_stub_writer_only_when_we_import_it_first(gradio_first, tmp_path):
    # A fresh interpreter: this test process has imported Gradio long ago.
    code = (
        ("import gradio\n" if gradio_first else "")
        + "import sys\n"
        + "from bilingual_qa.gradio_import import import_gradio, _StubWriterOff\n"
        + "gr = import_gradio()\n"
        + "import gradio.component_meta as meta\n"
        + "assert not any(isinstance(f, _StubWriterOff) for f in sys.meta_path)\n"
        + "with gr.Blocks() as demo:\n"
        + "    box = gr.Textbox(label='q')\n"
        + "    box.submit(lambda q: q, box, box)\n"
        + "print(meta.create_or_modify_pyi.__name__, len(demo.fns))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "app"), "GRADIO_ANALYTICS_ENABLED": "False"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-2000:]
    writer, handlers = out.stdout.split()
    assert handlers == "1"  # events still wire up: only the stub writer is gone
    assert writer == ("create_or_modify_pyi" if gradio_first else "_no_stubs")
