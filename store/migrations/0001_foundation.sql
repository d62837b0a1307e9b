-- Models, corpora and their contexts, activation caches.
CREATE TABLE models (
    name        VARCHAR PRIMARY KEY,
    n_layers    INTEGER NOT NULL,
    d_model     INTEGER NOT NULL,
    n_params    BIGINT,
    d_vocab     INTEGER,
    added       TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE corpora (
    name        VARCHAR PRIMARY KEY,
    model       VARCHAR NOT NULL,
    source      VARCHAR NOT NULL,
    ctx         INTEGER NOT NULL,
    bos         BOOLEAN NOT NULL,
    n_contexts  INTEGER NOT NULL,
    n_tokens    BIGINT NOT NULL,
    created     TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE contexts (
    corpus      VARCHAR NOT NULL,
    context_id  INTEGER NOT NULL,
    token_ids   INTEGER[] NOT NULL,
    text        VARCHAR NOT NULL,
    PRIMARY KEY (corpus, context_id)
);
CREATE TABLE activation_caches (
    name        VARCHAR PRIMARY KEY,
    model       VARCHAR NOT NULL,
    hook        VARCHAR NOT NULL,
    corpus      VARCHAR NOT NULL,
    d           INTEGER NOT NULL,
    n_tokens    BIGINT NOT NULL,
    path        VARCHAR NOT NULL,
    complete    BOOLEAN NOT NULL,
    updated     TIMESTAMP DEFAULT current_timestamp
);
