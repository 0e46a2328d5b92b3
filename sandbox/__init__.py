"""A stand-in for the IDR payout gateway: same API, fault injection and a ledger.

See ``sandbox/README.md``. Entry points: ``python -m worker.sandbox``,
:func:`worker.sandbox.process.start_sandbox`, :func:`worker.sandbox.server.create_app`,
:class:`worker.sandbox.client.SandboxAdmin`.
"""
