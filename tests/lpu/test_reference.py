"""Tests of lpu/reference.py, the ONNX Runtime golden reference (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from lpu.reference import OrtDecoder, make_session, ort_step_session

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
DEFAULT_MODEL = REPO / "lpu" / "data" / "default.onnx"
PROMPT = [1, 2, 3]
N_TOKENS = 16

MODELS = {
    "gpt2_optimum": FIXTURES / "gpt2_optimum.onnx",
    "gpt2_dynamo": FIXTURES / "gpt2_dynamo.onnx",
    "llama_optimum": FIXTURES / "llama_optimum.onnx",
    "llama_dynamo": FIXTURES / "llama_dynamo.onnx",
    "llama_optimum_extdata": FIXTURES / "llama_optimum_extdata.onnx",
    "default": DEFAULT_MODEL,
}
# Optimum exports take any sequence length: they can recompute a whole sequence with past length 0.
FULL_SEQUENCE_MODELS = ["gpt2_optimum", "llama_optimum", "llama_optimum_extdata", "default"]
# (num_layers, num_kv_heads, head_dim, vocab_size) from the configs in tools/make_fixtures.py (train_fixtures.py)
GEOMETRY = {
    "gpt2_optimum": (2, 4, 32, 500),
    "gpt2_dynamo": (2, 4, 32, 500),
    "llama_optimum": (2, 2, 32, 700),
    "llama_dynamo": (2, 2, 32, 700),
    "llama_optimum_extdata": (2, 2, 32, 700),
    "default": (2, 2, 32, 512),  # tools/train_fixtures.py's trained_qwen2
}


@pytest.fixture(scope="module")
def decoders() -> dict[str, OrtDecoder]:
    return {name: OrtDecoder(path, threads=1) for name, path in MODELS.items()}


@pytest.fixture(scope="module")
def greedy_runs(decoders) -> dict[str, tuple[list[int], np.ndarray]]:
    return {name: dec.greedy(PROMPT, N_TOKENS) for name, dec in decoders.items()}


@pytest.fixture(scope="module")
def manifest() -> dict[str, dict]:
    data = json.loads((FIXTURES / "manifest.json").read_text())
    out = {r["name"]: r for r in data["fixtures"]}
    trained = json.loads((FIXTURES / "trained.json").read_text())  # the default model is a trained fixture's copy
    out["default"] = next(r for r in trained["fixtures"] if r["name"] == trained["default"]["from"])
    return out


def _full_recompute_last_logits(sess: ort.InferenceSession, dec: OrtDecoder, ids: list[int]) -> np.ndarray:
    """Run the whole sequence at once with an empty cache; return the last position's logits."""
    feed = {"input_ids": np.array([ids], dtype=np.int64)}
    names = {i.name for i in sess.get_inputs()}
    if "attention_mask" in names:
        feed["attention_mask"] = np.ones((1, len(ids)), dtype=np.int64)
    if "position_ids" in names:
        feed["position_ids"] = np.arange(len(ids), dtype=np.int64)[None, :]
    for key, value in dec.input_names["past"]:
        feed[key] = np.zeros((1, dec.num_kv_heads, 0, dec.head_dim), dtype=np.float32)
        feed[value] = np.zeros((1, dec.num_kv_heads, 0, dec.head_dim), dtype=np.float32)
    logits = sess.run(["logits"], feed)[0]
    assert logits.shape == (1, len(ids), dec.vocab_size)
    return logits[0, -1]


@pytest.mark.parametrize("name", list(MODELS))
def test_geometry(decoders, name):
    dec = decoders[name]
    assert (dec.num_layers, dec.num_kv_heads, dec.head_dim, dec.vocab_size) == GEOMETRY[name]
    assert dec.input_names["attention_mask"] == "attention_mask"
    assert dec.input_names["position_ids"] == "position_ids"
    assert dec.input_names["past"][0] == ("past_key_values.0.key", "past_key_values.0.value")
    assert dec.output_names["present"][-1] == (f"present.{dec.num_layers - 1}.key", f"present.{dec.num_layers - 1}.value")


@pytest.mark.parametrize("name", list(MODELS))
def test_greedy_shapes_and_argmax(greedy_runs, decoders, name):
    tokens, logits = greedy_runs[name]
    vocab = decoders[name].vocab_size
    assert len(tokens) == N_TOKENS
    assert logits.shape == (N_TOKENS, vocab) and logits.dtype == np.float32
    assert np.isfinite(logits).all()
    assert tokens == [int(np.argmax(row)) for row in logits]
    assert all(0 <= t < vocab for t in tokens)
    # the fixtures are made so that greedy decoding is not decided by near-ties
    top2 = np.sort(logits, axis=1)[:, -2:]
    assert (top2[:, 1] - top2[:, 0]).min() > 1e-3


@pytest.mark.parametrize("name", list(MODELS))
def test_greedy_matches_manifest(greedy_runs, manifest, name):
    """The tokens recorded by tools/make_fixtures.py (checked there against PyTorch)."""
    assert greedy_runs[name][0] == manifest[name]["greedy_tokens"]


