"""The Kafka trigger: consumer groups, at-least-once commits, retries, dead letters, outputs."""
