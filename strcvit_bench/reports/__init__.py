"""Human-facing outputs: tables and plots."""
