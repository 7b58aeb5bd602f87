"""Tests of the agent runner."""
