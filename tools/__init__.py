"""The `loft` command line, benchmarks and developer scripts."""
