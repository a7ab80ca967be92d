"""Golden reference: greedy decoding of an ONNX decoder with ONNX Runtime.

This module is the ground truth the LPU emulator is checked against.  It only
needs ``numpy`` and ``onnxruntime`` (no torch).

The decoder is run exactly the way the LPU runs it: batch 1, **one token per
step**, carrying the KV cache from one step to the next.  The prompt is fed
token by token too (no batched prefill), so the reference and the emulator do
the same arithmetic in the same order of steps.

Supported graph layout
----------------------
The inputs and outputs are found by *role*, from their names:

============================  ==============================================
role                          accepted names
============================  ==============================================
token ids (required)          ``input_ids``
attention mask (optional)     ``attention_mask``  (fed as ones, ``[1, past+1]``)
position ids (optional)       ``position_ids``    (fed as ``[[past]]``)
past KV (required)            ``past_key_values.N.key`` / ``.value``,
                              ``past.N.key`` / ``.value``,
                              ``past_key_N`` / ``past_value_N``
logits (required)             ``logits`` (else the only output that is not
                              a present KV)
present KV (required)         ``present.N.key`` / ``.value``,
                              ``present_key_values.N.key`` / ``.value``,
                              ``present_key_N`` / ``present_value_N``
============================  ==============================================

This covers ``optimum-cli export onnx --task text-generation-with-past``
(the "Optimum layout") and the one-step ``torch.onnx.export(..., dynamo=True)``
fixtures made by ``tools/make_fixtures.py``, which use the same names.  The
past KV tensors have shape ``[batch, kv_heads, past_len, head_dim]``; the
number of KV heads and the head size must be static in the graph.

The cache starts empty (past length 0): ONNX Runtime accepts zero-size
dimensions, and both exporters' graphs handle them (checked by the tests).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

__all__ = ["OrtDecoder", "OrtStep", "ort_step_session", "make_session"]

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}

_PAST_PATTERNS = (
    re.compile(r"^past_key_values[._](?P<layer>\d+)[._](?P<kind>key|value)$"),
    re.compile(r"^past[._](?P<layer>\d+)[._](?P<kind>key|value)$"),
    re.compile(r"^past_(?P<kind>key|value)_(?P<layer>\d+)$"),
)
_PRESENT_PATTERNS = (
    re.compile(r"^present[._](?P<layer>\d+)[._](?P<kind>key|value)$"),
    re.compile(r"^present_key_values[._](?P<layer>\d+)[._](?P<kind>key|value)$"),
    re.compile(r"^present_(?P<kind>key|value)_(?P<layer>\d+)$"),
)


def faithful_to_qdq(opts: ort.SessionOptions) -> ort.SessionOptions:
    """Settings under which ONNX Runtime computes what a DequantizeLinear model means. Its extended graph
    optimisations fuse DequantizeLinear + MatMul into kernels that quantise the activations to int8 (the
    MatMulNBits fusion at its default accuracy level 4, the QDQ MatMulInteger paths): faster, but not the
    model's arithmetic. Basic optimisations (constant folding, which dequantises the weights exactly) stay."""
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    return opts


def _has_dequantize(model_path) -> bool:
    import onnx

    try:
        m = onnx.load(os.fspath(model_path), load_external_data=False)
    except Exception:
        return False  # ONNX Runtime will say what is wrong with the file
    return any(n.op_type == "DequantizeLinear" for n in m.graph.node)


