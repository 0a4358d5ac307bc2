"""The finetower pipeline: configuration, the DAG, and its runners."""
