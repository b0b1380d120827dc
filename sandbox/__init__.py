"""Sandbox fakes of the third-party payment, delivery and messaging providers."""
