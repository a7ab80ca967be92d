"""SimplifiedLayerNormalization (ONNX Runtime contrib op, ONNX or com.microsoft domain): IR rmsnorm."""
from ._base import OpSpec
from .rms_normalization import rms_eval, rms_translate

OP = OpSpec("SimplifiedLayerNormalization", rms_eval, rms_translate, domains=("com.microsoft",))
