"""What every stage shares: errors that name the bad input, atomic file writes."""
