-- Jobs started from the web UI's Jobs page: each runs one `sparsescope` command in its own process, through a
-- small wrapper (app/jobs/run.py) that records its outcome here. Written in short transactions only
-- (store/jobs.py): the job itself writes to the store too.
CREATE TABLE jobs (
    id              VARCHAR PRIMARY KEY,
    command         VARCHAR NOT NULL,   -- the CLI command (train, analyze, ...)
    argv            JSON NOT NULL,      -- the arguments after `sparsescope`, as a JSON list
    status          VARCHAR NOT NULL,   -- queued, running, finished, failed, cancelled
    pid             INTEGER,            -- the wrapper process (alive while the job is)
    pgid            INTEGER,            -- the command's own process group (what cancel signals)
    host            VARCHAR,
    exit_code       INTEGER,            -- the command's exit status; negative: killed by that signal
    message         VARCHAR,            -- one line: why it failed or what a cancel kept
    log_path        VARCHAR NOT NULL,   -- the command's stdout and stderr, in the workspace
    progress        JSON,               -- the last progress record when the job ended
    created         TIMESTAMP NOT NULL DEFAULT current_timestamp,
    started         TIMESTAMP,
    finished        TIMESTAMP
);
