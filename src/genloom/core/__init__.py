"""Core concepts: config, registry, records, steps, store, catalog, executors."""
