"""The agent runner that executes inside a run's pod or process."""
