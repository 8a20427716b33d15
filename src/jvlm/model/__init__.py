"""The Jina-VLM network: ViT -> connector -> Qwen3 decoder."""
