"""What tests at every level share that is not a fixture: `polling` (wait until a condition
holds, or fail naming what was awaited)."""
