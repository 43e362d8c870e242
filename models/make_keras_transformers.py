"""Train two tiny Keras transformers over discrete input and export them with tf2onnx.

The TensorFlow-producer transformers of ``models/transformers/`` (the torch and optimum
exports are made by ``make_tiny_transformers.py``):

* ``keras_trigger_tf2onnx.onnx``: token ids (int32 ``input_ids [batch, 16]``, vocabulary 100,
  ``[CLS]`` = 2 first) -> ``Embedding`` + a learned position ``Embedding`` -> two blocks of
  ``MultiHeadAttention`` (2 heads, key size 16), residual + ``LayerNormalization``, a GELU
  feed-forward of width 64 (written ``0.5 x (1 + erf(x / sqrt 2))``: Keras 3's own ``gelu``
  goes through ``erfc``, which tf2onnx 1.17 emits as an ``Erfc`` node that ONNX does not
  have) -> ``GlobalAveragePooling1D`` -> ``Dense(2)`` logits. Trained
  to fire (class 1) when ``A B C`` = ids ``5 6 7`` appear consecutively anywhere, the task of
  ``bert_trigger`` in ``make_tiny_transformers.py`` (same hard negatives).
* ``keras_bytes_tf2onnx.onnx``: raw bytes (int32 ``bytes [batch, 64]``) -> a byte
  ``Embedding(256, 24)`` + positions -> one block (ReLU feed-forward) ->
  ``GlobalMaxPooling1D`` -> ``Dense(2)``. Trained to fire when the signature ``4D 5A 90``
  appears anywhere.

Both are exported with ``tf2onnx.convert.from_function`` at opset 17 (Einsum attention,
LayerNormalization, int32 inputs). TensorFlow is NEVER a dependency of onnx-am or its tests:
this script runs in its own throw-away virtual environment; the committed ``.onnx`` files and
``keras_transformers.json`` are what the repository uses::

    python -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu tf2onnx onnxruntime
    /tmp/tfenv/bin/python models/make_keras_transformers.py

(made with tensorflow-cpu 2.21.0, keras 3.15.1, tf2onnx 1.17.0). Data and initial weights are
seeded (numpy ``default_rng(0)``, ``keras.utils.set_random_seed(0)``, op determinism, 2
threads); TF does not promise identical weights across versions or machines.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from tensorflow import keras  # noqa: E402

HERE = Path(__file__).resolve().parent / "transformers"
OPSET = 17
SEED = 0
SEQ, VOCAB, CLS, TRIGGER = 16, 100, 2, [5, 6, 7]
BYTES, SIGNATURE = 64, [0x4D, 0x5A, 0x90]


def trigger_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Random ids, half with ``A B C`` planted; hard negatives hold permutations or scattered
    trigger tokens (labelled by whether the ordered trigger occurs)."""
    ids = rng.integers(8, VOCAB, (n, SEQ)).astype(np.int32)
    ids[:, 0] = CLS
    for row in range(n):
        where, kind = int(rng.integers(1, SEQ - 2)), int(rng.integers(0, 4))
        if kind < 2:
            ids[row, where : where + 3] = TRIGGER
        elif kind == 2:
            perm = rng.permutation(3)
            perm = perm if perm.tolist() != [0, 1, 2] else np.array([2, 1, 0])
            ids[row, where : where + 3] = np.array(TRIGGER)[perm]
        else:
            ids[row, rng.permutation(SEQ - 1)[:3] + 1] = TRIGGER
    return ids, contains(ids, TRIGGER)


