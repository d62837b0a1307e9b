"""Jobs: `sparsescope` commands started from the web UI, each in its own process, their state in the store.

    forms     the fields of every command a job can run, read from the CLI itself (and the architecture
              registry), and the argv a form's values make (checked as the CLI checks them)
    launch    start a job (store row, then the wrapper process), cancel it, find jobs whose process is gone,
              read a job's log tail and progress
    run       the wrapper: `python -m app.jobs.run --workspace WS --job ID -- COMMAND ARGS...` runs the
              command, forwards a cancel to it, and records its exit status in the store
    progress  the machine-readable progress channel: with $SPARSESCOPE_PROGRESS_FILE set, every progress bar
              of the CLI also appends one JSON line per update to that file

The row lives in store/jobs.py; the page is app/ui/views/jobs.py.
"""
