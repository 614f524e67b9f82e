"""Inference: in-process onnxruntime embedder and rerankers, the gRPC service and its
client with per-call fallback.

Entry points: `appliance.inference.local.load_local_models(settings.knowledge)` for the
in-process models (`OnnxEmbedder`, `MaxSimReranker` or a cross-encoder).
"""
