-- Steering runs: the config to re-run one (interventions, generation settings, resolved numbers), both
-- arms' texts and the measures. `dictionary` is the first feature intervention's dictionary (NULL when every
-- intervention is a raw direction), for listing runs per dictionary; the config names all of them.
CREATE SEQUENCE steering_runs_id_seq START 1;
CREATE TABLE steering_runs (
    id              INTEGER PRIMARY KEY DEFAULT nextval('steering_runs_id_seq'),
    created         TIMESTAMP DEFAULT current_timestamp,
    model           VARCHAR NOT NULL,
    dictionary      VARCHAR,
    config          JSON NOT NULL,
    default_texts   VARCHAR[] NOT NULL,
    steered_texts   VARCHAR[] NOT NULL,
    measures        JSON NOT NULL
);
