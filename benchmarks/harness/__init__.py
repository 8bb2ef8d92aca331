"""The side-by-side serving benchmark behind ``make bench`` (see benchmarks/README.md)."""
