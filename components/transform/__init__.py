"""Transform's module file: the vectors' normalization."""
