"""Pure domain rules: run states, triggers, access, slots. No I/O, no framework imports."""
