-- Explanations of features in words, and how well each one predicts where its feature fires.
-- Written by `sparsescope explain` a batch of features per transaction (store/explanations.py); a user's own
-- label stays in feature_labels and is never written from here.
CREATE TABLE explanations (
    dictionary      VARCHAR NOT NULL,
    feature         INTEGER NOT NULL,
    explainer       VARCHAR NOT NULL,
    text            VARCHAR NOT NULL,
    rule            JSON,
    created         TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (dictionary, feature, explainer)
);
-- One row per metric of a scorer: `value` scores the feature's own explanation on its held-out examples,
-- `baseline` the explanation of another feature of the same run scored the same way (what chance looks like).
CREATE TABLE explanation_scores (
    dictionary      VARCHAR NOT NULL,
    feature         INTEGER NOT NULL,
    explainer       VARCHAR NOT NULL,
    scorer          VARCHAR NOT NULL,
    metric          VARCHAR NOT NULL,
    value           DOUBLE,
    baseline        DOUBLE,
    n_examples      INTEGER NOT NULL,
    created         TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (dictionary, feature, explainer, scorer, metric)
);
