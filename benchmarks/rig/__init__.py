"""A rig of app hosts behind a real load balancer (issue 20): network namespaces with CPU
budgets, HAProxy, Redis and wrk, all on this machine. ``python -m benchmarks.rig --help``;
``benchmarks/README.md`` and ``docs/scale/deploying-rig.md`` describe it."""
