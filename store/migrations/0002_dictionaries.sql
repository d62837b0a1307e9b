-- Dictionaries, their training runs and evaluation metrics.
CREATE SEQUENCE dictionaries_id_seq START 1;
CREATE TABLE dictionaries (
    id          INTEGER PRIMARY KEY DEFAULT nextval('dictionaries_id_seq'),
    name        VARCHAR NOT NULL UNIQUE,
    model       VARCHAR NOT NULL,
    hook        VARCHAR NOT NULL,
    arch        VARCHAR NOT NULL,
    d_in        INTEGER NOT NULL,
    d_sae       INTEGER NOT NULL,
    k           INTEGER,
    path        VARCHAR NOT NULL,
    source      VARCHAR NOT NULL DEFAULT 'trained',
    created     TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE training_runs (
    dictionary  VARCHAR NOT NULL,
    run_id      VARCHAR NOT NULL,
    config      JSON NOT NULL,
    started     TIMESTAMP DEFAULT current_timestamp,
    finished    TIMESTAMP,
    status      VARCHAR NOT NULL,
    PRIMARY KEY (dictionary, run_id)
);
CREATE TABLE training_log (
    dictionary  VARCHAR NOT NULL,
    run_id      VARCHAR NOT NULL,
    step        INTEGER NOT NULL,
    tokens      BIGINT NOT NULL,
    loss        DOUBLE, fvu DOUBLE, l0 DOUBLE, dead DOUBLE,
    PRIMARY KEY (dictionary, run_id, step)
);
CREATE TABLE dictionary_metrics (
    dictionary  VARCHAR NOT NULL,
    metric      VARCHAR NOT NULL,
    value       DOUBLE,
    PRIMARY KEY (dictionary, metric)
);
