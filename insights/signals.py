"""What the engine tells the rest of the service (insights imports neither marketplace nor billing)."""

from django.dispatch import Signal

# A release was built, committed and analysed (insights.releases.releases_landed): reports read its values from now on.
# Sent with release=insights.models.Release (marketplace warms the areas ordered lately).
release_landed = Signal()
