"""What every stage shares, so that no stage imports another's package: errors that name the
bad input (`errors`), local-or-URI paths (`paths`), one atomic publish (`publish`), shared
file names (`names`), artifact types (`artifacts`), interaction logs, vectors and user
vectors (`interactions`, `vectors`, `user_vectors`, `histories`)."""
