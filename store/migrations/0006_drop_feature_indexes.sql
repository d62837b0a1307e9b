-- Drop the secondary indexes 0003 put on the feature result tables.
-- A feature page reads rows by (dictionary, feature) and store/features.py inserts every result table
-- sorted by feature, so DuckDB's per-row-group min/max (zone maps) already narrow a lookup to one row
-- group. Measured with DuckDB 2.0 on 20,000 features x 20 examples: the planner did not use these ART
-- indexes for the feature-page lookups (same lookup time with and without them), while replacing a
-- dictionary's results took 2.7x the CPU with them, and that write holds the store's only write lock.
DROP INDEX IF EXISTS features_key;
DROP INDEX IF EXISTS feature_examples_key;
DROP INDEX IF EXISTS feature_histograms_key;
DROP INDEX IF EXISTS feature_logits_key;
DROP INDEX IF EXISTS feature_neighbors_key;
