"""Benchmarks of the framework integrations: each adapter against the framework's own store on the
same database, in one run (``python -m bench.integrations.<name>``)."""
