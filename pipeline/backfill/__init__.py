"""Backfill jobs: historical queries sent to the backfill lane as a named, resumable, throttled,
budgeted job that follows its own answers (`pointsman backfill SOURCE --job NAME`).

sources.py reads rows (JSONL, CSV, Parquet, or SQL over pointsman.results), rows.py turns a row
into a query (pure), pacing.py decides when the next one may go (rate and budget; pure), tally.py
counts the job's answers, run.py is the job's loop, and inspect.py reports on jobs.
"""
