"""Blob stores for encrypted segments: an interface and its implementations."""

from api.core.storage.interface import BlobStore, ObjectHeld, ObjectMissing

__all__ = ["BlobStore", "ObjectHeld", "ObjectMissing"]
