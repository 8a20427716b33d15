"""The ecosystem's doors: Transformers classes and the vLLM plugin."""
