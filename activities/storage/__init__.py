"""Shared state that is not Temporal history: the artifact store (a local folder or an S3
bucket, by URL) and the sweep point cache in the shared database."""
