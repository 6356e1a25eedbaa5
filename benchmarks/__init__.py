"""carboy's benchmark suite: in-process and end-to-end comparisons with other frameworks.

Run it with ``python benchmarks/run.py`` from the repository root; see ``benchmarks/README.md``.
"""
