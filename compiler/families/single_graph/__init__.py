"""One-graph models: transformers (text encoders), CNNs and generic ONNX graphs.

family.py declares the three families and their recipe schema; build.py is one build (import,
scoring, latency, what ships); data.py loads representative data, metrics.py scores outputs,
evaluator.py runs candidates, importing.py exports the model, timing.py measures latency.
"""
