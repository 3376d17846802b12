"""Sharing: publishing streams to the Hugging Face Hub and reading them back."""
