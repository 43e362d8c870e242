"""Train a small Keras CNN on scikit-learn's digits and export it to ONNX with tf2onnx.

This is the TensorFlow-producer sample model: NHWC input ``[N, 8, 8, 1]`` (tf2onnx
inserts a Transpose to NCHW), ``Conv2D(padding="same")`` (-> ``auto_pad=SAME_UPPER``
or explicit pads), BatchNorm (folded or kept, as tf2onnx decides), ReLU, MaxPool,
Dense (-> MatMul + Add).  Same data and split as ``make_digits_cnns.py``: pixels
scaled by ``x / 8 - 1`` to [-1, 1], first 1437 images train, last 360 test.

TensorFlow is NEVER a dependency of onnx-am or its tests.  This script runs in its own
throw-away virtual environment; the committed ``.onnx`` files are what the library uses::

    python -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu tf2onnx scikit-learn onnxruntime
    /tmp/tfenv/bin/python models/make_keras_digits.py

(made with tensorflow-cpu 2.21.0, keras 3.15.1, tf2onnx 1.17.0).  Outputs:

* ``models/keras_digits.onnx``          tf2onnx ``from_function`` on the trained model,
                                         opset 17, input ``input``, output ``logits``.
* ``models/keras_digits_export.onnx``   the same weights via Keras 3
                                         ``model.export(format="onnx")`` (names as
                                         Keras chooses them), if that path works.
* ``models/keras_digits.json``          accuracy, sizes, versions.

(The smaller random-weight tf2onnx fixture with ``auto_pad=SAME_UPPER`` is made by
``tests/fixtures/make_tf2onnx_fixture.py``.)

Training is seeded (``keras.utils.set_random_seed(0)``, op determinism, 2 threads): two
runs here gave bit-identical weights, but tf2onnx numbers some helper constants
(``const_axes__29`` vs ``__32``) differently from run to run, so the files are not
byte-identical.  TF does not promise identical weights across versions or machines.
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
from sklearn.datasets import load_digits  # noqa: E402
from tensorflow import keras  # noqa: E402

HERE = Path(__file__).resolve().parent
OPSET = 17
EPOCHS = 60
SEED = 0


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as float32 NHWC in [-1, 1]; first 80 % train, last 20 % test."""
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 8.0 - 1.0)[:, :, :, None]
    y = digits.target.astype(np.int64)
    n_train = int(0.8 * len(x))
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def build_model() -> keras.Model:
    layers = keras.layers
    inp = keras.Input(shape=(8, 8, 1), name="input")
    x = inp
    for i, filters in enumerate((16, 32, 32), start=1):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        if i >= 2:
            x = layers.MaxPooling2D(2, padding="same", name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, name="fc1")(x)
    x = layers.ReLU(name="relu_fc1")(x)
    out = layers.Dense(10, name="logits")(x)
    return keras.Model(inp, out, name="keras_digits")


def train(model: keras.Model, data: tuple[np.ndarray, ...]) -> float:
    x_train, y_train, _, _ = data
    steps = EPOCHS * int(np.ceil(len(x_train) / 32))
    schedule = keras.optimizers.schedules.CosineDecay(5e-3, steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    t0 = time.perf_counter()
    model.fit(x_train, y_train, batch_size=32, epochs=EPOCHS, shuffle=True, verbose=0)
    return time.perf_counter() - t0


def export_tf2onnx(model: keras.Model, path: Path) -> None:
    """tf2onnx on a traced tf.function; rename the graph output to ``logits``."""
    spec = (tf.TensorSpec([None, 8, 8, 1], tf.float32, name="input"),)

    @tf.function(input_signature=spec)
    def forward(x):
        return {"logits": model(x, training=False)}

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET)
    proto.producer_name = "tf2onnx"
    onnx.save(proto, str(path))


def export_keras3(model: keras.Model, path: Path) -> bool:
    """Keras 3 ``model.export(format="onnx")``; returns False if unavailable."""
    try:
        model.export(str(path), format="onnx", verbose=False)
    except Exception as err:  # noqa: BLE001 - optional path, report and go on
        print(f"keras export(format='onnx') failed: {type(err).__name__}: {err}")
        return False
    return True


def evaluate(path: Path, x: np.ndarray, y: np.ndarray, ref: np.ndarray) -> dict:
    import onnxruntime as ort

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    logits = sess.run(None, {name: x})[0]
    ops = sorted({n.op_type for n in proto.graph.node})
    return {
        "file": path.name,
        "test_accuracy": round(float((logits.argmax(1) == y).mean()), 4),
        "max_abs_diff_vs_keras": float(np.abs(logits - ref).max()),
        "input": name,
        "outputs": [o.name for o in proto.graph.output],
        "opset": max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "ops": ops,
        "file_bytes": path.stat().st_size,
    }


def main() -> None:
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    data = load_split()
    model = build_model()
    seconds = train(model, data)
    x_test, y_test = data[2], data[3]
    ref = model.predict(x_test, verbose=0)
    report = {
        "producer": f"tensorflow {tf.__version__}, keras {keras.__version__}, "
        f"tf2onnx {tf2onnx.__version__}",
        "keras_test_accuracy": round(float((ref.argmax(1) == y_test).mean()), 4),
        "train_seconds_2cpu": round(seconds, 1),
        "n_params": int(model.count_params()),
        "input_layout": "NHWC [batch, 8, 8, 1], x / 8 - 1 in [-1, 1]",
        "models": {},
    }
    main_path = HERE / "keras_digits.onnx"
    export_tf2onnx(model, main_path)
    report["models"]["tf2onnx"] = evaluate(main_path, x_test, y_test, ref)
    k3_path = HERE / "keras_digits_export.onnx"
    if export_keras3(model, k3_path):
        report["models"]["keras3_export"] = evaluate(k3_path, x_test, y_test, ref)
    (HERE / "keras_digits.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
