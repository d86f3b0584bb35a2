"""The pipeline's own functions: a card-fraud system built only from sluice functions.

- ``transactions``: the data (generated deterministically: no downloads).
- ``features``: the feature definitions, one for both stores; ``feature_store`` (the online
  store's interface and its SQLite implementation) and ``offline`` (the Parquet copy that
  training reads).
- ``etl`` (job): raw batch files to validated, cleaned, partitioned Parquet.
- ``train`` (job): a torch model on the offline features, registered with its metrics.
- ``promotion``: whether a retrained candidate replaces the production model.
"""
