"""The one training loop every model uses."""
