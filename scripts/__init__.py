"""Scripts of the repository (demos, CI helpers); importable so tests reuse their code."""
