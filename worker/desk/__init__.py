"""The operator desk: one product package, split by feature.

* :mod:`worker.desk.pausing` -- pause (kill switch), per bank or every bank;
* :mod:`worker.desk.balance` -- balance hold (D21) and the balance poller;
* :mod:`worker.desk.approval` -- approval (maker-checker) and its expiry;
* :mod:`worker.desk.duplicates` -- the duplicate guard (keyed hash, never the number);
* :mod:`worker.desk.gate` -- the pre-send gate, asked before every create request;
* :mod:`worker.desk.order_actions` -- resolve, resubmit, back to polling, check now;
* :mod:`worker.desk.reads` -- read models: stats, the order list, reconcile, orphans.

Its two front ends, the ``payouts`` CLI (:mod:`worker.ops`) and the console
(:mod:`worker.console`), call these functions and never import each other.
"""
