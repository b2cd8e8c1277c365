"""Commands that drive whole workers from the outside: the demo, the benchmark and its raw
passthrough baseline, the chaos run, round-trip measurement, and worker child processes."""
