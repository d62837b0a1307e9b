-- Attribution graphs (`sparsescope attribute`): which feature-at-position nodes of which dictionaries make the
-- model produce a target token. One row per graph; the nodes and links are one JSON document (store/graphs.py
-- says its layout), read whole by the Attribution page and the export.
CREATE SEQUENCE graph_ids START 1;
CREATE TABLE graphs (
    id              INTEGER PRIMARY KEY DEFAULT nextval('graph_ids'),
    model           VARCHAR NOT NULL,
    prompt          VARCHAR NOT NULL,
    target          VARCHAR NOT NULL,   -- the target token, as text
    contrast        VARCHAR,            -- the contrast token (metric = logit difference), or NULL (metric = logit)
    dictionaries    JSON NOT NULL,      -- the dictionaries spliced in, upstream first
    metric          DOUBLE NOT NULL,    -- the metric on the unmodified model
    recovered       DOUBLE,             -- faithfulness: share of the metric the pruned graph alone keeps
    top_removed     DOUBLE,             -- share of the metric lost when the graph's top nodes are ablated
    ablation        VARCHAR NOT NULL,   -- how nodes outside the graph are ablated: mean or zero
    n_nodes         INTEGER NOT NULL,
    n_links         INTEGER NOT NULL,
    graph           JSON NOT NULL,
    created         TIMESTAMP NOT NULL DEFAULT current_timestamp
);