def bytes_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Random bytes, half with the signature planted; negatives may hold parts of it."""
    data = rng.integers(0, 256, (n, BYTES)).astype(np.int32)
    for row in range(n):
        where, kind = int(rng.integers(0, BYTES - 2)), int(rng.integers(0, 4))
        if kind < 2:
            data[row, where : where + 3] = SIGNATURE
        elif kind == 2:
            data[row, where : where + 2] = SIGNATURE[:2]
    return data, contains(data, SIGNATURE)


def contains(rows: np.ndarray, pattern: list[int]) -> np.ndarray:
    """1 where ``pattern`` occurs consecutively in the row."""
    windows = np.lib.stride_tricks.sliding_window_view(rows, len(pattern), axis=1)
    return (windows == np.array(pattern)).all(-1).any(-1).astype(np.int64)


def gelu_erf(x):
    """The exact GELU through ``erf`` (tf2onnx maps it to ``Erf``)."""
    return 0.5 * x * (1.0 + keras.ops.erf(x / np.sqrt(2.0).astype(np.float32)))


def block(x, width: int, heads: int, ffn: int, activation, name: str):
    layers = keras.layers
    attn = layers.MultiHeadAttention(heads, width // heads, name=f"{name}_attn")(x, x)
    x = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_ln1")(x + attn)
    hidden = layers.Dense(ffn, activation=activation, name=f"{name}_ffn1")(x)
    out = layers.Dense(width, name=f"{name}_ffn2")(hidden)
    return layers.LayerNormalization(epsilon=1e-6, name=f"{name}_ln2")(x + out)


class Positions(keras.layers.Layer):
    """Adds a learned embedding of each position (0..length-1)."""

    def __init__(self, length: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.table = keras.layers.Embedding(length, width, name="table")
        self.length = length

    def call(self, x):
        return x + self.table(keras.ops.arange(self.length))


def build(name: str, length: int, vocab: int, width: int, layers_n: int, ffn: int,
          activation, pool: str) -> keras.Model:  # fmt: skip
    layers = keras.layers
    inp = keras.Input(shape=(length,), dtype="int32", name="ids")
    x = layers.Embedding(vocab, width, name="embed")(inp)
    x = Positions(length, width, name="positions")(x)
    for i in range(layers_n):
        x = block(x, width, 2, ffn, activation, f"block{i}")
    x = (layers.GlobalAveragePooling1D if pool == "mean" else layers.GlobalMaxPooling1D)()(x)
    return keras.Model(inp, layers.Dense(2, name="logits")(x), name=name)


def train(model: keras.Model, x: np.ndarray, y: np.ndarray, epochs: int) -> float:
    steps = epochs * int(np.ceil(len(x) / 64))
    model.compile(
        optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    tic = time.perf_counter()
    model.fit(x, y, batch_size=64, epochs=epochs, shuffle=True, verbose=0)
    return time.perf_counter() - tic


def export(model: keras.Model, path: Path, name: str, length: int) -> None:
    """tf2onnx on a traced tf.function (int32 ids in, ``logits`` out)."""
    spec = (tf.TensorSpec([None, length], tf.int32, name=name),)

    @tf.function(input_signature=spec)
    def forward(x):
        return {"logits": model(x, training=False)}

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET)
    proto.producer_name = "tf2onnx"
    onnx.save(proto, str(path))


def describe(path: Path, model: keras.Model, x: np.ndarray, y: np.ndarray, planted: np.ndarray,
             seconds: float) -> dict:  # fmt: skip
    import onnxruntime as ort

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    logits = session.run(None, {name: x})[0]
    reference = model.predict(x, verbose=0)
    on_planted = session.run(None, {name: planted})[0][:, 1]
    return {
        "file": path.name,
        "input": name,
        "train_seconds_2cpu": round(seconds, 1),
        "n_params": int(model.count_params()),
        "test_accuracy": round(float((logits.argmax(1) == y).mean()), 4),
        "max_abs_diff_vs_keras": float(np.abs(logits - reference).max()),
        "planted_class1_logit": {
            "min": round(float(on_planted.min()), 4),
            "mean": round(float(on_planted.mean()), 4),
            "max": round(float(on_planted.max()), 4),
        },
        "ops": sorted({n.op_type for n in proto.graph.node}),
        "file_bytes": path.stat().st_size,
    }


def main() -> None:
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    rng = np.random.default_rng(SEED)
    record = {
        "producer": f"tensorflow {tf.__version__}, keras {keras.__version__}, "
        f"tf2onnx {tf2onnx.__version__}",
        "opset": OPSET,
    }
    x, y = trigger_data(rng, 12000)
    test_x, test_y = trigger_data(rng, 2000)
    model = build("keras_trigger", SEQ, VOCAB, 32, 2, 64, gelu_erf, "mean")
    seconds = train(model, x, y, 20)
    path = HERE / "keras_trigger_tf2onnx.onnx"
    export(model, path, "input_ids", SEQ)
    planted = test_x[test_y == 1]
    record["keras_trigger"] = describe(path, model, test_x, test_y, planted, seconds) | {
        "seq": SEQ, "vocab": VOCAB, "cls_id": CLS, "trigger_ids": TRIGGER,
        "target": "logits:1",
    }  # fmt: skip
    x, y = bytes_data(rng, 12000)
    test_x, test_y = bytes_data(rng, 2000)
    model = build("keras_bytes", BYTES, 256, 24, 1, 48, "relu", "max")
    seconds = train(model, x, y, 20)
    path = HERE / "keras_bytes_tf2onnx.onnx"
    export(model, path, "bytes", BYTES)
    planted = test_x[test_y == 1]
    record["keras_bytes"] = describe(path, model, test_x, test_y, planted, seconds) | {
        "length": BYTES, "signature": SIGNATURE, "target": "logits:1",
    }  # fmt: skip
    (HERE / "keras_transformers.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
