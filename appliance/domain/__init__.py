"""The domain: routing, RAG orchestration, events as values. Standard library only."""
