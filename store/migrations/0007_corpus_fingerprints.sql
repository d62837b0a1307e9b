-- Corpus fingerprints: a SHA-256 of each corpus' token ids (store/corpora.py), and the fingerprint of the
-- corpus each activation cache, feature analysis and head scan was built on. A result whose fingerprint is
-- not the corpus' current one (or is NULL: built before this migration) describes other text than the
-- corpus now holds: it is rebuilt instead of reused, and shown as stale.
-- corpora.fingerprint is NULL for corpora added before this migration; store.corpora.corpus_fingerprint
-- computes theirs from the contexts when asked.
ALTER TABLE corpora ADD COLUMN fingerprint VARCHAR;
ALTER TABLE activation_caches ADD COLUMN corpus_fingerprint VARCHAR;
ALTER TABLE analyses ADD COLUMN corpus_fingerprint VARCHAR;
ALTER TABLE head_runs ADD COLUMN corpus_fingerprint VARCHAR;
