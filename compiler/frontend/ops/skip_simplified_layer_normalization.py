"""SkipSimplifiedLayerNormalization (com.microsoft): RMS normalisation of input + skip [+ bias], times gamma;
output 3 is the sum. ONNX Runtime's transformer optimizer fuses a Llama's residual add and RMSNorm into it."""
from ._base import Expansion, OpSpec
from ._fused import expanded_only, refuse_stats, skip_sum, sum_output

EPS = 1e-12  # ONNX Runtime's default when the attribute is absent


def _expand(ctx, node, vals):
    refuse_stats(ctx, node)
    E = Expansion(ctx, node)
    s = skip_sum(E, node, 3)
    E.op("SimplifiedLayerNormalization", [s, node.input(2)], [node.outputs[0]], axis=-1,
         epsilon=float(node.attr("epsilon", EPS)))
    sum_output(E, node, s)
    return E.nodes


OP = OpSpec("SkipSimplifiedLayerNormalization", expanded_only, domains=("com.microsoft",), expand=_expand)
