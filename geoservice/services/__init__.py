"""Use-cases: validate, call repositories, flush (the caller commits), enqueue after commit."""
