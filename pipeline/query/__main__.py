"""`python -m pipeline.query`: the same as the `vision-query` console script."""

from pipeline.query.cli import main

raise SystemExit(main(prog="python -m pipeline.query"))
