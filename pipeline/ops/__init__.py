"""The operator's commands (`make update`, `make backfill`, `make audit`, `make report`): each sets
its one-off params for a single `dvc repro` and puts params.yaml back afterwards. No stage imports
this package."""
