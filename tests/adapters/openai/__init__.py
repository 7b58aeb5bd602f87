"""Tests of the OpenAI adapter."""
