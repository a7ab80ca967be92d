"""ONNX frontend: a real exported decoder (Optimum text-generation-with-past, torch.onnx dynamo one-step
decode, ...) -> the IR of one decode step (compiler/ir.py).

    from compiler.frontend import import_onnx
    graph = import_onnx("model.onnx", max_context=256)
"""
from __future__ import annotations

import os

from .importer import Importer
from .loader import load_model

__all__ = ["canonicalise", "import_graph", "import_graph_within", "import_model", "import_onnx", "load_model"]


def import_graph(model, max_context: int, source: str = "<memory>", require_past: bool = True, base_dir: str = "",
                 timing_only: bool = False):
    """The import pass: an onnx.ModelProto -> (the IR Graph of one decode step, what the importer learned
    of the model: family, exporter, opset, inputs...). External data is read relative to base_dir; with
    `timing_only` the weights are shape-only constants (compiler.ir.Shaped), never read."""
    from .meta import importer_facts

    imp = Importer(model, max_context, source=source, require_past=require_past, base_dir=base_dir,
                   timing_only=timing_only)
    graph = imp.run()
    graph.verify()
    return graph, importer_facts(imp)


def import_graph_within(model, context: int, source: str = "<memory>", base_dir: str = "", timing_only: bool = False):
    """import_graph at `context` positions, or at the model's own limit when it supports fewer (a table
    read by position ends sooner): (graph, facts, the limit or None)."""
    from ..errors import ContextLimitError

    try:
        return (*import_graph(model, context, source=source, base_dir=base_dir, timing_only=timing_only), None)
    except ContextLimitError as exc:
        return (*import_graph(model, exc.limit, source=source, base_dir=base_dir, timing_only=timing_only), exc.limit)


def canonicalise(graph, facts: dict, cleanup: bool = True):
    """The canonicalise pass: constant folding, identities, common subexpressions, dead code (cleanup.py);
    graph.meta gets the model's facts."""
    from . import cleanup as passes
    from .meta import graph_facts

    if cleanup:
        graph = passes.run_all(graph)
    graph.meta.update(graph_facts(graph))
    graph.meta.update(facts)
    graph.verify()
    return graph


def import_model(model, max_context: int, source: str = "<memory>", require_past: bool = True, cleanup: bool = True,
                 base_dir: str = ""):
    """Import an in-memory onnx.ModelProto (see import_onnx); external data is read relative to base_dir."""
    graph, facts = import_graph(model, max_context, source, require_past, base_dir)
    return canonicalise(graph, facts, cleanup)


def import_onnx(path, max_context: int):
    """Load an ONNX decoder (external data next to it is loaded too) and return the IR Graph of one decode step.

    Raises ModelError (bad file, not a recognisable decoder) or UnsupportedError (an operator or pattern
    the compiler does not handle), each with a one-line message.
    """
    model = load_model(path)
    return import_model(model, max_context, source=os.fspath(path), base_dir=os.path.dirname(os.path.abspath(path)))
