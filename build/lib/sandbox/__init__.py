"""A stand-in for the IDR payout gateway: same API, fault injection and a ledger.

See ``sandbox/README.md``. Entry points: ``python -m sandbox``,
:func:`sandbox.process.start_sandbox`, :func:`sandbox.server.create_app`,
:class:`sandbox.client.SandboxAdmin`.
"""