@pytest.mark.parametrize("name", FULL_SEQUENCE_MODELS)
def test_cached_decode_equals_full_recompute(decoders, greedy_runs, name):
    """Independent check of the KV-cache handling: recompute the whole sequence from scratch at every step."""
    dec = decoders[name]
    tokens, logits = greedy_runs[name]
    sess = make_session(MODELS[name], threads=1)
    for i in range(len(tokens)):
        full = _full_recompute_last_logits(sess, dec, PROMPT + tokens[:i])
        assert int(np.argmax(full)) == tokens[i], f"step {i}"
        np.testing.assert_allclose(logits[i], full, rtol=0, atol=1e-4, err_msg=f"step {i}")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_dynamo_equals_optimum(greedy_runs, family):
    tok_o, log_o = greedy_runs[f"{family}_optimum"]
    tok_d, log_d = greedy_runs[f"{family}_dynamo"]
    assert tok_d == tok_o
    np.testing.assert_allclose(log_d, log_o, rtol=0, atol=1e-4)


def test_external_data_fixture(greedy_runs):
    model = FIXTURES / "llama_optimum_extdata.onnx"
    data = FIXTURES / "llama_optimum_extdata.onnx.data"
    assert data.is_file()
    proto = onnx.load(model, load_external_data=False)
    external = [t.name for t in proto.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    assert len(external) >= 10
    assert model.stat().st_size < 200_000 < data.stat().st_size
    tok_x, log_x = greedy_runs["llama_optimum_extdata"]
    tok_i, log_i = greedy_runs["llama_optimum"]
    assert tok_x == tok_i
    assert np.array_equal(log_x, log_i)


def test_step_and_reset(decoders, greedy_runs):
    dec = decoders["llama_dynamo"]
    dec.reset()
    assert dec.position == 0
    for t in PROMPT:
        row = dec.step(t)
    assert dec.position == len(PROMPT)
    assert row.shape == (dec.vocab_size,) and row.dtype == np.float32
    np.testing.assert_array_equal(row, greedy_runs["llama_dynamo"][1][0])
    # greedy() resets by itself: same result twice in a row
    tokens, logits = dec.greedy(PROMPT, 4)
    assert tokens == greedy_runs["llama_dynamo"][0][:4]
    np.testing.assert_array_equal(logits, greedy_runs["llama_dynamo"][1][:4])
    assert dec.greedy(PROMPT, 0)[1].shape == (0, dec.vocab_size)
    with pytest.raises(ValueError):
        dec.greedy([], 3)
    with pytest.raises(ValueError):
        dec.step(dec.vocab_size)


@pytest.mark.parametrize("name", ["llama_optimum", "llama_dynamo"])
@pytest.mark.parametrize("past_length", [0, 37])
def test_ort_step_session(decoders, name, past_length):
    run = ort_step_session(MODELS[name], past_length=past_length, threads=1)
    out = run()
    assert out.shape == (decoders[name].vocab_size,) and np.isfinite(out).all()
    np.testing.assert_array_equal(run(), out)  # same prepared step every call
    assert run.feed["attention_mask"].shape == (1, past_length + 1)
    assert run.feed["position_ids"].tolist() == [[past_length]]
    assert run.feed["past_key_values.1.value"].shape == (1, 2, past_length, 32)


def test_step_session_with_zero_past_is_first_step(decoders):
    dec = decoders["default"]
    run = ort_step_session(DEFAULT_MODEL, past_length=0, token_id=7, threads=1)
    dec.reset()
    np.testing.assert_array_equal(run(), dec.step(7))


def _save(tmp_path, inputs, outputs, nodes, name="m.onnx"):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / name
    onnx.save_model(model, path)
    return path


def test_missing_past_inputs_is_a_clear_error(tmp_path):
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 1])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1])
    path = _save(tmp_path, [ids], [logits], [helper.make_node("Cast", ["input_ids"], ["logits"], to=TensorProto.FLOAT)])
    with pytest.raises(ValueError, match="past KV inputs"):
        OrtDecoder(path)


def test_missing_input_ids_and_value_is_a_clear_error(tmp_path):
    k = helper.make_tensor_value_info("past_key_values.0.key", TensorProto.FLOAT, [1, 2, "p", 4])
    tok = helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, 1])
    pk = helper.make_tensor_value_info("present.0.key", TensorProto.FLOAT, [1, 2, "p", 4])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1])
    nodes = [helper.make_node("Identity", ["past_key_values.0.key"], ["present.0.key"]),
             helper.make_node("Cast", ["tokens"], ["logits"], to=TensorProto.FLOAT)]
    path = _save(tmp_path, [tok, k], [logits, pk], nodes)
    with pytest.raises(ValueError, match="input_ids"):
        OrtDecoder(path)
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 1])
    nodes[1] = helper.make_node("Cast", ["input_ids"], ["logits"], to=TensorProto.FLOAT)
    path = _save(tmp_path, [ids, k], [logits, pk], nodes, "m2.onnx")
    with pytest.raises(ValueError, match="layer 0 has no value"):
        OrtDecoder(path)
