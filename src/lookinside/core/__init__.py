"""The model side: torch and transformers only, nothing about terminals."""
