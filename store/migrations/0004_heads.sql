-- Attention heads: scores over a corpus, top-attending contexts, mean head outputs (for mean-ablation),
-- and per-feature head attribution of attention-output dictionaries.
-- A scan of (model, corpus) is replaced as a whole in one transaction (store/heads.py); the bulk tables
-- have no primary key because they are only ever deleted and re-inserted together.
CREATE TABLE head_runs (
    model       VARCHAR NOT NULL,
    corpus      VARCHAR NOT NULL,
    n_layers    INTEGER NOT NULL,
    n_heads     INTEGER NOT NULL,
    n_kv_heads  INTEGER NOT NULL,
    n_contexts  INTEGER NOT NULL,
    n_tokens    BIGINT NOT NULL,
    config      JSON,
    finished    TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (model, corpus)
);
CREATE TABLE head_stats (
    model       VARCHAR NOT NULL,
    corpus      VARCHAR NOT NULL,
    layer       SMALLINT NOT NULL,
    head        SMALLINT NOT NULL,
    kv_group    SMALLINT NOT NULL,
    score       VARCHAR NOT NULL,
    value       DOUBLE NOT NULL,
    n_tokens    BIGINT NOT NULL
);
CREATE TABLE head_examples (
    model       VARCHAR NOT NULL,
    corpus      VARCHAR NOT NULL,
    layer       SMALLINT NOT NULL,
    head        SMALLINT NOT NULL,
    rank        SMALLINT NOT NULL,
    context_id  INTEGER NOT NULL,
    score       FLOAT NOT NULL,
    peak_weight FLOAT[] NOT NULL,
    peak_src    INTEGER[] NOT NULL
);
CREATE TABLE head_means (
    model       VARCHAR NOT NULL,
    corpus      VARCHAR NOT NULL,
    layer       SMALLINT NOT NULL,
    head        SMALLINT NOT NULL,
    mean_z      FLOAT[] NOT NULL
);
CREATE TABLE feature_heads (
    dictionary  VARCHAR NOT NULL,
    feature     INTEGER NOT NULL,
    head        SMALLINT NOT NULL,
    weight      FLOAT NOT NULL
);
