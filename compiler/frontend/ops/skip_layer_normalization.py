"""SkipLayerNormalization (com.microsoft): LayerNormalization(input + skip [+ bias]) * gamma [+ beta];
output 3 is the sum. ONNX Runtime's transformer optimizer fuses GPT-2's residual add and layer norm into it."""
from ._base import Expansion, OpSpec
from ._fused import expanded_only, refuse_stats, skip_sum, sum_output

EPS = 1e-12  # ONNX Runtime's default when the attribute is absent (contrib_ops/cpu/skip_layer_norm.cc)


def _expand(ctx, node, vals):
    refuse_stats(ctx, node)
    E = Expansion(ctx, node)
    s = skip_sum(E, node, 4)
    ins = [s, node.input(2)] + ([node.input(3)] if node.input(3) else [])
    E.op("LayerNormalization", ins, [node.outputs[0]], axis=-1, epsilon=float(node.attr("epsilon", EPS)))
    sum_output(E, node, s)
    return E.nodes


OP = OpSpec("SkipLayerNormalization", expanded_only, domains=("com.microsoft",), expand=_expand)
