"""regime-pg's benchmark suite: the server-side path against the client-side one.

``python -m bench [--quick | --full] [--output bench/results.json]`` starts its
own embedded PostgreSQL in a temporary directory (never the user's default
server), builds its data in a throwaway database there, and runs:

* B1 latency: a one-year window, ``compute_regime_prototype`` from Python against
  the calibration script's client path (SELECT the window's BYTEA, numpy).
* B2 throughput: a window of 1M rows, the same two paths; per-row cost against
  the scan floor.
* B3 accuracy at speed: ``avg(vector)``, float32 ``sum(vector)`` and the
  two-level centroid (prototypes--3.sql), us/row on one core and error against
  numpy's float64 mean; the plans, serial and parallel.
* B4 classification: 1M stored embeddings against 4 prototypes in SQL
  (``classify_regimes``, ``classify_regime_labels`` without the distances,
  and a plain ``<->`` query; consumed in the server and fetched) against numpy.
* B5 scaling: one-year-window latency at table sizes 10k, 100k, 1M (10M with
  ``--full``), plotted to ``bench/scaling.png``.
* B6 storage: buffers per window row on the centroid path; no TOAST reads.

Every figure is measured in the same run as its baseline, repeated, and reported
as a median with its spread; results go to ``bench/results.json`` and
``bench/results.md``.
"""
