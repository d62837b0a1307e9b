-- Results of a dictionary's feature-statistics pass, token strings, and user labels.
-- Result tables are replaced as a whole per dictionary in one transaction (store/features.py);
-- feature_labels is never touched by a re-analysis.
CREATE TABLE analyses (
    dictionary      VARCHAR PRIMARY KEY,
    model           VARCHAR NOT NULL,
    corpus          VARCHAR NOT NULL,
    n_tokens        BIGINT NOT NULL,
    config          JSON,
    finished        TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE features (
    dictionary      VARCHAR NOT NULL,
    feature         INTEGER NOT NULL,
    count           BIGINT NOT NULL,
    density         DOUBLE NOT NULL,
    mean_act        DOUBLE NOT NULL,
    max_act         DOUBLE NOT NULL,
    decoder_norm    DOUBLE,
    max_decoder_cos DOUBLE
);
CREATE TABLE feature_histograms (
    dictionary      VARCHAR NOT NULL,
    feature         INTEGER NOT NULL,
    bin             SMALLINT NOT NULL,
    bin_lo          DOUBLE NOT NULL,
    bin_hi          DOUBLE NOT NULL,
    count           BIGINT NOT NULL
);
CREATE TABLE feature_examples (
    dictionary      VARCHAR NOT NULL,
    feature         INTEGER NOT NULL,
    kind            VARCHAR NOT NULL CHECK (kind IN ('top', 'quantile')),
    band            SMALLINT,
    rank            SMALLINT NOT NULL,
    corpus          VARCHAR NOT NULL,
    context_id      INTEGER NOT NULL,
    position        INTEGER NOT NULL,
    activation      FLOAT NOT NULL,
    window_start    INTEGER NOT NULL,
    token_acts      FLOAT[] NOT NULL,
    token_id        INTEGER
);
CREATE TABLE feature_logits (
    dictionary      VARCHAR NOT NULL,
    feature         INTEGER NOT NULL,
    sign            TINYINT NOT NULL CHECK (sign IN (1, -1)),
    rank            SMALLINT NOT NULL,
    token_id        INTEGER NOT NULL,
    token           VARCHAR,
    value           DOUBLE NOT NULL
);
CREATE TABLE feature_neighbors (
    dictionary      VARCHAR NOT NULL,
    feature         INTEGER NOT NULL,
    kind            VARCHAR NOT NULL CHECK (kind IN ('decoder', 'cooccurrence')),
    rank            SMALLINT NOT NULL,
    other           INTEGER NOT NULL,
    score           DOUBLE NOT NULL
);
CREATE TABLE mp_steps (
    dictionary      VARCHAR NOT NULL,
    feature         INTEGER NOT NULL,
    step            SMALLINT NOT NULL,
    count           BIGINT NOT NULL
);
CREATE TABLE mp_parents (
    dictionary      VARCHAR NOT NULL,
    feature         INTEGER NOT NULL,
    rank            SMALLINT NOT NULL,
    parent          INTEGER NOT NULL,
    count           BIGINT NOT NULL
);
CREATE TABLE feature_labels (
    dictionary      VARCHAR NOT NULL,
    feature         INTEGER NOT NULL,
    label           VARCHAR NOT NULL DEFAULT '',
    notes           VARCHAR NOT NULL DEFAULT '',
    updated         TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (dictionary, feature)
);
CREATE TABLE vocab (
    model           VARCHAR NOT NULL,
    token_id        INTEGER NOT NULL,
    token           VARCHAR NOT NULL,
    PRIMARY KEY (model, token_id)
);
-- Point lookups by (dictionary, feature) serve the feature page; results are written sorted by feature,
-- so zone maps already prune most row groups and these indexes make the lookup independent of that order.
CREATE INDEX features_key ON features (dictionary, feature);
CREATE INDEX feature_examples_key ON feature_examples (dictionary, feature);
CREATE INDEX feature_histograms_key ON feature_histograms (dictionary, feature);
CREATE INDEX feature_logits_key ON feature_logits (dictionary, feature);
CREATE INDEX feature_neighbors_key ON feature_neighbors (dictionary, feature);
