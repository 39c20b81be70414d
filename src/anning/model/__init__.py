"""What the engine means, in plain terms: scopes and categories, events, replies, and the
reference model of SPEC §2 and §4 that tests and debug checks compare against."""