def make_session(model_path: str | os.PathLike, threads: int | None = None) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with deterministic, documented settings.

    ``threads`` sets ``intra_op_num_threads`` (``None`` keeps ORT's default,
    one thread per physical core); ``inter_op_num_threads`` is always 1 and
    the execution mode is sequential.  External data files are resolved
    relative to the model file, as usual.
    """
    opts = ort.SessionOptions()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # errors only
    if _has_dequantize(model_path):
        faithful_to_qdq(opts)
    return ort.InferenceSession(os.fspath(model_path), sess_options=opts, providers=["CPUExecutionProvider"])


def _match_kv(name: str, patterns: Sequence[re.Pattern]) -> tuple[int, str] | None:
    for pat in patterns:
        m = pat.match(name)
        if m:
            return int(m.group("layer")), m.group("kind")
    return None


def _kv_pairs(found: dict[tuple[int, str], str], what: str, model: str) -> list[tuple[str, str]]:
    """Order ``{(layer, kind): name}`` into ``[(key_name, value_name)]`` per layer, checking completeness."""
    if not found:
        return []
    layers = sorted({layer for layer, _ in found})
    expected = list(range(len(layers)))
    if layers != expected:
        raise ValueError(f"{model}: {what} KV layers are {layers}, expected consecutive layers {expected}")
    pairs = []
    for layer in layers:
        missing = [k for k in ("key", "value") if (layer, k) not in found]
        if missing:
            raise ValueError(f"{model}: {what} KV of layer {layer} has no {' / '.join(missing)} tensor")
        pairs.append((found[(layer, "key")], found[(layer, "value")]))
    return pairs


@dataclass(frozen=True)
class _Roles:
    input_ids: str
    input_ids_dtype: type
    attention_mask: str | None
    attention_mask_dtype: type | None
    position_ids: str | None
    position_ids_dtype: type | None
    past: list[tuple[str, str]]  # (key, value) input names, layer order
    past_dtype: type
    present: list[tuple[str, str]]  # (key, value) output names, layer order
    logits: str
    num_kv_heads: int
    head_dim: int
    vocab_size: int | None  # None when the graph leaves it symbolic


def _discover(sess: ort.InferenceSession, model: str) -> _Roles:
    inputs = {i.name: i for i in sess.get_inputs()}
    outputs = {o.name: o for o in sess.get_outputs()}

    def dtype_of(arg) -> type:
        if arg.type not in _ORT_TO_NUMPY:
            raise ValueError(f"{model}: input/output {arg.name!r} has unsupported type {arg.type}")
        return _ORT_TO_NUMPY[arg.type]

    missing = []
    if "input_ids" not in inputs:
        missing.append("input 'input_ids'")

    past_found: dict[tuple[int, str], str] = {}
    unknown = []
    for name in inputs:
        kv = _match_kv(name, _PAST_PATTERNS)
        if kv is not None:
            past_found[kv] = name
        elif name not in ("input_ids", "attention_mask", "position_ids"):
            unknown.append(name)
    if not past_found:
        missing.append("past KV inputs (e.g. 'past_key_values.0.key' / 'past_key_values.0.value')")

    present_found: dict[tuple[int, str], str] = {}
    for name in outputs:
        kv = _match_kv(name, _PRESENT_PATTERNS)
        if kv is not None:
            present_found[kv] = name
    if not present_found:
        missing.append("present KV outputs (e.g. 'present.0.key' / 'present.0.value')")

    others = [n for n in outputs if _match_kv(n, _PRESENT_PATTERNS) is None]
    if "logits" in outputs:
        logits = "logits"
    elif len(others) == 1:
        logits = others[0]
    else:
        logits = None
        missing.append(f"output 'logits' (non-KV outputs: {others})")

    if missing:
        raise ValueError(
            f"{model} is not a supported ONNX decoder with KV cache: missing {'; '.join(missing)}. "
            f"Inputs: {list(inputs)}; outputs: {list(outputs)}"
        )
    if unknown:
        raise ValueError(f"{model}: unsupported decoder inputs {unknown} (known roles: input_ids, "
                         f"attention_mask, position_ids, past KV)")

    past = _kv_pairs(past_found, "past", model)
    present = _kv_pairs(present_found, "present", model)
    if len(past) != len(present):
        raise ValueError(f"{model}: {len(past)} layers of past KV inputs but {len(present)} of present KV outputs")

    k0 = inputs[past[0][0]]
    if len(k0.shape) != 4:
        raise ValueError(f"{model}: past KV {k0.name!r} has shape {k0.shape}, expected [batch, kv_heads, past, head_dim]")
    num_kv_heads, head_dim = k0.shape[1], k0.shape[3]
    if not (isinstance(num_kv_heads, int) and isinstance(head_dim, int)):
        raise ValueError(f"{model}: past KV {k0.name!r} has shape {k0.shape}: kv_heads and head_dim must be static")
    past_dtype = dtype_of(k0)
    for kname, vname in past:
        for n in (kname, vname):
            if inputs[n].shape[1] != num_kv_heads or inputs[n].shape[3] != head_dim or dtype_of(inputs[n]) != past_dtype:
                raise ValueError(f"{model}: past KV {n!r} shape {inputs[n].shape} differs from {k0.name!r} {k0.shape}")

    vocab = outputs[logits].shape[-1] if outputs[logits].shape else None
    am = inputs.get("attention_mask")
    pos = inputs.get("position_ids")
    return _Roles(
        input_ids="input_ids",
        input_ids_dtype=dtype_of(inputs["input_ids"]),
        attention_mask=am.name if am is not None else None,
        attention_mask_dtype=dtype_of(am) if am is not None else None,
        position_ids=pos.name if pos is not None else None,
        position_ids_dtype=dtype_of(pos) if pos is not None else None,
        past=past,
        past_dtype=past_dtype,
        present=present,
        logits=logits,
        num_kv_heads=num_kv_heads,
        head_dim=head_dim,
        vocab_size=vocab if isinstance(vocab, int) else None,
    )


class OrtDecoder:
    """Greedy decoding of an ONNX decoder with ONNX Runtime, batch 1, carrying the KV cache between steps.

    >>> dec = OrtDecoder("lpu/data/default.onnx", threads=1)
    >>> tokens, logits = dec.greedy([1, 2, 3], 16)   # logits: float32 [16, vocab]

    Each :meth:`step` feeds one token at the current position ``p`` (0-based):
    ``input_ids=[[tok]]``, ``attention_mask`` = ones ``[1, p+1]``,
    ``position_ids=[[p]]`` and the past KV of length ``p``; the present KV
    outputs (length ``p+1``) become the next step's past.
    """

    def __init__(self, model_path: str | os.PathLike, threads: int | None = None):
        self.model_path = os.fspath(model_path)
        self.session = make_session(self.model_path, threads)
        self._roles = _discover(self.session, self.model_path)
        self._output_names = [self._roles.logits] + [n for pair in self._roles.present for n in pair]
        self._vocab_size = self._roles.vocab_size
        self.reset()
        if self._vocab_size is None:  # symbolic in the graph: find it out with one probe step
            self._vocab_size = int(self.step(0).shape[-1])
            self.reset()

    # ----------------------------------------------------------------- graph facts
    @property
    def num_layers(self) -> int:
        """Number of decoder layers (= pairs of past KV inputs)."""
        return len(self._roles.past)

    @property
    def num_kv_heads(self) -> int:
        """Number of key/value heads (< number of query heads for GQA/MQA models)."""
        return self._roles.num_kv_heads

    @property
    def head_dim(self) -> int:
        """Size of one attention head."""
        return self._roles.head_dim

    @property
    def vocab_size(self) -> int:
        """Size of the logits vector."""
        return self._vocab_size

    @property
    def input_names(self) -> dict[str, object]:
        """The graph input names by role: ``input_ids``, ``attention_mask``, ``position_ids`` (None if absent),
        ``past`` (list of (key, value) names per layer)."""
        r = self._roles
        return {"input_ids": r.input_ids, "attention_mask": r.attention_mask, "position_ids": r.position_ids,
                "past": list(r.past)}

    @property
    def output_names(self) -> dict[str, object]:
        """The graph output names by role: ``logits`` and ``present`` (list of (key, value) names per layer)."""
        return {"logits": self._roles.logits, "present": list(self._roles.present)}

    @property
    def position(self) -> int:
        """Number of tokens already in the KV cache (the position of the next token fed)."""
        return self._position

    # ----------------------------------------------------------------- decoding
    def reset(self) -> None:
        """Empty the KV cache (past length 0) and go back to position 0."""
        self._past = self.empty_past(0)
        self._position = 0

    def empty_past(self, past_length: int, fill: float | np.random.Generator = 0.0) -> list[np.ndarray]:
        """A flat past KV list ``[k0, v0, k1, v1, ...]`` of shape ``[1, kv_heads, past_length, head_dim]``.

        ``fill`` is a constant, or a numpy ``Generator`` to draw standard-normal values from.
        """
        shape = (1, self.num_kv_heads, past_length, self.head_dim)
        out = []
        for _ in range(2 * self.num_layers):
            if isinstance(fill, np.random.Generator):
                out.append(fill.standard_normal(shape).astype(self._roles.past_dtype))
            else:
                out.append(np.full(shape, fill, dtype=self._roles.past_dtype))
        return out

    def make_feed(self, token_id: int, position: int, past: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """The ONNX Runtime input dict for one decode step of ``token_id`` at ``position`` with flat ``past``."""
        r = self._roles
        if len(past) != 2 * self.num_layers:
            raise ValueError(f"expected {2 * self.num_layers} past KV arrays, got {len(past)}")
        feed = {r.input_ids: np.array([[token_id]], dtype=r.input_ids_dtype)}
        if r.attention_mask is not None:
            feed[r.attention_mask] = np.ones((1, position + 1), dtype=r.attention_mask_dtype)
        if r.position_ids is not None:
            feed[r.position_ids] = np.array([[position]], dtype=r.position_ids_dtype)
        for (kname, vname), i in zip(r.past, range(0, len(past), 2)):
            feed[kname] = past[i]
            feed[vname] = past[i + 1]
        return feed

    def step(self, token_id: int) -> np.ndarray:
        """Feed one token at the current position; return its float32 logits ``[vocab]`` and advance the cache."""
        token_id = int(token_id)
        if self._vocab_size is not None and not 0 <= token_id < self._vocab_size:
            raise ValueError(f"token id {token_id} out of range [0, {self._vocab_size})")
        feed = self.make_feed(token_id, self._position, self._past)
        logits, *present = self.session.run(self._output_names, feed)
        expected = self._position + 1
        if present[0].shape[2] != expected:
            raise RuntimeError(f"present KV has length {present[0].shape[2]}, expected {expected}")
        self._past = present
        self._position = expected
        return np.asarray(logits, dtype=np.float32).reshape(-1, logits.shape[-1])[-1].copy()

    def greedy(self, prompt: Sequence[int], n_tokens: int) -> tuple[list[int], np.ndarray]:
        """Greedy decode from an empty cache.

        Feeds ``prompt`` one token per step, then generates ``n_tokens`` tokens, each the argmax
        (lowest index on ties, ``np.argmax``) of the previous step's logits.

        Returns ``(tokens, logits)``: the generated ids and float32 ``logits[n_tokens, vocab]``, where
        ``logits[i]`` is the row token ``i`` was chosen from.  The last generated token is not fed back.
        """
        prompt = [int(t) for t in prompt]
        if not prompt:
            raise ValueError("prompt must contain at least one token")
        if n_tokens < 0:
            raise ValueError(f"n_tokens must be >= 0, got {n_tokens}")
        self.reset()
        for tok in prompt:
            logits = self.step(tok)
        tokens: list[int] = []
        rows = np.empty((n_tokens, self.vocab_size), dtype=np.float32)
        for i in range(n_tokens):
            tok = int(np.argmax(logits))
            tokens.append(tok)
            rows[i] = logits
            if i + 1 < n_tokens:
                logits = self.step(tok)
        return tokens, rows


class OrtStep:
    """One prepared ONNX Runtime decode step, for timing: ``runner()`` runs exactly one ``session.run``.

    The inputs (token, position = ``past_length``, attention mask and a random past KV of
    ``past_length`` entries) are built once in the constructor; each call reruns the same step
    and returns the logits ``[vocab]`` (float32 view of ORT's output, no copy of the KV outputs).
    """

    def __init__(self, decoder: OrtDecoder, past_length: int, token_id: int = 1, seed: int = 0):
        if past_length < 0:
            raise ValueError(f"past_length must be >= 0, got {past_length}")
        self.decoder = decoder
        self.past_length = int(past_length)
        past = decoder.empty_past(past_length, np.random.default_rng(seed))
        self.feed = decoder.make_feed(token_id, past_length, past)
        self._run = decoder.session.run
        self._names = decoder._output_names

    def __call__(self) -> np.ndarray:
        return self._run(self._names, self.feed)[0].reshape(-1)


def ort_step_session(model_path: str | os.PathLike, past_length: int, threads: int | None = None,
                     token_id: int = 1, seed: int = 0) -> Callable[[], np.ndarray]:
    """A callable running exactly one ONNX Runtime decode step with ``past_length`` cached tokens.

    This is the "ONNX Runtime running the same decode step" baseline of the speed benchmarks::

        run = ort_step_session("lpu/data/default.onnx", past_length=128, threads=1)
        run()                                   # warm up
        t = timeit.timeit(run, number=100) / 100

    The session is built (and the inputs prepared) before the callable is returned, so timing the
    callable times only ``InferenceSession.run`` of one step (including allocating its outputs).
    """
    return OrtStep(OrtDecoder(model_path, threads=threads), past_length, token_id=token_id, seed=seed)
