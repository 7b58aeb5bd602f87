"""Use cases. Services own their transactions; the UI, the HTTP API and the CLI all call them."""
