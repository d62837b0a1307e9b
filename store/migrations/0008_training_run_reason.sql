-- Why a training run failed (one line; NULL while it runs and once it finished).
ALTER TABLE training_runs ADD COLUMN reason VARCHAR;
