"""Typed compiler errors. Each message names the thing at fault and what would be valid; the CLI prints
it as one line and exits non-zero."""


class CompileError(ValueError):
    """The model cannot be compiled as given."""


class ModelError(CompileError):
    """The ONNX file is malformed, or not a decoder we can recognise."""


class UnsupportedError(CompileError):
    """An operator, attribute or pattern that the compiler does not support (yet)."""


class CapacityError(CompileError):
    """The model (weights, KV cache, activations) does not fit in the chips' SRAM."""


class IrError(CompileError):
    """The IR broke an invariant (a compiler bug, caught by the verifier between passes)."""


class ContextLimitError(CompileError):
    """The model cannot serve the requested context: a table it indexes by position ends at `limit`
    positions (GPT-2's wpe, OPT's learned positions, a precomputed rotary table)."""

    def __init__(self, message: str, limit: int) -> None:
        super().__init__(message)
        self.limit = limit
