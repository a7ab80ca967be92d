"""ONNX frontend: a real exported decoder (Optimum text-generation-with-past, torch.onnx dynamo one-step
decode, ...) -> the IR of one decode step (compiler/ir.py).

    from compiler.frontend import import_onnx
    graph = import_onnx("model.onnx", max_context=256)
"""
from __future__ import annotations

import os

from .importer import Importer
from .loader import load_model

__all__ = ["import_onnx", "import_model"]


def import_model(model, max_context: int, source: str = "<memory>", require_past: bool = True, cleanup: bool = True,
                 base_dir: str = ""):
    """Import an in-memory onnx.ModelProto (see import_onnx); external data is read relative to base_dir."""
    from . import cleanup as passes
    from .meta import describe

    imp = Importer(model, max_context, source=source, require_past=require_past, base_dir=base_dir)
    graph = imp.run()
    graph.verify()
    if cleanup:
        graph = passes.run_all(graph)
    graph.meta.update(describe(imp, graph))
    graph.verify()
    return graph


def import_onnx(path, max_context: int):
    """Load an ONNX decoder (external data next to it is loaded too) and return the IR Graph of one decode step.

    Raises ModelError (bad file, not a recognisable decoder) or UnsupportedError (an operator or pattern
    the compiler does not handle), each with a one-line message.
    """
    model = load_model(path)
    return import_model(model, max_context, source=os.fspath(path), base_dir=os.path.dirname(os.path.abspath(path)))
