"""OpenAI adapter: model checks, summaries, learning-mode explanations."""
