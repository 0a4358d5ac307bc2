"""Online retrieval's building blocks: item indexes (`serving.index`) and the Redis item store
(`serving.store`)."""
