"""The availability dataset: its schema, the partitioned store, the merge, the change log, spans."""
