"""The pieces of ``payouts bench`` (entry point: :mod:`worker.harness.bench.cli`).

* :mod:`worker.tasks.bench` -- the no-op task the baseline is measured with; a
  bench worker loads it with ``--include``, production workers never do;
* :mod:`worker.harness.bench.stack` -- the processes one run starts (Redis, sandbox,
  workers, beat) and the "drain" measurement shared by every phase;
* :mod:`worker.harness.bench.loader` -- bulk loading of order records straight into the
  store's keys (one Lua call per 20,000 orders), for the sweep and memory figures;
* :mod:`worker.harness.bench.phases` -- the measurements themselves.
"""
