"""Tools that never run live: pre-rendering, seed collection, dream quality checks."""
