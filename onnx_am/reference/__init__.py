"""onnxruntime as the referee: it runs the unmodified model, and every value onnx-am reports
is compared with it (``parity`` for the imported graph, ``crosscheck`` for each result)."""
