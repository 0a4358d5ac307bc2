"""ItemEmbeddings: the pushed item tower over the item catalogue, as a batch (Beam) job."""
