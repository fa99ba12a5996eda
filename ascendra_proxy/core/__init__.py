"""Pure policy core: request state, deadlines, decisions and policies. No I/O, no clock reads."""
